"""The Nft handle: libnftables contexts of one network namespace, one transaction per ``apply``.

A handle is bound to a netns: the one given as an fd (``Nft(netns_fd)``), or the calling thread's. Its
contexts come from a small pool per namespace (keyed by the nsfs inode); a context is created while the
thread is inside that namespace, and libnftables opens its netlink socket then, so the context keeps
talking to that namespace whatever the thread does afterwards.
"""

from __future__ import annotations

import _thread
import collections
import contextlib
import errno
import os

from ..errors import CNIError, IO_FAILURE

_SELF = "/proc/thread-self/ns/net"


def element(value, owner: str) -> dict:
    return {"elem": {"val": value, "comment": owner}}


def owner_of(elem) -> str:
    if isinstance(elem, list) and elem:  # a map element is listed as [key element, data]
        elem = elem[0]
    return elem["elem"].get("comment", "") if isinstance(elem, dict) and "elem" in elem else ""


def value_of(elem):
    """The key of a listed element (what ``delete element`` takes), for sets and maps alike."""
    if isinstance(elem, list) and elem:
        elem = elem[0]
    return elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem


class _Context:
    """One libnftables context (not thread-safe: one user at a time, see _Pool)."""

    def __init__(self):
        import nftables  # Debian's python3-nftables; imported here so VERSION never loads it

        self.lib = nftables.Nftables()
        self.lib.set_json_output(True)
        self.lib.set_handle_output(False)


class _Pool:
    """The contexts of one network namespace. More than one, so that concurrent requests in a resident
    daemon do not queue behind one context: libnftables' own work (cache fetch, JSON, evaluation) runs
    without the GIL and can overlap; only the kernel's commit is serialized, per netns, by the kernel."""

    SIZE = 2   # the machines this runs on have few cores; more contexts would only queue in the kernel

    def __init__(self):
        self._free: list[_Context] = []
        self._made = 0
        # A plain lock, and a Condition on it only once a request has to wait: a one-request plugin
        # process never waits, and importing ``threading`` is ~3% of its run.
        self._lock = _thread.allocate_lock()
        self._cond = None

    def _wait(self) -> None:
        if self._cond is None:
            import threading

            self._cond = threading.Condition(self._lock)
        self._cond.wait()

    def _notify(self) -> None:
        if self._cond is not None:
            self._cond.notify()

    @contextlib.contextmanager
    def context(self, make):
        """A free context, or a new one from ``make()`` while fewer than SIZE exist."""
        with self._lock:
            while not self._free and self._made >= self.SIZE:
                self._wait()
            ctx = self._free.pop() if self._free else None
            if ctx is None:
                self._made += 1
        if ctx is None:
            try:
                ctx = make()
            except BaseException:
                with self._lock:
                    self._made -= 1
                    self._notify()
                raise
        try:
            yield ctx
        finally:
            with self._lock:
                self._free.append(ctx)
                self._notify()


# Contexts kept per network namespace (by nsfs inode): freeing one costs ~10 ms once it has run a
# transaction, more than a whole ADD's nft work, and a resident daemon serves many requests per netns.
# A cached context's socket pins its netns, so the inode cannot be reused while it is in this cache;
# the cache is small, so namespaces of finished sandboxes are let go.
_POOLS: "collections.OrderedDict[int, _Pool]" = collections.OrderedDict()
_POOLS_LOCK = _thread.allocate_lock()
_MAX_POOLS = 8


def _pool(key: int) -> _Pool:
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = _Pool()
            while len(_POOLS) > _MAX_POOLS:
                _POOLS.popitem(last=False)
        else:
            _POOLS.move_to_end(key)
        return pool


class Nft:
    """nftables in one netns: ``netns_fd``'s, or (None) the calling thread's at construction. Commands are
    JSON objects ({"add": {...}}) run atomically by ``apply``. The caller keeps ``netns_fd`` open while it
    uses the handle."""

    def __init__(self, netns_fd: int | None = None):
        self._netns_fd = netns_fd
        self._pool = _pool((os.fstat(netns_fd) if netns_fd is not None else os.stat(_SELF)).st_ino)

    def _new_context(self) -> _Context:
        if self._netns_fd is None:
            return _Context()
        from ..syscalls import entered

        with entered(self._netns_fd):  # the context's netlink socket is opened here, in that netns
            return _Context()

    def _context(self):
        return self._pool.context(self._new_context)

    def apply(self, commands: list[dict], what: str = "nftables transaction", handles: bool = False) -> list:
        """Runs ``commands`` as one transaction; returns what they list (with rule handles if ``handles``)."""
        if not commands:
            return []
        with self._context() as ctx:
            ctx.lib.set_handle_output(handles)
            try:
                rc, out, err = ctx.lib.json_cmd({"nftables": commands})
            finally:
                if handles:
                    ctx.lib.set_handle_output(False)
        if rc != 0:
            raise NftError(rc, f"{what} failed: {err.strip()}")
        return (out or {}).get("nftables", []) if isinstance(out, dict) else []

    def run_script(self, script: str, what: str = "nftables script", dry_run: bool = False) -> None:
        """Runs nft text commands as one atomic transaction (``dry_run``: parse and check, change nothing).

        For definitions written once (a table's chains and rules), where nft's own syntax is the clearest form.
        """
        with self._context() as ctx:
            ctx.lib.set_dry_run(dry_run)
            try:
                rc, _, err = ctx.lib.cmd(script)
            finally:
                ctx.lib.set_dry_run(False)
        if rc != 0:
            raise NftError(rc, f"{what} failed: {err.strip()}")

    def list_elements(self, family: str, table: str, set_name: str, kind: str = "set") -> list:
        """Elements of a set or map; an absent table or set reads as empty."""
        try:
            out = self.apply([{"list": {kind: {"family": family, "table": table, "name": set_name}}}],
                             f"list {kind} {family} {table} {set_name}")
        except NftError as exc:
            if exc.missing:
                return []
            raise
        for obj in out:
            if kind in obj:
                return obj[kind].get("elem", [])
        return []

    def table_exists(self, family: str, table: str) -> bool:
        try:
            self.apply([{"list": {"table": {"family": family, "name": table}}}])
        except NftError as exc:
            if exc.missing:
                return False
            raise
        return True


class NftError(CNIError):
    def __init__(self, rc: int, msg: str):
        super().__init__(IO_FAILURE, msg)
        self.rc = rc

    @property
    def missing(self) -> bool:
        text = self.msg.lower()
        return "no such file or directory" in text or self.rc == errno.ENOENT

    @property
    def exists(self) -> bool:
        """EEXIST: a ``create`` met an object or element that is already there."""
        return "file exists" in self.msg.lower() or self.rc == errno.EEXIST
