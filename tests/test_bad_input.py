"""Bad input to `pynet run`, `kill`, `logs`, `exec` and `net`: a clear error that names the value, a
non-zero exit, no traceback, and nothing left behind (container records, writable layers, cgroups, links,
routes, leases, network files). Ctrl-C ends `logs -f`, `exec` and a foreground run cleanly (130).

Everything runs inside a sandbox host netns with its state, images, networks and leases under tmp dirs
(the `pynet` fixture of test_launcher.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from pynet.launcher import cgroups, security
from tests.test_launcher import PYNET, pynet, pynet_root  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the launcher needs root"),
    pytest.mark.skipif(not security.seccomp_available(), reason="python3-seccomp not installed (scripts/install.sh)"),
]


def assert_clean_failure(res, *named, code=None):
    """Non-zero (or ``code``), every string of ``named`` in the message, no traceback."""
    assert res.returncode != 0, res.out
    if code is not None:
        assert res.returncode == code, res.err
    assert "Traceback" not in res.err and "Error:" not in res.err.split("pynet:")[0], res.err
    for text in named:
        assert text in res.err, res.err


def assert_nothing_left(pynet):
    assert pynet.records() == []
    containers = os.path.join(pynet.root, "containers")
    assert not os.path.isdir(containers) or os.listdir(containers) == []


def _running(pynet, ref: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = [r for r in pynet.records() if r["id"].startswith(ref) or r.get("name") == ref]
        if recs and recs[0].get("status") == "running":
            return recs[0]
        time.sleep(0.05)
    raise AssertionError(f"{ref} not running")


# -- pynet run: option values ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv, named", [
    (["--memory", "1m"], ["--memory", "'1m'", "6m"]),
    (["--memory", "lots"], ["--memory", "'lots'"]),
    (["--cpus", "0"], ["--cpus", "0"]),
    (["--cpus", "-1"], ["--cpus", "-1"]),
    (["--cpus", "99999"], ["--cpus", "99999"]),
    (["--pids-limit", "-5"], ["--pids-limit", "-5"]),
    (["--cpuset-cpus", "99"], ["--cpuset-cpus", "'99'", "does not exist", "available: "]),
    (["--cpuset-cpus", "1-0"], ["--cpuset-cpus", "'1-0'"]),
    (["-v", "/nonexistent:/x"], ["/nonexistent"]),
    (["-v", "/tmp:/x:bogus"], ["/tmp:/x:bogus"]),
    (["-e", "=bad"], ["'=bad'"]),
    (["-e", "A B=c"], ["'A B=c'"]),
    (["--dns", "bogus"], ["--dns", "'bogus'"]),
    (["--name", "x/y"], ["--name", "'x/y'"]),
    (["--name", "a b"], ["--name", "'a b'"]),
    (["--name", "a\tb"], ["--name", "'a\\tb'"]),
    (["--name=-x"], ["--name", "'-x'"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("-") else None)
def test_bad_run_option_is_refused_naming_it(pynet, argv, named):
    res = pynet.run("--rm", *argv, "busybox", "true")
    assert_clean_failure(res, *named)
    assert "/mnt/rootfs" not in res.err
    assert_nothing_left(pynet)


def test_name_that_is_another_containers_id_prefix_is_refused(pynet):
    cid = pynet.detach("busybox", "sleep", "60")
    res = pynet.run("--rm", "--name", cid[:6], "busybox", "true")
    assert_clean_failure(res, "--name", cid[:6])
    assert [r["id"] for r in pynet.records()] == [cid]


def test_smallest_memory_limit_runs_a_container(pynet):
    res = pynet.run("--rm", "--memory", "6m", "busybox", "echo", "small", timeout=60)
    assert res.returncode == 0, res.err
    assert res.out == "small\n"
    assert_nothing_left(pynet)


def test_memory_limit_applies_to_the_container_on_a_network(pynet, netenv):
    res = pynet("run", "--rm", "--dns", "127.0.0.1", "--net", "ctrnet", "--memory", "6m", "busybox", "sh", "-c",
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; true",
                timeout=60)
    assert res.returncode == 0, res.err
    assert str(6 << 20) in res.out.split()
    assert_nothing_left(pynet)
    assert _leased(netenv["leases"]) == []


# -- kill, logs -f, exec ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", ["99", "0", "NOPE", "SIG_IGN"])
def test_kill_with_an_invalid_signal_names_it(pynet, sig):
    cid = pynet.detach("busybox", "sleep", "60")
    res = pynet("kill", "-s", sig, cid)
    assert_clean_failure(res, repr(sig))
    assert pynet.inspect(cid)["state"] == "running"


def _popen(pynet, *argv, **kw):
    return pynet.host_ns.popen([PYNET, *argv], env=pynet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               **kw)


def _finish(proc, timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out.decode(), err.decode()


def test_ctrl_c_ends_logs_follow_cleanly(pynet):
    cid = pynet.detach("busybox", "sh", "-c", "echo hello; sleep 60")
    proc = _popen(pynet, "logs", "-f", cid)
    assert proc.stdout.readline() == b"hello\n"
    proc.send_signal(signal.SIGINT)
    code, _, err = _finish(proc)
    assert code == 130 and "Traceback" not in err, err


def _container_ps(pynet, cid: str) -> str:
    return pynet("exec", cid, "ps", "-o", "pid,args").out


def test_ctrl_c_on_exec_is_forwarded_to_the_command(pynet):
    cid = pynet.detach("busybox", "sleep", "60")
    proc = _popen(pynet, "exec", cid, "sleep", "123")
    deadline = time.monotonic() + 20
    while "sleep 123" not in _container_ps(pynet, cid):
        assert time.monotonic() < deadline, "exec'd command never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, _, err = _finish(proc)
    assert code == 130, err
    assert "Traceback" not in err, err
    assert "sleep 123" not in _container_ps(pynet, cid)


def test_ctrl_c_on_a_foreground_run_stops_it_and_cleans_up(pynet):
    proc = _popen(pynet, "run", "--rm", "--init", "--name", "fg", "--net", "none", "--dns", "127.0.0.1",
                  "busybox", "sleep", "60")
    _running(pynet, "fg")
    proc.send_signal(signal.SIGINT)
    code, _, err = _finish(proc)
    assert code == 130, err
    assert "Traceback" not in err, err
    assert_nothing_left(pynet)


def test_ctrl_c_before_the_container_started_is_130_without_traceback(monkeypatch, capsys):
    from pynet.launcher import container, options, supervise

    def interrupted(*_args, **_kw):
        raise KeyboardInterrupt   # Ctrl-C while the launcher prepares (create/start undo their own work)

    monkeypatch.setattr(container, "create", interrupted)
    assert supervise.run(options.parse(["--net", "none", "busybox", "true"])) == 130
    assert "interrupted" in capsys.readouterr().err


# -- networks ----------------------------------------------------------------------------------------------
@pytest.fixture
def netenv(pynet, tmp_path):
    for key, sub in (("PYNET_CONFIG_DIR", "net.d"), ("PYNET_CACHE_DIR", "cache"), ("PYNET_NETNS_DIR", "netns")):
        os.makedirs(tmp_path / sub, exist_ok=True)
        pynet.env[key] = str(tmp_path / sub)
    res = pynet("net", "create", "ctrnet", "--subnet", "10.151.8.0/24", "--bridge", "pnbad0", "--gateway",
                "--disable-dns")
    assert res.returncode == 0, res.err
    return {"leases": tmp_path / "cache" / "networks", "config": tmp_path / "net.d"}


def _leased(leases) -> list[str]:
    base = leases / "ctrnet"
    return sorted(n for n in os.listdir(base) if n[0].isdigit()) if base.exists() else []


@pytest.mark.parametrize("subnet", ["10.150.9.4/32", "10.150.9.4/31", "10.150.9.4/30", "fd00:9::/127"])
def test_subnet_too_small_for_containers_is_refused(pynet, netenv, subnet):
    res = pynet("net", "create", "tiny", "--subnet", subnet)
    assert_clean_failure(res, subnet, "too small")
    assert sorted(os.listdir(netenv["config"])) == ["ctrnet.conflist"]


def test_subnet_routed_on_a_live_link_is_refused(pynet, netenv, host_ns):
    ipr = host_ns.ipr
    ipr.link("add", ifname="pnroute0", kind="veth", peer="pnroute1")
    idx = ipr.link_lookup(ifname="pnroute0")[0]
    ipr.addr("add", index=idx, address="10.152.3.1", prefixlen=24)
    ipr.link("set", index=idx, state="up")
    res = pynet("net", "create", "clash", "--subnet", "10.152.0.0/16")
    assert_clean_failure(res, "10.152.0.0/16", "10.152.3.0/24", "pnroute0")
    assert sorted(os.listdir(netenv["config"])) == ["ctrnet.conflist"]
    # Without --subnet, the free subnet chosen avoids it too.
    ipr.addr("add", index=idx, address="10.200.0.1", prefixlen=24)
    res = pynet("net", "create", "auto", "--json")
    assert res.returncode == 0, res.err
    assert json.loads(res.out)[0]["config"]["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.200.1.0/24"}]]


def test_leases_default_to_the_cache_dir(pynet, netenv):
    conf = json.load(open(netenv["config"] / "ctrnet.conflist"))
    assert conf["plugins"][0]["ipam"]["dataDir"] == str(netenv["leases"])
    cid = pynet("run", "-d", "--dns", "127.0.0.1", "--net", "ctrnet", "busybox", "sleep", "60").out.strip()
    _running(pynet, cid)
    assert len(_leased(netenv["leases"])) == 1
    assert pynet("rm", "-f", cid).returncode == 0
    assert _leased(netenv["leases"]) == []


def test_net_rm_refuses_a_network_in_use_then_removes_bridge_route_and_leases(pynet, netenv, host_ns):
    res = pynet("run", "-d", "--dns", "127.0.0.1", "--net", "ctrnet", "busybox", "sleep", "60")
    assert res.returncode == 0, res.err
    cid = res.out.strip()
    refused = pynet("net", "rm", "ctrnet")
    assert_clean_failure(refused, "ctrnet", "in use", cid)
    assert host_ns.link("pnbad0") is not None
    assert pynet("rm", "-f", cid).returncode == 0
    res = pynet("net", "rm", "ctrnet")
    assert res.returncode == 0, res.err
    assert host_ns.link("pnbad0") is None
    assert not [r for r in host_ns.routes() if "10.151.8." in json.dumps(r, default=str)]
    assert not (netenv["leases"] / "ctrnet").exists()
    assert os.listdir(netenv["config"]) == []


def test_run_on_a_removed_network_fails_naming_it_and_leaves_nothing(pynet, netenv, host_ns):
    assert pynet("net", "rm", "ctrnet").returncode == 0
    res = pynet("run", "--rm", "--dns", "127.0.0.1", "--net", "ctrnet", "busybox", "true")
    assert_clean_failure(res, "ctrnet", code=125)
    assert_nothing_left(pynet)
    assert host_ns.link("pnbad0") is None


def test_failed_run_on_a_handwritten_tiny_network_leaves_no_bridge(pynet, netenv, host_ns):
    conf = json.load(open(netenv["config"] / "ctrnet.conflist"))
    conf["name"] = "tiny"
    conf["plugins"][0].update(bridge="pntiny0")
    conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.150.9.4/32"}]]
    (netenv["config"] / "tiny.conflist").write_text(json.dumps(conf))
    res = pynet("run", "--rm", "--dns", "127.0.0.1", "--net", "tiny", "busybox", "true")
    assert_clean_failure(res, "10.150.9.4/32", code=125)
    assert_nothing_left(pynet)
    assert host_ns.link("pntiny0") is None
    assert not [n for n in host_ns.link_names() if n.startswith("veth")]
