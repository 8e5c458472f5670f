"""Files written whole or not at all: a temporary file in the target's directory, then renamed (or linked)
into place, so a reader or a crash never sees half a file."""

from __future__ import annotations

import os

TMP_PREFIX = ".tmp-"


def write_temporary(directory: str, data: bytes | str, mode: int = 0o666, prefix: str = TMP_PREFIX) -> str:
    """A new file in ``directory`` named ``prefix`` + something unique, holding ``data``; the caller renames
    or links it into place. ``mode`` is filtered by the umask, as open() does."""
    tmp = os.path.join(directory, f"{prefix}{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def atomic_write(path: str, data: bytes | str, mode: int = 0o666, prefix: str = TMP_PREFIX) -> None:
    """Replaces ``path`` with a file holding ``data`` in one rename."""
    tmp = write_temporary(os.path.dirname(path) or ".", data, mode, prefix)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
