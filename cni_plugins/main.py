"""Every plugin executable's main: ``run("bridge")`` and so on, from the scripts `pynet cni install` writes.

It runs on every invocation, so it imports nothing beyond what the interpreter has already loaded (sys,
and ``posix`` under it) and cni_plugins/wire.py: ``json`` alone would cost more (it pulls in ``re``) than
the whole request takes in the daemon.

VERSION is answered from a constant. Other verbs go to the resident pynet daemon when one is listening
(pynet/daemon), with this process's network namespace and the opened ``CNI_NETNS`` as file descriptors,
so the daemon works in the namespaces the runtime called us with. Without a daemon, or when it goes
away mid-request, the same plugin code runs here (standalone): nothing depends on a service being up.
"""

import posix
import sys

from . import wire

_VERSION_REPLY = '{"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}\n'
_LOST = object()
# As cni_plugins.handles.OPEN_FLAGS (a FIFO must not hang the open), spelled with posix's constants.
_NETNS_OPEN_FLAGS = posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NONBLOCK | posix.O_NOCTTY


def _open_container_netns():
    """(status field, fds) for CNI_NETNS, opened here: the path may exist only in our mount namespace."""
    path = posix.environ.get(b"CNI_NETNS")
    if not path:
        return wire.NETNS_NOT_GIVEN, []
    try:
        return wire.NETNS_OPENED, [posix.open(path, _NETNS_OPEN_FLAGS)]
    except OSError as exc:
        return str(exc.errno).encode(), []


def _via_daemon(plugin: str, stdin: bytes, path: str):
    """(exit code, reply text) from the daemon; None when no daemon takes the connection; _LOST when it
    took the request and then went away."""
    sock = wire.connect(path)
    if sock is None:
        return None
    fds = []
    try:
        fds.append(posix.open("/proc/thread-self/ns/net", posix.O_RDONLY | posix.O_CLOEXEC))
        status, container = _open_container_netns()
        fds.extend(container)
        wire.send_with_fds(sock, wire.pack(wire.CNI, plugin.encode(), wire.encode_env(posix.environ), stdin,
                                           status), fds)
        code, text = wire.recv_fields(sock, 2)
        return int(code), text.decode("utf-8", "surrogateescape")
    except (ConnectionError, OSError, ValueError):
        return _LOST
    finally:
        for fd in fds:
            posix.close(fd)
        sock.close()


def _autostart(path: str) -> None:
    """Starts `pynet daemon` in the background for the requests to come; this one is served standalone.

    Double fork: the daemon must be neither the runtime's child nor hold its stdout (the runtime reads
    our reply until EOF). Two plugins starting it at once are fine: the daemon's lock file admits one."""
    import os

    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.execv(sys.executable, [sys.executable, "-I", "-m", "pynet.cli", "daemon", "--socket", path])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _standalone(plugin: str, stdin: bytes, environ=None) -> tuple:
    import gc

    # A one-request process: the cyclic collector would mostly walk the objects the imports below make
    # (~5-7 ms of a bridge ADD's ~100 ms here); a high threshold still bounds what a large request leaves.
    gc.set_threshold(100_000, 50, 100)

    # The standard library first, where Python itself puts it: the plugin scripts insert the
    # installation's directories before it, so each of the ~100 standard imports of a run would look
    # in every one of those first (~3% of a plugin run here).
    stdlib = f"{sys.base_prefix}/lib/python{sys.version_info[0]}.{sys.version_info[1]}"
    sys.path.sort(key=lambda entry: not (entry == stdlib or entry.startswith(stdlib + "/")
                                         or entry.endswith(".zip")))
    from . import lean_imports

    lean_imports.defer_stdlib()   # before the first import of dataclasses (inspect) and pyroute2
    lean_imports.cache_compiled_code(plugin)
    import json
    import os

    from .skel import handle

    os.environ.pop("PYNET_DAEMON_LOST", None)   # the shim's word to us alone, not to plugins we run
    code, reply = handle(plugin, os.environ if environ is None else environ, stdin)
    lean_imports.save_compiled_code()
    return code, (json.dumps(reply) + "\n") if reply is not None else ""


def run(plugin: str) -> None:
    """Serves one invocation of the plugin registered as ``plugin`` and ends the process."""
    if plugin == "dhcp" and sys.argv[1:2] == ["daemon"]:   # `dhcp daemon ...`: the lease daemon, not a verb
        from .dhcp.daemon import main

        sys.exit(main(sys.argv[2:]))
    command = posix.environ.get(b"CNI_COMMAND")
    if command == b"VERSION":
        sys.stdout.write(_VERSION_REPLY)
        sys.stdout.flush()
        sys.exit(0)
    stdin = sys.stdin.buffer.read()
    outcome = None
    path = wire.socket_path()
    if posix.environ.pop(b"PYNET_DAEMON_LOST", None) is not None:
        outcome = _LOST   # the native shim's daemon took the request and went away (see cni_plugins/shim)
    elif wire.daemon_mode() != b"off":
        if wire.exists(path):
            outcome = _via_daemon(plugin, stdin, path)
        elif wire.autostart_wanted():
            _autostart(path)
    if outcome is _LOST:
        # The daemon died mid-request: whatever it half did is undone by a standalone DEL (idempotent),
        # then the request is served here, so the runtime sees one clean answer.
        if command == b"ADD":
            import os

            _standalone(plugin, stdin, {**os.environ, "CNI_COMMAND": "DEL"})
        outcome = None
    if outcome is None:
        outcome = _standalone(plugin, stdin)
    code, text = outcome
    if text:
        sys.stdout.write(text)
    sys.stdout.flush()
    # Interpreter teardown (finalizers of netlink and nft handles) is work nobody waits for but the
    # runtime: everything a plugin writes is closed and synced before it returns, so leave at once.
    posix._exit(code)
