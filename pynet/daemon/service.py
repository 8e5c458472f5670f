"""`pynet daemon install | uninstall | status`: the daemon as a service.

With systemd (PID 1 is systemd: /run/systemd/system exists) it is a socket-activated unit pair,
``pynetd.socket`` (the listening socket, 0600, owned by systemd) and ``pynetd.service`` (`pynet daemon`,
which adopts the socket passed as fd 3, see server.py), enabled and started through ``systemctl``.

Without systemd it is a supervisor (pynet/daemon/supervisor.py) double-forked into its own session, which
keeps `pynet daemon` running and restarts it when it dies. Nothing brings the supervisor back after a
reboot: run `pynet daemon install` from the machine's boot scripts (rc.local, an init script) for that.
Its PID file is checked before it is signalled: the PID must run the supervisor's command line for this
run directory and have the start time recorded next to it, so a recycled PID is never killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from cni_plugins import wire
from cni_plugins.files import atomic_write
from cni_plugins.syscalls import is_alive, proc_start_time

from . import supervisor

RUN_DIR = os.path.dirname(wire.DEFAULT_SOCKET)
UNIT_DIR = "/etc/systemd/system"
SOCKET_UNIT, SERVICE_UNIT = "pynetd.socket", "pynetd.service"


class ServiceError(Exception):
    pass


def systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


# -- systemd ------------------------------------------------------------------------------------------------
def _exec_line(argv: list[str]) -> str:
    for arg in argv:
        if any(c in arg for c in "\n\"\\%$"):
            raise ServiceError(f"cannot write {arg!r} into a systemd unit's ExecStart")
    return " ".join(f'"{a}"' if any(c.isspace() for c in a) else a for a in argv)


def unit_files(socket_path: str = wire.DEFAULT_SOCKET, daemon_argv: list[str] | None = None) -> dict[str, str]:
    """The two units' text, by file name."""
    argv = daemon_argv or supervisor.daemon_command(socket_path)
    return {
        SOCKET_UNIT: f"""\
# Written by `pynet daemon install`. systemd owns the socket; plugins that connect start pynetd.service.
[Unit]
Description=pynet CNI daemon socket

[Socket]
ListenStream={socket_path}
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
""",
        SERVICE_UNIT: f"""\
# Written by `pynet daemon install`. The daemon adopts the socket systemd passes (LISTEN_FDS, fd 3).
# While it is down, pynet's CNI plugins serve each request standalone.
[Unit]
Description=pynet CNI daemon (resident fast path for pynet's CNI plugins)
Requires={SOCKET_UNIT}
After={SOCKET_UNIT} network-pre.target

[Service]
Type=simple
ExecStart={_exec_line(argv)}
Restart=always
RestartSec=1

[Install]
Also={SOCKET_UNIT}
WantedBy=multi-user.target
""",
    }


def _systemctl(*args: str) -> None:
    proc = subprocess.run(["systemctl", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ServiceError(f"systemctl {' '.join(args)} failed: {proc.stdout.strip()}")


def install_systemd(socket_path: str, unit_dir: str = UNIT_DIR) -> list[str]:
    os.makedirs(unit_dir, exist_ok=True)
    for name, text in unit_files(socket_path).items():
        atomic_write(os.path.join(unit_dir, name), text, mode=0o644)
    _systemctl("daemon-reload")
    _systemctl("enable", "--now", SOCKET_UNIT, SERVICE_UNIT)
    return [f"installed {SOCKET_UNIT} and {SERVICE_UNIT} in {unit_dir}, listening on {socket_path}"]


def uninstall_systemd(unit_dir: str = UNIT_DIR) -> list[str]:
    paths = [os.path.join(unit_dir, name) for name in (SERVICE_UNIT, SOCKET_UNIT)]
    if not any(os.path.exists(p) for p in paths):
        return ["not installed"]
    _systemctl("disable", "--now", SERVICE_UNIT, SOCKET_UNIT)
    _remove(*paths)
    _systemctl("daemon-reload")
    return [f"removed {SOCKET_UNIT} and {SERVICE_UNIT} from {unit_dir}"]


def status_systemd() -> tuple[bool, list[str]]:
    proc = subprocess.run(["systemctl", "is-active", SOCKET_UNIT, SERVICE_UNIT], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    states = proc.stdout.split()
    return proc.returncode == 0, [f"{unit}: {state}" for unit, state in zip((SOCKET_UNIT, SERVICE_UNIT), states)]


# -- supervised (no systemd) --------------------------------------------------------------------------------
class Paths:
    def __init__(self, run_dir: str, socket_path: str | None = None):
        self.run_dir = os.path.abspath(run_dir)
        self.socket = os.path.abspath(socket_path) if socket_path else os.path.join(self.run_dir, "pynetd.sock")
        self.pid_file = os.path.join(self.run_dir, supervisor.PID_FILE)
        self.state_file = os.path.join(self.run_dir, supervisor.STATE_FILE)
        self.log_file = os.path.join(self.run_dir, supervisor.LOG_FILE)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode("utf-8", "surrogateescape").split("\0")
    except OSError:
        return []


def _read_pid_file(paths: Paths) -> tuple[int, int] | None:
    try:
        with open(paths.pid_file) as fh:
            pid, start = fh.read().split()
        return int(pid), int(start)
    except (OSError, ValueError):
        return None


def supervisor_pid(paths: Paths) -> int | None:
    """The supervisor's PID if the pid file names a live process that is ours: the supervisor's command
    line for this run directory, started when the pid file says."""
    recorded = _read_pid_file(paths)
    if recorded is None:
        return None
    pid, start = recorded
    cmd = _cmdline(pid)
    if not is_alive(pid, start) or supervisor.MODULE not in cmd or paths.run_dir not in cmd:
        return None
    return pid


def read_state(paths: Paths) -> dict:
    try:
        with open(paths.state_file) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def daemon_pid(paths: Paths, state: dict | None = None) -> int | None:
    """The supervised daemon's PID, checked like the supervisor's (command line and start time)."""
    state = read_state(paths) if state is None else state
    pid, start = state.get("daemon_pid"), state.get("daemon_start_time")
    if not isinstance(pid, int) or not is_alive(pid, start):
        return None
    cmd = _cmdline(pid)
    return pid if "daemon" in cmd and state.get("socket") in cmd else None


def listening(socket_path: str) -> bool:
    sock = wire.connect(socket_path)
    if sock is None:
        return False
    sock.close()
    return True


def _spawn_supervisor(paths: Paths) -> None:
    """Double fork: the supervisor is nobody's child, in a session of its own, holding none of our stdio."""
    pid = os.fork()
    if pid == 0:
        code = 127
        try:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                log = os.open(paths.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                os.dup2(log, 2)
                os.chdir("/")
                os.execv(sys.executable, supervisor.command(paths.run_dir, paths.socket))
            code = 0
        finally:
            os._exit(code)
    os.waitpid(pid, 0)


def _log_tail(paths: Paths) -> str:
    try:
        with open(paths.log_file, errors="replace") as fh:
            return fh.read()[-2000:].strip()
    except OSError:
        return ""


def install_supervised(paths: Paths, timeout: float = 60) -> list[str]:
    pid = supervisor_pid(paths)
    if pid is not None:
        return [f"already running: supervisor PID {pid}, socket {paths.socket}"]
    if listening(paths.socket):
        raise ServiceError(f"a pynet daemon that is not this service already serves {paths.socket}: stop it "
                           "first (or pass another --socket)")
    os.makedirs(paths.run_dir, mode=0o700, exist_ok=True)
    _remove(paths.pid_file, paths.state_file)
    _spawn_supervisor(paths)
    deadline = time.monotonic() + timeout
    while True:
        pid = supervisor_pid(paths)
        if pid is not None and listening(paths.socket):
            return [f"installed: supervisor PID {pid}, daemon PID {daemon_pid(paths)}, socket {paths.socket}"]
        recorded = _read_pid_file(paths)
        if time.monotonic() > deadline or (recorded and pid is None):
            if pid is not None:
                _stop_pid(pid)
            raise ServiceError(f"the daemon did not come up on {paths.socket} within {timeout:g} s"
                               + (f":\n{_log_tail(paths)}" if _log_tail(paths) else ""))
        time.sleep(0.05)


def _stop_pid(pid: int, timeout: float = 15) -> None:
    start = proc_start_time(pid)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while is_alive(pid, start):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline += timeout
        time.sleep(0.02)


def uninstall_supervised(paths: Paths) -> list[str]:
    said = []
    state = read_state(paths)
    sup = supervisor_pid(paths)
    recorded = _read_pid_file(paths)
    if sup is not None:
        _stop_pid(sup)
        said.append(f"stopped supervisor PID {sup}")
    elif recorded is not None:
        said.append(f"{paths.pid_file} named PID {recorded[0]}, which is not pynet's supervisor: left it alone")
    dpid = daemon_pid(paths, state)
    if dpid is not None:   # the supervisor was killed without stopping its daemon
        _stop_pid(dpid)
        said.append(f"stopped daemon PID {dpid}")
    _remove(paths.pid_file, paths.state_file, paths.log_file)
    if not listening(paths.socket):   # a daemon killed by SIGKILL leaves its socket and lock file
        _remove(paths.socket, paths.socket + ".lock", paths.socket + ".served")
    try:
        os.rmdir(paths.run_dir)
    except OSError:
        pass
    return said or ["not installed"]


def status_supervised(paths: Paths) -> tuple[bool, dict]:
    state = read_state(paths)
    sup = supervisor_pid(paths)
    info = {"running": sup is not None, "supervisor_pid": sup, "daemon_pid": daemon_pid(paths, state) if sup else None,
            "socket": paths.socket, "listening": listening(paths.socket),
            "restarts": state.get("restarts", 0) if sup else 0, "status": state.get("status") if sup else "stopped"}
    return info["running"], info


def _remove(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def describe(info: dict) -> str:
    if not info["running"]:
        return f"not running (socket {info['socket']})"
    return (f"running: supervisor PID {info['supervisor_pid']}, daemon PID {info['daemon_pid'] or '-'} "
            f"({info['status']}, {info['restarts']} restarts), socket {info['socket']} "
            f"({'listening' if info['listening'] else 'not listening'})")

