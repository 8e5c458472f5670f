"""A network's resolver process, once it is more than dormant (supervise.py starts it): a small watchdog
that owns the listening sockets and forks the process that serves them, and forks another when that one
dies (killed, crashed), without waiting for a CNI call. Queries sent in between wait in the sockets'
buffers (the watchdog holds them open), and the new process reads the records file, so a restart loses
nothing.

The watchdog forks no serving process until a query or a TCP connection arrives on one of its sockets;
after a second without one (or at the first query) it loads the serving code, so a serving process, the
first one and any replacement, starts warm (a fork).

The watchdog is what the plugin starts and stops (its PID is the pid file's ``pid``; the serving
process's is ``server``, published under the directory's lock once it runs). The serving process dies
with the watchdog (PR_SET_PDEATHSIG), so a SIGKILLed watchdog leaves no orphan. The watchdog is one
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
from cni_plugins.dnsname import records as store

from . import sockets as listening

RELOAD_INTERVAL = 1.0
STOP_TIMEOUT = 2.0
STABLE_AFTER = 10.0   # a serving process that lived this long was not crash-looping
BACKOFF = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)   # before the n-th restart in a row of short-lived processes

log = logging.getLogger("pynet.dns")


class Watchdog:
    def __init__(self, data_dir: str, network: str, sockets: dict):
        """``sockets``: {address: [UDP, TCP]} bound on port 53 (sockets.listen or inherited)."""
        self.data_dir = data_dir
        self.network = network
        self.sockets = sockets
        self.serving = None   # the serving code (server.py), loaded at the first query
        self.child = 0
        self.pidfd = -1
        self.started = 0.0
        self.stopping = False
        self._records_stamp = None   # none: the first reload binds what the records hold by then
        self._wake_r = self._wake_w = -1

    def run(self) -> int:
        """Serves until SIGTERM or SIGINT."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_requested)
        restarts = 0
        while not self.stopping:
            if not self.child:
                if self._activated():
                    self._spawn()
                continue
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
            if self._reload():
                self._stop_child()
                self._spawn()
        self._stop_child()
        return 0

    def _activated(self) -> bool:
        """Waits (re-reading the records once a second) until a client knocks on a socket; True then."""
        listeners = [sock.fileno() for pair in self.sockets.values() for sock in pair]
        readable, _, _ = select.select(listeners + [self._wake_r], [], [], RELOAD_INTERVAL)
        self._drain_wakeups()
        if self.stopping:
            return False
        if any(fd in readable for fd in listeners):
            return True
        self.idle()
        return False

    def idle(self) -> None:
        """A second without a query: loads the serving code (a container that lived a second is likely to
        ask: be ready) and binds the records' new addresses."""
        self._load_serving()
        if self._reload():
            self._publish(0)

    def _load_serving(self) -> None:
        if self.serving is None:
            from . import server   # dnspython: loaded once, here, so every serving process starts warm

            self.serving = server

    def _records_changed(self) -> bool:
        stamp = store.stamp(store.records_path(self.data_dir, self.network))
        changed, self._records_stamp = stamp != self._records_stamp, stamp
        return changed

    def _reload(self) -> bool:
        """Binds the records' gateway addresses not bound yet; whether there was a new one."""
        try:
            if not self._records_changed():
                return False
            new = False
            for address in store.listen_addresses(store.load(self.data_dir, self.network)):
                if address not in self.sockets:
                    self.sockets[address] = listening.listen(address)
                    new = True
            return new
        except Exception:
            log.exception("reload")
            return False

    def _stop_requested(self, _signum, _frame) -> None:
        self.stopping = True

    def _drain_wakeups(self) -> None:
        syscalls.drain(self._wake_r)

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            select.select([self._wake_r], [], [], seconds)
            self._drain_wakeups()

    def _spawn(self) -> None:
        self._load_serving()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._become_server(parent)
        if self.pidfd >= 0:
            os.close(self.pidfd)
        self.child, self.pidfd, self.started = pid, os.pidfd_open(pid), time.monotonic()
        self._publish(pid)

    def _publish(self, child: int) -> None:
        """The serving process and the addresses into the pid file, if it still names this watchdog (the
        plugin writes it first; a stopped resolver's is gone). Under the lock: never after a DEL removed it."""
        try:
            with store.locked(self.data_dir):
                if store.read_pid_file(self.data_dir, self.network).get("pid") == os.getpid():
                    store.write_pid_file(self.data_dir, self.network, os.getpid(),
                                         syscalls.proc_start_time(os.getpid()), list(self.sockets),
                                         child or None, syscalls.proc_start_time(child) if child else None)
        except OSError as exc:
            log.warning("cannot write the pid file: %s", exc)

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
            self.serving.Server(self.data_dir, self.network, self.sockets).serve()
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


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
