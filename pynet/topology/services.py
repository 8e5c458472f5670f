"""A topology's services: long-running processes (etcd, a node agent, a server) started inside a node's
netns, waited for until ready, never restarted, and ended by PID.

Each one is written into the topology state (PID and start time) right after it starts, before its
readiness is awaited, so ``down`` from any process finds it, also after a failed or crashed ``up``; the
start time keeps a recycled PID from being signalled. Output goes to ``services/<name>.log`` in the
topology's data dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from cni_plugins.syscalls import is_alive, proc_start_time

from netns_fixtures.namespaces import Netns
from netns_fixtures.probes import tcp_connect
from .model import DATA_DIR_TOKEN, Readiness, Service

STOP_TIMEOUT = 10.0    # SIGTERM, then SIGKILL after this long


class ServiceFailed(Exception):
    pass


def expand(value: str, data_dir: str) -> str:
    return value.replace(DATA_DIR_TOKEN, data_dir)


def executable(name: str) -> str | None:
    """``pynet`` means the pynet running now: the directory of this interpreter comes before PATH."""
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
    return shutil.which(name, path=path)


def start(service: Service, ns: Netns, data_dir: str) -> tuple[subprocess.Popen, dict]:
    """Starts ``service`` in ``ns``; returns the process and the record for the state."""
    argv = [expand(a, data_dir) for a in service.command]
    exe = executable(argv[0])
    if exe is None:
        raise ServiceFailed(f"service {service.name!r}: command {argv[0]!r} not found (PATH and "
                            f"{os.path.dirname(sys.executable)})")
    log_path = os.path.join(data_dir, "services", f"{service.name}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    env = dict(os.environ) | {k: expand(v, data_dir) for k, v in service.env.items()}
    with open(log_path, "ab") as log:
        try:
            # Its own session: a Ctrl-C meant for `pynet topology up` does not reach it; `down` ends it.
            proc = ns.popen([exe, *argv[1:]], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise ServiceFailed(f"service {service.name!r}: cannot start {exe}: {exc.strerror}") from None
    record = {"name": service.name, "node": service.node, "pid": proc.pid,
              "start_time": proc_start_time(proc.pid), "argv": [exe, *argv[1:]], "log": log_path}
    return proc, record


def wait_ready(service: Service, proc: subprocess.Popen, ns: Netns, record: dict, data_dir: str) -> None:
    ready = service.ready
    if ready is None:
        return
    deadline = time.monotonic() + ready.timeout
    while True:
        if proc.poll() is not None:
            raise ServiceFailed(f"service {service.name!r} exited with status {proc.returncode} before it was "
                                f"ready ({ready.describe()})" + _log_tail(record["log"]))
        if _is_ready(ready, ns, data_dir):
            return
        if time.monotonic() > deadline:
            raise ServiceFailed(f"service {service.name!r} was not ready within {ready.timeout:g} s "
                                f"(waiting for {expand(ready.describe(), data_dir)})" + _log_tail(record["log"]))
        time.sleep(0.1)


def _is_ready(ready: Readiness, ns: Netns, data_dir: str) -> bool:
    if ready.tcp:
        return tcp_connect(ns, ready.tcp[0], ready.tcp[1], timeout=0.5, expect=None)
    path = expand(ready.file, data_dir)
    if not ready.json:
        return os.path.exists(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(data.get(k) == v for k, v in ready.json.items())


def check_running(service: Service, proc: subprocess.Popen, record: dict) -> None:
    """A service without a readiness condition that already ended fails ``up`` too."""
    if proc.poll() is not None:
        raise ServiceFailed(f"service {service.name!r} exited with status {proc.returncode} during up"
                            + _log_tail(record["log"]))


def wait_file(path: str, timeout: float, records: list[dict], what: str) -> None:
    """Waits for a file a service writes; fails early when every service that could write it is gone."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise ServiceFailed(f"{what}: {path} did not appear within {timeout:g} s")
        if records and not any(running(r) for r in records):
            raise ServiceFailed(f"{what}: {path} did not appear and its service has exited"
                                + _log_tail(records[0]["log"]))
        time.sleep(0.1)


def record(state: dict | None, name: str) -> dict | None:
    """The state record of service ``name`` in a deployment's ``state``, or None."""
    return next((r for r in ((state or {}).get("services") or []) if r["name"] == name), None)


def running(record: dict) -> bool:
    return is_alive(record.get("pid"), record.get("start_time"))


def stop(record: dict, timeout: float = STOP_TIMEOUT) -> str | None:
    """Ends the recorded process by PID (only if the PID is still that process). Returns a warning, if any."""
    pid, start_time = record.get("pid"), record.get("start_time")
    if not isinstance(pid, int) or not running(record):
        _reap(pid, start_time)
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        _reap(pid, start_time)
        if not is_alive(pid, start_time):
            return f"service {record['name']} (PID {pid}) ignored SIGTERM and was killed" if killed else None
        if time.monotonic() > deadline:
            if killed:
                return f"service {record['name']} (PID {pid}) did not end after SIGKILL"
            os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + timeout
        time.sleep(0.05)


def _reap(pid, start_time) -> None:
    """A service started by this very process stays a zombie until waited for; others are not ours, and
    a PID that now names another process is left to whoever started it."""
    if not isinstance(pid, int) or proc_start_time(pid) != start_time:
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _log_tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            tail = f.read().splitlines()[-lines:]
    except OSError:
        return ""
    return ("; the last lines of " + path + ":\n    " + "\n    ".join(tail)) if tail else ""
