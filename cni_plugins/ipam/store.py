"""host-local's on-disk lease store, in the reference's format so a host can switch implementations.

``<dataDir>/<network>/`` holds one file per leased address, named by the address text, containing
``containerID\\r\\nifname`` (older writers: just the containerID); ``last_reserved_ip.<rangeSetIndex>``
holds the last address handed out from each range set; ``lock`` is flock'ed for a whole operation, by us
and by the reference alike.

Crash safety: a lease is written to a temporary file, then hard-linked to its final name (the link fails
atomically when the address is taken), so no process ever sees a lease file half-written; the round-robin
cursor is replaced by rename. The new leases are synced to disk once the lock is released, before the
operation returns: a power cut can only hit a lease its container never heard of, and concurrent ADDs on
one network do not queue behind each other's disk flushes.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass

from cni_plugins import files
from cni_plugins.errors import CNIError, IO_FAILURE
from cni_plugins.results import IPAddress

LAST_RESERVED_PREFIX = "last_reserved_ip."
LOCK_NAME = "lock"
LINE_BREAK = "\r\n"
# Temporary names never parse as an address, so the reference (and we) never take them for a lease.
_TMP_PREFIX = ".pynet-tmp-"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease; ``ifname`` is None for leases written before ifnames were recorded."""
    container_id: str
    ifname: str | None

    def matches(self, container_id: str, ifname: str) -> bool:
        return self.container_id == container_id and self.ifname == ifname

    def matches_legacy(self, container_id: str) -> bool:
        return self.ifname is None and self.container_id == container_id


def parse_holder(data: bytes) -> Holder | None:
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if text.startswith("{"):
        # A short-lived upstream format: {"kind": "host-local-v1", "value": {"id": ..., "if": ...}}.
        try:
            doc = json.loads(text)
            if doc.get("kind") == "host-local-v1":
                return Holder(str(doc["value"]["id"]), str(doc["value"]["if"]))
        except (ValueError, AttributeError, KeyError, TypeError):
            pass
    lines = text.split(LINE_BREAK)
    if len(lines) == 2:
        return Holder(lines[0].strip(), lines[1].strip())
    return Holder(text, None)


def held_in(leases: dict[IPAddress, Holder | None], container_id: str, ifname: str) -> list[IPAddress]:
    """Addresses of this attachment; leases of the pre-ifname format count when no exact one exists (as in
    the reference, which falls back to them the same way)."""
    exact = [ip for ip, h in leases.items() if h and h.matches(container_id, ifname)]
    if exact:
        return exact
    return [ip for ip, h in leases.items() if h and h.matches_legacy(container_id)]


# Lease files are written whole and never changed in place (a new lease is a new file), so a file's
# content is known from its identity. A resident daemon then reads each lease once instead of on every
# ADD: with 500 containers that is the difference between 500 opens and 500 stats per allocation.
_HOLDERS: dict[tuple, "Holder | None"] = {}
_HOLDERS_MAX = 65536


# Lease file names, parsed once: ipaddress parsing is most of the cost of listing hundreds of leases.
_NAMES: dict[str, "tuple[IPAddress, bool] | None"] = {}
_NAMES_MAX = 65536


def _lease_name(name: str) -> "tuple[IPAddress, bool] | None":
    """The address a directory entry names and whether the name is its canonical spelling; None when the
    entry is not a lease (the lock, the round-robin cursors, temporaries)."""
    try:
        return _NAMES[name]
    except KeyError:
        pass
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        parsed = None
    else:
        parsed = (ip, str(ip) == name)
    if len(_NAMES) >= _NAMES_MAX:
        _NAMES.clear()
    _NAMES[name] = parsed
    return parsed


def _read_holder(entry: os.DirEntry) -> "Holder | None":
    st = entry.stat(follow_symlinks=False)
    key = (entry.path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    holder = _HOLDERS.get(key, _UNREAD)
    if holder is not _UNREAD:
        return holder
    with open(entry.path, "rb") as f:
        holder = parse_holder(f.read())
    if len(_HOLDERS) >= _HOLDERS_MAX:
        _HOLDERS.clear()
    _HOLDERS[key] = holder
    return holder


_UNREAD = object()


class LeaseStore:
    """The leases of one network. Use as a context manager: entering takes the lock, creating the directory."""

    def __init__(self, data_dir: str, network: str):
        self.dir = os.path.join(data_dir, network)
        self._lock_fd: int | None = None
        self._names: dict[IPAddress, str] = {}  # file names as found, in case a writer spelled one differently
        self._unsynced: list[str] = []          # leases written under the lock, synced after it

    def __enter__(self) -> "LeaseStore":
        with io_errors(f"cannot use lease directory {self.dir}"):
            os.makedirs(self.dir, mode=0o755, exist_ok=True)
            fd = os.open(os.path.join(self.dir, LOCK_NAME), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        self._lock_fd = fd
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor drops the flock
            self._lock_fd = None
        unsynced, self._unsynced = self._unsynced, []
        if exc_type is None:
            with io_errors("cannot sync lease"):
                for path in unsynced:
                    _fsync(path)

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # -- reading --------------------------------------------------------------------------------------
    def leases(self) -> dict[IPAddress, Holder | None]:
        """Every leased address; the holder is None when the file cannot be read or understood.

        Every verb reads the leases first thing under the lock, so this same pass removes temporaries: under
        the lock, any temporary is a leftover of a writer that died mid-operation."""
        out: dict[IPAddress, Holder | None] = {}
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return out
        for entry in entries:
            parsed = _lease_name(entry.name)
            if parsed is None:
                if entry.name.startswith(_TMP_PREFIX):
                    _unlink(entry.path)
                continue
            ip, canonical = parsed
            if not canonical:
                self._names[ip] = entry.name
            try:
                out[ip] = _read_holder(entry)
            except FileNotFoundError:
                continue
            except OSError:
                out[ip] = None
        return out

    def held_by(self, container_id: str, ifname: str) -> list[IPAddress]:
        return held_in(self.leases(), container_id, ifname)

    def last_reserved(self, index: int) -> IPAddress | None:
        try:
            with open(self._path(f"{LAST_RESERVED_PREFIX}{index}"), encoding="ascii", errors="replace") as f:
                return ipaddress.ip_address(f.read().strip())
        except (OSError, ValueError):
            return None

    # -- writing --------------------------------------------------------------------------------------
    def reserve(self, ip: IPAddress, container_id: str, ifname: str, index: int) -> bool:
        """Takes ``ip`` for the attachment; False when someone holds it already."""
        # Linked, not renamed, into place: the link fails when the address is taken, so two writers cannot
        # both win. Synced in __exit__.
        tmp = files.write_temporary(self.dir, f"{container_id.strip()}{LINE_BREAK}{ifname}", 0o644,
                                    prefix=_TMP_PREFIX)
        path = self._path(str(ip))
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            _unlink(tmp)
        self._unsynced.append(path)
        self.set_last_reserved(index, ip)
        return True

    def set_last_reserved(self, index: int, ip: IPAddress) -> None:
        # Losing the cursor in a crash only costs one round of round-robin order.
        files.atomic_write(self._path(f"{LAST_RESERVED_PREFIX}{index}"), str(ip), 0o644, prefix=_TMP_PREFIX)

    def release(self, ip: IPAddress) -> None:
        _unlink(self._path(self._names.pop(ip, str(ip))))

    def release_holder(self, container_id: str, ifname: str) -> list[IPAddress]:
        released = self.held_by(container_id, ifname)
        for ip in released:
            self.release(ip)
        return released


@contextmanager
def io_errors(what: str):
    """Filesystem trouble (full disk, read-only mount, a file where a directory belongs) as CNI code 5."""
    try:
        yield
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"host-local: {what}: {exc.strerror or exc}"
                       + (f": {exc.filename}" if exc.filename else "")) from None


def _fsync(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return   # released already
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
