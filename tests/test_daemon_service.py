"""`pynet daemon install | uninstall | status`: the daemon as a supervised service (no systemd here), the
systemd units as text, and the daemon adopting a socket passed the systemd way (LISTEN_FDS, fd 3).

Everything runs inside the sandbox netns ``host_ns``: the supervisor and its daemon live there, with their
socket and files in a temporary run directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from cni_plugins.syscalls import is_alive, proc_start_time
from netns_fixtures import CNI, OUR_PLUGINS
from pynet.daemon import service

PYNET = os.path.join(OUR_PLUGINS, "pynet")
LOOPBACK = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}


def _wait(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _served(socket_path: str, daemon_pid: int) -> dict:
    """The daemon's request counters (it writes them next to its socket on SIGUSR1)."""
    out = socket_path + ".served"
    before = os.stat(out).st_mtime_ns if os.path.exists(out) else None
    os.kill(daemon_pid, signal.SIGUSR1)
    _wait(lambda: os.path.exists(out) and os.stat(out).st_mtime_ns != before, "the served counters")
    return json.loads(open(out).read())


def _adds_served(socket_path: str, daemon_pid: int, expected: int) -> int:
    """The daemon's ADD count once it reaches ``expected`` (a counter moves just after the reply), or what
    it is after a while."""
    deadline = time.monotonic() + 10
    while (count := _served(socket_path, daemon_pid).get("ADD", 0)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


@pytest.fixture
def run_dir():
    # Short: a unix socket path has at most 107 bytes, and pytest's tmp_path can be long.
    top = tempfile.mkdtemp(prefix="pynetd-", dir="/tmp")
    yield os.path.join(top, "run")
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def svc(host_ns, run_dir):
    """`pynet daemon ACTION --run-dir RUN_DIR` inside the sandbox; uninstalls at the end, pass or fail."""
    def call(action: str, *extra: str) -> subprocess.CompletedProcess:
        return host_ns.run([PYNET, "daemon", action, "--run-dir", run_dir, *extra], timeout=120)

    yield call
    paths = service.Paths(run_dir)
    leftovers = [service.supervisor_pid(paths), service.daemon_pid(paths)]
    call("uninstall")
    for pid in leftovers:   # only if uninstall itself failed: ours, checked by command line and start time
        if pid is not None and is_alive(pid, None):
            os.kill(pid, signal.SIGKILL)


def _status(svc) -> dict:
    proc = svc("status", "--json")
    info = json.loads(proc.stdout)
    assert proc.returncode == (0 if info["running"] else 3)
    return info


def test_installed_daemon_serves_plugins_is_restarted_after_a_kill_and_uninstall_leaves_nothing(
        svc, host_ns, make_netns, run_dir):
    proc = svc("install")
    assert proc.returncode == 0, proc.stderr
    info = _status(svc)
    assert info["running"] and info["listening"] and info["restarts"] == 0
    sup, first = info["supervisor_pid"], info["daemon_pid"]
    sock = os.path.join(run_dir, "pynetd.sock")
    assert info["socket"] == sock and oct(os.stat(sock).st_mode & 0o777) == "0o600"
    # The supervisor and the daemon live in the sandbox, nobody's children, the supervisor in its own session.
    for pid in (sup, first):
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(host_ns.path).st_ino
    assert os.getsid(sup) not in (os.getsid(0), sup)   # a new session, and not its leader (double fork)

    cni = CNI(host_ns, OUR_PLUGINS, extra_env={"PYNET_SOCKET": sock})
    cni.add("loopback", LOOPBACK, make_netns())
    assert _adds_served(sock, first, 1) == 1

    os.kill(first, signal.SIGKILL)
    _wait(lambda: not is_alive(first, None), "the killed daemon to go")
    # While it is down (its socket file left behind, nobody listening) plugins serve requests themselves.
    meanwhile = make_netns()
    meanwhile.ipr.link("set", index=1, state="down")
    result = cni.add("loopback", LOOPBACK, meanwhile)
    assert meanwhile.link("lo")["flags"] & 1 and result["ips"][0]["address"] == "127.0.0.1/8"

    second = _wait(lambda: (i := _status(svc))["listening"] and i["daemon_pid"] not in (None, first)
                   and i["daemon_pid"], "the restarted daemon")
    assert _status(svc)["restarts"] == 1 and _status(svc)["supervisor_pid"] == sup
    before = _served(sock, second).get("ADD", 0)   # 1 if the request meanwhile came after the restart
    cni.add("loopback", LOOPBACK, make_netns())
    assert _adds_served(sock, second, before + 1) == before + 1

    again = svc("install")
    assert again.returncode == 0 and b"already running" in again.stdout
    assert _status(svc)["supervisor_pid"] == sup and _status(svc)["daemon_pid"] == second

    proc = svc("uninstall")
    assert proc.returncode == 0, proc.stderr
    assert not is_alive(sup, None) and not is_alive(second, None)
    assert not os.path.exists(run_dir)
    assert _status(svc)["running"] is False
    # With the daemon gone for good, plugins still work (standalone).
    cni.add("loopback", LOOPBACK, make_netns())


def test_uninstall_never_signals_a_pid_that_is_not_our_supervisor(svc, run_dir):
    os.makedirs(run_dir)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(run_dir, "pynetd.pid"), "w") as fh:
            fh.write(f"{stranger.pid} {proc_start_time(stranger.pid)}\n")
        assert _status(svc)["running"] is False
        proc = svc("uninstall")
        assert proc.returncode == 0
        assert f"PID {stranger.pid}".encode() in proc.stdout and b"left it alone" in proc.stdout
        assert stranger.poll() is None
        assert not os.path.exists(run_dir)
    finally:
        stranger.kill()
        stranger.wait()


def test_a_stale_pid_file_does_not_stop_an_install(svc, run_dir):
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "pynetd.pid"), "w") as fh:
        fh.write(f"{os.getpid()} 1\n")   # a live PID with another start time: a recycled PID
    proc = svc("install")
    assert proc.returncode == 0, proc.stderr
    assert _status(svc)["supervisor_pid"] not in (None, os.getpid())


def test_systemd_units_use_socket_activation():
    units = service.unit_files("/run/pynet/pynetd.sock", ["/opt/pynet/.venv/bin/python3", "-I", "-m", "pynet.cli",
                                                          "daemon", "--socket", "/run/pynet/pynetd.sock"])
    sock, svc_unit = units["pynetd.socket"], units["pynetd.service"]
    assert "[Socket]\nListenStream=/run/pynet/pynetd.sock\nSocketMode=0600\n" in sock
    assert "WantedBy=sockets.target" in sock
    assert "Requires=pynetd.socket" in svc_unit and "Also=pynetd.socket" in svc_unit
    assert ("ExecStart=/opt/pynet/.venv/bin/python3 -I -m pynet.cli daemon --socket /run/pynet/pynetd.sock\n"
            in svc_unit)
    assert "Restart=always" in svc_unit
    # By default the unit runs this installation's interpreter.
    assert (f"ExecStart={sys.executable} -I -m pynet.cli daemon --socket /run/pynet/pynetd.sock\n"
            in service.unit_files()["pynetd.service"])


def test_unit_refuses_an_interpreter_path_systemd_would_expand():
    with pytest.raises(service.ServiceError, match=r"\$HOME"):
        service.unit_files("/run/pynet/pynetd.sock", ["/opt/$HOME/python3", "-m", "pynet.cli", "daemon"])


def test_daemon_adopts_a_socket_passed_as_fd_3_and_leaves_it_to_its_owner(host_ns, make_netns, run_dir):
    os.makedirs(run_dir)
    path = os.path.join(run_dir, "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    unused = os.path.join(run_dir, "unused.sock")
    # What systemd does: the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID set to the daemon's own PID.
    activate = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ.update(LISTEN_PID=str(os.getpid()), "
                "LISTEN_FDS='1'); os.execv(sys.argv[2], sys.argv[2:])")
    argv = [sys.executable, "-c", activate, str(listener.fileno()), PYNET, "daemon", "--socket", unused]
    proc = host_ns.popen(argv, pass_fds=[listener.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(lambda: os.path.exists(path + ".lock") or proc.poll() is not None, "the daemon to take the socket")
        assert proc.poll() is None, proc.stderr.read()
        cni = CNI(host_ns, OUR_PLUGINS, extra_env={"PYNET_SOCKET": path})
        ns = make_netns()
        ns.ipr.link("set", index=1, state="down")
        cni.add("loopback", LOOPBACK, ns)   # queued in the socket's backlog until the daemon accepts
        assert ns.link("lo")["flags"] & 1
        assert _adds_served(path, proc.pid, 1) == 1
        assert not os.path.exists(unused)   # it never bound a socket of its own
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read()
    # The socket file is the owner's: still there, still listening for the next activation.
    assert os.path.exists(path) and not os.path.exists(path + ".lock")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    client.close()
    listener.close()


def test_listen_fds_for_another_pid_is_ignored(host_ns, run_dir):
    os.makedirs(run_dir)
    path = os.path.join(run_dir, "own.sock")
    argv = ["sh", "-c", 'LISTEN_PID=1 LISTEN_FDS=1 exec "$0" daemon --socket "$1"', PYNET, path]
    proc = host_ns.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait(lambda: os.path.exists(path) or proc.poll() is not None, "the daemon's own socket")
        assert proc.poll() is None, proc.stderr.read()
    finally:
        proc.terminate()
        proc.wait(30)
    assert not os.path.exists(path)


def test_systemd_install_writes_the_units_and_asks_systemctl_to_start_them(tmp_path, monkeypatch):
    """systemd is not running here: a stand-in `systemctl` records what it is asked."""
    bin_dir, unit_dir, calls = tmp_path / "bin", tmp_path / "units", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    service.install_systemd("/run/pynet/pynetd.sock", unit_dir=str(unit_dir))
    assert sorted(os.listdir(unit_dir)) == ["pynetd.service", "pynetd.socket"]
    assert (unit_dir / "pynetd.socket").read_text() == service.unit_files()["pynetd.socket"]
    assert calls.read_text().splitlines() == ["daemon-reload", "enable --now pynetd.socket pynetd.service"]
    calls.unlink()
    service.uninstall_systemd(unit_dir=str(unit_dir))
    assert os.listdir(unit_dir) == []
    assert calls.read_text().splitlines() == ["disable --now pynetd.service pynetd.socket", "daemon-reload"]


def test_systemctl_failure_is_reported_with_its_output(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\necho 'Failed to connect to bus'\nexit 1\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(service.ServiceError, match="systemctl daemon-reload failed: Failed to connect to bus"):
        service.install_systemd("/run/pynet/pynetd.sock", unit_dir=str(tmp_path / "units"))


def test_install_refuses_a_socket_another_daemon_serves(svc, pynet_daemon, run_dir):
    proc = svc("install", "--socket", pynet_daemon)
    assert proc.returncode == 1
    assert f"already serves {pynet_daemon}".encode() in proc.stderr and b"Traceback" not in proc.stderr
    assert not os.path.exists(run_dir)
