"""Starting the container process in new namespaces, and joining them again for ``pynet exec``.

A run is started by pynet/oci/init.py, from its OCI spec (launcher/spec.py) made into an init.Plan
(plan_of): the same stages, mounts, devices, pivot_root, masked paths and privilege drop as pynet-oci's
`create`, with no exec fifo (it starts at once) and the image overlay as rootfs source, mounted in the
container's own mount namespace before any user namespace (init.mount_overlay). The launcher is a child
subreaper, so the container's PID 1 becomes its child.

What stays here is the launcher's own: the daemon's prestarted stage 1 (Prestarted: it unshares every
namespace and forks PID 1 before the container is known; that PID 1 completes its Plan once the spec
comes, init.init_prestarted), `pynet exec` (join), and the stage plumbing init.py uses too: two pipes,
the stages report JSON lines to the launcher (``{"pid": N}``, ``{"error": ...}``; EOF after a
successful exec, the write end being close-on-exec), the launcher releases them with single bytes.
"""

from __future__ import annotations

import os
import sys

from cni_plugins import syscalls as L
from pynet.oci import init as oci_init

from . import security
from .stages import LaunchError, _read, _report, _run_stage, _wait_byte, exit_status
from .value_objects import REQUIRED, Fields


class ProcessSpec(Fields):
    """How the launcher starts a container whose OCI spec is ``oci`` (launcher/spec.py; for `pynet exec`
    only its "process"): the container side is pynet/oci/init.py's."""
    FIELDS = {
        "oci": REQUIRED,
        "caps": REQUIRED,         # the kept capabilities and
        "seccomp": REQUIRED,      # "default" | "unconfined" | a profile: the filter built ahead of the spec
        "init": False,
        "userns": None,           # (host base, size) mapped to container 0..size-1, or None
        "new_net": True,
        "console": None,          # -t: the fd of a terminal.Console the pty master goes to
        "console_size": None,     # its window size ({"height", "width"}), or None
        "cgroup_mounts": list,    # cgroups.container_mounts(), read on the host side
        "overlay": None,          # the rootfs source: {"lowerdirs" (top-most first), "upper", "work"}
        "device_hosts": dict,     # --device: container path -> host node
    }


def plan_of(spec: ProcessSpec, filt=None):
    """The init.Plan of a run: no exec fifo, its filter ``filt`` (else built in stage 1)."""
    oci = spec.oci
    if spec.console_size:
        oci = dict(oci, process=dict(oci["process"], consoleSize=spec.console_size))
    factory = None if filt is not None else (lambda: security.build_seccomp_filter(spec.seccomp, spec.caps))
    return oci_init.Plan(oci, None, False, filt, spec.console, cgroup_mounts=spec.cgroup_mounts,
                         filter_factory=factory, tiny_init=spec.init, overlay=spec.overlay,
                         device_hosts=spec.device_hosts)


# What a prestarted stage 1 unshares before its spec arrives: everything but the user namespace (runs
# served this way never ask for one); so a container that keeps the host's network cannot use it.
PRESTART_NAMESPACES = L.CLONE_NEWNS | L.CLONE_NEWUTS | L.CLONE_NEWIPC | L.CLONE_NEWCGROUP | L.CLONE_NEWPID \
    | L.CLONE_NEWNET


class Prestarted:
    """A stage 1 forked before its container is known (the daemon's spare launcher forks one and moves it
    into the next container's cgroups while nothing waits). It builds the default seccomp filter and, once
    told it is in them (``joined``), unshares PRESTART_NAMESPACES and forks PID 1 ahead (see _prepare), so
    a container that fits (no user namespace, its own network namespace) starts without that work. PID 1
    gets its spec, and the stdio and umask the launcher took over from its client after the fork, through
    a socket. Its caller must be the future launcher, and a child subreaper from now on."""

    def __init__(self):
        import socket

        L.prctl(L.PR_SET_CHILD_SUBREAPER, 1)
        r_report, w_report = os.pipe()
        r_sync, w_sync = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            os.close(r_report)
            os.close(w_sync)
            ours.close()
            prepared = _prepare(theirs, w_report)
            got = _receive_spec(theirs) if prepared is not None else None
            if got is None:
                os._exit(0)   # discarded
            spec, umask, fresh_net, stdio = got
            if fresh_net:
                _answer(theirs, _moved(lambda: L.unshare(L.CLONE_NEWNET), "unshare"))
            theirs.close()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
                os.close(fd)
            os.umask(umask)
            _run_stage(_prestarted_pid1, spec, prepared, r_sync, w_report)
        theirs.close()
        os.close(w_report)
        os.close(r_sync)
        self.pid, self.r_report, self.w_sync, self.channel = pid, r_report, w_sync, ours
        self.launched = False
        self.in_warm_netns = False   # PID 1 moved to a warm attachment's network namespace (enter_netns)

    def joined(self) -> None:
        """Tells the stage 1 it is in its cgroups: its cgroup namespace may be made now."""
        self.channel.sendall(b"J")

    @staticmethod
    def fits(spec: ProcessSpec) -> bool:
        return not spec.userns and spec.new_net and spec.console is None

    def enter_netns(self, netns_fd: int) -> bool:
        """Moves PID 1 (forked ahead) to the network namespace ``netns_fd`` (a warm attachment's, made while
        nobody waited), so a run that adopts it finds PID 1 there with nothing left to do; whether it
        moved. Waits for PID 1: call it once joined()."""
        import socket

        try:
            self.channel.sendmsg([NETNS_GIVEN], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                  netns_fd.to_bytes(4, sys.byteorder, signed=True))])
            self.in_warm_netns = self.channel.recv(4096) == MOVED
        except OSError:
            pass
        return self.in_warm_netns

    def launch(self, spec: ProcessSpec, warm_netns: bool = False) -> tuple[int, int, int]:
        """Sends the spec with this process's stdio and umask; returns start()'s (pid, report, sync).
        ``warm_netns``: the network namespace PID 1 was moved to (enter_netns) is the container's; if not,
        PID 1 makes a new empty one, and this returns once it has, so the caller finds PID 1 in it."""
        import pickle
        import socket

        umask = os.umask(0o022)
        os.umask(umask)
        fresh_net = self.in_warm_netns and not warm_netns
        rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (0, 1, 2))
        blob = pickle.dumps((spec, umask, fresh_net))
        try:
            sent = self.channel.sendmsg([blob], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            self.channel.sendall(blob[sent:])
            if fresh_net:
                self.channel.shutdown(socket.SHUT_WR)
                answer = self.channel.recv(4096)
                if answer != MOVED:
                    raise LaunchError(f"cannot give the container a network namespace of its own: "
                                      f"{answer.decode(errors='replace') or 'PID 1 is gone'}")
        finally:
            self.channel.close()
        taken = self.pid, self.r_report, self.w_sync
        self.r_report = self.w_sync = -1   # start() owns them now
        self.launched = True               # and reaps the process
        return taken

    def discard(self) -> None:
        self.channel.close()
        for fd in (self.r_report, self.w_sync):
            if fd >= 0:
                os.close(fd)
        self.r_report = self.w_sync = -1
        if self.launched:
            return
        self.launched = True
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _prepare(sock, report_fd: int):
    """In a prestarted stage 1: builds the seccomp filter, then, once joined to its cgroups, unshares
    PRESTART_NAMESPACES and forks the container's PID 1, which returns here to wait for its spec while
    stage 1 reports it and exits. Returns (filter or the error building it, error unsharing or None);
    None when discarded before it was joined."""
    try:
        filt = security.build_seccomp_filter()
    except Exception as exc:  # noqa: BLE001 - raised if a spec that wants it comes
        filt = exc
    if sock.recv(1) != b"J":
        return None
    try:
        L.unshare(PRESTART_NAMESPACES)
    except OSError as exc:
        return filt, exc   # stage 1 raises it once the launcher listens
    pid = os.fork()
    if pid != 0:
        _report(report_fd, {"pid": pid})
        os._exit(0)
    return filt, None


def _prestarted_pid1(spec: ProcessSpec, prepared: tuple, sync_fd: int, report_fd: int) -> None:
    """A PID 1 that a prestarted stage 1 forked ahead of its spec: init.py's init, once it has its Plan."""
    filt, error = prepared
    _wait_byte(sync_fd, b"1")
    if error is not None:
        raise error
    if spec.seccomp != "default" or spec.caps != security.resolve_caps():
        filt = security.build_seccomp_filter(spec.seccomp, spec.caps)   # not the one built ahead
    if isinstance(filt, Exception):
        raise filt
    oci_init.init_prestarted(plan_of(spec, filt), sync_fd, report_fd)


# PID 1's channel: NETNS_GIVEN (with the fd) moves it to a warm network namespace ahead; it answers MOVED,
# or the error, to that and to a spec that asks for a fresh one.
NETNS_GIVEN = b"W"
MOVED = b"N"


def _moved(move, what: str) -> bytes:
    try:
        move()
        return MOVED
    except OSError as exc:
        return f"{what}: {exc.strerror}".encode()


def _answer(sock, answer: bytes) -> None:
    """PID 1 says how a move went; it cannot run in the wrong network namespace: it exits on a failure."""
    try:
        sock.sendall(answer)
    except OSError:
        pass
    if answer != MOVED:
        os._exit(1)


def _receive_spec(sock):
    """(spec, umask, fresh_net, [stdio fds]) from Prestarted.launch, or None when it was discarded; a warm
    network namespace given before (Prestarted.enter_netns) is joined as it comes. The socket stays open
    (PID 1 may answer on it)."""
    import array
    import pickle
    import socket

    chunks = []
    try:
        while True:
            fds = array.array("i")
            data, ancdata, _flags, _addr = sock.recvmsg(1 << 16, socket.CMSG_SPACE(4 * fds.itemsize))
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
            if data != NETNS_GIVEN or len(fds) != 1:
                break
            # (a failed move leaves PID 1 in its own: the spare then keeps the warm attachment out of it)
            sock.sendall(_moved(lambda: L.setns(fds[0], L.CLONE_NEWNET), "setns"))
            os.close(fds[0])
        while data:
            chunks.append(data)
            data = sock.recv(1 << 16)
    except OSError:
        return None
    if not chunks or len(fds) != 3:
        return None
    spec, umask, fresh_net = pickle.loads(b"".join(chunks))
    return spec, umask, fresh_net, list(fds)


def start(spec: ProcessSpec, join_cgroups, before_exec, idle=None, prestarted: Prestarted | None = None,
          warm_netns: bool = False) -> int:
    """Starts the container (pynet/oci/init.py's launch, without exec fifo); returns the host PID of its
    PID 1 once the command has been executed.

    ``join_cgroups(pid)`` runs before any namespace exists (so the cgroup namespace is rooted at the
    container's cgroup); ``before_exec(pid)`` runs with the namespaces made, PID 1 waiting (network
    attach, state); ``idle()`` runs while the stages build the container, when the launcher would only
    wait for them. With ``prestarted``, that stage 1 is used (already in its cgroups: ``join_cgroups``
    should do nothing), and ``warm_netns`` whether the warm network namespace its PID 1 is in is the
    container's (see Prestarted.launch).
    """
    L.prctl(L.PR_SET_CHILD_SUBREAPER, 1)
    stage = None
    if prestarted is not None:
        if not prestarted.fits(spec):
            raise LaunchError("internal: a prestarted stage 1 cannot make this container")
        stage = prestarted.launch(spec, warm_netns)
    return oci_init.launch(plan_of(spec), join_cgroups, before_exec, idle, stage)


# -- exec into a running container ------------------------------------------------------------------
def join(pid: int, spec: ProcessSpec, join_cgroups, relay=None) -> int:
    """``pynet exec``: like nsenter, enter every namespace of ``pid`` (user first), then fork so the PID
    namespace applies, drop privileges as the container did, exec. Returns the command's exit status;
    ``relay(child, wait)``, given with ``spec.console``, serves the terminal while the command runs and
    returns ``wait()``."""
    fds = {}
    for name in L.NAMESPACES:
        try:
            if os.stat(f"/proc/{pid}/ns/{name}").st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue   # shared with us (--net host, no userns)
            fds[name] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise LaunchError(f"container process {pid} is gone") from None
    r_report, w_report = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r_report)

        def enter(*_):
            filt = security.build_seccomp_filter(spec.seccomp, spec.caps)   # the profile file is on this side
            if spec.console is not None:
                from . import terminal

                terminal.preload()
            join_cgroups(os.getpid())
            if "user" in fds:
                L.join({"user": fds.pop("user")})
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            L.join(fds)
            grandchild = os.fork()   # setns(pid) only affects children
            if grandchild == 0:
                if spec.console is not None:
                    oci_init.setup_console(spec.console, spec.console_size)
                oci_init.exec_process(spec.oci["process"], filt, keep_fd=w_report)
            os.close(w_report)
            _, status = os.waitpid(grandchild, 0)
            os._exit(exit_status(status))

        _run_stage(enter, w_report)
    os.close(w_report)
    for fd in fds.values():
        os.close(fd)
    with os.fdopen(r_report, "rb") as report:
        msg = _read(report)
    if msg:
        os.waitpid(child, 0)
        print(f"pynet: exec: {msg.get('error')}", file=sys.stderr)
        return msg.get("code", 125)
    wait = lambda: exit_status(os.waitpid(child, 0)[1])  # noqa: E731
    return relay(child, wait) if relay is not None else wait()
