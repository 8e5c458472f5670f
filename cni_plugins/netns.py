"""Network namespace entry and per-namespace netlink handles.

Python 3.11 has no os.setns, so this is the one ctypes call site for it. Handles are opened once per
request (a netlink socket stays bound to the namespace it was created in) and passed down, so no code
switches namespaces in the middle of unrelated logic.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os

from .errors import CNIError, INVALID_ENVIRONMENT, UNKNOWN_CONTAINER

CLONE_NEWNET = 0x40000000
_SELF = "/proc/thread-self/ns/net"
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def is_own_netns(path: str) -> bool:
    return _identity(path) == _identity(_SELF)


def exists(path: str) -> bool:
    """True when ``path`` is an open-able network namespace."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return _is_netns_fd(fd)
    finally:
        os.close(fd)


def _is_netns_fd(fd: int) -> bool:
    # NS_GET_NSTYPE ioctl would be exact; comparing st_dev with our own netns file is enough and portable:
    # nsfs files all live on the nsfs device.
    return os.fstat(fd).st_dev == os.stat(_SELF).st_dev


def open_netns(path: str) -> int:
    """Opens a container netns for an ADD/CHECK; errors carry the spec's codes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CNIError(UNKNOWN_CONTAINER, f"network namespace {path!r} does not exist") from None
    except OSError as exc:
        raise CNIError(UNKNOWN_CONTAINER, f"cannot open network namespace {path!r}: {exc.strerror}") from None
    if not _is_netns_fd(fd):
        os.close(fd)
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_NETNS {path!r} is not a network namespace")
    if os.fstat(fd).st_ino == os.stat(_SELF).st_ino:
        os.close(fd)
        raise CNIError(INVALID_ENVIRONMENT, f"CNI_NETNS {path!r} is the plugin's own network namespace")
    return fd


@contextlib.contextmanager
def entered(fd_or_path):
    """Runs the body with this thread inside another netns, always returning to where it was."""
    own = os.open(_SELF, os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(fd_or_path, os.O_RDONLY | os.O_CLOEXEC) if isinstance(fd_or_path, str) else fd_or_path
    try:
        setns(target)
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(own)
        if isinstance(fd_or_path, str):
            os.close(target)


def iproute(fd_or_path=None):
    """An IPRoute handle bound to a netns (or the current one). The caller closes it."""
    from pyroute2.iproute.linux import IPRoute

    if fd_or_path is None:
        return IPRoute()
    with entered(fd_or_path):
        return IPRoute()


class ContainerNetns:
    """The container side of one request: its netns fd and a netlink handle inside it.

    ``ContainerNetns.open`` fails with code 3 when the namespace is gone; ``maybe_open`` returns None
    instead, which is what DEL wants (DEL succeeds when the netns has vanished).
    """

    def __init__(self, path: str, fd: int):
        self.path = path
        self.fd = fd
        self._ipr = None

    @classmethod
    def open(cls, path: str) -> "ContainerNetns":
        return cls(path, open_netns(path))

    @classmethod
    def maybe_open(cls, path: str) -> "ContainerNetns | None":
        if not path:
            return None
        try:
            return cls.open(path)
        except CNIError as err:
            if err.code == UNKNOWN_CONTAINER:
                return None
            raise

    @property
    def ipr(self):
        if self._ipr is None:
            self._ipr = iproute(self.fd)
        return self._ipr

    def entered(self):
        return entered(self.fd)

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_missing_error(exc: BaseException) -> bool:
    """Netlink errors that mean "already gone", which DEL treats as success."""
    code = getattr(exc, "code", None)
    if code is None and isinstance(exc, OSError):
        code = exc.errno
    return code in (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)
