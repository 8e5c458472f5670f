"""A `pynet daemon` started inside a sandbox namespace (tests, benchmarks), stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time

from .namespaces import Netns
from .runner import OUR_PLUGINS


def start_daemon(ns: Netns, socket_path: str, *args: str, env: dict | None = None,
                 timeout: float = 30) -> subprocess.Popen:
    """Runs `pynet daemon --socket PATH ARGS...` in ``ns`` and returns once it listens."""
    proc = ns.popen([os.path.join(OUR_PLUGINS, "pynet"), "daemon", "--socket", socket_path, *args], env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not os.path.exists(socket_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_daemon(proc)
            raise RuntimeError(f"pynet daemon did not start: {proc.stderr.read().decode(errors='replace')}")
        time.sleep(0.02)
    return proc


def stop_daemon(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def dropping_daemon(ns: Netns, socket_path: str, timeout: float = 10):
    """A stand-in daemon inside ``ns`` that accepts one request, reads a little of it and hangs up:
    what a client sees when the real daemon dies mid-request. Yields the socket path."""
    with ns.entered():
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path)
    server.listen(4)

    def accept_and_drop():
        conn, _ = server.accept()
        conn.recv(16)
        conn.close()

    thread = threading.Thread(target=accept_and_drop, daemon=True)
    thread.start()
    try:
        yield socket_path
    finally:
        thread.join(timeout)
        server.close()
