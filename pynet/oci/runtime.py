"""The runtime's operations on containers kept under ``--root`` (one directory per id: state.json and,
until `start`, exec.fifo). Each function raises errors.OCIError with runc's wording where engines read it."""

from __future__ import annotations

import _signal as signal   # `signal` builds enums at import (~2 ms of a start); the constants are the same
import os
import time

from cni_plugins.processes import is_alive, proc_start_time
from pynet.launcher import cgroups

from . import hooks, jsonc as json
from .errors import OCIError

# create and exec import what only they use (config, init, security, devices; ctypes through
# cni_plugins.syscalls): start, state, kill and delete start ~15 ms sooner without them.

DEFAULT_ROOT = "/run/pynet-oci"


class Container:
    def __init__(self, root: str, cid: str):
        self.root, self.id = root, cid
        self.dir = os.path.join(root, cid)
        self.fifo = os.path.join(self.dir, "exec.fifo")

    @classmethod
    def load(cls, root: str, cid: str) -> "Container":
        check_id(cid)
        c = cls(root, cid)
        try:
            with open(os.path.join(c.dir, "state.json")) as fh:
                c.data = json.load(fh)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise OCIError(f"container does not exist: {cid}") from None
        return c

    def save(self) -> None:
        tmp = os.path.join(self.dir, "state.json.tmp")
        with open(tmp, "w") as fh:
            json.dump(self.data, fh)
        os.replace(tmp, os.path.join(self.dir, "state.json"))

    @property
    def cgroups(self) -> cgroups.ContainerCgroups:
        return cgroups.from_paths(self.data.get("cgroups") or {})

    def alive(self) -> bool:
        return is_alive(self.data.get("pid"), self.data.get("pid_start"))

    def status(self) -> str:
        if not self.alive():
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        return "paused" if frozen(self.cgroups) else "running"

    def state(self) -> dict:
        st = self.status()
        d = self.data
        return {"ociVersion": d["ociVersion"], "id": self.id, "pid": d["pid"] if st != "stopped" else 0,
                "status": st, "bundle": d["bundle"], "rootfs": d["rootfs"], "created": d["created"],
                "owner": "", "annotations": d.get("annotations") or {}}


def check_id(cid: str) -> None:
    if not cid or not all(ch.isalnum() or ch in "_+-." for ch in cid) or cid in (".", ".."):
        raise OCIError(f"invalid id format: {cid!r}")


def _now() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


# -- create ----------------------------------------------------------------------------------------------
def _limits(res: dict) -> cgroups.Limits:
    mem = (res.get("memory") or {}).get("limit")
    pids = (res.get("pids") or {}).get("limit")
    cpu = res.get("cpu") or {}
    return cgroups.Limits(memory=mem if mem and mem > 0 else None, pids=pids if pids and pids > 0 else None,
                          cpus=None, cpuset_cpus=cpu.get("cpus") or None)


def _device_rules(res: dict) -> list:
    """linux.resources.devices in order (allows and denies; a rule for every device resets), then the
    default allowlist appended, as runc appends its own."""
    from pynet.launcher import devices as ldevices

    rules = []
    for dev in res.get("devices") or ():
        access = "".join(c for c in "rwm" if c in dev.get("access", "rwm"))
        rules.append(ldevices.Rule(dev.get("type", "a"), dev.get("major"), dev.get("minor"), access, dev["allow"]))
    return rules + list(ldevices.DEFAULT_RULES)


def _cpu_extras(cg: cgroups.ContainerCgroups, cpu: dict) -> None:
    path = cg.controller("cpu")
    if not path:
        if any(cpu.get(k) for k in ("shares", "quota", "period")):
            raise OCIError("linux.resources.cpu: no cpu cgroup controller here")
        return
    v2 = os.path.exists(os.path.join(path, "cpu.max"))
    try:
        if cpu.get("shares"):
            if v2:   # runc's conversion of shares to weight
                cgroups._write(os.path.join(path, "cpu.weight"), 1 + ((cpu["shares"] - 2) * 9999) // 262142)
            else:
                cgroups._write(os.path.join(path, "cpu.shares"), cpu["shares"])
        quota, period = cpu.get("quota"), cpu.get("period")
        if quota or period:
            if v2:
                cgroups._write(os.path.join(path, "cpu.max"),
                               f"{quota if quota and quota > 0 else 'max'} {period or 100000}")
            else:
                if period:
                    cgroups._write(os.path.join(path, "cpu.cfs_period_us"), period)
                if quota:
                    cgroups._write(os.path.join(path, "cpu.cfs_quota_us"), quota)
    except OSError as exc:
        raise OCIError(f"linux.resources.cpu {json.dumps(cpu)}: {os.path.basename(exc.filename or '')}: "
                       f"{exc.strerror}") from None


DEFAULT_CGROUP_PARENT = "pynet-oci"   # kept once made, as runc keeps engines' parents: a container start
                                      # then makes one directory per hierarchy, not two (~0.5 ms each)


def default_cgroup_parents() -> list:
    """The default parent's directory in each hierarchy where it exists."""
    import glob

    return glob.glob(f"/sys/fs/cgroup/*/{DEFAULT_CGROUP_PARENT}")


def remove_default_cgroup_parents() -> None:
    """For a caller that made the default parent (a test run, a benchmark) and leaves nothing behind: the
    directories go where empty; one holding someone else's container stays."""
    for path in default_cgroup_parents():
        try:
            os.rmdir(path)
        except OSError:
            pass


def _cgroup_rel(cid: str, linux: dict) -> str:
    path = linux.get("cgroupsPath")
    if not path:
        return f"{DEFAULT_CGROUP_PARENT}/{cid}"
    if ":" in path:
        raise OCIError(f"config.json: linux.cgroupsPath {path!r}: systemd slice:prefix:name paths need "
                       "--systemd-cgroup, which is not supported (no systemd here)")
    parts = [p for p in path.split("/") if p]
    if not parts or ".." in parts:
        raise OCIError(f"config.json: linux.cgroupsPath {path!r}: expected a path like /parent/name")
    return "/".join(parts)


def not_applied(conf: dict) -> dict:
    """The LSM fields given (AppArmor, SELinux): accepted, recorded, not applied (neither is active here)."""
    process, linux = conf.get("process") or {}, conf.get("linux") or {}
    out = {f"process.{k}": process[k] for k in ("apparmorProfile", "selinuxLabel") if process.get(k)}
    if linux.get("mountLabel"):
        out["linux.mountLabel"] = linux["mountLabel"]
    return out


def connect_console(path: str | None, terminal: bool):
    """The --console-socket connection a terminal's master goes to (None without a terminal)."""
    if not terminal:
        if path:
            raise OCIError("--console-socket given but process.terminal is false")
        return None
    if not path:
        raise OCIError("process.terminal is true: it needs --console-socket (the pty master is sent there)")
    import array  # noqa: F401 - for the init's setup_console, after pivot_root
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise OCIError(f"--console-socket {path}: {exc.strerror}") from None
    return sock


def create(root: str, cid: str, bundle: str, pid_file: str | None = None, no_pivot: bool = False,
           subreaper: bool = False, console_socket: str | None = None, preserve_fds: int = 0,
           start_soon: bool = False) -> Container:
    """``start_soon`` (run): the exec fifo is opened for reading before the init is forked, so the init's
    open for writing does not wait for this process to be scheduled again; start(reader=c.reader)."""
    from . import config as C

    check_id(cid)
    conf = C.load(bundle)
    if conf.get("process") is None:
        raise OCIError("config.json: process: missing (the container needs a process to run)")
    console = connect_console(console_socket, bool(conf["process"].get("terminal")))
    try:
        return _create(root, cid, conf, pid_file, no_pivot, subreaper, console, preserve_fds, start_soon)
    finally:
        if console is not None:
            console.close()


def _create(root, cid, conf, pid_file, no_pivot, subreaper, console, preserve_fds, start_soon) -> Container:
    from cni_plugins import syscalls
    from pynet.launcher import security

    from . import config as C
    from .init import Plan, launch

    linux = conf.get("linux") or {}
    res = linux.get("resources") or {}
    rules = _device_rules(res)
    rel = _cgroup_rel(cid, linux)
    filt = None
    os.makedirs(root, mode=0o711, exist_ok=True)
    if linux.get("seccomp"):
        try:
            filt = seccomp_filter(root, linux["seccomp"], C.cap_names(conf["process"], "effective"))
        except (security.SecurityError, RuntimeError, ValueError) as exc:
            raise OCIError(f"config.json: linux.seccomp: {exc}") from None
    c = Container(root, cid)
    try:
        os.mkdir(c.dir, 0o711)
    except FileExistsError:
        raise OCIError(f"container with id exists: {cid}") from None
    cg = None
    pid = None
    into = None
    try:
        os.mkfifo(c.fifo, 0o622)
        os.chmod(c.fifo, 0o622)   # not the umask's: the init may be another uid (user namespace)
        root_id = C.host_id(linux, "uidMappings"), C.host_id(linux, "gidMappings")
        os.chown(c.fifo, *root_id)
        c.reader = os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC) if start_soon else None
        try:
            cg = cgroups.create(cid, _limits(res), rel=rel, rules=rules)
        except (cgroups.CgroupError, OSError) as exc:
            raise OCIError(f"cgroups: {exc}") from None
        _cpu_extras(cg, res.get("cpu") or {})
        c.data = {"ociVersion": conf["ociVersion"], "id": cid, "pid": 0, "pid_start": None,
                  "bundle": conf["_bundle"], "rootfs": conf["_rootfs"], "created": _now(),
                  "annotations": conf.get("annotations") or {}, "cgroups": cg.paths,
                  "hooks": conf.get("hooks") or {}, "process": conf["process"],
                  "seccomp": linux.get("seccomp"),
                  "not_applied": not_applied(conf)}
        if subreaper:
            syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
        hooks.preload(conf)

        def on_namespaces(init_pid: int) -> None:
            c.data.update(pid=init_pid, pid_start=proc_start_time(init_pid))
            c.save()
            st = dict(c.state(), status="created")
            hooks.run(conf, "prestart", st)
            hooks.run(conf, "createRuntime", st)

        try:
            plan = Plan(conf, c.dir, no_pivot, filt, console.fileno() if console is not None else None,
                        preserve_fds)
            plan.cgroup_paths = cg.paths
            # No move of the container's first process by this one: it is forked into its cgroup2
            # directory and writes itself into each v1 hierarchy's (a move of another process waits for
            # the kernel's threadgroup lock, whose first writer after a quiet spell waits an RCU grace
            # period: ~10 ms, ~20 ms under load).
            plan.own_cgroup_files = cg.v1_tasks_files()
            into = cg.open_v2_dir()
            pid = launch(plan, cg.join, on_namespaces, into=into)
        except OCIError:
            raise
        except Exception as exc:  # noqa: BLE001 - LaunchError, OSError
            raise OCIError(f"container init: {exc}") from None
        finally:
            if into is not None:
                os.close(into)
        if pid_file:
            _write_pid_file(pid_file, pid)
        return c
    except BaseException:
        if pid:
            _kill_quiet(pid, signal.SIGKILL)
        if cg is not None:
            try:
                _remove_cgroups(cg, cid)
            except cgroups.CgroupError:
                pass
        if getattr(c, "reader", None) is not None:
            os.close(c.reader)
        _remove_state(c.dir)
        raise


def _remove_cgroups(cg: cgroups.ContainerCgroups, cid: str) -> None:
    """The container's cgroups, and their parents when empty, except the default parent (kept)."""
    cg.remove(parents=not all(p.endswith(f"/{DEFAULT_CGROUP_PARENT}/{cid}") for p in cg.all_dirs()))


def seccomp_cache(root: str) -> str:
    """Where compiled seccomp programs are kept for the containers of ``root``: beside it, not in it
    (``root`` holds one directory per container)."""
    return root.rstrip("/") + ".seccomp"


def seccomp_filter(root: str, profile: dict, caps):
    """linux.seccomp compiled for a process keeping ``caps``. libseccomp takes ~20 ms for an engine's
    default profile (podman's: ~430 rules on three architectures), and engines pass the same profile
    every time: the program is kept in seccomp_cache(root), named by a hash of what it is made from."""
    import _sha256

    from pynet.launcher import security

    key = json.dumps([profile, sorted(caps), os.uname().release, os.uname().machine])
    cache = seccomp_cache(root)
    path = os.path.join(cache, _sha256.sha256(key.encode()).hexdigest() + ".bpf")
    try:
        with open(path, "rb") as fh:
            return _from_program(fh.read())
    except FileNotFoundError:
        pass
    filt = security.build_seccomp_filter(profile, caps)
    try:
        from cni_plugins.files import atomic_write

        os.makedirs(cache, mode=0o700, exist_ok=True)
        atomic_write(path, filt.program)
    except OSError:
        pass   # only the next container's saving is lost
    return filt


def _from_program(program: bytes):
    """A security.CompiledFilter of a program compiled before."""
    from pynet.launcher import security

    filt = security.CompiledFilter.__new__(security.CompiledFilter)
    filt.program = program
    return filt


def _write_pid_file(path: str, pid: int) -> None:
    tmp = path + ".tmp"   # renamed into place: an engine polling for it never reads half of it
    with open(tmp, "w") as fh:
        fh.write(str(pid))
    os.replace(tmp, path)


def _remove_state(path: str) -> None:
    """The state directory holds only files (state.json, exec.fifo): no shutil (~2 ms to import)."""
    try:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except FileNotFoundError:
        pass


def _kill_quiet(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# -- start, state, kill, delete --------------------------------------------------------------------------
def _wait_exec(fd: int, c: Container) -> None:
    """After the init's "0": its end of the exec fifo stays open (close-on-exec) until execve, so the
    hang-up means the process runs (or the init died): signals sent then reach the process, and poststart
    runs after it, as the spec orders."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while c.alive():
        try:
            if not os.read(fd, 1):
                return
        except BlockingIOError:
            pass
        poller.poll(50)


def start(root: str, cid: str, reader: int | None = None) -> Container:
    """Lets the init exec the process (its byte read from the exec fifo; ``reader``: the fifo already
    open, from create(start_soon=True))."""
    c = Container.load(root, cid)
    st = c.status() if reader is None else "created"   # run: the byte may be there, the process done
    if st == "stopped":
        raise OCIError("cannot start a container that has stopped")
    if st != "created":
        raise OCIError("cannot start an already running container")
    import select

    fd = reader if reader is not None else os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        # poll() wakes when the init writes (no hang-up is reported before a writer has come): its death
        # is checked between waits, before each read: a short process may be started, run and gone between
        # a read that found nothing and the check (its byte is in the fifo then: read after).
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            alive = c.alive()
            try:
                if os.read(fd, 1):
                    _wait_exec(fd, c)
                    break
            except BlockingIOError:
                pass
            if not alive:
                raise OCIError("cannot start a container that has stopped")
            poller.poll(50)
    finally:
        os.close(fd)
        try:
            os.unlink(c.fifo)
        except FileNotFoundError:
            pass
    c.warnings = hooks.run(c.data, "poststart", lambda: dict(c.state(), status="running"), warn=True)
    return c


SIGNALS = {name[3:]: getattr(signal, name) for name in dir(signal)
           if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(getattr(signal, name), int)}


def parse_signal(text: str) -> int:
    t = text.upper().removeprefix("SIG")
    if text.isdigit() and 0 < int(text) < 65:
        return int(text)
    if t in SIGNALS:
        return SIGNALS[t]
    raise OCIError(f"unknown signal {text!r}")


def kill(root: str, cid: str, sig: int, all_: bool = False) -> None:
    c = Container.load(root, cid)
    if c.status() == "stopped":
        raise OCIError("container not running")
    pids = c.cgroups.pids() if all_ else {c.data["pid"]}
    for pid in pids:
        _kill_quiet(pid, sig)
    if all_ and frozen(c.cgroups) and sig == signal.SIGKILL:
        freeze(c.cgroups, False)


def delete(root: str, cid: str, force: bool = False) -> list[str]:
    """Kills what is left (created, or --force), removes the cgroups and the state; returns the poststop
    hooks' failures (warnings)."""
    try:
        c = Container.load(root, cid)
    except OCIError:
        if force:
            return []   # runc: `delete --force` of an unknown id succeeds
        raise
    st = c.status()
    if st in ("running", "paused") and not force:
        raise OCIError(f"cannot delete container {cid} that is not stopped: {st}")
    cg = c.cgroups
    if st != "stopped":
        freeze(cg, False)
        _kill_quiet(c.data["pid"], signal.SIGKILL)
        cg.kill_all()
        deadline = time.monotonic() + 5
        while c.alive() and time.monotonic() < deadline:
            time.sleep(0.005)
    try:
        _remove_cgroups(cg, cid)
    except cgroups.CgroupError as exc:
        raise OCIError(f"{exc} (the container stays listed: delete --force again)") from None
    warnings = hooks.run(c.data, "poststop", lambda: dict(c.state(), status="stopped"), warn=True)
    _remove_state(c.dir)
    return warnings


# -- freezer, ps, list -----------------------------------------------------------------------------------
def _freezer(cg: cgroups.ContainerCgroups) -> tuple[str, str, str, str] | None:
    """(file, frozen value, thawed value, reading when frozen) of the container's freezer."""
    if cg.paths.get("freezer"):
        return os.path.join(cg.paths["freezer"], "freezer.state"), "FROZEN", "THAWED", "FROZEN"
    if cg.paths.get("unified") and os.path.exists(os.path.join(cg.paths["unified"], "cgroup.freeze")):
        return os.path.join(cg.paths["unified"], "cgroup.freeze"), "1", "0", "1"
    return None


def frozen(cg: cgroups.ContainerCgroups) -> bool:
    fz = _freezer(cg)
    return bool(fz) and cgroups._read(fz[0]) == fz[3]


def freeze(cg: cgroups.ContainerCgroups, on: bool) -> None:
    fz = _freezer(cg)
    if fz is None:
        if on:
            raise OCIError("no freezer cgroup for this container")
        return
    try:
        cgroups._write(fz[0], fz[1] if on else fz[2])
        deadline = time.monotonic() + 5
        while on and cgroups._read(fz[0]) != fz[3] and time.monotonic() < deadline:
            time.sleep(0.002)
    except OSError as exc:
        raise OCIError(f"{fz[0]}: {exc.strerror}") from None


def pause(root: str, cid: str) -> None:
    c = Container.load(root, cid)
    if c.status() != "running":
        raise OCIError("container not running")
    freeze(c.cgroups, True)


def resume(root: str, cid: str) -> None:
    c = Container.load(root, cid)
    if c.status() != "paused":
        raise OCIError("container not paused")
    freeze(c.cgroups, False)


def ps(root: str, cid: str) -> list[int]:
    c = Container.load(root, cid)
    return sorted(c.cgroups.pids())


def list_all(root: str) -> list[Container]:
    out = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        try:
            out.append(Container.load(root, name))
        except OCIError:
            continue
    return out


# -- exec -------------------------------------------------------------------------------------------------
def exec_(root: str, cid: str, process: dict, detach: bool = False, pid_file: str | None = None,
          console_socket: str | None = None) -> int:
    """Runs ``process`` (an OCI process object) in the container: its cgroups, then its namespaces (user
    first), a fork so the PID namespace applies, then the init's privilege steps and execve. Detached,
    returns once the command was executed (its parent exits: it goes to the nearest subreaper, as with
    runc); else waits and returns its exit status."""
    from . import config as C

    c = Container.load(root, cid)
    if c.status() not in ("running", "created"):
        raise OCIError("cannot exec in a stopped or paused container" if c.status() != "paused"
                       else "cannot exec in a paused container")
    C.check_process(process, "process.")
    filt = None
    if c.data.get("seccomp"):
        filt = seccomp_filter(root, c.data["seccomp"], C.cap_names(process, "effective"))
    console = connect_console(console_socket, bool(process.get("terminal")))
    try:
        return _exec(c, process, filt, detach, pid_file, console)
    finally:
        if console is not None:
            console.close()


def _exec(c: Container, process: dict, filt, detach: bool, pid_file: str | None, console) -> int:
    from cni_plugins import syscalls
    from pynet.launcher import stages

    from .init import fork_into

    pid = c.data["pid"]
    fds = {}
    for name in syscalls.NAMESPACES:
        if syscalls.ns_inode(pid, name) != syscalls.ns_inode("self", name):
            fds[name] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    cg = c.cgroups
    r_report, w_report = os.pipe()
    # Forked into the container's cgroup2 directory, it joins the v1 ones itself (as the init does).
    into = cg.open_v2_dir()
    try:
        child, born = fork_into(into)
    finally:
        if into is not None:
            os.close(into)
    if child == 0:
        os.close(r_report)
        stages._run_stage(_exec_child, cg, into is None or born, fds, process, filt, detach,
                          console.fileno() if console is not None else None, w_report)
    os.close(w_report)
    for fd in fds.values():
        os.close(fd)
    started, error = None, None
    with os.fdopen(r_report, "rb") as report:
        while msg := stages._read(report):
            started = msg.get("pid", started)
            error = msg if "error" in msg else error
    _, status = os.waitpid(child, 0)
    if error is not None and (started is None or detach):
        raise OCIError(f"exec failed: {error['error']}")
    if error is not None:
        print(f"pynet-oci: {error['error']}", file=__import__("sys").stderr)
        return error.get("code", 1)
    if pid_file and started:
        _write_pid_file(pid_file, started)
    return 0 if detach else stages.exit_status(status)


def _exec_child(cg, self_join: bool, fds: dict, process: dict, filt, detach: bool, console: int | None,
                report_fd: int) -> None:
    from cni_plugins import syscalls
    from pynet.launcher import stages
    from .init import exec_process, join_v1_self, setup_console

    def run(report: int) -> None:
        if console is not None:
            setup_console(console, process.get("consoleSize"))
        exec_process(process, filt, keep_fd=report)   # open for a failed execve's report

    if self_join:   # in the cgroup2 directory (if any) since its fork
        join_v1_self(cg.v1_tasks_files())
    else:
        cg.join(os.getpid())
    if "user" in fds:
        syscalls.join({"user": fds.pop("user")})
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    syscalls.join(fds)
    grandchild = os.fork()   # joining a pid namespace applies to children only
    if grandchild == 0:
        stages._run_stage(run, report_fd)
    stages._report(report_fd, {"pid": grandchild})
    if detach:
        os._exit(0)
    os.close(report_fd)
    _, status = os.waitpid(grandchild, 0)
    os._exit(stages.exit_status(status))
