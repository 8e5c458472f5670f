"""`pynet net/attach/detach/ls/inspect/gc` end to end: the CLI runs inside a sandbox host netns (so bridges
and nft state live there), attaching to `unshare --net sleep` processes started from that sandbox. Config,
cache, lease and pin dirs are all under tmp_path."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cni_plugins import netns as cni_netns
from netns_fixtures import (OUR_PLUGINS, REFERENCE_PLUGINS, icmp_echo, reference_available, tcp_connect,
                            tcp_listener)
from netns_fixtures.runner import MINIMAL_PATH
from cni_plugins.syscalls import MNT_DETACH, umount2, unpin
from pynet.runner.attachments import is_pinned

PYNET = os.path.join(sys.prefix, "bin", "pynet")
needs_portmap = pytest.mark.skipif(importlib.util.find_spec("cni_plugins.portmap.plugin") is None,
                                   reason="pynet's portmap plugin not written yet")
needs_reference = pytest.mark.skipif(not reference_available(), reason="reference plugins not in /usr/lib/cni")


class Pynet:
    """The CLI bound to one sandbox host netns and one set of tmp dirs."""

    def __init__(self, host_ns, tmp_path, cni_path):
        self.host = host_ns
        self.tmp = tmp_path
        self.config_dir = tmp_path / "net.d"
        self.cache_dir = tmp_path / "cache"
        self.netns_dir = tmp_path / "netns"
        self.data_dir = tmp_path / "leases"
        self.cni_path = cni_path
        self.procs: list[subprocess.Popen] = []

    def env(self) -> dict:
        return {"PATH": MINIMAL_PATH, "PYNET_CONFIG_DIR": str(self.config_dir), "PYNET_CACHE_DIR": str(self.cache_dir),
                "PYNET_NETNS_DIR": str(self.netns_dir), "PYNET_CNI_PATH": self.cni_path}

    def run(self, *argv, ok: bool = True) -> subprocess.CompletedProcess:
        proc = self.host.run([PYNET, *map(str, argv)], env=self.env())
        proc.out, proc.err = proc.stdout.decode(), proc.stderr.decode()
        if ok:
            assert proc.returncode == 0, f"pynet {argv} failed ({proc.returncode}): {proc.err}{proc.out}"
        return proc

    def json(self, *argv):
        return json.loads(self.run(*argv, "--json").out)

    def net(self, name, subnet, *extra, version=None):
        version = version or ("1.0.0" if self.cni_path == REFERENCE_PLUGINS else "1.1.0")
        bridge = f"pb{name[-3:]}{os.getpid() % 100000}"[:15]
        self.run("net", "create", name, "--subnet", subnet, "--bridge", bridge, "--gateway", "--disable-dns", "--data-dir",
                 self.data_dir, "--cni-version", version, *extra)
        return bridge

    def sleeper(self, netns: bool = True) -> subprocess.Popen:
        argv = ["unshare", "--net", "sleep", "300"] if netns else ["sleep", "300"]
        proc = self.host.popen(argv)
        self.procs.append(proc)
        # Ready once `sleep` runs: unshare has made the namespace by then.
        for _ in range(2000):  # up to ~10 s on a loaded machine
            try:
                with open(f"/proc/{proc.pid}/comm") as f:
                    if f.read().strip() == "sleep":
                        return proc
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        raise RuntimeError("sleeper did not start")

    def leases(self, network) -> list[str]:
        d = self.data_dir / network
        return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        unpin_all(self.netns_dir)


def mounted_here(path) -> bool:
    """Whether ``path`` is a mount point in this (the test's) mount namespace."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def unpin_all(netns_dir) -> None:
    """Every pin under ``netns_dir``, then the shared bind mount attach makes of the dir itself."""
    if not os.path.isdir(netns_dir):
        return
    for pin in os.listdir(netns_dir):
        unpin(os.path.join(netns_dir, pin))
    while mounted_here(netns_dir):
        umount2(str(netns_dir), MNT_DETACH)


@pytest.fixture
def pynet(host_ns, tmp_path):
    host_ns.set_sysctl("net/ipv4/ip_forward", 1)
    p = Pynet(host_ns, tmp_path, OUR_PLUGINS)
    yield p
    p.cleanup()


@pytest.fixture
def ref_pynet(host_ns, tmp_path):
    if not reference_available():
        pytest.skip("reference plugins not in /usr/lib/cni")
    p = Pynet(host_ns, tmp_path, REFERENCE_PLUGINS)
    yield p
    p.cleanup()


def addresses_in(pid_or_path, ifname) -> list[str]:
    path = pid_or_path if isinstance(pid_or_path, str) else f"/proc/{pid_or_path}/ns/net"
    ipr = cni_netns.iproute(path)
    try:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return []
        return sorted(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}" for m in ipr.get_addr(index=idx[0], family=2))
    finally:
        ipr.close()


def bridge_ports(host_ns, bridge) -> list[str]:
    master = host_ns.ipr.link_lookup(ifname=bridge)
    if not master:
        return []
    return [m.get_attr("IFLA_IFNAME") for m in host_ns.ipr.get_links() if m.get_attr("IFLA_MASTER") == master[0]]


# -- networks ---------------------------------------------------------------------------------------------
def test_net_create_writes_bridge_host_local_conflist(pynet):
    pynet.run("net", "create", "web", "--subnet", "10.61.0.0/24", "--subnet", "fd61::/64", "--bridge", "pnweb0",
              "--gateway", "--masq", "--port-map", "--disable-dns")
    conf = json.loads((pynet.config_dir / "web.conflist").read_text())
    bridge, portmap = conf["plugins"]
    assert conf["name"] == "web" and conf["cniVersion"] == "1.1.0"
    assert bridge["type"] == "bridge" and bridge["bridge"] == "pnweb0" and bridge["isGateway"] and bridge["ipMasq"]
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.61.0.0/24"}], [{"subnet": "fd61::/64"}]]
    assert {"dst": "0.0.0.0/0"} in bridge["ipam"]["routes"] and {"dst": "::/0"} in bridge["ipam"]["routes"]
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}
    listed = pynet.json("net", "ls")
    assert [(n["name"], n["plugins"], n["attachments"]) for n in listed] == [("web", ["bridge", "portmap"], 0)]
    assert pynet.json("net", "inspect", "web")[0]["capabilities"] == ["ips", "mac", "portMappings"]


def test_net_create_refuses_duplicate_name_and_overlapping_subnet(pynet):
    pynet.run("net", "create", "a", "--subnet", "10.62.0.0/24")
    dup = pynet.run("net", "create", "a", "--subnet", "10.63.0.0/24", ok=False)
    assert dup.returncode == 1 and "already exists" in dup.err
    overlap = pynet.run("net", "create", "b", "--subnet", "10.62.0.128/25", "--json", ok=False)
    assert overlap.returncode == 1 and "overlaps 10.62.0.0/24" in json.loads(overlap.out)["error"]
    bad = pynet.run("net", "create", "c", "--subnet", "10.62.300.0/24", ok=False)
    assert bad.returncode == 1 and "invalid --subnet" in bad.err


def test_unknown_network_is_a_clear_error(pynet):
    res = pynet.run("net", "inspect", "nope", ok=False)
    assert res.returncode == 1 and 'no net configuration with name "nope"' in res.err


# -- attach ------------------------------------------------------------------------------------------------
def test_attach_two_networks_to_one_process(pynet, host_ns):
    br1 = pynet.net("front", "10.64.0.0/24")
    br2 = pynet.net("back", "10.65.0.0/24")
    proc = pynet.sleeper()
    [first] = pynet.json("attach", proc.pid, "--net", "front")
    [second] = pynet.json("attach", proc.pid, "--net", "back", "--ifname", "eth1")
    assert [ip["address"] for ip in first["ips"]] == ["10.64.0.2/24"]
    assert addresses_in(proc.pid, "eth0") == ["10.64.0.2/24"]
    assert addresses_in(proc.pid, "eth1") == [second["ips"][0]["address"]] == ["10.65.0.2/24"]
    assert len(bridge_ports(host_ns, br1)) == 1 and len(bridge_ports(host_ns, br2)) == 1
    assert icmp_echo(host_ns, "10.64.0.2") and icmp_echo(host_ns, "10.65.0.2")
    [container] = pynet.json("ls")
    assert container["pid"] == proc.pid and container["alive"] is True
    assert sorted((a["network"], a["ifname"], tuple(a["addresses"])) for a in container["attachments"]) == \
        [("back", "eth1", ("10.65.0.2/24",)), ("front", "eth0", ("10.64.0.2/24",))]
    assert pynet.json("inspect", proc.pid)[0]["id"] == container["id"]
    table = pynet.run("ls").out
    assert "CONTAINER ID" in table and f"sleep-{proc.pid}" in table and "10.64.0.2/24" in table and "yes" in table
    # the namespace is pinned under the netns dir, named after the container
    assert is_pinned(str(pynet.netns_dir / f"pynet-{container['id']}"))


def test_attach_default_ifname_skips_taken_names(pynet):
    pynet.net("one", "10.66.0.0/24")
    pynet.net("two", "10.67.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid, "--net", "one")
    pynet.run("attach", proc.pid, "--net", "two")
    assert addresses_in(proc.pid, "eth0") == ["10.66.0.2/24"]
    assert addresses_in(proc.pid, "eth1") == ["10.67.0.2/24"]


def test_attach_requested_ip_and_mac(pynet):
    pynet.net("fix", "10.68.0.0/24")
    proc = pynet.sleeper()
    [result] = pynet.json("attach", proc.pid, "--ip", "10.68.0.77/24", "--mac", "02:42:0a:44:00:4d")
    assert addresses_in(proc.pid, "eth0") == ["10.68.0.77/24"]
    ctr_if = next(i for i in result["interfaces"] if i.get("sandbox"))
    assert ctr_if["mac"] == "02:42:0a:44:00:4d"


def test_attach_refuses_process_in_own_netns(pynet):
    pynet.net("own", "10.69.0.0/24")
    proc = pynet.sleeper(netns=False)
    res = pynet.run("attach", proc.pid, "--json", ok=False)
    assert res.returncode == 1 and "own network namespace" in json.loads(res.out)["error"]
    assert not pynet.netns_dir.exists() or not list(pynet.netns_dir.iterdir())


def test_attach_rejects_flags_the_network_cannot_take(pynet):
    pynet.net("plain", "10.70.0.0/24", "--no-port-map")
    proc = pynet.sleeper()
    res = pynet.run("attach", proc.pid, "-p", "8080:80", ok=False)
    assert res.returncode == 1 and "does not accept -p" in res.err
    res = pynet.run("attach", proc.pid, "-p", "80:x/tcp", ok=False)
    assert res.returncode == 1 and "invalid -p" in res.err


def test_failed_attach_leaves_nothing_behind(pynet, host_ns):
    bridge = pynet.net("tight", "10.71.0.0/24")
    proc = pynet.sleeper()
    res = pynet.run("attach", proc.pid, "--ip", "10.99.0.5/24", ok=False)
    assert res.returncode == 1 and "bridge" in res.err
    assert bridge_ports(host_ns, bridge) == []
    assert pynet.leases("tight") == []
    assert not list((pynet.cache_dir / "results").glob("*")) if (pynet.cache_dir / "results").exists() else True
    assert not pynet.netns_dir.exists() or not list(pynet.netns_dir.iterdir())
    assert pynet.json("ls") == []


def test_attach_twice_same_ifname_is_refused(pynet):
    pynet.net("dup", "10.72.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid, "--ifname", "eth3")
    res = pynet.run("attach", proc.pid, "--ifname", "eth3", ok=False)
    assert res.returncode == 1 and "is already on network 'dup' (eth3)" in res.err
    res = pynet.run("attach", proc.pid, "--ifname", "eth3", "--force", ok=False)
    assert res.returncode == 1 and "already has eth3" in res.err


# -- detach ------------------------------------------------------------------------------------------------
def test_detach_after_process_was_killed(pynet, host_ns):
    bridge = pynet.net("gone", "10.73.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid)
    [container] = pynet.json("ls")
    assert pynet.leases("gone") == ["10.73.0.2"] and len(bridge_ports(host_ns, bridge)) == 1
    proc.kill()
    proc.wait()
    assert pynet.json("ls")[0]["alive"] is False
    out = pynet.json("detach", proc.pid)
    assert out == [{"containerID": container["id"], "network": "gone", "ifname": "eth0",
                                "interface": "removed"}]
    assert bridge_ports(host_ns, bridge) == []
    assert pynet.leases("gone") == []
    assert list((pynet.cache_dir / "results").iterdir()) == []
    assert list(pynet.netns_dir.iterdir()) == []
    assert pynet.json("ls") == []


def test_detach_one_network_keeps_the_other(pynet):
    pynet.net("left", "10.74.0.0/24")
    pynet.net("right", "10.75.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid, "--net", "left")
    pynet.run("attach", proc.pid, "--net", "right")
    pynet.run("detach", proc.pid, "--net", "left")
    assert addresses_in(proc.pid, "eth0") == [] and addresses_in(proc.pid, "eth1") == ["10.75.0.2/24"]
    [container] = pynet.json("ls")
    assert [a["network"] for a in container["attachments"]] == ["right"]
    assert is_pinned(container["netns"])
    res = pynet.run("detach", proc.pid, "--net", "left", ok=False)
    assert res.returncode == 1 and "no attachment on network 'left'" in res.err


def test_reused_pid_is_not_taken_for_the_dead_container(pynet, host_ns):
    """PID reuse: the record says PID X, X now belongs to another process. `detach X` must refuse, and
    detaching by container ID must reach the pinned namespace, never the new process's."""
    pynet.net("reuse", "10.76.0.0/24")
    pynet.net("other", "10.77.0.0/24")
    old = pynet.sleeper()
    pynet.run("attach", old.pid, "--net", "reuse")
    [container] = pynet.json("ls")
    pin = container["netns"]
    fd = os.open(pin, os.O_RDONLY)  # watch the old namespace after the pin is gone
    try:
        old.kill()
        old.wait()
        new = pynet.sleeper()
        # Simulate the kernel handing the old PID to the new process.
        record = pynet.cache_dir / "pynet" / "containers" / f"{container['id']}.json"
        data = json.loads(record.read_text())
        data["pid"] = new.pid
        record.write_text(json.dumps(data))
        res = pynet.run("detach", new.pid, ok=False)
        assert res.returncode == 1 and "PID was reused" in res.err and container["id"] in res.err
        assert addresses_in(pin, "eth0") == ["10.76.0.2/24"]
        # The new process is a new container, not the old one.
        pynet.run("attach", new.pid, "--net", "other")
        assert len(pynet.json("ls")) == 2
        pynet.run("detach", container["id"])
        assert addresses_in(f"/proc/self/fd/{fd}", "eth0") == []
        assert addresses_in(new.pid, "eth0") == ["10.77.0.2/24"]  # untouched
        assert pynet.leases("reuse") == [] and pynet.leases("other") == ["10.77.0.2"]
    finally:
        os.close(fd)


# -- gc ----------------------------------------------------------------------------------------------------
def test_gc_after_kill_9_cleans_dead_and_keeps_live(pynet, host_ns):
    bridge = pynet.net("gcnet", "10.78.0.0/24")
    live, dead = pynet.sleeper(), pynet.sleeper()
    pynet.run("attach", live.pid)
    pynet.run("attach", dead.pid)
    assert pynet.leases("gcnet") == ["10.78.0.2", "10.78.0.3"]
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    out = pynet.json("gc")
    assert [(r["network"], r["ifname"], r["addresses"]) for r in out] == \
        [("gcnet", "eth0", ["10.78.0.3/24"])]
    assert pynet.leases("gcnet") == ["10.78.0.2"]
    assert len(bridge_ports(host_ns, bridge)) == 1
    [container] = pynet.json("ls")
    assert container["pid"] == live.pid and container["alive"]
    assert [p.name for p in pynet.netns_dir.iterdir()] == [f"pynet-{container['id']}"]
    assert addresses_in(live.pid, "eth0") == ["10.78.0.2/24"]
    assert pynet.json("gc") == []


def test_status_reports_each_network(pynet):
    pynet.net("st", "10.79.0.0/24")
    rows = pynet.json("status")
    assert rows == [{"network": "st", "status": "ok", "message": ""}]
    (pynet.tmp / "not-a-dir").write_text("")
    pynet.run("net", "create", "broken", "--subnet", "10.79.1.0/24", "--data-dir", pynet.tmp / "not-a-dir" / "x")
    res = pynet.run("status", "--json", ok=False)
    assert res.returncode == 1
    rows = {r["network"]: r for r in json.loads(res.out)}
    assert rows["st"]["status"] == "ok" and rows["broken"]["status"] == "error"
    assert 'type="bridge" failed (status)' in rows["broken"]["message"]
    assert pynet.json("status", "st") == [{"network": "st", "status": "ok", "message": ""}]


def test_net_rm_refuses_while_attached_unless_forced(pynet, host_ns):
    bridge = pynet.net("busy", "10.80.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid)
    res = pynet.run("net", "rm", "busy", ok=False)
    assert res.returncode == 1 and "--force" in res.err and (pynet.config_dir / "busy.conflist").exists()
    pynet.run("net", "rm", "busy", "--force")
    assert not (pynet.config_dir / "busy.conflist").exists()
    assert bridge_ports(host_ns, bridge) == [] and pynet.leases("busy") == []
    assert pynet.json("ls") == []


class ProcessNetns:
    """Enough of a Netns for the probes: a running process's namespace."""

    def __init__(self, path):
        self.path = path

    def entered(self):
        return cni_netns.entered(self.path)


@needs_portmap
def test_published_port_reaches_the_process_and_gc_removes_the_mapping(pynet, host_ns):
    pynet.net("ports", "10.81.0.0/24", "--port-map")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid, "-p", "18080:80", "-p", "18053:53/udp")
    [container] = pynet.json("ls")
    assert container["attachments"][0]["portMappings"] == [
        {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 18053, "containerPort": 53, "protocol": "udp"}]
    assert "18080->80/tcp" in pynet.run("ls").out
    with tcp_listener(ProcessNetns(f"/proc/{proc.pid}/ns/net"), "0.0.0.0", 80):
        assert tcp_connect(host_ns, "10.81.0.1", 18080)
    assert "18080" in host_ns.nft_ruleset()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    pynet.run("gc")
    assert "18080" not in host_ns.nft_ruleset() and pynet.leases("ports") == []


# -- interop with the reference plugins and other runtimes' caches -----------------------------------------
@needs_reference
def test_reference_plugins_del_accepts_our_cached_result(ref_pynet, ref_cni, host_ns):
    bridge = ref_pynet.net("refnet", "10.82.0.0/24")
    proc = ref_pynet.sleeper()
    [result] = ref_pynet.json("attach", proc.pid)
    [container] = ref_pynet.json("ls")
    cache_file = ref_pynet.cache_dir / "results" / f"refnet-{container['id']}-eth0"
    cached = json.loads(cache_file.read_text())
    assert cached["kind"] == "cniCacheV1" and cached["result"] == {k: v for k, v in result.items() if k not in ("containerID", "name", "network", "ifname")}
    conflist = json.loads(base64.b64decode(cached["config"]))
    assert conflist == json.loads((ref_pynet.config_dir / "refnet.conflist").read_text())
    ref_cni.del_chain(conflist, cached["netns"], cached["result"], container_id=cached["containerId"],
                      ifname=cached["ifName"])
    assert bridge_ports(host_ns, bridge) == [] and ref_pynet.leases("refnet") == []


@needs_reference
def test_our_detach_reads_a_cache_entry_another_runtime_wrote(ref_pynet, ref_cni, host_ns, make_netns):
    bridge = ref_pynet.net("podnet", "10.83.0.0/24")
    conflist_bytes = (ref_pynet.config_dir / "podnet.conflist").read_bytes()
    conflist = json.loads(conflist_bytes)
    ctr = make_netns("pynt-pod")
    cid = "f" * 64  # podman-style ID
    result = ref_cni.add_chain(conflist, ctr, container_id=cid, ifname="eth0")
    results = ref_pynet.cache_dir / "results"
    results.mkdir(parents=True)
    (results / f"podnet-{cid}-eth0").write_text(json.dumps({
        "kind": "cniCacheV1", "containerId": cid, "config": base64.b64encode(conflist_bytes).decode(),
        "ifName": "eth0", "networkName": "podnet", "netns": ctr.path,
        "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]], "result": result}))
    [foreign] = ref_pynet.json("ls")
    assert foreign["id"] == cid and foreign["alive"] and foreign["pynet"] is False
    assert foreign["attachments"][0]["addresses"] == ["10.83.0.2/24"]
    assert ref_pynet.json("gc") == []  # its netns still exists: still valid
    ref_pynet.run("detach", cid)
    assert bridge_ports(host_ns, bridge) == [] and ref_pynet.leases("podnet") == []
    assert ctr.link("eth0") is None
    assert list(results.iterdir()) == []


def test_attach_and_detach_unknown_process_fail_clearly(pynet):
    pynet.net("none", "10.84.0.0/24")
    res = pynet.run("attach", 4194304 + 1, ok=False)  # above pid_max: never a live process
    assert res.returncode == 1 and "no process" in res.err
    res = pynet.run("detach", "4194305", "--json", ok=False)
    assert res.returncode == 1 and "no process 4194305" in json.loads(res.out)["error"]
    res = pynet.run("detach", "nosuchid", ok=False)
    assert res.returncode == 1 and "no container 'nosuchid'" in res.err


def test_gc_verb_releases_leaks_and_dead_attachments_lose_masquerade(pynet, host_ns):
    pynet.net("masq", "10.85.0.0/24", "--masq")
    live, dead = pynet.sleeper(), pynet.sleeper()
    pynet.run("attach", live.pid)
    pynet.run("attach", dead.pid)
    assert "10.85.0.3" in host_ns.nft_ruleset()
    # A lease nobody's cache knows (a runtime that crashed between ADD and caching): GC's valid list lacks it.
    (pynet.data_dir / "masq" / "10.85.0.99").write_text("leakedcontainer\r\neth0")
    dead.kill()
    dead.wait()
    pynet.run("gc")
    assert pynet.leases("masq") == ["10.85.0.2"]
    ruleset = host_ns.nft_ruleset()
    assert "10.85.0.3" not in ruleset and "10.85.0.2" in ruleset


def test_concurrent_attaches_get_distinct_addresses(pynet):
    from concurrent.futures import ThreadPoolExecutor

    pynet.net("par", "10.86.0.0/24")
    procs = [pynet.sleeper() for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda p: pynet.json("attach", p.pid)[0], procs))
    addresses = sorted(r["ips"][0]["address"] for r in results)
    assert addresses == ["10.86.0.2/24", "10.86.0.3/24", "10.86.0.4/24"]
    assert sorted(addresses_in(p.pid, "eth0")[0] for p in procs) == addresses
    assert len({c["id"] for c in pynet.json("ls")}) == 3


def test_inspect_check_notices_a_removed_interface(pynet):
    pynet.net("chk", "10.87.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid)
    [att] = pynet.json("inspect", proc.pid, "--check")[0]["attachments"]
    assert att["check"] == "ok"
    ipr = cni_netns.iproute(f"/proc/{proc.pid}/ns/net")
    try:
        ipr.link("del", index=ipr.link_lookup(ifname="eth0")[0])
    finally:
        ipr.close()
    res = pynet.run("inspect", proc.pid, "--check", "--json", ok=False)
    assert res.returncode == 1
    [att] = json.loads(res.out)[0]["attachments"]
    assert 'failed (check)' in att["check"]
    pynet.run("detach", proc.pid)  # DEL still succeeds with the interface gone
    assert pynet.leases("chk") == []
