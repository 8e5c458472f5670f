"""A network's resolver keeps answering: a small watchdog process owns the listening sockets and forks the
process that serves them, and forks another when that one dies (killed, crashed), without waiting for a
CNI call. Queries sent in between wait in the sockets' buffers (the watchdog holds them open), and the new
process reads the records file, so a restart loses nothing.

The watchdog is what the plugin starts and stops (its PID is the pid file's ``pid``; the serving
process's is ``server``): SIGTERM stops the serving process, then the watchdog. The serving process dies
with the watchdog (PR_SET_PDEATHSIG), so even a SIGKILLed watchdog leaves no orphan. The watchdog is one
thread (it forks), needs no pynet daemon and lives in whatever namespaces it was started in. Once a
second it also re-reads the records: a new gateway address (a network's second family) is bound and
served by a fresh serving process.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time

from cni_plugins import syscalls

RELOAD_INTERVAL = 1.0
STOP_TIMEOUT = 2.0
STABLE_AFTER = 10.0   # a serving process that lived this long was not crash-looping
BACKOFF = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)   # before the n-th restart in a row of short-lived processes

log = logging.getLogger("pynet.dns")


class Watchdog:
    def __init__(self, server, publish):
        """``server``: a bound server.Server; ``publish(pid)``: records the serving process (pid file)."""
        self.server = server
        self.publish = publish
        self.child = 0
        self.pidfd = -1
        self.started = 0.0
        self.stopping = False
        self._wake_r = self._wake_w = -1

    def run(self, ready=lambda: None) -> int:
        """Serves until SIGTERM or SIGINT; ``ready()`` once the first serving process runs."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_requested)
        self._spawn()
        ready()
        restarts = 0
        while not self.stopping:
            readable, _, _ = select.select([self.pidfd, self._wake_r], [], [], RELOAD_INTERVAL)
            self._drain_wakeups()
            if self.stopping:
                break
            if self.pidfd in readable:
                dead = self.child
                status = self._reap()
                restarts = 0 if time.monotonic() - self.started > STABLE_AFTER else restarts + 1
                log.warning("serving process %d %s; starting another", dead, _describe(status))
                self._pause(BACKOFF[min(restarts, len(BACKOFF) - 1)])
                if not self.stopping:
                    self._spawn()
                continue
            try:
                self.server.records.refresh()
                if self.server.bind():
                    self._stop_child()
                    self._spawn()
            except Exception:
                log.exception("reload")
        self._stop_child()
        return 0

    def _stop_requested(self, _signum, _frame) -> None:
        self.stopping = True

    def _drain_wakeups(self) -> None:
        drain(self._wake_r)

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            select.select([self._wake_r], [], [], seconds)
            self._drain_wakeups()

    def _spawn(self) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._become_server(parent)
        if self.pidfd >= 0:
            os.close(self.pidfd)
        self.child, self.pidfd, self.started = pid, os.pidfd_open(pid), time.monotonic()
        self.publish(pid)

    def _become_server(self, parent: int) -> None:
        try:
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(0)   # the watchdog died before the line above
            signal.set_wakeup_fd(-1)
            for fd in (self._wake_r, self._wake_w, self.pidfd):
                if fd >= 0:
                    os.close(fd)
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            self.server.serve()
        except BaseException:
            log.exception("serving process")
        finally:
            os._exit(1)

    def _reap(self) -> int:
        pid, self.child = self.child, 0
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0

    def _stop_child(self) -> None:
        if not self.child:
            return
        try:   # signals through the pidfd: never another process that got a reused PID
            signal.pidfd_send_signal(self.pidfd, signal.SIGTERM)
            readable, _, _ = select.select([self.pidfd], [], [], STOP_TIMEOUT)
            if not readable:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap()


def drain(fd: int) -> None:
    """Reads a non-blocking descriptor (a wakeup pipe, inotify) until it is empty."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
