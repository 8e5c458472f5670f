"""Attaching running processes to networks: a "container" is a process's network namespace, pinned by a
bind mount (``<netns_dir>/pynet-<id>``) so a later DEL reaches that namespace even after the process died
and its PID was reused. The container ID is derived from the namespace inode and the process start time,
and is reused for every further attachment of the same namespace.

A small record per container (``<cache_dir>/pynet/containers/<id>.json``: pid, start time, pin, netns
inode) says who it was; which networks it is on is read from the libcni result cache, the one source of
truth.

Pins do not always last: one made inside `ip netns exec` (a mount namespace of its own per command, a
slave of the host's: nothing mounted in it propagates back) ends with that command, and anyone can unmount
one. So a pin is never trusted blindly: a live process whose pin is gone is pinned again once its start
time and netns inode are the recorded ones; after DEL, the interface is looked for in the namespace (still
there: an error, the attachment kept); and when the namespace cannot be reached at all, DEL runs without
it (host-side state released) and the caller is told the interface was not checked.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field

from cni_plugins import syscalls
from cni_plugins.files import atomic_write
from cni_plugins.processes import stat_fields
from cni_plugins.errors import CNIError, INVALID_ENVIRONMENT, IO_FAILURE, UNKNOWN_CONTAINER

from .cache import CacheEntry
from .chain import Runner
from .netconf import list_networks

DEFAULT_NETNS_DIR = "/run/netns"
PIN_PREFIX = "pynet-"
_HEX = re.compile(r"^[0-9a-f]+$")
PF_KTHREAD = 0x00200000   # /proc/PID/stat flags: a kernel thread
# How long an interface may outlive a successful DEL before it counts as left behind: pynet's daemon
# replies first and removes the veth just after (the kernel's 20-30 ms teardown); more on a loaded host.
DEL_GRACE = 2.0


class AttachError(CNIError):
    pass


# -- processes and namespaces --------------------------------------------------------------------
start_time = syscalls.proc_start_time   # field 22 of /proc/PID/stat, None once the process is gone


def netns_identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def is_pinned(target: str) -> bool:
    """True when ``target`` still holds a namespace (not the empty file under an unmounted pin)."""
    return syscalls.holds_namespace(target)


def _is_kernel_thread(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and bool(int(fields[6]) & PF_KTHREAD)


def initial_netns_inodes() -> set[int]:
    """The nsfs inode of the host's initial network namespace, as far as it can be read: PID 1's and a
    kernel thread's (kthreadd, PID 2 outside PID namespaces: kernel threads all live in the initial netns),
    each by stat or else by readlink (stat of /proc/1/ns/net fails with EACCES on some hosts even for root,
    and there readlink of it can fail too). Empty when none can be read."""
    found = set()
    for pid in (1, 2):
        if pid != 1 and not _is_kernel_thread(pid):
            continue
        path = f"/proc/{pid}/ns/net"
        try:
            found.add(os.stat(path).st_ino)
        except OSError:
            inode = syscalls.ns_link_inode(path)
            if inode is not None:
                found.add(inode)
    return found


def attachable_netns(pid: int, source: str | None = None) -> tuple[int, int]:
    """The identity (nsfs device, inode) of process ``pid``'s network namespace (or of the one at
    ``source``); refused when it is pynet's own or the host's initial one, or when the initial one cannot
    be told at all."""
    try:
        ident = netns_identity(source or f"/proc/{pid}/ns/net")
    except OSError as exc:
        raise AttachError(UNKNOWN_CONTAINER, f"cannot read the network namespace of process {pid}: "
                          f"{exc.strerror}") from None
    if ident == netns_identity(syscalls.SELF_NETNS):
        raise AttachError(INVALID_ENVIRONMENT, f"process {pid} is in pynet's own network namespace; "
                          "refusing to attach it")
    initial = initial_netns_inodes()
    if not initial:
        raise AttachError(INVALID_ENVIRONMENT, f"cannot tell whether process {pid} is in the host's initial "
                          "network namespace (neither /proc/1/ns/net nor a kernel thread's can be read); "
                          "refusing to attach it")
    if ident[1] in initial:   # every namespace file is on the one nsfs device: the inode tells them apart
        raise AttachError(INVALID_ENVIRONMENT, f"process {pid} is in the host's initial network namespace; "
                          "refusing to attach it")
    return ident


def interface_in(netns: str, ifname: str, grace: float = 0.0) -> bool | None:
    """Whether ``ifname`` is in the network namespace at ``netns`` (asked over netlink), waiting up to
    ``grace`` seconds for it to go; None when the namespace cannot be opened."""
    from cni_plugins import netlink
    from cni_plugins.netns import iproute

    try:
        ipr = iproute(netns)
    except OSError:
        return None
    try:
        deadline = time.monotonic() + grace
        while netlink.link_index(ipr, ifname) is not None:
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.02)
        return False
    finally:
        ipr.close()


# -- records ---------------------------------------------------------------------------------------
@dataclass
class Container:
    id: str
    pid: int = 0
    start_time: int | None = None
    netns: str = ""              # the pinned path (or, for foreign entries, the runtime's netns path)
    netns_inode: list[int] = field(default_factory=list)
    created: float = 0.0
    foreign: bool = False        # known only from cache entries another runtime wrote
    entries: list[CacheEntry] = field(default_factory=list)
    name: str = ""               # what the user calls it (--name, a `pynet run` name, else <command>-<pid>)
    warm: bool = False           # a daemon spare's warm attachment no run took yet (pid: the spare's)

    @property
    def alive(self) -> bool:
        if self.foreign:
            from cni_plugins.netns import exists
            return bool(self.netns) and exists(self.netns)
        return bool(self.pid) and start_time(self.pid) == self.start_time

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "pid": self.pid, "startTime": self.start_time,
                "netns": self.netns, "netnsInode": self.netns_inode, "created": self.created,
                **({"warm": True} if self.warm else {})}

    @classmethod
    def from_json(cls, obj: dict) -> "Container":
        return cls(id=obj["id"], pid=int(obj.get("pid") or 0), start_time=obj.get("startTime"),
                   netns=obj.get("netns", ""), netns_inode=list(obj.get("netnsInode") or []),
                   created=float(obj.get("created") or 0), name=str(obj.get("name") or ""),
                   warm=obj.get("warm") is True)

    def describe(self) -> dict:
        # reachable: the netns path holds the namespace now (a lost pin is made again by detach or gc)
        return {"id": self.id, "name": self.name or None, "pid": self.pid or None, "alive": self.alive, "netns": self.netns,
                "reachable": bool(self.netns) and is_pinned(self.netns), "pynet": not self.foreign,
                "attachments": [describe_entry(e) for e in self.entries], **({"warm": True} if self.warm else {})}


def describe_entry(entry: CacheEntry) -> dict:
    result = entry.result or {}
    ifaces = result.get("interfaces") or []
    mac = next((i.get("mac", "") for i in ifaces if i.get("name") == entry.ifname and i.get("sandbox")), "")
    return {"network": entry.network, "ifname": entry.ifname, "mac": mac,
            "addresses": [ip.get("address") for ip in result.get("ips") or [] if ip.get("address")],
            "portMappings": entry.capability_args.get("portMappings") or [],
            "containerID": entry.container_id, "netns": entry.netns, "result": result}


@dataclass
class DetachPlan:
    """What Attachments.prepare_detach found: the container and, per chosen attachment, (entry, the netns
    path to DEL in or "", why it is "")."""
    container: Container
    reached: list


INTERFACE_REMOVED = "removed"   # DEL ran in the namespace and the interface is gone from it
INTERFACE_UNKNOWN = "unknown"   # the namespace could not be reached: DEL ran without it (host side released)
INTERFACE_PRESENT = "present"   # DEL succeeded but the interface is still there: an error, the entry is kept


@dataclass
class Detached:
    """What one detach did to one attachment: ``interface`` is one of INTERFACE_*, ``reason`` says why
    when it is not INTERFACE_REMOVED."""
    entry: CacheEntry
    interface: str
    reason: str = ""


class InterfaceStayed(AttachError):
    """Detach ran DEL, and an interface is still in its container (the plugins said success): ``done``
    says what became of every chosen attachment, those that did go included."""

    def __init__(self, done: list[Detached]):
        super().__init__(IO_FAILURE, "; ".join(d.reason for d in done if d.interface == INTERFACE_PRESENT))
        self.done = done


def default_name(pid: int) -> str:
    """The name of a process attached without one: ``<command>-<pid>`` (``sleep-1234``)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in f.read().strip()) or "proc"
    except OSError:
        comm = "proc"
    return f"{comm.strip('-.') or 'proc'}-{pid}"


class Attachments:
    def __init__(self, runner: Runner, netns_dir: str = DEFAULT_NETNS_DIR):
        self.runner = runner
        self.netns_dir = netns_dir
        self.records_dir = os.path.join(runner.cache_dir, "pynet", "containers")

    @contextlib.contextmanager
    def _locked(self):
        """One attach/detach/gc at a time per cache dir: pins and records are read-modify-write."""
        os.makedirs(self.records_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.records_dir, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- records -----------------------------------------------------------------------------------
    def _record_path(self, cid: str) -> str:
        return os.path.join(self.records_dir, f"{cid}.json")

    def _load(self, cid: str) -> Container | None:
        try:
            with open(self._record_path(cid)) as f:
                return Container.from_json(json.load(f))
        except (OSError, ValueError, KeyError):
            return None

    def _save(self, c: Container) -> None:
        os.makedirs(self.records_dir, mode=0o700, exist_ok=True)
        atomic_write(self._record_path(c.id), json.dumps(c.to_json()))

    def _records(self) -> list[Container]:
        try:
            names = sorted(os.listdir(self.records_dir))
        except FileNotFoundError:
            return []
        return [c for c in (self._load(n[:-5]) for n in names if n.endswith(".json") and n[0] != ".") if c]

    def containers(self) -> list[Container]:
        """pynet's containers, and every other container ID found in the result cache."""
        entries = self.runner.cache.entries()
        by_id: dict[str, Container] = {c.id: c for c in self._records()}
        for entry in entries:
            c = by_id.get(entry.container_id)
            if c is None:
                c = by_id[entry.container_id] = Container(id=entry.container_id, netns=entry.netns, foreign=True)
            c.entries.append(entry)
        return list(by_id.values())

    # -- resolving -----------------------------------------------------------------------------------
    def _container_of_pid(self, pid: int) -> Container | None:
        """The record for a live process: same PID and start time, or the same (pinned) namespace."""
        st = start_time(pid)
        if st is None:
            return None
        try:
            ident = list(netns_identity(f"/proc/{pid}/ns/net"))
        except OSError:
            ident = None
        for c in self._records():
            if c.pid == pid and c.start_time == st:
                return c
            if ident and c.netns_inode == ident and is_pinned(c.netns):
                return c
        return None

    def container_of_pid(self, pid: int) -> Container | None:
        """The container process ``pid`` is attached as, if any."""
        return self._container_of_pid(pid)

    def resolve(self, ref: str) -> Container:
        """A container from its name, a PID or a container ID or unique ID prefix (pynet's, or any
        runtime's in the result cache)."""
        c = self._load(ref) if _HEX.match(ref) else None   # a record's own ID: no listing of them all
        if c is not None:
            c.entries = self.runner.cache.entries(container_id=c.id)
            return c
        by_id = {c.id: c for c in self.containers()}
        if ref in by_id:
            return by_id[ref]
        named = [c for c in by_id.values() if c.name and c.name == ref]
        if named:
            return named[0]
        prefixed = [cid for cid in by_id if cid.startswith(ref)]
        if ref.isdigit():
            pid = int(ref)
            c = self._container_of_pid(pid)
            if c is not None:
                return by_id.get(c.id, c)
            stale = sorted((c for c in by_id.values() if not c.foreign and c.pid == pid),
                           key=lambda c: c.created, reverse=True)
            if stale and start_time(pid) is None:
                return stale[0]  # the process exited; its pinned namespace is still there to clean
            if stale:
                raise AttachError(UNKNOWN_CONTAINER, f"process {pid} is not the one attached as container "
                                  f"{stale[0].id} (that process has exited and the PID was reused); "
                                  f"use the container ID: pynet detach {stale[0].id}")
            # Hex IDs can be all digits: no process with attachments, so it may be an ID prefix.
            if len(prefixed) == 1:
                return by_id[prefixed[0]]
            if start_time(pid) is None:
                raise AttachError(UNKNOWN_CONTAINER, f"no process {pid} and no container with that ID")
            raise AttachError(UNKNOWN_CONTAINER, f"process {pid} has no attachments")
        if len(prefixed) == 1:
            return by_id[prefixed[0]]
        raise AttachError(UNKNOWN_CONTAINER, f"no container {ref!r}"
                          + (f" (ambiguous ID prefix: {', '.join(sorted(prefixed))})" if prefixed else
                             " (a name, an ID or unique ID prefix, or a PID; `pynet ls` lists them)"))

    # -- pins --------------------------------------------------------------------------------------
    def _pin(self, pid: int, st: int, ident, target: str, source: str | None = None) -> bool:
        """Pins process ``pid``'s network namespace (or the one at ``source``) at ``target`` unless it
        already holds it; False (nothing left at ``target``) when the process is not the one started at
        ``st`` in namespace ``ident``."""
        ident = tuple(ident)
        if is_pinned(target) and netns_identity(target) == ident:
            return True
        try:
            # Shared, as `ip netns` makes /run/netns: the pin reaches the mount namespaces made from this
            # one before it (never the other way: one made under `ip netns exec` ends with that command).
            os.makedirs(self.netns_dir, exist_ok=True)
            syscalls.make_shared(self.netns_dir)
            if os.path.lexists(target):
                syscalls.unpin(target)
            syscalls.pin(source or f"/proc/{pid}/ns/net", target)
        except OSError as exc:
            if start_time(pid) != st:
                return False
            raise AttachError(INVALID_ENVIRONMENT, f"cannot pin the network namespace of process {pid} "
                              f"at {target}: {exc}") from None
        # The pin must hold the namespace we checked, not one a reused PID (or a setns) points at meanwhile.
        if netns_identity(target) != ident or start_time(pid) != st:
            syscalls.unpin(target)
            return False
        return True

    def _reach(self, c: Container, entry: CacheEntry | None = None) -> tuple[str, str]:
        """(path, "") of the container's network namespace (another runtime's: the entry's) as it can be
        reached now, pinning a live process again when its pin is gone; ("", why) when it cannot be."""
        if c.foreign:
            netns = entry.netns if entry is not None else c.netns
            if netns and is_pinned(netns):
                return netns, ""
            return "", f"its network namespace {netns or '(none recorded)'} is gone"
        pin = c.netns
        if is_pinned(pin) and (not c.netns_inode or list(netns_identity(pin)) == c.netns_inode):
            return pin, ""
        if start_time(c.pid) is None or start_time(c.pid) != c.start_time:
            return "", f"process {c.pid} has exited and the pin {pin} is gone"
        if not c.netns_inode:
            return "", f"the pin {pin} is gone and no namespace identity was recorded to pin process {c.pid} again"
        if not self._pin(c.pid, c.start_time, c.netns_inode, pin):
            return "", (f"the pin {pin} is gone and process {c.pid} is no longer in the network namespace "
                        "it was attached in")
        return pin, ""

    def reach(self, c: Container, entry: CacheEntry | None = None) -> tuple[str, str]:
        """As _reach, under the lock (it may pin again)."""
        with self._locked():
            return self._reach(c, entry)

    # -- attach --------------------------------------------------------------------------------------
    def _pin_process(self, pid: int, name: str | None = None, cid: str | None = None,
                     source: str | None = None, warm: bool = False) -> Container:
        st = start_time(pid)
        if st is None:
            raise AttachError(UNKNOWN_CONTAINER, f"no process {pid}")
        ident = attachable_netns(pid, source)
        cid = cid or hashlib.sha256(f"{ident[0]}:{ident[1]}:{pid}:{st}".encode()).hexdigest()[:16]
        target = os.path.join(self.netns_dir, PIN_PREFIX + cid)
        if not self._pin(pid, st, ident, target, source):
            raise AttachError(UNKNOWN_CONTAINER, f"process {pid} exited while being attached")
        c = Container(id=cid, pid=pid, start_time=st, netns=target, netns_inode=list(ident), created=time.time(),
                      name=name or default_name(pid), warm=warm)
        self._save(c)
        return c

    def _free_ifname(self, c: Container, pid: int) -> str:
        used = {e.ifname for e in self.runner.cache.entries(container_id=c.id)}
        try:
            with open(f"/proc/{pid}/net/dev") as f:
                used.update(line.split(":")[0].strip() for line in f.readlines()[2:])
        except OSError:
            pass
        return next(f"eth{n}" for n in range(1000) if f"eth{n}" not in used)

    def attach(self, pid: int, network, ifname: str | None = None, capability_args: dict | None = None,
               cni_args=None, name: str | None = None, container_id: str | None = None, before_step=None
               ) -> tuple[Container, CacheEntry]:
        """``name``/``container_id``: what a process not attached yet is called (default: <command>-<pid>,
        a hash of its netns and process); a name another container has is refused. ``before_step``: see
        Runner.add; it runs under this object's lock, so what it waits for must not need that lock."""
        with self._locked():
            return self._attach(pid, network, ifname, capability_args, cni_args, name, container_id, before_step)

    def _attach(self, pid, network, ifname, capability_args, cni_args, name=None, container_id=None,
                before_step=None):
        conf = self.runner.network(network)
        c = self._container_of_pid(pid)
        fresh = c is None
        if fresh:
            self._check_name_free(name)
            c = self._pin_process(pid, name, container_id)
        elif not c.alive and c.pid != pid:
            # Another process of the same (still pinned) namespace now stands for the container.
            c.pid, c.start_time = pid, start_time(pid)
            self._save(c)
        if not fresh:
            netns, why = self._reach(c)
            if not netns:
                raise AttachError(UNKNOWN_CONTAINER, f"cannot reach the network namespace of container {c.id}: "
                                  f"{why}; detach it first: pynet detach {c.id}")
        ifname = ifname or self._free_ifname(c, pid)
        if self.runner.cached(conf.name, c.id, ifname):
            raise AttachError(INVALID_ENVIRONMENT, f"container {c.id} (process {pid}) already has {ifname} "
                              f"on network {conf.name!r}")
        try:
            self.runner.add(conf, c.id, c.netns, ifname, capability_args, cni_args, before_step=before_step)
        except BaseException:
            if fresh:
                self._forget_if_unused(c)
            raise
        return c, self.runner.cached(conf.name, c.id, ifname)

    # -- warm attachments: the request-independent part of a chain run ahead --------------------------
    def warm(self, netns: str, owner: int, network, ifname: str, container_id: str, name: str,
             steps: int) -> CacheEntry:
        """ADD of the chain's first ``steps`` plugins for the network namespace at ``netns`` (no process is
        in it yet), as container ``container_id`` owned by process ``owner``: the container is alive while
        ``owner`` is, so gc frees what the part holds (its lease) once the owner died without adopt() or
        detach()."""
        with self._locked():
            conf = self.runner.network(network)
            c = self._pin_process(owner, name, container_id, source=netns, warm=True)
            try:
                self.runner.add(conf, c.id, c.netns, ifname, steps=slice(steps))
            except BaseException:
                self._forget_if_unused(c)
                raise
            return self.runner.cached(conf.name, c.id, ifname)

    def adopt(self, warm: CacheEntry, pid: int, steps: int, network=None, capability_args: dict | None = None,
              cni_args=None, name: str | None = None, before_step=None) -> tuple[Container, CacheEntry]:
        """The rest of a warm attachment (``warm``: what warm() returned, ``steps`` its part) for process
        ``pid``, now in its namespace: the container becomes ``pid``'s, called ``name``, and the chain goes on
        from the cached result, so its cache record ends as a whole ADD's. A failure undoes it all.
        ``network``: the network as loaded now (default: loaded here)."""
        with self._locked():
            conf = self.runner.network(network or warm.network)
            c = self._load(warm.container_id)
            if c is None or conf.bytes != warm.config:
                raise AttachError(INVALID_ENVIRONMENT, f"warm attachment {warm.container_id} on network "
                                  f"{warm.network!r} is gone or its network changed")
            self._check_name_free(name, c.id)
            c.pid, c.start_time, c.name, c.warm = pid, start_time(pid), name or default_name(pid), False
            self._save(c)
            try:
                self.runner.add(conf, c.id, c.netns, warm.ifname, capability_args, cni_args, before_step,
                                steps=slice(steps, None), prev_result=warm.result)
            except BaseException:
                self._forget_if_unused(c)
                raise
            return c, self.runner.cached(conf.name, c.id, warm.ifname)

    def _check_name_free(self, name: str | None, own_id: str | None = None) -> None:
        if not name:
            return
        other = next((o for o in self._records() if o.name == name and o.id != own_id), None)
        if other is not None:
            raise AttachError(INVALID_ENVIRONMENT, f"the name {name!r} is taken by container {other.id} "
                              f"(process {other.pid})")

    # -- detach --------------------------------------------------------------------------------------
    def _forget_if_unused(self, c: Container) -> bool:
        if c.foreign or self.runner.cache.entries(container_id=c.id):
            return False
        if c.netns and os.path.basename(c.netns).startswith(PIN_PREFIX):
            syscalls.unpin(c.netns)
            self._release_pin_dir()
        try:
            os.unlink(self._record_path(c.id))
        except FileNotFoundError:
            pass
        return True

    def _release_pin_dir(self) -> None:
        """The pin dir's bind mount on itself (made shared for the pins, see _pin) goes with its last pin,
        so a temp pin dir can be removed; /run/netns stays shared, as `ip netns` leaves it."""
        if os.path.realpath(self.netns_dir) == DEFAULT_NETNS_DIR:
            return
        try:
            if not os.listdir(self.netns_dir):
                syscalls.release_shared(self.netns_dir)
        except OSError:
            pass   # gone already, or not ours to unmount: nothing is left pinned either way

    def detach(self, ref: str, network: str | None = None, ifname: str | None = None,
               after_step=None) -> list[Detached]:
        """DEL of the chosen attachments, each checked afterwards (see Detached); raises InterfaceStayed
        when an interface is still in the container after its DEL (that attachment stays cached).
        ``after_step``: see Runner.delete."""
        return self.run_detach(self.prepare_detach(ref, network, ifname), after_step)

    def prepare_detach(self, ref: str, network: str | None = None, ifname: str | None = None) -> "DetachPlan":
        """The first part of detach, under the lock: the container and its chosen attachments, each with
        its namespace as it can be reached now (AttachError when there is none)."""
        with self._locked():
            c = self.resolve(ref)
            chosen = [e for e in c.entries if (network is None or e.network == network)
                      and (ifname is None or e.ifname == ifname)]
            if not chosen:
                what = " ".join(filter(None, [f"on network {network!r}" if network else "",
                                              f"with interface {ifname!r}" if ifname else ""]))
                raise AttachError(UNKNOWN_CONTAINER, f"container {c.id} has no attachment {what}".rstrip())
            # Our pin (checked, re-made for a live process), never /proc/PID of a possibly reused PID; no
            # netns at all when it cannot be reached (plugins then release what they hold on the host).
            return DetachPlan(c, [(entry, *self._reach(c, entry)) for entry in chosen])

    def run_detach(self, plan: "DetachPlan", after_step=None, before_relock=None) -> list[Detached]:
        """The rest of detach: the DELs, without the lock (DEL is idempotent, and a veth's removal waits
        ~25 ms for the kernel: other containers attach meanwhile), then the records under it again.
        ``before_relock()``: called once the DELs are over (done or failed), before the lock is taken."""
        done: list[Detached] = []
        try:
            for entry, netns, why in plan.reached:
                done.append(self._delete_checked(entry, netns, why, after_step))
        finally:
            if before_relock is not None:
                before_relock()
            with self._locked():
                for d in done:
                    if d.interface == INTERFACE_PRESENT:
                        self.runner.cache.write(d.entry)   # still attached: listed, and detach can be run again
                if len(done) == len(plan.reached):
                    self._forget_if_unused(plan.container)
        if any(d.interface == INTERFACE_PRESENT for d in done):
            raise InterfaceStayed(done)
        return done

    def _delete_checked(self, entry: CacheEntry, netns: str, why: str, after_step=None) -> Detached:
        self.runner.delete(entry.network, entry.container_id, entry.ifname, netns=netns, after_step=after_step)
        present = interface_in(netns, entry.ifname, DEL_GRACE) if netns else None
        if present:
            return Detached(entry, INTERFACE_PRESENT, f"{entry.ifname} is still in container "
                            f"{entry.container_id} (netns {netns}) after DEL on network {entry.network!r}: "
                            "the plugins reported success without removing it")
        if present is None:
            return Detached(entry, INTERFACE_UNKNOWN, why or f"the network namespace {netns} went away during DEL")
        return Detached(entry, INTERFACE_REMOVED)

    # -- gc ------------------------------------------------------------------------------------------
    def gc(self, networks) -> dict:
        """Deletes the attachments of dead containers on each network, runs the GC verb with the live ones,
        and drops dead containers' pins and records. ``networks``: names or NetworkConfigLists."""
        with self._locked():
            return self._gc(networks)

    def _gc(self, networks) -> dict:
        containers = self.containers()
        report: dict = {"removed": [], "errors": []}
        for c in containers:
            if c.foreign or is_pinned(c.netns):
                continue
            if c.alive:
                try:
                    self._reach(c)        # a lost pin of a live process is made again
                except CNIError as err:
                    report["errors"].append(str(err))
            elif c.netns and os.path.basename(c.netns).startswith(PIN_PREFIX):
                # The empty file a lost pin leaves: gone, it reads as "namespace gone" to every plugin
                # (the reference ones fail DEL on a path that is not a namespace).
                syscalls.unpin(c.netns)
        valid = [e.attachment() for c in containers if c.alive for e in c.entries]
        names = {n.name for n in list_networks(self.runner.config_dir)[0]}
        for network in networks:
            try:
                removed = self.runner.gc(network, valid)
                report["removed"].extend(describe_entry(e) for e in removed)
            except CNIError as err:
                report["errors"].append(str(err))
        # Dead attachments on networks no longer defined: DEL with the config cached at ADD time.
        for c in containers:
            for e in c.entries:
                if c.alive or e.network in names:
                    continue
                try:
                    self.runner.delete(e.network, e.container_id, e.ifname)
                    report["removed"].append(describe_entry(e))
                except CNIError as err:
                    report["errors"].append(f"failed to delete stale attachment {e.container_id} {e.ifname} "
                                            f"on network {e.network!r}: {err}")
        for c in containers:
            if not c.foreign and not c.alive:
                self._forget_if_unused(c)
        # Records whose attachments vanished some other way (cache removed by hand) are dropped too.
        for c in self._records():
            if not c.alive:
                self._forget_if_unused(c)
        return report
