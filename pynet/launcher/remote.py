"""`pynet run` served by the resident daemon: the thin client.

Like the CNI plugins' front door (cni_plugins/main.py), it speaks the daemon's protocol through
cni_plugins/wire.py (framing, fd passing, discovery, the request kind and replies), and imports nothing
beyond sys and the C modules ``posix``/``_socket``/``_signal`` (not even ``os``, ~1 ms): the point is to
skip the launcher's start-up. The daemon's zygote (pynet/launcher/zygote.py) forks a launcher that runs
the container with the same code as a local `pynet run`, in this process's namespaces, with this
process's stdio, environment, working directory and umask, so the container is created as if by this
process.

Request (wire.RUN): argv (NUL-joined), environment, cwd, umask (decimal), the names of the namespace
fds; SCM_RIGHTS carries fds 0, 1, 2 and then those namespace fds.
Replies, each two fields: wire.REFUSED reason (nothing was done, run locally), wire.ACCEPTED (the
launcher owns the run now), wire.EXITED exit code (the container is gone and cleaned up). While the
container runs, the client sends wire.SIGNAL signum for each signal it gets, which the launcher passes
to the container.
"""

import posix
import sys

from cni_plugins.wire import ACCEPTED, EXITED, RUN, SIGNAL, connect, encode_env, pack, recv_fields, send_with_fds

# The namespaces the launcher joins before it creates the container (user first, as nsenter does).
NAMESPACES = ("user", "cgroup", "ipc", "uts", "net", "pid", "mnt")
_FORWARDED = (2, 15, 1, 3, 10, 12)   # SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2: supervise.FORWARDED


def run(argv: list, path: str):
    """The container's exit code, or None when the daemon is not there or declines (run it locally)."""
    sock = connect(path)
    if sock is None:
        return None
    try:
        if not _send_request(sock, argv):
            return None
        try:
            kind, value = recv_fields(sock, 2)
        except (ConnectionError, OSError, ValueError):
            return None   # nothing happened yet: the daemon replies A before it creates anything
        if kind != ACCEPTED:
            return None
        return _follow(sock)
    finally:
        sock.close()


def _send_request(sock, argv: list) -> bool:
    umask = posix.umask(0o022)
    posix.umask(umask)
    fds, names = [], []
    try:
        for name in NAMESPACES:
            try:
                fds.append(posix.open(f"/proc/self/ns/{name}", posix.O_RDONLY | posix.O_CLOEXEC))
                names.append(name)
            except OSError:
                continue   # a kernel without it: the launcher keeps its own
        request = pack(RUN, b"\0".join(a.encode("utf-8", "surrogateescape") for a in argv),
                       encode_env(posix.environ), posix.getcwdb(), str(umask).encode(), ",".join(names).encode())
        send_with_fds(sock, request, (0, 1, 2, *fds))
        return True
    except OSError:   # a closed stdio fd, a deleted cwd, a daemon gone: the local path copes or reports
        return False
    finally:
        for fd in fds:
            posix.close(fd)


def _follow(sock) -> int:
    """Waits for the exit code, passing signals on; the launcher in the daemon does the rest."""
    import _signal

    def forward(signum, _frame):
        try:
            sock.sendall(pack(SIGNAL, str(signum).encode()))
        except OSError:
            pass

    for sig in _FORWARDED:
        _signal.signal(sig, forward)
    try:
        while True:
            kind, value = recv_fields(sock, 2)
            if kind == EXITED:
                return int(value)
    except (ConnectionError, OSError, ValueError):
        # The launcher took the run and vanished: the container may have run, so never run it again here.
        print("pynet: the pynet daemon's launcher went away; see `pynet ps -a`", file=sys.stderr)
        return 125
