"""Per-container cgroups on cgroup v2, v1, or a hybrid of both.

Every hierarchy found in /proc/self/mountinfo gets a ``pynet/<id>`` directory under its *root* (never
relative to /proc/self/cgroup: with no systemd the launcher's own cgroup is arbitrary). Limits go to the
hierarchy that owns the controller: on pure v2 the unified tree, on v1/hybrid the controller's own mount;
a controller-less cgroup2 (hybrid) is still joined, for tracking and cgroup.kill.
"""

from __future__ import annotations

import errno
import os
import time
from .value_objects import REQUIRED, Fields

V1_CONTROLLERS = {"memory", "pids", "cpu", "cpuacct", "cpuset", "freezer", "devices", "blkio"}


class CgroupError(Exception):
    pass


class Hierarchy(Fields):
    FIELDS = {"mountpoint": REQUIRED, "version": REQUIRED,
              "controllers": REQUIRED}   # frozenset; v1: the mount's controllers; v2: cgroup.controllers of the root


def _v2_controllers(mnt: str) -> frozenset:
    try:
        with open(os.path.join(mnt, "cgroup.controllers")) as c:
            return frozenset(c.read().split())
    except OSError:
        return frozenset()


def hierarchies(mountinfo: str | None = None, v2_controllers=_v2_controllers) -> list[Hierarchy]:
    """The cgroup hierarchies mounted here (``mountinfo`` text and ``v2_controllers`` are for tests)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as fh:
            mountinfo = fh.read()
    out, seen = [], set()
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        fstype, mnt, root = rfields[0], fields[4], fields[3]
        if root != "/" or mnt in seen:
            continue
        if fstype == "cgroup2":
            out.append(Hierarchy(mnt, 2, v2_controllers(mnt)))
            seen.add(mnt)
        elif fstype == "cgroup":
            opts = set(rfields[2].split(","))
            ctrls = frozenset(opts & V1_CONTROLLERS)
            if ctrls or any(o.startswith("name=") for o in opts):
                out.append(Hierarchy(mnt, 1, ctrls))
                seen.add(mnt)
    return out


def container_mounts(hs: list[Hierarchy] | None = None) -> list[tuple]:
    """How each hierarchy is mounted again inside a container: (dir under /sys/fs/cgroup, fstype, options);
    one ("", "cgroup2", "") entry when the unified tree is /sys/fs/cgroup itself."""
    hs = hierarchies() if hs is None else hs
    out = []
    for h in hs:
        if not h.mountpoint.startswith("/sys/fs/cgroup"):
            continue
        name = os.path.relpath(h.mountpoint, "/sys/fs/cgroup")
        if h.version == 2:
            out.append(("" if name == "." else name, "cgroup2", ""))
        else:
            opts = ",".join(sorted(h.controllers)) if h.controllers else f"none,name={name}"
            out.append((name, "cgroup", opts))
    if any(n == "" for n, _, _ in out):
        return [m for m in out if m[0] == ""]
    return out


def controller_mounted(name: str) -> bool:
    return any(name in h.controllers for h in hierarchies())


def layout(hs: list[Hierarchy] | None = None) -> str:
    hs = hierarchies() if hs is None else hs
    v1 = any(h.version == 1 for h in hs)
    v2 = any(h.version == 2 for h in hs)
    return "hybrid" if v1 and v2 else "v1" if v1 else "v2" if v2 else "none"


# -- the migration warm-up ------------------------------------------------------------------------------
# Moving a process into a cgroup (a write to cgroup.procs) takes the kernel's global threadgroup rwsem for
# writing, and the first writer after a quiet period waits one RCU grace period (~9 ms here, the biggest
# single cost of a container start); writers within the next grace period pass at once. So `pynet run`
# starts that wait first thing, in a forked child that moves itself into the cgroup it already is in ("0"
# names the writer; nothing changes, and only that child could be affected), and join() lets the
# container's real move follow it: the grace period passes while the launcher imports and prepares.
_warmup = None   # (owner pid, warm-up child pid)


def start_warmup() -> None:
    """Forks the warm-up child (best effort: any failure only forgoes the saving); once per process."""
    global _warmup
    if _warmup is not None and _warmup[0] == os.getpid():
        return
    try:
        child = os.fork()
    except OSError:
        return
    if child == 0:
        try:
            procs = _own_procs_file()
            if procs:
                _noop_self_move(procs)
        finally:
            os._exit(0)
    _warmup = (os.getpid(), child)


def _own_procs_file() -> str | None:
    """cgroup.procs of this process's cgroup in the first hierarchy with controllers."""
    with open("/proc/self/cgroup") as fh:
        own = dict(line.rstrip("\n").split(":", 2)[1:] for line in fh if line.count(":") >= 2)
    for h in hierarchies(v2_controllers=lambda _m: frozenset()):
        if h.version == 1 and not h.controllers:
            continue
        rel = own.get("") if h.version == 2 else own.get(",".join(sorted(h.controllers)))
        if rel is not None:
            return os.path.join(h.mountpoint, rel.lstrip("/"), "cgroup.procs")
    return None


def _noop_self_move(procs: str | None) -> None:
    if procs is None:
        return
    fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _wait_warmup() -> None:
    global _warmup
    if _warmup is not None:
        owner, child = _warmup
        _warmup = None
        if owner == os.getpid():
            try:
                os.waitpid(child, 0)
            except ChildProcessError:
                pass


def _write(path: str, value) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(str(value))
    except OSError as exc:
        if exc.filename is None:   # the write itself failed: name the file too
            exc.filename = path
        raise


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


class Limits(Fields):
    FIELDS = {"memory": None,        # bytes
              "cpus": None, "pids": None, "cpuset_cpus": None}

    def any(self) -> bool:
        return any(v is not None for v in (self.memory, self.cpus, self.pids, self.cpuset_cpus))


class ContainerCgroups(Fields):
    """The cgroup directories of one container: paths = {"memory": path, ..., "unified": path}."""
    FIELDS = {"paths": dict}

    def controller(self, name: str) -> str | None:
        return self.paths.get(name) or (self.paths.get("unified") if self._v2_has(name) else None)

    def _v2_has(self, name: str) -> bool:
        path = self.paths.get("unified")
        ctrls = _read(os.path.join(path, "cgroup.controllers")) if path else None
        return bool(ctrls) and name in ctrls.split()

    def all_dirs(self) -> list[str]:
        return list(dict.fromkeys(self.paths.values()))

    def v1_tasks_files(self) -> list[str]:
        """The `tasks` files of the directories in v1 hierarchies (all but the cgroup2 one): a
        single-threaded process writes "0" there to move itself (oci.init.join_v1_self)."""
        return [os.path.join(p, "tasks") for p in self.all_dirs() if p != self.paths.get("unified")]

    def open_v2_dir(self) -> int | None:
        """An fd of the cgroup2 directory (to fork a process into it: syscalls.fork_into_cgroup), or None
        without one."""
        path = self.paths.get("unified")
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if path else None

    def join(self, pid: int) -> None:
        _wait_warmup()
        for path in self.all_dirs():
            _write(os.path.join(path, "cgroup.procs"), pid)

    def pids(self) -> set[int]:
        found = set()
        for path in self.all_dirs():
            text = _read(os.path.join(path, "cgroup.procs")) or ""
            found.update(int(p) for p in text.split())
        return found

    def kill_all(self) -> None:
        """SIGKILL whatever is left in the container's cgroups (only processes of this container)."""
        for path in self.all_dirs():
            kill_file = os.path.join(path, "cgroup.kill")
            if os.path.exists(kill_file):
                try:
                    _write(kill_file, 1)
                except OSError:
                    pass
        import signal   # here: imported early, before start_warmup(), it would delay the warm-up

        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 5.0, parents: bool = True) -> None:
        """Kills stragglers and removes every directory, and the parents when empty (``parents``);
        idempotent. (The processes are looked for only when a directory is busy: after a container's
        last process, reading every hierarchy's cgroup.procs first costs more than the rmdirs.)"""
        deadline = time.monotonic() + timeout
        pending = self.all_dirs()
        while pending:
            left = []
            for path in pending:
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove cgroup {path}: {exc.strerror}") from None
                    left.append(path)
            pending = left
            if pending:
                self.kill_all()
                time.sleep(0.01)
        # The shared pynet/ parent goes with its last container, so nothing of ours outlives its use.
        for parent in {os.path.dirname(p) for p in self.all_dirs()} if parents else ():
            try:
                os.rmdir(parent)
            except OSError:
                pass  # other containers still live there (EBUSY), or it is already gone

    def oom_killed(self) -> bool:
        mem = self.controller("memory")
        if not mem:
            return False
        for name in ("memory.events", "memory.oom_control"):
            text = _read(os.path.join(mem, name))
            if text:
                for line in text.splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
        return False

    def stats(self) -> dict:
        out = {}
        mem = self.controller("memory")
        if mem:
            usage = _read(os.path.join(mem, "memory.current")) or _read(os.path.join(mem, "memory.usage_in_bytes"))
            limit = _read(os.path.join(mem, "memory.max")) or _read(os.path.join(mem, "memory.limit_in_bytes"))
            out["memory_bytes"] = int(usage) if usage and usage.isdigit() else None
            out["memory_limit"] = int(limit) if limit and limit.isdigit() and int(limit) < 1 << 62 else None
        pids = self.controller("pids")
        if pids:
            cur, mx = _read(os.path.join(pids, "pids.current")), _read(os.path.join(pids, "pids.max"))
            out["pids"] = int(cur) if cur else None
            out["pids_limit"] = int(mx) if mx and mx.isdigit() else None
        cpuacct = self.paths.get("cpuacct")
        usage = _read(os.path.join(cpuacct, "cpuacct.usage")) if cpuacct else None
        if usage is None and self.paths.get("unified"):
            stat = _read(os.path.join(self.paths["unified"], "cpu.stat")) or ""
            for line in stat.splitlines():
                if line.startswith("usage_usec "):
                    usage = str(int(line.split()[1]) * 1000)
        out["cpu_ns"] = int(usage) if usage else None
        return out


def _ensure_parent_v1(h: Hierarchy, parent: str) -> None:
    os.makedirs(parent, exist_ok=True)
    if "cpuset" in h.controllers:
        # A v1 cpuset child starts empty and refuses tasks until cpus/mems are filled in.
        for key in ("cpuset.cpus", "cpuset.mems"):
            if not _read(os.path.join(parent, key)):
                _write(os.path.join(parent, key), _read(os.path.join(h.mountpoint, key)))


def _enable_v2(h: Hierarchy, parent: str, wanted: set[str]) -> None:
    os.makedirs(parent, exist_ok=True)
    enable = " ".join(f"+{c}" for c in sorted(wanted & h.controllers))
    if not enable:
        return
    for path in (h.mountpoint, parent):
        try:
            _write(os.path.join(path, "cgroup.subtree_control"), enable)
        except OSError as exc:
            if exc.errno in _VANISHED:
                raise   # the parent is being removed: _make_child makes it again
            raise CgroupError(f"cannot enable {enable} in {path}: {exc.strerror}") from None


# A parent directory that another container's removal takes away under us: gone (ENOENT), or still there
# but dying (ENODEV: the kernel refuses files and children of a cgroup being removed).
_VANISHED = (errno.ENOENT, errno.ENODEV)


def _make_child(path: str, prepare_parent, attempts: int = 50, parent_kept: bool = False) -> None:
    """mkdir of a container's cgroup, preparing its parent first. The last container of another launcher
    may remove the empty parent at any point until our child exists in it (while it is being prepared,
    or just before the mkdir); then the parent is simply made again. Once the child exists, the parent
    is not empty and stays. (makedirs reports that race as EEXIST: it found the parent made by another
    launcher, then not a directory any more.) Our own child existing already is an error: another
    container has that cgroup. ``parent_kept``: the parent needs nothing but to exist, and usually does
    (kept between containers): the mkdir is tried before preparing it."""
    if parent_kept:
        try:
            os.mkdir(path)
            return
        except OSError as exc:
            if exc.errno not in _VANISHED:
                raise
    for attempt in range(attempts):
        try:
            prepare_parent()
            os.mkdir(path)
            return
        except OSError as exc:
            vanished = exc.errno in _VANISHED or (exc.errno == errno.EEXIST and exc.filename != path)
            if not vanished or attempt == attempts - 1:
                raise


def create(container_id: str, limits: Limits, devices=(), rel: str | None = None, rules=None) -> ContainerCgroups:
    """Makes pynet/<id> (or ``rel``, a path under each hierarchy's root) in every hierarchy, writes the
    limits and the device allowlist (the default one plus ``devices``, launcher.devices.Device; or
    ``rules``, devices.Rule, as given): through the v1 devices controller where one is mounted, else
    through a device program on cgroup2; on failure removes what it made."""
    from . import devices as devs

    rules = devs.rules_for(devices) if rules is None else list(rules)
    hs = hierarchies()
    cg = ContainerCgroups()
    v2_limits = {"memory", "pids", "cpu", "cpuset"}
    try:
        for h in hs:
            path = os.path.join(h.mountpoint, rel.strip("/") if rel else os.path.join("pynet", container_id))
            parent = os.path.dirname(path)
            if h.version == 1:
                _make_child(path, lambda: _ensure_parent_v1(h, parent), parent_kept="cpuset" not in h.controllers)
                key = ",".join(sorted(h.controllers)) or os.path.basename(h.mountpoint)
                for c in h.controllers or {key}:
                    cg.paths[c] = path
                if "devices" in h.controllers:
                    devs.apply_v1(path, rules)
                if "cpuset" in h.controllers:
                    _write(os.path.join(path, "cpuset.mems"), _read(os.path.join(parent, "cpuset.mems")))
                    _write(os.path.join(path, "cpuset.cpus"), limits.cpuset_cpus or _read(os.path.join(parent, "cpuset.cpus")))
            else:
                _make_child(path, lambda: _enable_v2(h, parent, v2_limits))
                cg.paths["unified"] = path
                # A hybrid's v1 devices controller enforces the rules already (as runc relies on it there):
                # the device program (a verifier run, ~1 ms) only where no such controller is mounted.
                if not any("devices" in other.controllers for other in hs if other.version == 1):
                    try:
                        devs.attach_v2(path, rules)
                    except OSError as exc:
                        raise CgroupError(f"cannot attach the device filter to {path}: {exc.strerror}") from None
        _apply(cg, limits)
    except BaseException:
        try:
            cg.remove()
        except CgroupError:
            pass
        raise
    return cg


def _apply(cg: ContainerCgroups, limits: Limits) -> None:
    def need(ctrl):
        path = cg.controller(ctrl)
        if path is None:
            raise CgroupError(f"no {ctrl} cgroup controller available for this limit")
        return path

    try:
        if limits.memory is not None:
            path = need("memory")
            if os.path.exists(os.path.join(path, "memory.max")):
                _write(os.path.join(path, "memory.max"), limits.memory)
                if os.path.exists(os.path.join(path, "memory.swap.max")):
                    _write(os.path.join(path, "memory.swap.max"), 0)
            else:
                _write(os.path.join(path, "memory.limit_in_bytes"), limits.memory)
                if os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):
                    _write(os.path.join(path, "memory.memsw.limit_in_bytes"), limits.memory)
        if limits.pids is not None:
            _write(os.path.join(need("pids"), "pids.max"), limits.pids if limits.pids > 0 else "max")
        if limits.cpus is not None:
            path = need("cpu")
            quota = int(limits.cpus * 100000)
            if os.path.exists(os.path.join(path, "cpu.max")):
                _write(os.path.join(path, "cpu.max"), f"{quota} 100000")
            else:
                _write(os.path.join(path, "cpu.cfs_period_us"), 100000)
                _write(os.path.join(path, "cpu.cfs_quota_us"), quota)
        if limits.cpuset_cpus is not None and "cpuset" not in cg.paths:
            _write(os.path.join(need("cpuset"), "cpuset.cpus"), limits.cpuset_cpus)
    except OSError as exc:
        name = os.path.basename(str(exc.filename))
        flag = next((f for prefix, f in _LIMIT_FLAGS if name.startswith(prefix)), "limit")
        value = {"--memory": limits.memory, "--pids-limit": limits.pids, "--cpus": limits.cpus,
                 "--cpuset-cpus": limits.cpuset_cpus}.get(flag)
        raise CgroupError(f"cannot set {flag} {value!r} ({name}): {exc.strerror}") from None


_LIMIT_FLAGS = (("memory.", "--memory"), ("pids.", "--pids-limit"), ("cpuset.", "--cpuset-cpus"),
                ("cpu.", "--cpus"))


def from_paths(paths: dict) -> ContainerCgroups:
    return ContainerCgroups(dict(paths))


class LimitError(ValueError):
    """A limit flag's value that cannot be used; the message names the flag and the value."""


MIN_MEMORY = 6 << 20   # Docker's minimum --memory: below it the container's own start-up is OOM-killed


def check_memory(text: str | None) -> int | None:
    """--memory TEXT in bytes (None: no limit); at least MIN_MEMORY."""
    if text is None:
        return None
    try:
        value = parse_size(text)
    except (ValueError, OverflowError):
        raise LimitError(f"invalid --memory {text!r}: expected a size like 64m, 1g, 512k") from None
    if value < MIN_MEMORY:
        raise LimitError(f"invalid --memory {text!r}: the minimum is 6m ({MIN_MEMORY} bytes)")
    return value


def check_cpus(value) -> float | None:
    """--cpus: more than 0 (at least 0.01) and at most the number of CPUs."""
    if value is None:
        return None
    n = os.cpu_count() or 1
    if not 0.01 <= value <= n:   # also NaN
        raise LimitError(f"invalid --cpus {value!r}: the range is 0.01 to {n} (the CPUs available)")
    return value


def check_pids(value) -> int | None:
    """--pids-limit: a positive number, or 0 / -1 for unlimited (Docker's values)."""
    if value is not None and value < -1:
        raise LimitError(f"invalid --pids-limit {value!r}: a positive number, or -1 for unlimited")
    return value


def online_cpus() -> str:
    return _read("/sys/devices/system/cpu/online") or f"0-{(os.cpu_count() or 1) - 1}"


def cpu_list(text: str) -> set[int]:
    """The CPUs of a kernel CPU list such as ``0-2,4``; ValueError when malformed."""
    out = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(part)
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise ValueError(part)
        out.update(range(first, last + 1))
    return out


def check_cpuset(text: str | None) -> str | None:
    """--cpuset-cpus: a CPU list naming only CPUs that exist here."""
    if text is None:
        return None
    available = online_cpus()
    try:
        wanted = cpu_list(text)
    except ValueError:
        raise LimitError(f"invalid --cpuset-cpus {text!r}: expected a CPU list like 0-2,4 "
                         f"(available: {available})") from None
    missing = sorted(wanted - cpu_list(available))
    if missing:
        cpus = ", ".join(map(str, missing[:8]))
        raise LimitError(f"invalid --cpuset-cpus {text!r}: CPU {cpus} does not exist (available: {available})")
    return text


def parse_size(text: str) -> int:
    """Docker's --memory syntax: 64m, 1g, 512k, plain bytes."""
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b") if text.lower().endswith(("kb", "mb", "gb")) else text.strip().lower()
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)
