"""The supervisor of an installed daemon on a machine without systemd (`pynet daemon install`).

Started by pynet/daemon/service.py double-forked in its own session, it runs `pynet daemon` as its child
and starts it again when it dies, waiting 0.5 s after a quick death and twice as long after each further
one (at most 30 s; a daemon that lived a minute starts the count over). It writes its own PID and start
time to ``RUN_DIR/pynetd.pid`` (what `pynet daemon uninstall` checks before signalling it) and the
daemon's PID, start time, restarts and last exit to ``RUN_DIR/pynetd.state`` (JSON). SIGTERM stops the
daemon, then the supervisor, which removes both files.

Run as ``python -I -m pynet.daemon.supervisor --run-dir DIR --socket PATH``: that command line is how its
PID is recognised.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from cni_plugins.files import atomic_write
from cni_plugins.syscalls import PR_SET_PDEATHSIG, prctl, proc_start_time

MODULE = "pynet.daemon.supervisor"
PID_FILE, STATE_FILE, LOG_FILE = "pynetd.pid", "pynetd.state", "pynetd.log"
FIRST_BACKOFF, MAX_BACKOFF, HEALTHY_AFTER = 0.5, 30.0, 60.0


def command(run_dir: str, socket_path: str) -> list[str]:
    return [sys.executable, "-I", "-m", MODULE, "--run-dir", run_dir, "--socket", socket_path]


def daemon_command(socket_path: str) -> list[str]:
    return [sys.executable, "-I", "-m", "pynet.cli", "daemon", "--socket", socket_path]


class Supervisor:
    def __init__(self, run_dir: str, socket_path: str):
        self.run_dir, self.socket_path = run_dir, socket_path
        self.pid_file = os.path.join(run_dir, PID_FILE)
        self.state_file = os.path.join(run_dir, STATE_FILE)
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.state = {"supervisor_pid": os.getpid(), "socket": socket_path, "restarts": 0,
                      "daemon_pid": None, "daemon_start_time": None, "last_exit": None, "status": "starting"}

    def _stop(self, *_):
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def _save(self, **changes) -> None:
        self.state.update(changes)
        atomic_write(self.state_file, json.dumps(self.state) + "\n", mode=0o600)

    def _start_daemon(self) -> None:
        def die_with_supervisor():  # a supervisor killed by SIGKILL leaves no orphan daemon behind
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

        self.child = subprocess.Popen(daemon_command(self.socket_path), stdin=subprocess.DEVNULL,
                                      stdout=2, stderr=2, preexec_fn=die_with_supervisor)
        self._save(daemon_pid=self.child.pid, daemon_start_time=proc_start_time(self.child.pid),
                   status="running")

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._stop)
        atomic_write(self.pid_file, f"{os.getpid()} {proc_start_time(os.getpid())}\n", mode=0o600)
        backoff = FIRST_BACKOFF
        try:
            while not self.stopping:
                started = time.monotonic()
                self._start_daemon()
                code = self.child.wait()
                if self.stopping:
                    break
                backoff = FIRST_BACKOFF if time.monotonic() - started > HEALTHY_AFTER else backoff
                self._save(status="restarting", last_exit=code, daemon_pid=None, daemon_start_time=None,
                           restarts=self.state["restarts"] + 1)
                print(f"pynet supervisor: daemon exited ({code}); restarting in {backoff:g} s",
                      file=sys.stderr, flush=True)
                deadline = time.monotonic() + backoff
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(0.05)
                backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            if self.child is not None and self.child.poll() is None:
                self.child.terminate()
                try:
                    self.child.wait(10)
                except subprocess.TimeoutExpired:
                    self.child.kill()
                    self.child.wait()
            for path in (self.state_file, self.pid_file):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=MODULE)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--socket", required=True)
    args = p.parse_args(argv)
    return Supervisor(args.run_dir, args.socket).run()


if __name__ == "__main__":
    sys.exit(main())
