"""`pynet run` served by the resident daemon (pynet/launcher/remote.py + zygote.py): the same container as a
local run (isolation, stdio, exit code, --rm cleanup, network), signals reach it, and without a daemon, or
for what the daemon does not serve, the local launcher runs it.

The daemon runs inside the sandbox host netns (``pynet_daemon`` fixture), the client too; state and image
store live under pytest's tmp dirs, and the ``pynet`` fixture removes every container at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.test_launcher import (PYNET, _cgroup_dirs, _leased, netenv, pynet, pynet_root, pytestmark,  # noqa: F401
                                 state_records)

from netns_fixtures.daemon import dropping_daemon, start_daemon, stop_daemon
from pynet.launcher import zygote
from tests.test_ptp import eventually
from pynet.launcher.options import OptionsError, parse_fast


@pytest.fixture
def pynet_daemon_args():
    return ["--containers"]


@pytest.fixture
def remote(pynet, pynet_daemon):
    """The ``pynet`` launcher fixture, its client pointed at the test's daemon."""
    pynet.env["PYNET_SOCKET"] = pynet_daemon
    return pynet


def _wait_running(state: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rec in state_records(state):
            if rec.get("status") == "running" and rec.get("pid"):
                return rec
        time.sleep(0.02)
    raise AssertionError("no running container appeared")


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as fh:
        return fh.read().strip()


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line.split()[1] for line in fh if line.startswith("PPid:")))


def test_container_is_launched_by_the_daemons_zygote_and_gets_the_clients_signals(remote, host_ns):
    client = host_ns.popen([PYNET, "run", "--net", "none", "--dns", "127.0.0.1", "busybox", "sh", "-c",
                            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done"],
                           env=remote.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdout.readline() == b"ready\n"
        rec = _wait_running(remote.state)
        launcher = rec["monitor_pid"]
        assert launcher != client.pid
        assert _comm(_ppid(launcher)) == "pynet-zygote"
        # The container's namespaces are new ones, except none is shared with the daemon either.
        assert rec["namespaces"]["net"] != os.stat(f"/proc/{client.pid}/ns/net").st_ino
        client.send_signal(signal.SIGTERM)
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert out == b"got-term\n", err
    assert client.returncode == 42


def test_exit_code_and_stdio_pass_through_the_daemon(remote, host_ns):
    res = host_ns.run([PYNET, "run", "--rm", "-i", "--net", "none", "--dns", "127.0.0.1", "busybox", "sh", "-c",
                       "read line; echo out:$line; echo err:$HOSTNAME >&2; exit 7"], input=b"hello\n", env=remote.env)
    assert res.returncode == 7, res.stderr
    assert res.stdout == b"out:hello\n"
    assert res.stderr.startswith(b"err:") and len(res.stderr.strip()) == len("err:") + 12
    res = host_ns.run([PYNET, "run", "--rm", "--net", "none", "busybox", "cat"], input=b"hello\n", env=remote.env)
    assert (res.returncode, res.stdout) == (0, b""), res.stderr   # no -i: stdin is /dev/null, as Docker's
    res = remote.run("--rm", "busybox", "no-such-command")
    assert res.returncode == 127 and "not found" in res.err


def test_isolation_is_the_same_as_a_local_run(remote, host_ns):
    from pynet.launcher import security

    res = remote.run("--rm", "--hostname", "box-d", "busybox", "sh", "-c",
                     "echo $$; hostname; ls /sys/class/net; grep -E '^(CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; "
                     "readlink /proc/self/ns/net; for p in /proc/[0-9]*; do echo ${p#/proc/}; done")
    assert res.returncode == 0, res.err
    lines = res.out.split("\n")
    assert lines[0] == "1" and lines[1] == "box-d" and lines[2] == "lo"
    assert int(lines[3].split()[1], 16) == security.cap_mask(security.resolve_caps())
    assert lines[4:6] == ["Seccomp:\t2", "NoNewPrivs:\t1"] or sorted(lines[4:6]) == ["NoNewPrivs:\t1", "Seccomp:\t2"]
    assert lines[6] != f"net:[{os.stat(host_ns.path).st_ino}]"
    assert set(lines[7:]) - {""} <= {"1", "2", "3"}
    assert socket.gethostname() != "box-d"
    res = remote("run", "--rm", "--net", "host", "busybox", "readlink", "/proc/self/ns/net")
    assert res.out.strip() == f"net:[{os.stat(host_ns.path).st_ino}]", res.err   # the client's netns


def test_rm_cleans_up_through_the_daemon(remote, pynet_root):
    res = remote.run("--rm", "--name", "gone-d", "busybox", "sh", "-c", "echo data > /file; cat /proc/self/cgroup")
    assert res.returncode == 0, res.err
    assert state_records(remote.state) == []
    # The upper dir is out of sight at once (set aside), and deleted right after the client's answer.
    storage = os.path.join(pynet_root, "containers")
    assert [n for n in os.listdir(storage) if not n.startswith(".removing-")] == []
    deadline = time.monotonic() + 5
    while os.listdir(storage) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.listdir(storage) == []
    cid = next(line.split("/")[-1] for line in res.out.splitlines() if "/pynet/" in line) \
        if "/pynet/" in res.out else None
    if cid:
        assert _cgroup_dirs(cid) == []
    # Without --rm the record stays, exited with its code, cgroups gone.
    res = remote.run("--name", "kept-d", "busybox", "sh", "-c", "exit 3")
    assert res.returncode == 3
    (rec,) = state_records(remote.state)
    assert rec["status"] == "exited" and rec["exit_code"] == 3 and rec["name"] == "kept-d"
    assert _cgroup_dirs(rec["id"]) == []


def test_env_workdir_and_umask_come_from_the_client(remote, tmp_path):
    remote.env["FROM_CLIENT"] = "yes"
    res = remote.run("--rm", "-e", "FROM_CLIENT", "-e", "OTHER=1", "-w", "/work", "busybox", "sh", "-c",
                     "echo $FROM_CLIENT $OTHER; pwd")
    assert res.out.split() == ["yes", "1", "/work"], res.err


def test_entrypoint_and_added_hosts_through_the_daemon(remote, host_ns):
    client = host_ns.popen([PYNET, "run", "--rm", "-i", "--net", "none", "--add-host", "db:10.1.2.3", "--entrypoint",
                            "sh", "busybox", "-c", "grep -w db /etc/hosts; read line; echo $line"],
                           env=remote.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdout.readline() == b"10.1.2.3\tdb\n"
        rec = _wait_running(remote.state)
        assert _comm(_ppid(rec["monitor_pid"])) == "pynet-zygote"
        out, err = client.communicate(b"typed\n", timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert (client.returncode, out) == (0, b"typed\n"), err


def test_bridge_network_through_the_daemon_attaches_and_releases(remote, netenv, host_ns):
    res = remote("run", "--rm", "--net", "ctrnet", "busybox", "sh", "-c",
                 "ip -4 addr show eth0 2>/dev/null | grep -o '10\\.151\\.7\\.[0-9]*' || "
                 "cat /proc/net/fib_trie | grep -o '10\\.151\\.7\\.[0-9]*' | sort -u")
    assert res.returncode == 0, res.err
    assert "10.151.7." in res.out
    # The chain's DEL runs right after the client has its exit code (the container's netns is pinned).
    assert eventually(lambda: _leased(netenv["leases"]) == [] and not os.listdir(netenv["pins"]))


def test_published_port_runs_back_to_back_through_the_daemon(remote, netenv, host_ns):
    """Each run's DEL comes after its answer; the next run publishing the same port waits for it instead
    of failing with the port held."""
    for i in range(3):
        res = remote("run", "--rm", "--dns", "127.0.0.1", "--net", "ctrnet", "-p", "18080:80", "busybox", "sh",
                     "-c", f"echo run{i}")
        assert res.returncode == 0 and res.out == f"run{i}\n", res.err
    # `net rm` right after the last answer waits for that DEL instead of finding the network in use.
    res = remote("net", "rm", "ctrnet")
    assert res.returncode == 0, res.err
    assert "18080" not in host_ns.nft_ruleset() and _leased(netenv["leases"]) == []
    assert host_ns.link("pnctr0") is None and not os.listdir(netenv["pins"])
    assert state_records(remote.state) == []


def test_unsupported_options_and_detach_run_locally(remote):
    cid = remote.detach("busybox", "sleep", "30")
    rec = next(r for r in state_records(remote.state) if r["id"] == cid)
    assert _comm(_ppid(rec["monitor_pid"])) != "pynet-zygote"
    assert remote("rm", "-f", cid).returncode == 0
    res = remote.run("--rm", "--pids-limit", "50", "busybox", "sh", "-c", "exit 6")
    assert res.returncode == 6, res.err


def test_without_a_daemon_the_local_launcher_runs_it(pynet, tmp_path):
    pynet.env["PYNET_SOCKET"] = str(tmp_path / "nobody.sock")
    res = pynet.run("--rm", "busybox", "sh", "-c", "exit 5")
    assert res.returncode == 5, res.err
    pynet.env["PYNET_DAEMON"] = "off"
    assert pynet.run("--rm", "busybox", "true").returncode == 0


def test_a_daemon_that_drops_the_request_falls_back_to_local(pynet, host_ns, tmp_path):
    with dropping_daemon(host_ns, str(tmp_path / "dropping.sock")) as path:
        pynet.env["PYNET_SOCKET"] = path
        res = pynet.run("--rm", "busybox", "sh", "-c", "echo local; exit 4")
        assert res.returncode == 4 and res.out == "local\n", res.err


@pytest.mark.parametrize("argv, served", [
    (["--rm", "busybox", "true"], True),
    (["--rm", "--net", "mynet", "--name", "x", "-e", "A=1", "busybox", "sh"], True),
    (["-d", "busybox"], False),
    (["--rm", "-v", "/tmp:/b", "busybox"], False),
    (["--rm", "--memory", "64m", "busybox"], False),
    (["--rm", "--help"], False),
    (["--rm", "-p", "8080:80", "busybox"], True),
    (["--rm", "--security-opt", "no-new-privileges=false", "busybox"], False),
    (["--rm", "-i", "--entrypoint", "echo", "--add-host", "a:10.0.0.1", "busybox"], True),
    (["--rm", "-t", "busybox"], False),
    (["-d", "--restart", "always", "busybox"], False),
])
def test_daemon_serves_only_the_plain_forms(argv, served):
    assert (zygote.why_not_served(parse_fast(argv)) is None) == served


def test_a_run_without_an_image_is_refused_by_the_parser_and_reported_locally():
    with pytest.raises(OptionsError, match="needs an IMAGE"):
        parse_fast(["--rm"])


def test_a_killed_client_takes_its_container_with_it(remote, host_ns):
    """The launcher in the daemon sees its client's connection close: the foreground container is killed
    and cleaned up (--rm), instead of running on with nobody to report to."""
    client = host_ns.popen([PYNET, "run", "--rm", "--net", "none", "--dns", "127.0.0.1", "busybox", "sh", "-c",
                            "echo ready; while :; do sleep 0.05; done"],
                           env=remote.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert client.stdout.readline() == b"ready\n"
        rec = _wait_running(remote.state)
    finally:
        client.kill()
        client.wait()
    deadline = time.monotonic() + 30
    while state_records(remote.state) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state_records(remote.state) == []
    assert _cgroup_dirs(rec["id"]) == []


def _zygote_of(socket_path: str, timeout: float = 10) -> int:
    """The daemon's zygote child. It names itself just after the fork, which may be a moment after the
    daemon's socket appears, so look until the deadline."""
    with open(socket_path + ".lock") as fh:
        daemon = int(fh.read())
    deadline = time.monotonic() + timeout
    while True:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if _ppid(int(pid)) == daemon and _comm(int(pid)) == "pynet-zygote":
                        return int(pid)
                except (FileNotFoundError, ProcessLookupError, StopIteration):
                    continue
        if time.monotonic() > deadline:
            raise AssertionError("the daemon has no zygote")
        time.sleep(0.02)


def test_runs_fall_back_to_local_when_the_zygote_is_gone(remote, pynet_daemon):
    zygote_pid = _zygote_of(pynet_daemon)
    os.kill(zygote_pid, signal.SIGKILL)   # started by this test's daemon fixture
    res = remote.run("--rm", "busybox", "sh", "-c", "echo still; exit 9")
    assert res.returncode == 9 and res.out == "still\n", res.err


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except FileNotFoundError:
        return []


def _spare_reservation(zygote_pid: int, timeout: float = 30, taken=()) -> tuple[int, str]:
    """(spare launcher pid, the container id it reserved), once its stage 1 sits in the cgroups; ``taken``:
    ids of containers running (a spare's launcher and its PID 1 look the same)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _children(zygote_pid):
            try:
                if _comm(pid) != "pynet-spare":
                    continue
                for stage1 in _children(pid):
                    with open(f"/proc/{stage1}/cgroup") as fh:
                        paths = [line.rsplit(":", 1)[1].strip() for line in fh]
                    cids = {p.split("/")[-1] for p in paths if p.startswith("/pynet/")}
                    if len(cids) == 1 and not cids & set(taken) and _cgroup_dirs(cids.pop()):
                        return pid, next(p for p in paths if p.startswith("/pynet/")).split("/")[-1]
            except (FileNotFoundError, ProcessLookupError):
                continue
        time.sleep(0.02)
    raise AssertionError("no spare launcher with a reservation")


def test_spare_reservation_is_used_and_undone_when_the_daemon_stops(pynet, host_ns, tmp_path):
    socket_path = str(tmp_path / "own.sock")
    daemon = start_daemon(host_ns, socket_path, "--containers")
    try:
        zygote_pid = _zygote_of(socket_path)
        _spare, reserved = _spare_reservation(zygote_pid)
        pynet.env["PYNET_SOCKET"] = socket_path
        res = pynet.run("busybox", "sh", "-c", "cat /proc/self/cgroup")   # no --rm: the record keeps the id
        assert res.returncode == 0, res.err
        (rec,) = state_records(pynet.state)
        assert rec["id"] == reserved   # the container took the spare's reservation
        assert _cgroup_dirs(reserved) == []
        spare, next_reserved = _spare_reservation(zygote_pid)
        assert next_reserved != reserved
    finally:
        stop_daemon(daemon)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{spare}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{spare}")
    assert _cgroup_dirs(next_reserved) == []


def test_failed_runs_through_the_daemon_report_and_leave_nothing(remote, pynet_root):
    res = remote.run("--rm", "no-such-image", "true")
    assert res.returncode == 125 and "no such image" in res.err
    assert remote.run("--name", "twice", "busybox", "true").returncode == 0
    res = remote.run("--name", "twice", "busybox", "true")
    assert res.returncode == 125 and "already in use" in res.err
    (rec,) = state_records(remote.state)
    assert rec["name"] == "twice"
    assert os.listdir(os.path.join(pynet_root, "containers")) == [rec["id"]]


def test_gc_redoes_the_late_del_of_a_launcher_that_died(pynet, netenv, host_ns):
    """A launcher that answered its client dies before its late DEL (its record already set aside, see
    container.cleanup): `container gc` runs that DEL from the set-aside record, then deletes it."""
    cid = pynet.detach("--dns", "127.0.0.1", "--net", "ctrnet", "busybox", "sleep", "60")
    rec = pynet.inspect(cid)
    assert len(_leased(netenv["leases"])) == 1
    os.kill(rec["monitor_pid"], signal.SIGKILL)
    os.kill(rec["pid"], signal.SIGKILL)
    assert eventually(lambda: pynet.inspect(cid)["state"] == "dead")
    (rec_dir,) = [root for root, dirs, files in os.walk(pynet.state) if os.path.basename(root) == cid]
    os.rename(rec_dir, os.path.join(os.path.dirname(rec_dir), ".removing-" + cid))
    assert pynet.records() == []
    res = pynet("container", "gc")
    assert res.returncode == 0, res.err
    assert _leased(netenv["leases"]) == [] and not os.listdir(netenv["pins"])
    assert not [n for n in host_ns.link_names() if n.startswith("veth")]
    assert not [n for n in os.listdir(os.path.dirname(rec_dir)) if n.startswith(".removing-")]
    assert not [p for p in rec["cgroups"].values() if os.path.isdir(p)]
