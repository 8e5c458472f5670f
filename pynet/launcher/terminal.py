"""A container's pseudo-terminal (`pynet run -t`, `pynet exec -t`).

The pty is made inside the container, from its own devpts instance (so `tty` inside names a device that
exists there), by the process that becomes the command: it sends the master back over a socket, as
runc sends it to a --console-socket (pynet.oci.init.setup_console: one implementation for both), and
takes the slave as its controlling terminal and stdio. The launcher then relays between its own stdio
and the master until the container's process exits: with -i the user's terminal in raw mode (so Ctrl-C
is a byte the container's line discipline turns into its own SIGINT), its window size copied at start
and on every SIGWINCH.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import termios


class Console:
    """The socket a container's pty master comes back on; ``fd``: the end the container side inherits."""

    def __init__(self):
        import socket

        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.fd = self._theirs.fileno()

    def receive(self) -> int:
        """The pty master (blocks until the container's process sent it)."""
        from cni_plugins.wire import recv_with_fds

        self._theirs.close()
        try:
            _msg, fds = recv_with_fds(self._ours, 4096, max_fds=1)
        finally:
            self._ours.close()
        if not fds:
            raise OSError("the container did not send its terminal")
        return fds[0]


def preload() -> None:
    """Imports what ``setup`` needs, while the host's root is still there to import from."""
    import array  # noqa: F401
    import socket  # noqa: F401


def window_size() -> dict | None:
    """{"height", "width"} of the terminal on our stdin or stdout (consoleSize's shape), None if neither."""
    for fd in (0, 1):
        if os.isatty(fd):
            try:
                rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))[:2]
            except OSError:
                continue
            return {"height": rows, "width": cols}
    return None


def _resize(master: int) -> None:
    size = window_size()
    if size:
        try:
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size["height"], size["width"], 0, 0))
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def relay(master: int, pid: int, stdin: bool, wait):
    """Copies the master's output to stdout (and, with ``stdin``, stdin to the master) until process
    ``pid`` (our child) exits; then the rest of its output, and returns ``wait()``."""
    raw = stdin and os.isatty(0)
    saved = termios.tcgetattr(0) if raw else None
    previous = signal.signal(signal.SIGWINCH, lambda _s, _f: _resize(master))
    try:
        if raw:
            import tty

            tty.setraw(0)
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(master, select.POLLIN)
        if stdin:
            poller.register(0, select.POLLIN)
        open_fds = {master, 0} if stdin else {master}
        try:
            while True:
                events = dict(poller.poll())
                if pidfd in events:
                    break
                if master in events and not _copy(master, 1, poller, open_fds):
                    continue
                if 0 in events and 0 in open_fds:
                    data = os.read(0, 65536)
                    if data:
                        _write_all(master, data)
                    else:
                        poller.unregister(0)   # stdin's end: the container keeps its terminal
                        open_fds.discard(0)
        finally:
            os.close(pidfd)
        os.set_blocking(master, False)
        while master in open_fds and _copy(master, 1, poller, open_fds):
            pass
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
        os.close(master)
    return wait()


def _copy(src: int, dst: int, poller, open_fds: set) -> bool:
    """One read from ``src`` to ``dst``; False (and ``src`` unregistered) at its end: EIO once every
    slave is closed, or nothing left to read."""
    try:
        data = os.read(src, 65536)
    except BlockingIOError:
        return False
    except OSError:   # EIO: the container's side is closed
        data = b""
    if not data:
        if src in open_fds:
            poller.unregister(src)
            open_fds.discard(src)
        return False
    try:
        _write_all(dst, data)
    except OSError:
        pass   # our stdout went away: keep draining so the container is not blocked on its terminal
    return True
