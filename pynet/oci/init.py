"""The container's side of `create` (and of `pynet run`, whose launcher builds the same Plan from the
spec of launcher/spec.py and forks it its own way, launcher/namespaces.py: no exec fifo, its image
overlay as the rootfs source, mount_overlay): namespaces, the rootfs from config.json's mounts, pivot_root, then
waiting on the exec fifo until `start`; then the process's privileges and execve.

    runtime ── fork ── stage1: (in the container's cgroups) setns to every namespace given by path,
                               unshare(user) [runtime writes the id maps], unshare the other new ones,
                               fork, exit
                           └── init (PID 1): lo up, mounts, devices; [runtime runs prestart and
                               createRuntime hooks]; createContainer hooks; pivot_root, sysctl, hostname,
                               masked and read-only paths; reports "created"; blocks opening
                               <state>/exec.fifo for writing until `start` opens it for reading;
                               startContainer hooks; rlimits, user, capabilities, no_new_privs, seccomp;
                               execve(process.args)

Without a user namespace there is no stage1: the runtime unshares (or joins) the PID namespace for its
next child only, forks the init straight into it, and returns to its own; the init joins and makes the
other namespaces itself (one fork and one round trip less).

The pipes and reporting are the launcher's (launcher/stages.py): JSON lines up, single bytes down.
"""

from __future__ import annotations

import fcntl
import os
import _signal as signal   # see runtime.py
import stat
import struct

from cni_plugins import syscalls as L
from pynet.launcher import cgroups, rootfs as lrootfs, security, stages

from . import config as C, hooks

class Plan:
    """Everything the init needs, computed by the runtime before the fork (errors surface there)."""

    def __init__(self, conf: dict, state_dir: str | None, no_pivot: bool, filt, console: int | None = None,
                 preserve_fds: int = 0, cgroup_mounts: list | None = None, filter_factory=None,
                 tiny_init: bool = False, overlay: dict | None = None, device_hosts: dict | None = None):
        self.conf, self.state_dir, self.no_pivot, self.filt = conf, state_dir, no_pivot, filt
        # pynet run: the seccomp filter is built in stage 1 (while the launcher moves it into its cgroups),
        # and --init keeps a tiny init as PID 1 (exec_with_init).
        self.filter_factory, self.tiny_init = filter_factory, tiny_init
        # pynet run's rootfs source, not a config.json field: its image layers as an overlay (lowerdirs
        # top-most first, upper, work) mounted in the container's own mount namespace (mount_overlay); and
        # the host node of each --device, bound (container path -> host path).
        self.overlay, self.device_hosts = overlay, device_hosts or {}
        self.console = console   # a socket connected to --console-socket (process.terminal)
        self.preserve_fds = preserve_fds   # fds 3..3+N-1 passed on to the process
        self.linux = conf.get("linux") or {}
        self.process = conf.get("process") or {}
        self.ns = C.namespaces(conf)
        # Read from the host's mount table before the cgroup namespace exists (inside it the hierarchies'
        # roots are no longer "/").
        self.cgroup_mounts = cgroups.container_mounts() if cgroup_mounts is None else cgroup_mounts
        self.fifo_fd = None
        if state_dir is not None:   # None: `pynet run`, which starts at once (no `start` to wait for)
            # Opened here (O_PATH), reopened for writing by the init through /proc/self/fd: container root
            # in a user namespace may not be able to walk to the state directory.
            self.fifo_fd = os.open(os.path.join(state_dir, "exec.fifo"), os.O_PATH | os.O_CLOEXEC)
        self.cgroup_paths = {}   # {controller: the container's cgroup directory}, set by pynet-oci's runtime
        # Set by pynet-oci's runtime: the v1 `tasks` files the first stage writes "0" to itself, before any
        # namespace (the kernel moves a thread that moves itself without its threadgroup lock: no RCU
        # grace period to wait); its cgroup2 directory is the one fork(into=) forks it into. None: the
        # launcher joins it (launch's join_cgroups).
        self.own_cgroup_files = None
        self.namespace_hooks = any((conf.get("hooks") or {}).get(k) for k in ("prestart", "createRuntime"))

    def new_flags(self) -> int:
        flags = 0
        for kind, path in self.ns.items():
            if path is None and kind != "user":
                flags |= C.NAMESPACES[kind][1]
        return flags


# -- runtime side --------------------------------------------------------------------------------------
def _fork(plan: Plan, into: int | None) -> tuple:
    """Forks stage 1 (with a user namespace), or else the init straight into its PID namespace; it joins
    plan.own_cgroup_files itself, then waits for the go-ahead. ``into``: a cgroup2 directory to fork it
    into (syscalls.fork_into_cgroup; a plain fork where the kernel refuses). Returns (stage 1 pid, init
    pid: one of the two None, report fd, sync fd, whether it is in all its cgroups already)."""
    born_in = []

    def fork_child() -> int:
        pid, born = fork_into(into)
        born_in.append(born)
        return pid

    if "user" in plan.ns:
        stage1, r_report, w_sync = stages.fork_stage(_stage1, plan, fork=fork_child)
        pid = None
    else:   # no user namespace: the init is forked straight into its PID namespace, no stage between
        own_pid_ns = _enter_pid_namespace(plan.ns)
        try:
            pid, r_report, w_sync = stages.fork_stage(_direct_init, plan, fork=fork_child)
        finally:
            if own_pid_ns is not None:
                L.setns(own_pid_ns, L.CLONE_NEWPID)
                os.close(own_pid_ns)
        stage1 = None
    joined = plan.own_cgroup_files is not None and (into is None or born_in[0])
    return stage1, pid, r_report, w_sync, joined


def fork_into(into: int | None) -> tuple[int, bool]:
    """os.fork(), the child born in the cgroup2 directory ``into`` where it can be
    (syscalls.fork_into_cgroup): (pid or 0, whether it was)."""
    # Only from a single-threaded process: clone3 runs no glibc fork handlers (another thread could hold a
    # lock the child then needs).
    if into is not None and len(os.listdir("/proc/self/task")) == 1:
        try:
            return L.fork_into_cgroup(into), True
        except OSError:
            pass
    return os.fork(), False


def _join_own_cgroups(plan: Plan) -> None:
    join_v1_self(plan.own_cgroup_files or ())


def join_v1_self(tasks_files) -> None:
    """This (single-threaded) process into the v1 cgroups of these `tasks` files: "0", the writer itself,
    which the kernel moves without its threadgroup lock."""
    for path in tasks_files:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def launch(plan: Plan, join_cgroups, on_namespaces, idle=None, stage: tuple | None = None,
           into: int | None = None) -> int:
    """Forks the init; returns its host PID once it waits on the exec fifo (without one, once the process
    is executed). ``join_cgroups(pid)`` runs before any namespace is made, unless the first stage joins
    its cgroups itself (plan.own_cgroup_files, forked ``into`` its cgroup2 directory); ``on_namespaces(pid)``
    with the namespaces made, before the mounts (prestart/createRuntime hooks; pynet run's network
    attach); ``idle()`` while stage 1 builds them (the caller would only wait). ``stage``: a (pid, report
    fd, sync fd) forked ahead (the launcher's Prestarted) instead of a new stage 1."""
    if stage is not None:
        (stage1, r_report, w_sync), pid, joined = stage, None, False
    else:
        stage1, pid, r_report, w_sync, joined = _fork(plan, into)
    report = os.fdopen(r_report, "rb")
    try:
        if not joined:
            join_cgroups(stage1 or pid)
        # Without hooks between namespaces and mounts (nor id maps to write), the init need not wait for
        # this process to be scheduled again: it gets its go-ahead now (one round trip less). Not for
        # pynet run (no fifo): its on_namespaces attaches the network, which the process must find.
        early = plan.fifo_fd is not None and not plan.namespace_hooks \
            and not ("user" in plan.ns and plan.ns["user"] is None)
        os.write(w_sync, b"1H" if early else b"1")
        if idle is not None:
            idle()
        msg = stages._read(report)
        if msg.get("userns") == "ready":
            _write_maps(stage1, plan.linux)
            os.write(w_sync, b"M")
            msg = stages._read(report)
        if stage1 is not None:
            if "pid" not in msg:
                stages._fail(msg)
            pid = msg["pid"]
            os.waitpid(stage1, 0)
            stage1 = None
        elif not msg.get("namespaces"):
            stages._fail(msg)
        on_namespaces(pid)
        try:
            if not early:
                os.write(w_sync, b"H")
        except BrokenPipeError:
            pass   # the init failed already: its report says why
        msg = stages._read(report)
        if plan.fifo_fd is None:
            if msg:   # EOF is the exec (the report pipe is close-on-exec)
                stages._fail(msg)
            return pid
        if not msg.get("created"):
            stages._fail(msg)
        return pid
    except BaseException:
        stages.kill_stages(stage1, pid)
        raise
    finally:
        if plan.fifo_fd is not None:
            os.close(plan.fifo_fd)
        report.close()
        os.close(w_sync)


def _write_maps(pid: int, linux: dict) -> None:
    for key, name in (("uidMappings", "uid_map"), ("gidMappings", "gid_map")):
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux.get(key) or ())
        if lines:
            with open(f"/proc/{pid}/{name}", "w") as fh:
                fh.write(lines)


def _enter_pid_namespace(ns: dict) -> int | None:
    """Makes (or joins) the container's PID namespace for this process's next child only; returns an fd
    of this process's own, to return to once the init is forked (None: no PID namespace given)."""
    if "pid" not in ns:
        return None
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if ns["pid"] is None:
            L.unshare(L.CLONE_NEWPID)
        else:
            target = os.open(ns["pid"], os.O_RDONLY | os.O_CLOEXEC)
            try:
                L.setns(target, L.CLONE_NEWPID)
            finally:
                os.close(target)
    except BaseException:
        os.close(own)
        raise
    return own


# -- container side ------------------------------------------------------------------------------------
def _before_go_ahead(plan: Plan) -> None:
    """What a first stage does while the runtime moves it into its cgroups: pynet run's seccomp filter,
    and the imports setup_console needs after pivot_root (out of the host's reach)."""
    if plan.filter_factory is not None:
        try:
            plan.filt = plan.filter_factory()
        except Exception as exc:  # noqa: BLE001 - raised once the runtime listens for it
            plan.filt = exc
    if plan.console is not None:
        import array  # noqa: F401
        import socket  # noqa: F401


def _in_cgroups_after_go_ahead(plan: Plan, sync_fd: int) -> None:
    """The first steps of the init and of a stage 1 alike: in the container's cgroups, then the runtime's
    go-ahead; a seccomp filter that could not be built fails the start only now (the runtime reports it)."""
    _join_own_cgroups(plan)
    _before_go_ahead(plan)
    stages._wait_byte(sync_fd, b"1")
    if isinstance(plan.filt, Exception):
        raise plan.filt


def _direct_init(plan: Plan, sync_fd: int, report_fd: int) -> None:
    """The init without a user namespace: already in its PID namespace; joins and makes the others."""
    _in_cgroups_after_go_ahead(plan, sync_fd)
    fds = {C.NAMESPACES[kind][0]: os.open(path, os.O_RDONLY | os.O_CLOEXEC)
           for kind, path in plan.ns.items() if path and kind != "pid"}
    L.join(fds)
    flags = plan.new_flags() & ~L.CLONE_NEWPID
    if plan.overlay is not None:
        L.unshare(L.CLONE_NEWNS)
        mount_overlay(plan)
        flags &= ~L.CLONE_NEWNS   # this one will do
    L.unshare(flags)
    stages._report(report_fd, {"namespaces": True})
    _init(plan, sync_fd, report_fd)


def _stage1(plan: Plan, sync_fd: int, report_fd: int) -> None:
    """The first stage with a user namespace (joined, or made here once the runtime wrote its id maps);
    forks the init into the PID namespace."""
    _in_cgroups_after_go_ahead(plan, sync_fd)
    fds = {}
    for kind, path in plan.ns.items():
        if path:
            fds[C.NAMESPACES[kind][0]] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    if "user" in fds:
        L.join({"user": fds.pop("user")})
    L.join(fds)   # nsenter's order
    flags = plan.new_flags()
    if plan.overlay is not None:
        L.unshare(L.CLONE_NEWNS)   # the overlay's (the mount namespace in flags comes after the user one)
        mount_overlay(plan)
    if plan.ns["user"] is None:
        L.unshare(L.CLONE_NEWUSER)
        stages._report(report_fd, {"userns": "ready"})
        stages._wait_byte(sync_fd, b"M")
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    L.unshare(flags)
    pid = os.fork()
    if pid == 0:
        stages._run_stage(_init, plan, sync_fd, report_fd)
    stages._report(report_fd, {"pid": pid})


def init_prestarted(plan: Plan, sync_fd: int, report_fd: int) -> None:
    """The init's work in a PID 1 forked before its container was known (the daemon's spare launcher,
    launcher/namespaces.py Prestarted: its namespaces are made already), once its Plan is: the rootfs
    source, then as any init."""
    if plan.overlay is not None:
        mount_overlay(plan)
    _init(plan, sync_fd, report_fd)


def _init(plan: Plan, sync_fd: int, report_fd: int) -> None:
    conf = plan.conf
    if plan.ns.get("network", "") is None:
        stages._loopback_up()
    root = conf["_rootfs"]
    if plan.ns.get("mount", "") is None:
        _mount_rootfs(plan, root)
    fifo_fd = plan.fifo_fd
    if fifo_fd is None:
        _run_at_once(plan, root, sync_fd, report_fd)
    stages._wait_byte(sync_fd, b"H")
    state = {"ociVersion": conf["ociVersion"], "id": os.path.basename(plan.state_dir), "status": "created",
             "pid": 0, "bundle": conf["_bundle"], "annotations": conf.get("annotations") or {}}
    hooks.run(conf, "createContainer", state)
    enter_rootfs(plan, root)
    if plan.console is not None:
        setup_console(plan.console, plan.process.get("consoleSize"))
    stages._report(report_fd, {"created": True})
    os.close(sync_fd)
    os.close(report_fd)
    try:
        # Without startContainer hooks (which run with the init's privileges) the process's identity is
        # taken before `start`, as runc's init takes it: `start` then waits only for the execve. (The fifo
        # is writable by others: the process's user may open it.)
        filt = plan.filt
        ready = not (conf.get("hooks") or {}).get("startContainer")
        if ready:
            filt = prepare_process(plan.process, filt)
        # Blocks until `start` opens the fifo for reading. The write end stays open (close-on-exec) until
        # execve: `start` reads to EOF, so it returns once the process runs (or the init died), as the
        # spec's poststart wants; a signal sent then reaches the process, not this Python.
        started = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        os.write(started, b"0")
        os.close(fifo_fd)
        if not ready:
            hooks.run(conf, "startContainer", dict(state, status="running", pid=os.getpid()))
            filt = prepare_process(plan.process, filt)
        exec_prepared(plan.process, filt, plan.preserve_fds, keep_fd=started)
    except BaseException as exc:  # noqa: BLE001 - nobody listens on the report pipe any more: stderr
        code = 1
        if getattr(exc, "pynet_exec", False):
            code = 127 if isinstance(exc, FileNotFoundError) else 126
        os.write(2, f"pynet-oci: {exc}\n".encode())
        os._exit(code)


def _run_at_once(plan: Plan, root: str, sync_fd: int, report_fd: int) -> None:
    """pynet run's init (no hooks, no `start`): into the rootfs while the launcher does its part (cgroups,
    network), then the process as soon as it is done; a failure to exec is reported to the launcher."""
    enter_rootfs(plan, root)
    stages._wait_byte(sync_fd, b"H")
    os.close(sync_fd)
    if plan.console is not None:
        setup_console(plan.console, plan.process.get("consoleSize"))
    cwd = plan.process.get("cwd") or "/"
    if cwd != "/":
        os.makedirs(cwd, exist_ok=True)   # as Docker does
    if plan.tiny_init:
        exec_with_init(plan.process, plan.filt, report_fd)
    exec_process(plan.process, plan.filt, keep_fd=report_fd)


TIOCSPTLCK, TIOCGPTN, TIOCSCTTY, TIOCSWINSZ = 0x40045431, 0x80045430, 0x540E, 0x5414


def setup_console(sock_fd: int, size: dict | None) -> None:
    """A pty from the container's own devpts; its master is sent over the --console-socket connection
    (SCM_RIGHTS, with the slave's name, as runc sends it); the slave becomes this process's controlling
    terminal and stdio."""
    import array
    import socket   # imported by the runtime already (connect_console): after pivot_root only found

    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    name = f"/dev/pts/{struct.unpack('I', fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0]}"
    slave = os.open(name, os.O_RDWR | os.O_NOCTTY)
    if size:
        fcntl.ioctl(slave, TIOCSWINSZ, struct.pack("HHHH", size.get("height", 0), size.get("width", 0), 0, 0))
    sock = socket.socket(fileno=sock_fd)
    try:
        sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
    finally:
        sock.close()
        os.close(master)
    os.setsid()
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def enter_rootfs(plan: Plan, root: str) -> None:
    """pivot_root into the assembled ``root``, then sysctl, hostname, masked and read-only paths, the
    root's read-only remount and its propagation."""
    conf, linux = plan.conf, plan.linux
    if plan.ns.get("mount", "") is None:
        _pivot(root, plan.no_pivot)
    for key, value in (linux.get("sysctl") or {}).items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
            fh.write(value)
    if conf.get("hostname"):
        L.sethostname(conf["hostname"])
    if plan.ns.get("mount", "") is None:
        for path in linux.get("maskedPaths") or ():
            lrootfs._mask(path)
        for path in linux.get("readonlyPaths") or ():
            lrootfs._readonly(path)
        if conf["root"].get("readonly"):
            L.mount(None, "/", None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY)
        if (linux.get("rootfsPropagation") or "private").endswith(("slave", "shared", "unbindable")):
            # last: masked paths bind /dev/null, which an unbindable /dev would refuse
            L.mount(None, "/", None, C.PROPAGATION[linux["rootfsPropagation"]])


def _is_bind(m: dict) -> bool:
    return bool(mount_options(m.get("options"))[0] & L.MS_BIND)


def mount_overlay(plan: Plan) -> str:
    """The rootfs source ``plan.overlay`` (pynet run's image layers, launcher/spec.py), in a mount
    namespace of its own made by the caller (nothing mounted here reaches the host, nor outlives the
    container): a private tmpfs staging point, the overlay on it, and the spec's bind mounts, bound now
    with the host's privileges (before any user namespace: image and state paths under 0700 directories
    stay reachable). Returns the rootfs path, also set as the config's "_rootfs"."""
    overlay = plan.overlay
    L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
    # A fresh tmpfs under a world-traversable directory: container root in a user namespace could not
    # walk into the storage paths (pytest's tmp dirs are 0700), but it can reach this.
    base = lrootfs._staging_point()
    L.mount("pynet-stage", base, "tmpfs", L.MS_NOSUID | L.MS_NODEV, "mode=755,size=64k")
    root = os.path.join(base, "rootfs")
    os.mkdir(root, 0o755)
    L.mount("overlay", root, "overlay", 0, f"lowerdir={':'.join(overlay['lowerdirs'])},"
                                           f"upperdir={overlay['upper']},workdir={overlay['work']}")
    owner = C.host_id(plan.linux, "uidMappings")
    for m in plan.conf.get("mounts") or ():
        if _is_bind(m):
            _mount_one(plan, root, m, owner)
    plan.conf["_rootfs"] = root
    return root


def _mount_rootfs(plan: Plan, root: str) -> None:
    # Nothing mounted here reaches the host: private, or a slave receiving the host's mounts. Shared and
    # unbindable go to the new root after pivot_root (which refuses a shared parent): a slave until then.
    # With an overlay source, mount_overlay made it all private already.
    if plan.overlay is None:
        prop = plan.linux.get("rootfsPropagation") or "rprivate"
        L.mount(None, "/", None, L.MS_REC | (C.PROPAGATION[prop] if prop.endswith(("private", "slave")) else L.MS_SLAVE))
    L.mount(root, root, None, L.MS_BIND | L.MS_REC)
    for m in plan.conf.get("mounts") or ():
        if not (plan.overlay is not None and _is_bind(m)):   # mount_overlay bound those already
            _mount_one(plan, root, m)
    for dev in plan.linux.get("devices") or ():
        _make_device(root, dev, "user" in plan.ns, plan.device_hosts.get(dev["path"]))


def mount_options(options) -> tuple[int, int, str]:
    """(flags, propagation flags, data) of a mount's options."""
    flags, prop, data = 0, 0, []
    for opt in options or ():
        if opt in C.MOUNT_FLAGS:
            bit, on = C.MOUNT_FLAGS[opt]
            flags = flags | bit if on else flags & ~bit
        elif opt in C.PROPAGATION:
            prop |= C.PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, prop, ",".join(data)


def _mount_one(plan: Plan, root: str, m: dict, owner: int = 0) -> None:
    dest = lrootfs.secure_join(root, m["destination"])
    kind = m.get("type") or ""
    flags, prop, data = mount_options(m.get("options"))
    if flags & L.MS_BIND:
        src = m.get("source") or ""
        if not os.path.isabs(src):
            src = os.path.join(plan.conf["_bundle"], src)
        if os.path.isdir(src):
            os.makedirs(dest, exist_ok=True)
        else:
            lrootfs._ensure_file(dest, owner)
        L.mount(src, dest, None, flags & (L.MS_BIND | L.MS_REC))
        rest = flags & ~(L.MS_BIND | L.MS_REC)
        if rest:
            L.mount(None, dest, None, L.MS_BIND | L.MS_REMOUNT | rest)
    elif kind in ("cgroup", "cgroup2"):
        os.makedirs(dest, exist_ok=True)
        if m["destination"].rstrip("/") == "/sys/fs/cgroup" and "cgroup" not in plan.ns and plan.cgroup_paths:
            _bind_cgroups(plan.cgroup_paths, dest)
        elif m["destination"].rstrip("/") == "/sys/fs/cgroup":
            lrootfs._setup_cgroupfs(root, plan.cgroup_mounts)
        else:
            L.mount("cgroup", dest, "cgroup2", flags)
    elif kind == "sysfs" and m["destination"].rstrip("/") == "/sys":
        lrootfs._setup_sys(root, plan.ns.get("network", "") is None)
    else:
        os.makedirs(dest, exist_ok=True)
        copyup = kind == "tmpfs" and "tmpcopyup" in (m.get("options") or ())
        if copyup:   # runc's extension (podman --read-only): the tmpfs starts with what it covers
            data = ",".join(o for o in data.split(",") if o != "tmpcopyup")
            under = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        L.mount(m.get("source") or kind, dest, kind, flags, data or None)
        if copyup:
            import shutil

            shutil.copytree(f"/proc/self/fd/{under}", dest, symlinks=True, dirs_exist_ok=True)
            os.close(under)
        if kind == "tmpfs" and m["destination"].rstrip("/") == "/dev":
            lrootfs.populate_dev(dest)
    if prop:
        L.mount(None, dest, None, prop)


def _bind_cgroups(paths: dict, dest: str) -> None:
    """/sys/fs/cgroup without a cgroup namespace, as runc makes it: a tmpfs with each hierarchy's directory
    of this container bound read-only (a fresh mount would show the host's whole tree, and waits on the
    kernel's cgroup lock, up to ~10 ms on a busy machine)."""
    ro = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | L.MS_RDONLY
    L.mount("cgroup", dest, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=755,size=64k")
    for path in sorted(set(paths.values())):
        name = os.path.relpath(path, "/sys/fs/cgroup").split("/")[0]
        if name.startswith(".."):
            continue   # a hierarchy mounted elsewhere: not shown
        target = os.path.join(dest, name)
        os.mkdir(target)
        L.mount(path, target, None, L.MS_BIND)
        L.mount(None, target, None, L.MS_BIND | L.MS_REMOUNT | ro)
    L.mount(None, dest, None, L.MS_REMOUNT | ro, "mode=755,size=64k")


def _make_device(root: str, dev: dict, userns: bool, host: str | None = None) -> None:
    target = lrootfs.secure_join(root, dev["path"])
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        try:
            L.umount2(target, L.MNT_DETACH)
        except OSError:
            pass
        os.unlink(target)
    if userns or host:   # mknod is not allowed in a user namespace: the host's node, bound (--device: always)
        lrootfs._bind_node(host or dev["path"], target)
        return
    kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[dev["type"]]
    mode = dev.get("fileMode") or 0o666
    os.mknod(target, kind | mode, os.makedev(dev.get("major", 0), dev.get("minor", 0)))
    os.chmod(target, mode)   # mknod's mode passed the umask; the spec's fileMode is the node's
    os.chown(target, dev.get("uid", 0), dev.get("gid", 0))


def _pivot(root: str, no_pivot: bool) -> None:
    os.chdir(root)
    if no_pivot:
        L.mount(root, "/", None, L.MS_MOVE)
        os.chroot(".")
    else:
        L.pivot_root(".", ".")
        L.umount2(".", L.MNT_DETACH)
    os.chdir("/")


def drop_privileges(process: dict, filt):
    """security.drop_privileges of process.* (capabilities, user, rlimits, noNewPrivileges); returns the
    seccomp filter still to load, as the last step before execve."""
    user = process.get("user") or {}
    return security.drop_privileges(
        {key: C.cap_names(process, key) for key in security.CAP_SETS},
        security.User(uid=user.get("uid", 0), gid=user.get("gid", 0), groups=list(user.get("additionalGids") or ())),
        C.rlimits(process), bool(process.get("noNewPrivileges")), filt)


def exec_process(process: dict, filt, preserve_fds: int = 0, keep_fd: int | None = None) -> None:
    """process.*: oomScoreAdj, rlimits, capability bounding set, user and groups, the four other capability
    sets, no_new_privs, the seccomp filter ``filt`` (built by the runtime), cwd, execve. Errors carry
    ``pynet_exec`` as the launcher's do (126/127); ``keep_fd`` (close-on-exec) stays open for them."""
    exec_prepared(process, prepare_process(process, filt), preserve_fds, keep_fd)


def prepare_process(process: dict, filt):
    """exec_process's first half: oomScoreAdj, umask, the privilege drop, cwd; returns the seccomp filter
    still to load."""
    if process.get("oomScoreAdj") is not None:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write(str(process["oomScoreAdj"]))
    umask = (process.get("user") or {}).get("umask")
    if umask is not None:
        os.umask(umask)
    filt = drop_privileges(process, filt)
    os.chdir(process.get("cwd") or "/")
    return filt


def exec_prepared(process: dict, filt, preserve_fds: int = 0, keep_fd: int | None = None) -> None:
    """exec_process's second half: signals and fds as the process gets them, the seccomp filter, execve."""
    env = dict(item.partition("=")[::2] for item in process.get("env") or ())
    for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGXFSZ, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    # Nothing the engine or this runtime had open goes into the container but stdio and --preserve-fds.
    if keep_fd is not None and keep_fd >= 3 + preserve_fds:
        os.closerange(3 + preserve_fds, keep_fd)
        os.closerange(keep_fd + 1, 1 << 20)
    else:
        os.closerange(3 + preserve_fds, 1 << 20)
    if filt is not None:
        filt.load()
    stages.execvpe(process["args"], env)


_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def exec_with_init(process: dict, filt, report_fd: int) -> None:
    """`--init`: this process stays PID 1, a tiny init that forwards signals to the command (forked,
    then exec_process; its failure is reported on ``report_fd``) and reaps every zombie; its exit status
    is the command's. It drops its own privileges as the command does."""
    child = os.fork()
    if child == 0:
        for sig in _FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        stages._run_stage(lambda fd: exec_process(process, filt, keep_fd=fd), report_fd)
    os.close(report_fd)
    L.set_process_name("pynet-init")
    for sig in _FORWARDED:
        signal.signal(sig, lambda signum, _frame: _forward(child, signum))
    filt = drop_privileges(process, filt)
    if filt is not None:
        filt.load()
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os._exit(stages.exit_status(status))


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
