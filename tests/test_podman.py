"""End to end: Debian's podman 4.3 (CNI backend, runc) drives pynet's plugins in podman's own conflist shape
(bridge -> portmap -> firewall -> tuning), inside a sandbox host netns, with all podman state in tmp_path.

Skips (with the reason) when podman/runc/conmon/busybox-static are not installed or a plugin module is not
written yet. PYNET_PODMAN_REFERENCE_FALLBACK=1 fills missing pynet plugins with the reference ones
(/usr/lib/cni) instead of skipping, to exercise the rest of the chain.
"""

import fcntl
import glob
import json
import os
import socket
import time

import pytest

from netns_fixtures import REFERENCE_PLUGINS, veth_link
from tests.podman.harness import IMAGE, Podman, missing_plugins, missing_requirements

NET = "pynetpm"
BRIDGE = "cni-pm0"
SUBNET, GATEWAY = "10.89.7.0/24", "10.89.7.1"
UPLINK_HOST, UPLINK_OUT = "192.168.78.1", "192.168.78.2"
HOST_PORT = 18080
PAGE = b"pynet-podman-ok"


@pytest.fixture
def plugin_dir(tmp_path):
    reason = missing_requirements()
    if reason:
        pytest.skip(f"podman test needs {reason}")
    missing = missing_plugins()
    fallback = os.environ.get("PYNET_PODMAN_REFERENCE_FALLBACK") == "1"
    if missing and not fallback:
        pytest.skip(f"pynet plugin modules not written yet: {', '.join(missing)}")
    from pynet import cni_install

    d = str(tmp_path / "plugins")
    cni_install.install(d)  # absolute interpreter shebangs: podman's cleanup path has no venv
    for name in missing:
        os.unlink(os.path.join(d, name))
        os.symlink(os.path.join(REFERENCE_PLUGINS, name), os.path.join(d, name))
    return d


@pytest.fixture
def podman(host_ns, plugin_dir):
    # One podman test at a time across xdist workers: they share the caches root podman keeps in /var/lib.
    with open("/tmp/pynet-podman-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pm = Podman(host_ns, plugin_dir)
        try:
            yield pm
        finally:
            notes = pm.teardown()
            assert not notes, notes


@pytest.fixture
def outside(host_ns, make_netns):
    """A netns behind host_ns's uplink, as a client on the host's network would be."""
    out = make_netns("pynt-o")
    veth_link(host_ns, "up0", out, "eth0", [f"{UPLINK_HOST}/24"], [f"{UPLINK_OUT}/24"])
    return out


def http_get(ns, ip, port, attempts=20) -> bytes:
    """The body of GET / from inside ``ns`` ('' when nothing answers). Retries while the server starts."""
    for _ in range(attempts):
        with ns.entered():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(2)
        try:
            sock.connect((ip, port))
            sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            return data.partition(b"\r\n\r\n")[2]
        except OSError:
            time.sleep(0.1)  # readiness polling of the container's httpd, not a timed assertion
        finally:
            sock.close()
    return b""


def leases(pm):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(pm.path("ipam"), NET, "*"))
                  if os.path.basename(p)[0].isdigit())


def test_podman_run_with_published_port_and_container_to_container_then_rm_leaves_nothing(
        podman, host_ns, outside):
    pm = podman
    pm.import_busybox()
    pm.write_conflist(NET, BRIDGE, SUBNET, GATEWAY, tuning={"sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}})
    assert NET in pm.out("network", "ls", "--format", "{{.Name}}")  # VERSION answered for every plugin

    cid = pm.out("run", "-d", "--name", "web", "--network", NET, "--cgroup-parent", pm.cgroup_parent,
                 "-p", f"{HOST_PORT}:80", IMAGE, "httpd", "-f", "-p", "80", "-h", "/www")
    info = json.loads(pm.out("inspect", "web"))[0]
    web_ip = info["NetworkSettings"]["Networks"][NET]["IPAddress"]
    sandbox = info["NetworkSettings"]["SandboxKey"]
    assert web_ip.startswith("10.89.7.")

    # kernel state the chain made in host_ns
    assert host_ns.link(BRIDGE) is not None
    assert any(n.startswith("veth") for n in host_ns.link_names())
    assert leases(pm) == [web_ip]
    assert f"{cid}/eth0" in host_ns.nft_ruleset()
    assert pm.out("exec", "web", "cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify") == "1"

    # the published port, from a client on the host's network and from the host itself
    assert http_get(outside, UPLINK_HOST, HOST_PORT).strip() == PAGE
    assert http_get(host_ns, UPLINK_HOST, HOST_PORT).strip() == PAGE
    assert http_get(host_ns, web_ip, 80).strip() == PAGE

    # container to container over the bridge
    assert fetch_from_container(pm, NET, f"http://{web_ip}/") == (0, PAGE.decode())
    assert leases(pm) == [web_ip]  # the client's lease went with it

    pm("rm", "-f", "-t", "0", "web")
    assert not any(n.startswith("veth") for n in host_ns.link_names())
    assert leases(pm) == []
    assert cid not in host_ns.nft_ruleset()
    assert not os.path.exists(sandbox)
    assert not glob.glob(f"/var/lib/cni/results/*{cid}*")
    assert http_get(outside, UPLINK_HOST, HOST_PORT, attempts=1) == b""


def fetch_from_container(pm, network, url) -> tuple[int, str]:
    """(wget's exit status, body) of a GET from a fresh container on ``network``.

    The trailing echo keeps sh as PID 1: a signal from `timeout` cannot end a PID 1 without handlers, and
    busybox's own `wget -T` segfaults here."""
    proc = pm("run", "--rm", "--network", network, "--cgroup-parent", pm.cgroup_parent, IMAGE,
              "sh", "-c", f"timeout 2 wget -q -O - {url}; echo rc=$?")
    body, _, rc = proc.stdout.decode().strip().rpartition("rc=")
    return int(rc), body.strip()


def test_podman_isolated_networks_reach_their_own_containers_only(podman, host_ns):
    pm = podman
    pm.import_busybox()
    pm.write_conflist("isoa", "cni-isoa", "10.89.8.0/24", "10.89.8.1", isolate=True)
    pm.write_conflist("isob", "cni-isob", "10.89.9.0/24", "10.89.9.1", isolate=True)
    pm("run", "-d", "--name", "web", "--network", "isoa", "--cgroup-parent", pm.cgroup_parent, IMAGE,
       "httpd", "-f", "-p", "80", "-h", "/www")
    web_ip = json.loads(pm.out("inspect", "web"))[0]["NetworkSettings"]["Networks"]["isoa"]["IPAddress"]
    assert http_get(host_ns, web_ip, 80).strip() == PAGE  # the host (not a bridge) still reaches it

    assert fetch_from_container(pm, "isoa", f"http://{web_ip}/") == (0, PAGE.decode())
    rc, body = fetch_from_container(pm, "isob", f"http://{web_ip}/")
    assert rc != 0 and body == ""
    assert {"cni-isoa", "cni-isob"} <= set(host_ns.nft_ruleset().split('"'))
    assert isolation_drops(host_ns) > 0  # dropped by the firewall's isolation rule, not lost elsewhere


def isolation_drops(host_ns) -> int:
    for obj in host_ns.nft_json("list chain inet pynet-firewall forward"):
        rule = obj.get("rule")
        if rule and any("drop" in e for e in rule["expr"]):
            return next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    raise AssertionError("no isolation rule in inet pynet-firewall forward")
