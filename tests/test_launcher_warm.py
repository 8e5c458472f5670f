"""The daemon's spare launcher attaches its reserved container to the default network ahead (a warm
attachment, pynet/launcher/warm.py): a run on that network adopts it (the warm address, a cache record
like a whole ADD's), any other run leaves it to be undone, and neither a released nor a killed spare leaves
a lease, a veth or a pin behind.

The daemon runs in the sandbox host netns with its runner locations (and so the default network "pynet",
defined here without DNS, with port mapping) under the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.test_launcher import PYNET, _cgroup_dirs, pynet, pynet_root, pytestmark, state_records  # noqa: F401
from tests.test_launcher_daemon import _spare_reservation, _wait_running, _zygote_of
from tests.test_ptp import eventually

from netns_fixtures.daemon import start_daemon, stop_daemon

SUBNET = "10.151.9"


@pytest.fixture
def warm_env(pynet, host_ns, tmp_path):
    """The default network "pynet" (no DNS) under tmp_path, and a daemon serving runs with those locations:
    {"leases", "pins", "cache", "socket", "zygote", "daemon"}."""
    yield from _warm_daemon(pynet, host_ns, tmp_path, "--disable-dns")


@pytest.fixture
def warm_dns_env(pynet, host_ns, tmp_path):
    """As warm_env, the default network resolving container names (dnsname)."""
    yield from _warm_daemon(pynet, host_ns, tmp_path)


def _warm_daemon(pynet, host_ns, tmp_path, *net_flags):
    for key, sub in (("PYNET_CONFIG_DIR", "net.d"), ("PYNET_CACHE_DIR", "cache"), ("PYNET_NETNS_DIR", "netns")):
        os.makedirs(tmp_path / sub, exist_ok=True)
        pynet.env[key] = str(tmp_path / sub)
    leases = tmp_path / "leases"
    res = pynet("net", "create", "pynet", "--subnet", f"{SUBNET}.0/24", "--bridge", "pnwarm0", "--gateway",
                "--port-map", "--data-dir", str(leases), *net_flags)
    assert res.returncode == 0, res.err
    socket_path = str(tmp_path / "warm.sock")
    daemon = start_daemon(host_ns, socket_path, "--containers", env=pynet.env)
    pynet.env["PYNET_SOCKET"] = socket_path
    env = {"leases": leases / "pynet", "pins": tmp_path / "netns", "cache": tmp_path / "cache",
           "socket": socket_path, "zygote": _zygote_of(socket_path), "daemon": daemon}
    try:
        yield env
    finally:
        stop_daemon(daemon)
        eventually(lambda: not _leases(env))


def _leases(env) -> dict:
    """{address: container id} of the default network's host-local leases."""
    base = env["leases"]
    if not base.exists():
        return {}
    return {name: (base / name).read_text().split()[0] for name in os.listdir(base) if name[0].isdigit()}


def _warm(env, taken=()) -> tuple[int, str, str]:
    """(spare pid, reserved id, warm address) once the spare holds its warm lease; ``taken``: see
    _spare_reservation."""
    spare, cid = _spare_reservation(env["zygote"], taken=taken)
    assert eventually(lambda: cid in _leases(env).values()), _leases(env)
    return spare, cid, next(a for a, c in _leases(env).items() if c == cid)


def _cache_record(env, cid: str) -> dict:
    from pynet.runner.cache import ResultCache

    entry = ResultCache(str(env["cache"])).read("pynet", cid, "eth0")
    assert entry is not None
    return {"cni_args": entry.cni_args, "caps": entry.capability_args, "result": entry.result}


def _veths(host_ns) -> list[str]:
    return [n for n in host_ns.link_names() if n.startswith("veth")]


def test_a_default_network_run_adopts_the_warm_attachment(pynet, warm_env, host_ns):
    _spare, cid, address = _warm(warm_env)
    client = _background(pynet, host_ns, "web", "-p", "18080:80")
    try:
        out = b"".join(iter(client.stdout.readline, b"ready\n")).decode()
        assert address in out   # the warm address is the container's
        rec = _wait_running(pynet.state)
        assert rec["id"] == cid and rec["network"]["network"] == "pynet"
        assert [ip["address"].split("/")[0] for ip in rec["network"]["result"]["ips"]] == [address]
        # The cache record is a whole ADD's: the run's name and port mappings, portmap's result.
        cached = _cache_record(warm_env, cid)
        assert ["K8S_POD_NAME", "web"] in cached["cni_args"]
        assert cached["caps"]["portMappings"][0]["hostPort"] == 18080
        assert cached["result"] == rec["network"]["result"]
        assert "18080" in host_ns.nft_ruleset()
        client.send_signal(signal.SIGTERM)
        client.communicate(timeout=30)
    finally:
        _end(client)
    assert eventually(lambda: cid not in _leases(warm_env).values() and
                      not os.path.exists(warm_env["pins"] / f"pynet-{cid}"))
    assert "18080" not in host_ns.nft_ruleset()
    assert state_records(pynet.state) == []


def test_runs_on_warm_attachments_resolve_each_others_names(pynet, warm_dns_env, host_ns):
    _spare, web_id, web_address = _warm(warm_dns_env)
    web = _background(pynet, host_ns, "web")
    try:
        assert web_address in b"".join(iter(web.stdout.readline, b"ready\n")).decode()
        _spare, client_id, _address = _warm(warm_dns_env, taken={web_id})
        res = pynet("run", "--rm", "busybox", "sh", "-c", "timeout 10 nslookup web")
        assert res.returncode == 0, res.err
        assert web_address in res.out, res.out
        assert eventually(lambda: client_id not in _leases(warm_dns_env).values())
    finally:
        web.send_signal(signal.SIGTERM)
        _end(web)


def _background(pynet, host_ns, name: str, *flags: str) -> subprocess.Popen:
    """A run through the daemon that prints its addresses, then "ready", and waits for SIGTERM."""
    return host_ns.popen([PYNET, "run", "--rm", "--dns", "127.0.0.1", "--name", name, *flags, "busybox", "sh", "-c",
                          "trap 'exit 0' TERM; cat /proc/net/fib_trie; echo ready; while :; do sleep 0.05; done"],
                         env=pynet.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _end(client: subprocess.Popen) -> None:
    try:
        client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


@pytest.mark.parametrize("net", [["--net", "none"], ["--net", "other"]])
def test_a_run_elsewhere_leaves_the_warm_attachment_to_be_undone(pynet, warm_env, host_ns, tmp_path, net):
    if net[-1] == "other":
        res = pynet("net", "create", "other", "--subnet", "10.151.10.0/24", "--bridge", "pnother0", "--gateway",
                    "--disable-dns", "--data-dir", str(tmp_path / "leases"))
        assert res.returncode == 0, res.err
    _spare, cid, address = _warm(warm_env)
    res = pynet("run", "--dns", "127.0.0.1", "--rm", *net, "busybox", "sh", "-c", "ls /sys/class/net; cat /proc/net/fib_trie")
    assert res.returncode == 0, res.err
    assert address not in res.out
    assert ("eth0" in res.out) == (net[-1] == "other")
    assert eventually(lambda: cid not in _leases(warm_env).values() and
                      not os.path.exists(warm_env["pins"] / f"pynet-{cid}"))
    assert state_records(pynet.state) == []


def test_a_request_that_comes_while_the_warm_part_is_made_does_not_wait_for_it(pynet, warm_env, host_ns):
    """The host-local lock held here stops the next spare's warm ADD halfway: a run off the default network
    goes on meanwhile, and the warm attachment is undone once it could be made."""
    import fcntl

    _spare, first, _address = _warm(warm_env)
    lock = os.open(warm_env["leases"] / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = pynet("run", "--rm", "--net", "none", "busybox", "true")   # the first spare's (its DEL waits)
        assert res.returncode == 0, res.err
        _spare, second = _spare_reservation(warm_env["zygote"], taken={first})
        res = pynet("run", "--rm", "--net", "none", "busybox", "sh", "-c", "ls /sys/class/net", timeout=30)
        assert res.returncode == 0, res.err
        assert res.out.split() == ["lo"]
        assert second not in _leases(warm_env).values()   # its warm ADD still waits for the lock
    finally:
        os.close(lock)
    assert eventually(lambda: not {first, second} & set(_leases(warm_env).values()) and
                      not os.path.exists(warm_env["pins"] / f"pynet-{first}") and
                      not os.path.exists(warm_env["pins"] / f"pynet-{second}"))
    assert state_records(pynet.state) == []


def test_a_released_spare_leaves_no_lease_veth_or_pin(pynet, warm_env, host_ns):
    spare, cid, _address = _warm(warm_env)
    assert _veths(host_ns)
    stop_daemon(warm_env["daemon"])
    assert eventually(lambda: not os.path.exists(f"/proc/{spare}"))
    assert _leases(warm_env) == {}
    assert _veths(host_ns) == [] and os.listdir(warm_env["pins"]) == []


def test_ls_lists_the_warm_attachment_only_with_all(pynet, warm_env, host_ns):
    """A spare's warm attachment is nobody's container until a run adopts it."""
    _spare, cid, address = _warm(warm_env)
    res = pynet("ls", "--json")
    assert res.returncode == 0, res.err
    assert cid not in res.out
    res = pynet("ls", "--all", "--json")
    assert res.returncode == 0, res.err
    [listed] = [c for c in json.loads(res.out) if c["id"] == cid]
    assert listed["warm"] is True and listed["attachments"][0]["addresses"] == [f"{address}/24"]
    res = pynet("inspect", cid, "--json")
    assert res.returncode == 0 and json.loads(res.out)[0]["warm"] is True, res.err


def test_gc_frees_the_warm_lease_of_a_killed_spare(pynet, warm_env, host_ns):
    spare, cid, _address = _warm(warm_env)
    os.kill(spare, signal.SIGKILL)   # the spare forked for this test's daemon
    assert eventually(lambda: not os.path.exists(f"/proc/{spare}"))
    assert cid in _leases(warm_env).values()   # nobody released it
    res = pynet("gc")
    assert res.returncode == 0, res.err
    assert cid not in _leases(warm_env).values()
    assert not os.path.exists(warm_env["pins"] / f"pynet-{cid}")
    assert eventually(lambda: _veths(host_ns) == [])
    for path in _cgroup_dirs(cid):   # the reservation's cgroups: the killed spare's own leftover
        assert eventually(lambda: _rmdir(path))


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def test_net_rm_takes_the_warm_attachment_with_the_network(pynet, warm_env, host_ns):
    """A spare's warm attachment does not make the default network "in use": `net rm` detaches it."""
    _spare, cid, _address = _warm(warm_env)
    res = pynet("net", "rm", "pynet")
    assert res.returncode == 0, res.err
    assert "attachment(s) detached" not in res.out
    assert _leases(warm_env) == {} and not os.path.exists(warm_env["pins"] / f"pynet-{cid}")
    assert eventually(lambda: _veths(host_ns) == [])
    res = pynet("run", "--rm", "--dns", "127.0.0.1", "busybox", "true")   # the spare's run: the ordinary ADD
    assert res.returncode == 0, res.err


def test_a_run_asking_for_the_warm_address_gets_it(pynet, warm_env, host_ns):
    _spare, cid, address = _warm(warm_env)
    res = pynet("run", "--rm", "--dns", "127.0.0.1", "--ip", address, "busybox", "cat", "/proc/net/fib_trie")
    assert res.returncode == 0, res.err
    assert address in res.out
    assert eventually(lambda: cid not in _leases(warm_env).values() and
                      not os.path.exists(warm_env["pins"] / f"pynet-{cid}"))


def test_spares_stop_warming_while_runs_keep_off_the_default_network(pynet, warm_env, host_ns):
    from pynet.launcher import zygote

    # One run more than the rule: a spare forked while a run is still on (after 100 ms) is decided before
    # that run's reply is counted, so under load the 8th run's spare may still warm.
    for _ in range(zygote.WARM_UNTIL_UNUSED + 1):
        res = pynet("run", "--rm", "--net", "none", "busybox", "true")
        assert res.returncode == 0, res.err
    _spare, cid = _spare_reservation(warm_env["zygote"])
    time.sleep(2)   # time enough for a warm attachment to be made, if the spare made one
    assert cid not in _leases(warm_env).values()
    res = pynet("run", "--rm", "--dns", "127.0.0.1", "busybox", "true")   # on the default network again
    assert res.returncode == 0, res.err
    _spare, next_cid, _address = _warm(warm_env, taken={cid})
    assert next_cid != cid
