"""`pynet run` inside the daemon: a single-threaded zygote that forks one launcher per container.

Why a zygote: the daemon serves each connection on a thread, and fork() in a threaded process copies only
the calling thread, with every lock another thread held (the import lock, malloc's, logging's, the GIL
bookkeeping) frozen in whatever state it was in; the launcher forks again and again (stages, warm-up,
other installations' CNI plugins), so it must start from a process that never had threads. Exec'ing a
fresh interpreter instead would be safe but would throw away the warm imports that are the point of the
fast path. So the daemon forks this process once, at start, before its first thread; it imports the
launcher (and the network runner) once, then waits on a SOCK_SEQPACKET socketpair. For each request a
daemon thread passes it the client's connection, stdio and namespace fds plus the request fields in one
message; the zygote forks, and the child — from here on an ordinary `pynet run` launcher — joins the
client's namespaces, takes its stdio, environment, cwd and umask, reads the argv into RunOptions
(options.parse_fast) and runs supervise.run, the same code as a local run. The child answers the client
directly on the passed connection (the daemon thread is done once it handed over), passes on the client's
signals, and reports the exit code after the cleanup (a --rm container's directories are only set aside by
then, and its network DEL and their deletion run after the client has its answer: container.cleanup). The zygote also loads our CNI plugins
(network.preload): the launcher runs them in its own process.

The cgroup move of a container's first process waits an RCU grace period (~9 ms here) when no move
happened lately, and holds the global cgroup mutex meanwhile, so nothing overlaps it well. So the zygote
keeps one *spare* launcher forked ahead of the next request: it reserves a container id, makes its
cgroups, forks a stage 1 (namespaces.Prestarted) and moves it in while nobody waits, and that stage 1
makes the container's namespaces and its PID 1, which waits for the command; the next request goes to
the spare, whose container skips those steps (container.Reserved). The zygote forks the spare once the
previous launcher has exited (its cleanup needs the same mutex), a request arrives, or 100 ms passed.
The spare also attaches its container ahead to the default network, as far as the chain needs nothing
from a request (warm.py: the bridge and its lease, in a network namespace of its own that the spare moves
the reserved PID 1 to; a run on another network gets PID 1 a new one, and the warm attachment is DELed
after the reply; a request that comes before the warm part is done waits for it only in container.start,
and only if it can adopt it). So the zygote forks
the next spare as soon as a spare launcher has replied, not once it exited.
A request the spare cannot take as it is (the client in other user/mount/pid/cgroup namespaces than the
daemon's, or --net host) releases the reservation and is served the ordinary way.

The zygote dies with the daemon (PDEATHSIG, and EOF on its socket); running launchers are independent
processes and finish their containers; a spare that sees the zygote's socket close undoes its
reservation and exits.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading

from cni_plugins.wire import (ACCEPTED, EXITED, MAX_FDS, REFUSED, SIGNAL, decode_env, pack, recv_fields,
                              recv_with_fds, send_with_fds, unpack)

from cni_plugins import syscalls
from .remote import NAMESPACES

MAX_MESSAGE = 1 << 18      # a SOCK_SEQPACKET message is bounded by the socket buffer anyway
# What a run served through the daemon may ask for (RunOptions fields, NetOptions fields); any other
# field that differs from its default makes the launcher refuse the run, which then runs locally.
SERVED = frozenset({"image", "command", "name", "hostname", "rm", "init", "env", "workdir", "read_only", "dns",
                    "net", "entrypoint", "add_hosts", "interactive"})
SERVED_NET = frozenset({"mode", "publish", "ifname", "config_dir", "cache_dir", "cni_path", "netns_dir"})


class Zygote:
    """The daemon's handle on its zygote."""

    def __init__(self, sock: socket.socket, pid: int):
        self.sock, self.pid = sock, pid

    def submit(self, conn_fd: int, fields: list, fds: list) -> bool:
        """Hands one request over; False when the zygote cannot take it (the daemon then refuses)."""
        try:
            send_with_fds(self.sock, pack(*fields), [conn_fd, *fds[:MAX_FDS - 1]])
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()   # EOF: the zygote exits
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def spawn() -> Zygote | None:
    """Forks the zygote; None when this process already has threads (then runs are refused)."""
    if threading.active_count() > 1 or len(os.listdir("/proc/self/task")) > 1:
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:
        ours.close()
        code = 0
        try:
            _zygote(theirs, parent)
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    return Zygote(ours, pid)


def _preload() -> None:
    import json  # noqa: F401
    import pickle  # noqa: F401 - namespaces.Prestarted passes the spec to its stage 1 pickled
    import select  # noqa: F401
    import shutil  # noqa: F401
    import traceback  # noqa: F401

    from . import container, namespaces, network, options, rootfs, security, state, supervise, users  # noqa: F401

    network.preload()
    from . import seccomp_profile

    seccomp_profile.load()   # cached: the default profile of every run's spec (spec.with_seccomp)
    # What a launcher still imported after the fork (seen with a `-p` run on the default network).
    import encodings.ascii  # noqa: F401

    import cni_plugins.nft.ownership  # noqa: F401
    import pynet.runner.capabilities  # noqa: F401


def _zygote(sock: socket.socket, parent: int) -> None:
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # launchers are reaped by the kernel, never by us
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # a ^C at the daemon's terminal stops the daemon; we follow it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    syscalls.set_process_name("pynet-zygote")
    _preload()
    import gc

    gc.freeze()   # what the imports made stays shared with the launchers instead of being copied on write
    spare, previous, unused = None, -1, 0
    waiting = []   # fds of launchers not done: a spare's socket until it replied, an ordinary one's pidfd
    while True:
        if spare is None and previous >= 0:
            # The next spare is forked once the last launcher has replied (a spare) or is done (an ordinary
            # launcher), or a request comes, or 100 ms pass: while a run is on, the spare's work would only
            # compete with it for the CPU and the cgroup mutex; after the reply, its cleanup is the only
            # competition, and the spare's warm attachment must be ready before the next request comes.
            poller = select.poll()
            poller.register(previous, select.POLLIN)
            poller.register(sock, select.POLLIN)
            poller.poll(100)
            waiting.append(previous)
            previous = -1
        unused = _count_unused(waiting, unused)
        if spare is None:
            spare = _fork_spare(sock, unused < WARM_UNTIL_UNUSED)
        msg, fds = _recv(sock)
        if not msg and not fds:
            if spare is not None:
                spare[1].close()
                _wait_gone(spare[0], SPARE_RELEASE_TIMEOUT)
            return   # the daemon closed its end
        if not fds:
            continue
        child, replied = -1, -1
        if spare is not None:
            pid, spare_sock = spare
            spare = None
            try:
                send_with_fds(spare_sock, msg, fds)
                child = pid
                replied = os.dup(spare_sock.fileno())   # readable once it replied (or is gone)
            except OSError:
                pass   # the spare is gone: an ordinary launcher takes the request
            spare_sock.close()
        if child < 0:
            try:
                child = os.fork()
            except OSError:
                child = -1   # the client sees EOF before any reply and runs the container itself
            if child == 0:
                sock.close()
                _launcher(fds[0], list(fds[1:]), msg)
        for fd in fds:
            os.close(fd)
        if replied >= 0:
            previous = replied
        elif child > 0:
            try:
                previous = os.pidfd_open(child)
            except OSError:
                previous = -1


# How long a stopping daemon's zygote waits for its spare's release (the DEL of its warm attachment), so
# that a stopped daemon has left nothing behind.
SPARE_RELEASE_TIMEOUT = 10.0


def _wait_gone(pid: int, timeout: float) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return   # gone already
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)


def _recv(sock: socket.socket) -> tuple[bytes, list]:
    """One request (a whole SOCK_SEQPACKET message) and its fds."""
    return recv_with_fds(sock, MAX_MESSAGE, MAX_FDS)


# The spares stop making warm attachments after this many runs in a row were not on the default network
# (each warm attachment would cost an ADD and a DEL for nothing), and start again after one that was.
WARM_UNTIL_UNUSED = 8


def _count_unused(waiting: list, unused: int) -> int:
    """``unused`` after the replies that came on ``waiting`` (see _replied; those fds are closed and
    dropped from it; nothing read: an ordinary launcher's pidfd, or a launcher that died: the count
    stays)."""
    poller = select.poll()
    for fd in waiting:
        poller.register(fd, select.POLLIN)
    for fd, _events in poller.poll(0):
        try:
            said = os.read(fd, 16)
        except OSError:
            said = b""
        unused = 0 if said == b"A" else unused + 1 if said == b"R" else unused
        waiting.remove(fd)
        os.close(fd)
    return unused


def _fork_spare(zygote_sock: socket.socket, warm: bool = True):
    """(pid, socket to hand it a request) of a new spare launcher (with a warm attachment if ``warm``),
    or None."""
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        zygote_sock.close()
        ours.close()
        _spare(theirs, warm)
    theirs.close()
    return pid, ours


def _child_signals() -> None:
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _reserve(cid: str):
    """container.Reserved: the id ``cid``, its cgroups, a stage 1 moved into them; None if any step fails."""
    from . import cgroups, container, namespaces

    try:
        cg = cgroups.create(cid, cgroups.Limits())
    except (cgroups.CgroupError, OSError):
        return None
    try:
        stage1 = namespaces.Prestarted()
        try:
            cg.join(stage1.pid)
            stage1.joined()
        except BaseException:
            stage1.discard()
            raise
    except BaseException:  # noqa: BLE001
        try:
            cg.remove()
        except cgroups.CgroupError:
            pass
        return None
    return container.Reserved(cid, cg, stage1)


def _release(reserved) -> None:
    """Undoes what a reservation made and its container did not take over (idempotent)."""
    from . import cgroups

    if reserved is None:
        return
    reserved.stage1.discard()
    try:
        reserved.cgroups.remove()
    except cgroups.CgroupError:
        pass


def _spare(sock: socket.socket, warm_ahead: bool = True) -> None:
    """The spare launcher; never returns."""
    _child_signals()
    os.setsid()   # before the stage 1 is forked: the containers stay out of the daemon's process group
    syscalls.set_process_name("pynet-spare")
    from . import state, warm

    cid = state.new_id()
    # The warm attachment is made by a child meanwhile (not when a request waits already: it would wait
    # longer for it than the whole ADD takes).
    pending = warm.start(cid) if warm_ahead and not select.select([sock], [], [], 0)[0] else None
    reserved = _reserve(cid)
    if reserved is None:
        warm.discard(warm.finish(pending, cid))
    elif pending is not None:
        reserved.settle = lambda: _settle_warm(reserved, pending, cid)
        if _child_first(pending.pid, sock):
            reserved.settle()
        # else a request came first: its launcher settles the warm attachment when it needs it (container.start),
        # the child meanwhile going on with the ADD
    try:
        msg, fds = _recv(sock)
    except OSError:
        msg, fds = b"", []
    if not fds:
        sock.close()
        _release(reserved)
        _discard_warm(reserved)
        os._exit(0)
    _launcher(fds[0], list(fds[1:]), msg, reserved, sock)


def _child_first(pid: int, sock: socket.socket) -> bool:
    """Waits for child ``pid`` to end or a request on ``sock``; whether the child ended first."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return True
    try:
        return pidfd in select.select([pidfd, sock], [], [])[0]
    finally:
        os.close(pidfd)


def _settle_warm(reserved, pending, cid: str) -> None:
    """The warm attachment of ``reserved`` once its child is done (waited for), with PID 1 moved into its
    namespace (a run that adopts it then has nothing to move); none if either failed."""
    from . import warm

    reserved.settle = None
    warmed = warm.finish(pending, cid)
    if warmed is not None and reserved.stage1.enter_netns(warmed.netns_fd):
        reserved.warm = warmed
    else:
        warm.discard(warmed)


def _settled(reserved):
    """``reserved`` with its warm attachment settled (see _spare)."""
    if reserved is not None and reserved.settle is not None:
        reserved.settle()
    return reserved


def _replied(zygote_sock, opts=None) -> None:
    """Tells the zygote (a spare's launcher) it replied, and whether its run was one on the default network
    (b"A": one a warm attachment is for)."""
    if zygote_sock is not None:
        from .network import on_default_network

        wanted = opts is not None and on_default_network(opts.net.mode)
        try:
            zygote_sock.send(b"A" if wanted else b"R")
        except OSError:
            pass
        zygote_sock.close()


def _discard_warm(reserved) -> None:
    """The DEL of a warm attachment no run adopted; off the critical path (after the reply)."""
    if _settled(reserved) is not None and reserved.warm is not None:
        from . import warm

        warm.discard(reserved.warm)


def why_not_served(opts) -> str | None:
    """Why the daemon does not serve a run with these RunOptions (None: it does). None for ``opts``: the
    fast parser could not read the argv (argparse's forms, help and errors are the local run's)."""
    from .options import RunOptions

    if opts is None:
        return "options left to argparse"
    if not opts.image:
        return "no IMAGE"
    for given, default, served in ((opts, RunOptions(), SERVED), (opts.net, RunOptions().net, SERVED_NET)):
        for name in given.FIELDS:
            if name not in served and getattr(given, name) != getattr(default, name):
                return f"option {name}"
    return None


def _differing(ns_fds: dict) -> list:
    return [name for name in NAMESPACES if name in ns_fds
            and os.fstat(ns_fds[name]).st_ino != os.stat(f"/proc/self/ns/{name}").st_ino]


def _enter(ns_fds: dict, names: list) -> None:
    """Joins the client's namespaces ``names`` (in NAMESPACES order: user first)."""
    syscalls.join({name: ns_fds[name] for name in names})


def _reservation_fits(differing: list, opts) -> bool:
    """A reserved stage 1 was forked in the daemon's namespaces and has made its own (all but the user
    namespace, see namespaces.Prestarted): fine when the client shares the daemon's, except the ones the
    container makes anew anyway (uts, ipc, net); never for --net host."""
    return opts.net.mode != "host" and set(differing) <= {"uts", "ipc", "net"}


def _send(conn: socket.socket, kind: bytes, value: bytes) -> None:
    try:
        conn.sendall(pack(kind, value))
    except OSError:
        pass


def _launcher(conn_fd: int, fds: list, msg: bytes, reserved=None, zygote_sock=None) -> None:
    """The launcher of one container (forked for it, or the spare: ``zygote_sock``, which it tells when it
    has replied, so the next spare is made while this one's cleanup runs); never returns."""
    _child_signals()
    from . import cgroups, options, supervise

    if reserved is None:
        cgroups.start_warmup()
    conn = socket.socket(fileno=conn_fd)
    spare = reserved   # its warm attachment is discarded at the end unless the run adopts it
    opts = None
    try:
        argv, env, cwd, umask, names = unpack(msg, 5)
        opts = options.parse_fast([os.fsdecode(a) for a in argv.split(b"\0")] if argv else [])
        reason = why_not_served(opts)
        if reason is None:
            stdio, ns_fds = fds[:3], fds[3:]
            ns_fds = dict(zip(names.decode().split(",") if names else [], ns_fds))
            differing = _differing(ns_fds)
            if reserved is not None and not _reservation_fits(differing, opts):
                _release(reserved)
                reserved = None
            _enter(ns_fds, differing)
            if os.getsid(0) != os.getpid():
                os.setsid()   # the client's terminal and the daemon's process group are not ours
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)   # inheritable: the container's stdio
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            os.environ.clear()
            os.environ.update(decode_env(env))
            os.chdir(os.fsdecode(cwd))
            os.umask(int(umask))
    except options.OptionsError as exc:   # the local run reports it
        reason = str(exc)
    except BaseException as exc:  # noqa: BLE001 - nothing was created yet: the client runs it itself
        reason = f"{type(exc).__name__}: {exc}"
    if reason is not None:
        _release(reserved)
        if spare is not None and opts is not None and opts.net.ip:
            from . import warm

            warm.release_if_asked_for(_settled(spare).warm, {"ip": opts.net.ip})   # before the local run asks for it
        _send(conn, REFUSED, reason.encode())
        conn.close()
        _replied(zygote_sock)
        _discard_warm(spare)
        os._exit(0)
    _send(conn, ACCEPTED, b"")
    deferred = []   # a --rm container's network DEL and directories, done once the client has the exit code
    try:
        code = supervise.run(opts, wait=lambda rec, pid: _wait(conn, rec, pid), reserved=reserved, deferred=deferred)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        code = 125
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    # The client's stdio goes before the exit code: a caller reading the output to EOF must not wait
    # for the deletions below.
    devnull = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    os.close(devnull)
    _send(conn, EXITED, str(code).encode())
    conn.close()
    _replied(zygote_sock, opts)
    _release(reserved)   # what a failed create left (after a run there is nothing left to do)
    from .container import run_deferred

    run_deferred(deferred)
    _discard_warm(spare)
    os._exit(0)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait(conn: socket.socket, rec, pid: int) -> int:
    """container.wait, while passing the client's signals to PID 1; a client that goes away takes its
    foreground container with it (SIGKILL), as the cleanup after it then runs here."""
    import select

    from . import container

    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return container.wait(rec, pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(conn, select.POLLIN)
    try:
        while True:
            for fd, _events in poller.poll():
                if fd == pidfd:
                    return container.wait(rec, pid)
                try:
                    kind, value = recv_fields(conn, 2)
                except (ConnectionError, OSError, ValueError):
                    poller.unregister(conn)
                    _kill(pid, signal.SIGKILL)
                    continue
                if kind == SIGNAL:
                    _kill(pid, int(value))
    finally:
        os.close(pidfd)
