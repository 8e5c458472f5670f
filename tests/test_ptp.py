"""ptp plugin: a routed veth pair per container in the sandbox host netns, asserted on kernel state (links,
addresses, routes on both sides), traffic (to the host, between containers, beyond the host with and without
ipMasq), leases and masquerade elements, and against the reference ptp."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest

from netns_fixtures import OUR_PLUGINS, REFERENCE_PLUGINS, CNI, icmp_echo, reference_available, veth_link
from netns_fixtures.probes import tcp_connect, tcp_listener

from .test_bridge_support import ip_of, link_index, nft_elements, veths
from .test_bridge_support import leases as bridge_leases

NETWORK = "ptpnet"
IFF_UP = 0x1
needs_reference = pytest.mark.skipif(not reference_available(), reason="reference plugins not in /usr/lib/cni")


@pytest.fixture
def conf(tmp_path):
    def make(subnet: str = "10.97.0.0/24", version: str = "1.0.0", ipam: dict | None = None, data_dir: str = "ipam",
             **options) -> dict:
        c = {"cniVersion": version, "name": NETWORK, "type": "ptp"}
        if ipam is None:
            ipam = {"type": "host-local", "dataDir": str(tmp_path / data_dir),
                    "ranges": [[{"subnet": s}] for s in subnet.split(",")]}
        if ipam:
            c["ipam"] = ipam
        c.update(options)
        return c
    return make


def leases(tmp_path) -> list[str]:
    return bridge_leases(tmp_path, NETWORK)


def masq(host_ns) -> list[tuple[str, str]]:
    return nft_elements(host_ns, "inet", "masq4") + nft_elements(host_ns, "inet", "masq6")


def kind(msg) -> str:
    return msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND")


def routes(ns, family: int = 4) -> list[dict]:
    """Main-table routes without the kernel's IPv6 link-local ones."""
    return sorted((r for r in ns.routes(family) if not r["dst"].startswith("fe80:")), key=str)


def host_veth(result: dict) -> str:
    return result["interfaces"][0]["name"]


def eventually(predicate, timeout: float = 10.0) -> bool:
    """For what a daemon does after its reply (the veth's slow teardown) or the kernel after a netns is gone."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def outside(host_ns, make_netns):
    """A netns beyond the host (192.168.76.2) with no route back to the container subnet."""
    out = make_netns("pynt-o")
    veth_link(host_ns, "uplink", out, "eth0", ["192.168.76.1/24"], ["192.168.76.2/24"])
    return out


@contextlib.contextmanager
def peer_recorder(ns, ip: str = "0.0.0.0"):
    """A TCP server in ``ns`` that records the source address of every connection; yields (port, peers)."""
    with ns.entered():
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ip, 0))
    srv.listen(8)
    srv.settimeout(0.2)
    peers: list[str] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, peer = srv.accept()
            except OSError:
                continue
            with conn:
                peers.append(peer[0])
                conn.sendall(b"pynet\n")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1], peers
    finally:
        stop.set()
        thread.join(2)
        srv.close()


# -- ADD: kernel state ----------------------------------------------------------------------------------------------
def test_add_makes_a_routed_veth_pair_as_the_reference_lays_it_out(cni, host_ns, container_ns, conf):
    result = cni.add("ptp", conf(), container_ns)
    host_if, ctr_if = result["interfaces"]
    assert host_if["name"].startswith("veth") and "sandbox" not in host_if
    assert ctr_if == {"name": "eth0", "mac": container_ns.link("eth0").get_attr("IFLA_ADDRESS"),
                      "sandbox": container_ns.path}
    assert result["ips"] == [{"address": "10.97.0.2/24", "gateway": "10.97.0.1", "interface": 1}]
    ctr = container_ns.link("eth0")
    host = host_ns.link(host_if["name"])
    assert kind(ctr) == "veth" and kind(host) == "veth"
    assert ctr.get_attr("IFLA_LINK") == host["index"] and host.get_attr("IFLA_LINK") == ctr["index"]
    assert host.get_attr("IFLA_ADDRESS") == host_if["mac"]
    assert ctr["flags"] & IFF_UP and host["flags"] & IFF_UP
    # container: its IPAM address; the whole subnet through the gateway, the gateway itself on the link
    assert container_ns.addresses("eth0") == ["10.97.0.2/24"]
    assert routes(container_ns) == sorted([{"dst": "10.97.0.1/32", "gw": None, "dev": "eth0"},
                                           {"dst": "10.97.0.0/24", "gw": "10.97.0.1", "dev": "eth0"}], key=str)
    # host: the gateway as /32 on its veth, a /32 route to the container
    assert host_ns.addresses(host_if["name"]) == ["10.97.0.1/32"]
    assert routes(host_ns) == [{"dst": "10.97.0.2/32", "gw": None, "dev": host_if["name"]}]
    assert host_ns.sysctl("net.ipv4.ip_forward") == "1"


def test_dual_stack_puts_both_gateways_on_the_host_veth_without_dad(cni, host_ns, container_ns, conf):
    result = cni.add("ptp", conf("10.97.0.0/24,fd97::/64"), container_ns)
    name = host_veth(result)
    assert sorted(host_ns.addresses(name)) == ["10.97.0.1/32", "fd97::1/128"]
    assert sorted(container_ns.addresses("eth0")) == ["10.97.0.2/24", "fd97::2/64"]
    assert {"dst": "fd97::2/128", "gw": None, "dev": name} in routes(host_ns, 6)
    assert {"dst": "fd97::/64", "gw": "fd97::1", "dev": "eth0"} in routes(container_ns, 6)
    assert {"dst": "fd97::1/128", "gw": None, "dev": "eth0"} in routes(container_ns, 6)
    assert host_ns.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert host_ns.sysctl(f"net/ipv6/conf/{name}/accept_ra") == "0"
    assert icmp_echo(container_ns, "fd97::1")   # no address on either end is left tentative


def test_ipam_routes_go_into_the_container(cni, container_ns, conf):
    c = conf()
    c["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}, {"dst": "192.168.200.0/24", "gw": "10.97.0.1"}]
    result = cni.add("ptp", c, container_ns)
    assert {"dst": "default", "gw": "10.97.0.1", "dev": "eth0"} in routes(container_ns)
    assert {"dst": "192.168.200.0/24", "gw": "10.97.0.1", "dev": "eth0"} in routes(container_ns)
    assert result["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "192.168.200.0/24", "gw": "10.97.0.1"}]


def test_mtu_is_set_on_both_ends(cni, host_ns, container_ns, conf):
    result = cni.add("ptp", conf(mtu=1400), container_ns)
    assert container_ns.link("eth0").get_attr("IFLA_MTU") == 1400
    assert host_ns.link(host_veth(result)).get_attr("IFLA_MTU") == 1400


def test_config_dns_replaces_ipam_dns(cni, make_netns, conf):
    c = conf(dns={"nameservers": ["10.97.0.53"], "search": ["example.test"]})
    assert cni.add("ptp", c, make_netns())["dns"] == {"nameservers": ["10.97.0.53"], "search": ["example.test"]}
    assert cni.add("ptp", conf(), make_netns(), container_id="plain")["dns"] == {}


# -- traffic ----------------------------------------------------------------------------------------------------------
def test_container_and_host_reach_each_other(cni, host_ns, container_ns, conf):
    result = cni.add("ptp", conf(), container_ns)
    assert icmp_echo(container_ns, "10.97.0.1") and icmp_echo(host_ns, ip_of(result))
    with tcp_listener(host_ns, "10.97.0.1") as port:
        assert tcp_connect(container_ns, "10.97.0.1", port)
    with tcp_listener(container_ns) as port:
        assert tcp_connect(host_ns, ip_of(result), port)


def test_two_containers_reach_each_other_through_the_host(cni, host_ns, make_netns, conf):
    a, b = make_netns(), make_netns()
    ra = cni.add("ptp", conf(), a, container_id="ctr-a")
    rb = cni.add("ptp", conf(), b, container_id="ctr-b")
    assert ip_of(ra) != ip_of(rb) and len(veths(host_ns)) == 2
    assert icmp_echo(a, ip_of(rb)) and icmp_echo(b, ip_of(ra))
    with tcp_listener(b) as port:
        assert tcp_connect(a, ip_of(rb), port)


def test_ip_masq_hides_the_container_behind_the_host(cni, host_ns, container_ns, outside, conf):
    c = conf(ipMasq=True)
    c["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}]
    result = cni.add("ptp", c, container_ns)
    assert masq(host_ns) == [(ip_of(result), f"ctr1/eth0@{NETWORK}")]
    assert (f"{ip_of(result)} . 10.97.0.0/24", f"ctr1/eth0@{NETWORK}") in nft_elements(host_ns, "inet", "local4")
    assert icmp_echo(container_ns, "192.168.76.2")
    with peer_recorder(outside) as (port, peers):
        assert tcp_connect(container_ns, "192.168.76.2", port)
    assert peers == ["192.168.76.1"]


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_ip_masq_backend_is_accepted_and_served_by_nftables(cni, host_ns, container_ns, conf, backend):
    result = cni.add("ptp", conf(ipMasq=True, ipMasqBackend=backend), container_ns)
    assert masq(host_ns) == [(ip_of(result), f"ctr1/eth0@{NETWORK}")]


def test_without_ip_masq_the_receiver_sees_the_container_address(cni, host_ns, container_ns, outside, conf):
    c = conf()
    c["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}]
    result = cni.add("ptp", c, container_ns)
    assert masq(host_ns) == []
    assert not icmp_echo(container_ns, "192.168.76.2", timeout=0.6, attempts=2)   # no way back
    outside.ipr.route("add", dst="10.97.0.0", dst_len=24, gateway="192.168.76.1")
    with peer_recorder(outside) as (port, peers):
        assert tcp_connect(container_ns, "192.168.76.2", port)
    assert peers == [ip_of(result)]


# -- DEL ----------------------------------------------------------------------------------------------------------------
def test_del_removes_the_pair_host_route_lease_and_masquerade_elements(cni, host_ns, container_ns, conf, tmp_path):
    c = conf(ipMasq=True)
    result = cni.add("ptp", c, container_ns)
    assert leases(tmp_path) == [ip_of(result)] and masq(host_ns)
    cni.delete("ptp", dict(c, prevResult=result), container_ns)
    assert container_ns.link_names() == ["lo"] and veths(host_ns) == []
    assert routes(host_ns) == [] and leases(tmp_path) == [] and masq(host_ns) == []
    assert nft_elements(host_ns, "inet", "local4") == []
    cni.delete("ptp", dict(c, prevResult=result), container_ns)   # idempotent


def test_del_keeps_other_containers(cni, host_ns, make_netns, conf, tmp_path):
    c = conf(ipMasq=True)
    a, b = make_netns(), make_netns()
    ra = cni.add("ptp", c, a, container_id="keep-a")
    rb = cni.add("ptp", c, b, container_id="gone-b")
    cni.delete("ptp", dict(c, prevResult=rb), b, container_id="gone-b")
    assert masq(host_ns) == [(ip_of(ra), f"keep-a/eth0@{NETWORK}")]
    assert veths(host_ns) == [host_veth(ra)] and leases(tmp_path) == [ip_of(ra)]
    assert icmp_echo(a, "10.97.0.1")    # the gateway address the two veths shared is still on a's


def test_del_with_the_netns_gone_releases_lease_and_masquerade_elements(cni, host_ns, make_netns, conf, tmp_path):
    c = conf(ipMasq=True)
    ns = make_netns()
    result = cni.add("ptp", c, ns)
    path = ns.path
    ns.remove()
    cni.delete("ptp", dict(c, prevResult=result), path)
    assert leases(tmp_path) == [] and masq(host_ns) == []
    assert eventually(lambda: veths(host_ns) == [] and routes(host_ns) == [])
    cni.delete("ptp", dict(c, prevResult=result), path)
    cni.delete("ptp", c, None)    # no CNI_NETNS at all


def test_del_with_the_netns_unreachable_removes_the_host_veth_of_prev_result(cni, host_ns, make_netns, conf,
                                                                             tmp_path):
    """The runtime lost the netns path but the namespace lives on (a process holds it): the host veth that
    still routes to the container's address goes, and the pair with it."""
    ns = make_netns()
    result = cni.add("ptp", conf(), ns)
    holder = os.open(ns.path, os.O_RDONLY)
    try:
        path = ns.path
        ns.remove()
        assert veths(host_ns) == [host_veth(result)]
        cni.delete("ptp", dict(conf(), prevResult=result), path)
        assert veths(host_ns) == [] and routes(host_ns) == [] and leases(tmp_path) == []
    finally:
        os.close(holder)


# -- failures leave nothing ---------------------------------------------------------------------------------------------
def test_failed_ipam_leaves_no_veth(cni, host_ns, container_ns, conf, tmp_path):
    inv = cni.invoke("ptp", "ADD", conf(ipam={"type": "no-such-ipam"}), container=container_ns)
    assert inv.rc != 0 and "no-such-ipam" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"] and veths(host_ns) == []


def test_failure_after_the_veth_removes_it_and_releases_the_lease(cni, host_ns, container_ns, conf, tmp_path):
    c = conf(ipMasq=True)
    c["ipam"]["routes"] = [{"dst": "192.168.201.0/24", "gw": "172.31.9.9"}]   # a gateway no route reaches
    inv = cni.invoke("ptp", "ADD", c, container=container_ns)
    assert inv.rc != 0 and "192.168.201.0/24" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"] and veths(host_ns) == []
    assert routes(host_ns) == [] and leases(tmp_path) == [] and masq(host_ns) == []


def test_existing_container_interface_is_refused_before_ipam(cni, host_ns, container_ns, conf, tmp_path):
    container_ns.ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth0p"})
    inv = cni.invoke("ptp", "ADD", conf(), container=container_ns)
    assert inv.rc != 0 and "eth0" in inv.reply["msg"]
    assert leases(tmp_path) == [] and veths(host_ns) == []


def test_ipam_address_without_gateway_is_refused(cni, host_ns, container_ns, conf):
    inv = cni.invoke("ptp", "ADD", conf(ipam={"type": "static", "addresses": [{"address": "10.97.5.5/24"}]}),
                     container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7 and "10.97.5.5/24" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"] and veths(host_ns) == []


# -- CHECK ---------------------------------------------------------------------------------------------------------------
def test_check_passes_on_an_intact_attachment(cni, container_ns, conf):
    c = conf("10.97.0.0/24,fd97::/64", ipMasq=True)
    result = cni.add("ptp", c, container_ns)
    cni.check("ptp", dict(c, prevResult=result), container_ns)


@pytest.mark.parametrize("damage,message", [
    ("host route", "host route to 10.97.0.2"),
    ("container route", "route 10.97.0.0/24"),
    ("container address", "10.97.0.2/24"),
    ("host gateway", "gateway address 10.97.0.1/32"),
    ("masquerade", "ipMasq"),
])
def test_check_fails_on_damage(cni, host_ns, container_ns, conf, damage, message):
    c = conf(ipMasq=True)
    c["ipam"]["routes"] = [{"dst": "10.97.0.0/24"}]   # CHECK verifies the result's routes
    result = cni.add("ptp", c, container_ns)
    name = host_veth(result)
    if damage == "host route":
        host_ns.ipr.route("del", dst="10.97.0.2", dst_len=32, oif=link_index(host_ns, name), scope=255)
    elif damage == "container route":
        container_ns.ipr.route("del", dst="10.97.0.0", dst_len=24, gateway="10.97.0.1")
    elif damage == "container address":
        container_ns.ipr.addr("del", index=link_index(container_ns, "eth0"), address="10.97.0.2", prefixlen=24)
    elif damage == "host gateway":
        host_ns.ipr.addr("del", index=link_index(host_ns, name), address="10.97.0.1", prefixlen=32)
    else:
        host_ns.nft_json("flush set inet pynet-bridge masq4")
    inv = cni.invoke("ptp", "CHECK", dict(c, prevResult=result), container=container_ns)
    assert inv.rc != 0 and message in inv.reply["msg"], inv.reply


def test_check_without_prev_result_is_code_7(cni, container_ns, conf):
    cni.add("ptp", conf(), container_ns)
    inv = cni.invoke("ptp", "CHECK", conf(), container=container_ns)
    assert inv.reply["code"] == 7 and "prevResult" in inv.reply["msg"]


# -- STATUS / GC ---------------------------------------------------------------------------------------------------------
def test_gc_removes_stale_masquerade_elements_and_leases_of_this_network_only(cni, host_ns, make_netns, conf,
                                                                              tmp_path):
    c = conf(version="1.1.0", ipMasq=True)
    a, b, other = make_netns(), make_netns(), make_netns()
    ra = cni.add("ptp", c, a, container_id="ctr-a")
    cni.add("ptp", c, b, container_id="ctr-b")
    other_conf = conf("10.96.0.0/24", version="1.1.0", data_dir="other", ipMasq=True, name="othernet")
    ro = cni.add("ptp", other_conf, other, container_id="ctr-o")
    cni.status("ptp", c)
    cni.gc("ptp", c, [{"containerID": "ctr-a", "ifname": "eth0"}])
    assert sorted(masq(host_ns)) == sorted([(ip_of(ra), f"ctr-a/eth0@{NETWORK}"), (ip_of(ro), "ctr-o/eth0@othernet")])
    assert leases(tmp_path) == [ip_of(ra)]


# -- versions, daemon, bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_results_are_answered_in_the_config_version(cni, container_ns, conf, version):
    c = conf(version=version)
    result = cni.add("ptp", c, container_ns)
    assert result["cniVersion"] == version
    ip = result["ips"][0]
    assert ip["address"] == "10.97.0.2/24" and ip["interface"] == 1
    assert ("version" in ip) == version.startswith("0.")
    if version != "0.3.1":
        cni.check("ptp", dict(c, prevResult=result), container_ns)
    cni.delete("ptp", dict(c, prevResult=result), container_ns)
    assert container_ns.link_names() == ["lo"]


def test_add_and_del_through_the_daemon(daemon_cni, host_ns, container_ns, conf, tmp_path):
    c = conf(ipMasq=True)
    result = daemon_cni.add("ptp", c, container_ns)
    assert kind(container_ns.link("eth0")) == "veth" and routes(host_ns)[0]["dst"] == "10.97.0.2/32"
    assert icmp_echo(container_ns, "10.97.0.1")
    daemon_cni.delete("ptp", dict(c, prevResult=result), container_ns)
    assert routes(host_ns) == [] and leases(tmp_path) == [] and masq(host_ns) == []
    assert eventually(lambda: veths(host_ns) == [] and container_ns.link_names() == ["lo"])


@pytest.mark.parametrize("options,key,value", [
    ({"ipMasq": "true"}, "ipMasq", "'true'"),
    ({"ipMasq": 1}, "ipMasq", "1"),
    ({"mtu": "1400"}, "mtu", "'1400'"),
    ({"mtu": -1}, "mtu", "-1"),
    ({"mtu": 67}, "mtu", "67"),
    ({"mtu": 65536}, "mtu", "65536"),
    ({"mtu": True}, "mtu", "True"),
    ({"ipMasqBackend": "pf"}, "ipMasqBackend", "'pf'"),
    ({"ipMasqBackend": 3}, "ipMasqBackend", "3"),
    ({"ipam": {}}, "ipam", "{}"),
    ({"ipam": "host-local"}, "ipam", "'host-local'"),
    ({"ipam": {"type": 5}}, "ipam.type", "5"),
    ({"ipam": {"type": ""}}, "ipam.type", "''"),
    ({"dns": {"nameservers": "10.0.0.1"}}, "dns.nameservers", "'10.0.0.1'"),
    ({"dns": "10.0.0.1"}, "dns", "'10.0.0.1'"),
])
def test_malformed_key_is_code_7_naming_key_and_value(cni, host_ns, container_ns, conf, tmp_path, options, key,
                                                      value):
    c = conf()
    c.update(options)
    inv = cni.invoke("ptp", "ADD", c, container_ns)
    assert inv.rc == 1 and inv.reply["code"] == 7, inv.reply
    assert f"invalid {key} {value}" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"] and veths(host_ns) == [] and leases(tmp_path) == []


def test_del_works_when_the_config_went_bad_since_add(cni, host_ns, container_ns, conf, tmp_path):
    c = conf(ipMasq=True)
    result = cni.add("ptp", c, container_ns)
    cni.delete("ptp", dict(c, mtu="huge", ipMasq="yes", prevResult=result), container_ns)
    assert leases(tmp_path) == [] and masq(host_ns) == [] and container_ns.link_names() == ["lo"]


# -- the reference ptp --------------------------------------------------------------------------------------------------
def _mix(tmp_path, ptp_dir: str, ipam_dir: str) -> str:
    d = tmp_path / f"mix-{len(os.listdir(tmp_path))}"
    d.mkdir()
    os.symlink(os.path.join(ptp_dir, "ptp"), d / "ptp")
    os.symlink(os.path.join(ipam_dir, "host-local"), d / "host-local")
    return str(d)


def _state(host, ctr, result: dict) -> dict:
    """What one attachment looks like, without what differs by nature (veth names, MACs, sandbox path)."""
    name = host_veth(result)
    return {"ctr_addresses": sorted(ctr.addresses("eth0")),
            "ctr_routes": [routes(ctr, 4), routes(ctr, 6)],
            "ctr_mtu": ctr.link("eth0").get_attr("IFLA_MTU"),
            "host_addresses": sorted(host.addresses(name)),
            "host_routes": [[dict(r, dev="veth") for r in routes(host, f) if r["dev"] == name] for f in (4, 6)],
            "host_mtu": host.link(name).get_attr("IFLA_MTU"),
            "result": dict(result, interfaces=[sorted(i) for i in result["interfaces"]])}


@needs_reference
@pytest.mark.parametrize("mix", ["ptp=ours,ipam=ref", "ptp=ref,ipam=ours", "ptp=ours,ipam=ours"])
@pytest.mark.parametrize("version,subnet", [("0.3.1", "10.97.0.0/24"), ("0.4.0", "10.97.0.0/24,fd97::/64"),
                                            ("1.0.0", "10.97.0.0/24,fd97::/64")])
def test_result_and_kernel_state_match_the_reference(make_cni, make_netns, conf, tmp_path, mix, version, subnet):
    ptp_dir, ipam_dir = {"ptp=ours,ipam=ref": (OUR_PLUGINS, REFERENCE_PLUGINS),
                         "ptp=ref,ipam=ours": (REFERENCE_PLUGINS, OUR_PLUGINS),
                         "ptp=ours,ipam=ours": (OUR_PLUGINS, OUR_PLUGINS)}[mix]
    mixed = make_cni(_mix(tmp_path, ptp_dir, ipam_dir))
    ref_host = make_netns("pynt-h")
    ref = CNI(ref_host, REFERENCE_PLUGINS)
    ours_ctr, ref_ctr = make_netns(), make_netns()
    c = conf(subnet, version=version, mtu=1450, dns={"nameservers": ["10.97.0.53"]})
    c["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}]
    ours = mixed.add("ptp", c, ours_ctr)
    theirs = ref.add("ptp", dict(c, ipam=dict(c["ipam"], dataDir=str(tmp_path / "ref-ipam"))), ref_ctr)
    assert _state(mixed.host, ours_ctr, ours) == _state(ref_host, ref_ctr, theirs)
    assert icmp_echo(ours_ctr, "10.97.0.1")


@needs_reference
@pytest.mark.parametrize("maker", ["reference", "ours"])
def test_attachment_made_by_one_implementation_is_checked_and_deleted_by_the_other(cni, host_ns, container_ns, conf,
                                                                                   tmp_path, maker):
    ref = CNI(host_ns, REFERENCE_PLUGINS)
    adder, other = (ref, cni) if maker == "reference" else (cni, ref)
    c = conf("10.97.0.0/24,fd97::/64")   # ipMasq state is each implementation's own (iptables chains there)
    result = adder.add("ptp", c, container_ns)
    other.check("ptp", dict(c, prevResult=result), container_ns)
    other.delete("ptp", dict(c, prevResult=result), container_ns)
    assert container_ns.link_names() == ["lo"] and veths(host_ns) == [] and leases(tmp_path) == []
    assert routes(host_ns) == [] and routes(host_ns, 6) == []


@needs_reference
def test_containers_of_both_implementations_reach_each_other(cni, host_ns, make_netns, conf):
    ref = CNI(host_ns, REFERENCE_PLUGINS)
    a, b = make_netns(), make_netns()
    ra = cni.add("ptp", conf(), a, container_id="ours")
    rb = ref.add("ptp", conf(), b, container_id="theirs")
    assert icmp_echo(a, ip_of(rb)) and icmp_echo(b, ip_of(ra))
