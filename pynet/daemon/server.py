"""Unix-socket server for CNI requests (cni_plugins/wire.py is the protocol).

Each connection gets a thread. The client passes its network namespace (the plugin's host) and the
container's, opened by itself, as file descriptors; the request's handles are built from those fds
(cni_plugins/handles.py), so the thread itself never changes namespace and the daemon never resolves a
CNI_NETNS path, which may exist only in the client's mount namespace. Requests for one container are
serialized; different containers run concurrently.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import struct
import threading

from cni_plugins import delegate, registry, wire
from cni_plugins.errors import CNIError, INVALID_ENVIRONMENT
from cni_plugins.handles import NetnsFds
from cni_plugins.skel import handle
from cni_plugins.version import CURRENT


class AlreadyRunning(Exception):
    pass


SD_LISTEN_FDS_START = 3


def inherited_socket() -> socket.socket | None:
    """The listening socket a service manager passed (systemd socket activation, sd_listen_fds(3) without
    libsystemd): LISTEN_PID is this process and LISTEN_FDS >= 1, the socket is fd 3. The variables are
    unset either way, so no child takes the socket for its own."""
    pid, count = os.environ.pop("LISTEN_PID", ""), os.environ.pop("LISTEN_FDS", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid != str(os.getpid()) or not count.isdigit() or int(count) < 1:
        return None
    try:
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    except OSError as exc:
        raise AlreadyRunning(f"LISTEN_FDS: fd {SD_LISTEN_FDS_START} is not a socket ({exc.strerror})") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise AlreadyRunning(f"LISTEN_FDS: fd {SD_LISTEN_FDS_START} is not a unix stream socket")
    os.set_inheritable(SD_LISTEN_FDS_START, False)
    return sock


class ContainerLocks:
    """One lock per key (a container ID, a container netns), dropped when nobody holds or waits for it.
    A request takes its keys in sorted order, so two requests never wait on each other crosswise."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}

    def acquire(self, key: str) -> None:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        entry[0].acquire()

    def release(self, key: str) -> None:
        with self._guard:
            entry = self._locks[key]
            entry[0].release()
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[key]


def preload() -> list[str]:
    """Imports every plugin (and with them pyroute2 and nftables) once, up front."""
    loaded = []
    for name in registry.NAMES:
        try:
            registry.get(name)
            loaded.append(name)
        except ImportError:
            pass
    return loaded


class Server:
    def __init__(self, path: str = wire.DEFAULT_SOCKET):
        self.path = path
        self.locks = ContainerLocks()
        self.served = collections.Counter()
        self._sock: socket.socket | None = None
        self._lock_fd = -1
        self._adopted = False   # the socket came from the service manager, which owns its file
        self._stopping = threading.Event()
        self.zygote = None   # pynet.launcher.zygote.Zygote: serves `pynet run`; without it runs are refused

    def bind(self) -> None:
        """Takes the socket path. One daemon per path: the lock file next to it is held for the daemon's
        life, so a socket file found while holding the lock is a crashed daemon's and may be replaced."""
        import fcntl

        inherited = inherited_socket()
        if inherited is not None and isinstance(inherited.getsockname(), str) and inherited.getsockname():
            self.path = inherited.getsockname()
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        self._lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise AlreadyRunning(f"another pynet daemon serves {self.path}") from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        if inherited is not None:
            self._sock, self._adopted = inherited, True
            return
        if os.path.lexists(self.path):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600: only root may ask for network changes
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        sock.listen(256)
        self._sock = sock

    def serve_forever(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._stopping.is_set():
                    break
                raise
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            if not self._adopted:   # shutdown would also stop the service manager's copy listening
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._sock.close()
        if self._lock_fd >= 0:  # only the daemon that owns the path removes it
            if os.path.lexists(self.path) and not self._adopted:
                os.unlink(self.path)
            if os.path.lexists(self.path + ".served"):
                os.unlink(self.path + ".served")
            os.unlink(self.path + ".lock")
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _peer_allowed(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in (0, os.getuid())

    def _serve_one(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            with conn:
                if not self._peer_allowed(conn):
                    return
                kind, fields, fds = wire.recv_request(conn)
                if kind == wire.RUN:
                    return self.start_run(conn, fields, fds)
                plugin, env, stdin, netns_status = fields
                self.execute(conn, plugin.decode("utf-8", "surrogateescape"), wire.decode_env(env), stdin,
                             netns_status, fds)
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            for fd in fds:
                os.close(fd)

    def start_run(self, conn: socket.socket, fields: list, fds: list) -> None:
        """Hands a `pynet run` to the zygote, whose launcher answers the client on this connection."""
        if self.zygote is None or len(fds) < 3 or not self.zygote.submit(conn.fileno(), fields, fds):
            conn.sendall(wire.pack(wire.REFUSED, b"the daemon cannot launch containers"))
            return
        self.served["run"] += 1

    def execute(self, conn: socket.socket, plugin: str, env: dict, stdin: bytes, netns_status: bytes,
                fds: list) -> None:
        """Serves one request and replies on ``conn``; deferred work runs after the reply, still under the
        container's lock. ``fds`` stay the caller's to close."""
        netns = _netns_fds(netns_status, fds)
        if plugin not in registry.NAMES:
            return _reply(conn, 1, _error(INVALID_ENVIRONMENT, f"unknown plugin {plugin!r}"))
        if netns is None:
            return _reply(conn, 1, _error(INVALID_ENVIRONMENT, "the daemon needs the caller's network namespace"))
        key = env.get("CNI_CONTAINERID") or ""
        # Serialized per container ID and per container netns: a DEL's last step (the link's slow removal)
        # runs after the reply, and the next request into that netns, whatever its container ID (a runtime
        # re-creating the sandbox), must find it done.
        keys = sorted({"id:" + key} | ({f"netns:{os.fstat(netns.container).st_ino}"} if netns.container else set()))
        deferred: list = []
        for k in keys:
            self.locks.acquire(k)
        try:
            code, reply = handle(plugin, env, stdin, netns=netns, defer_to=deferred)
            _reply(conn, code, (json.dumps(reply) + "\n") if reply is not None else "")
            for fn in deferred:
                try:
                    fn()
                except Exception as exc:  # the verb already succeeded; what is left dies with the netns
                    print(f"pynet daemon: deferred step of {env.get('CNI_COMMAND')} {key}: {exc}", flush=True)
        finally:
            for k in reversed(keys):
                self.locks.release(k)
        self.served[env.get("CNI_COMMAND", "?")] += 1


def _netns_fds(status: bytes, fds: list) -> NetnsFds | None:
    """What the client passed: its netns, and CNI_NETNS as an fd or the errno of opening it."""
    if not fds:
        return None
    if status == wire.NETNS_OPENED:
        return NetnsFds(fds[0], fds[1]) if len(fds) > 1 else None
    if status == wire.NETNS_NOT_GIVEN or not status.isdigit():
        return NetnsFds(fds[0])
    return NetnsFds(fds[0], container_errno=int(status))


def _error(code: int, msg: str) -> str:
    return json.dumps(CNIError(code, msg).to_dict(CURRENT)) + "\n"


def _reply(conn: socket.socket, code: int, text: str) -> None:
    try:
        conn.sendall(wire.pack(str(code).encode(), text.encode("utf-8", "surrogateescape")))
    except OSError:
        pass  # the client is gone; it falls back on its own


def run(path: str = wire.DEFAULT_SOCKET, ready=None, serve_containers: bool = False) -> None:
    """Runs the daemon in the foreground until SIGTERM/SIGINT. ``serve_containers``: also serve
    `pynet run` (opt-in: the zygote keeps a prepared container slot, with cgroups, while it waits)."""
    server = Server(path)
    if serve_containers:
        # Forked before the first thread exists (see pynet/launcher/zygote.py), and before the plugins are
        # loaded: a smaller process forks faster, and the launcher reaches the plugins as executables anyway.
        from pynet.launcher import zygote

        server.zygote = zygote.spawn()
    try:
        server.bind()
    except BaseException:
        if server.zygote is not None:
            server.zygote.close()
        raise

    def _stop(*_):
        server.stop()

    def _dump_served(*_):   # `kill -USR1 PID`: what it served so far, as JSON next to the socket
        from cni_plugins.files import atomic_write

        atomic_write(server.path + ".served", json.dumps(dict(server.served)) + "\n", mode=0o600)

    # Before the slow preload: a SIGTERM meanwhile still removes the socket file.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGUSR1, _dump_served)
    try:
        preload()
        # A delegated plugin that is not served in-process (another installation's pynet plugin) would
        # otherwise send its request back here and wait for the container lock its caller holds.
        delegate.exec_env_overrides["PYNET_DAEMON"] = "off"
        if ready is not None:
            ready()
        server.serve_forever()
    finally:
        server.stop()
        if server.zygote is not None:
            server.zygote.close()
