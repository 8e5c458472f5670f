"""macvlan plugin: containers on a macvlan of a master veth in the sandbox host netns, asserted on kernel state
(link kind, mode, MTU, MAC, addresses), traffic between containers, leases, and the reference plugins."""

from __future__ import annotations

import os

import pytest

from netns_fixtures import OUR_PLUGINS, REFERENCE_PLUGINS, icmp_echo, reference_available
from netns_fixtures.probes import tcp_connect, tcp_listener
from netns_fixtures.runner import PluginFailed

MASTER, MASTER_PEER = "mv0", "mv0peer"
IFF_UP = 0x1
NETWORK = "mvnet"


def kind(msg) -> str:
    return msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND")


def macvlan_data(msg, attr: str):
    return msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA").get_attr(attr)


def leases(tmp_path) -> list[str]:
    d = tmp_path / "ipam" / NETWORK
    if not d.exists():
        return []
    return sorted(n for n in os.listdir(d) if not n.startswith(("last_reserved_ip", "lock", ".")))


def macvlans(ns) -> list[str]:
    return [m.get_attr("IFLA_IFNAME") for m in ns.ipr.get_links()
            if m.get_attr("IFLA_LINKINFO") is not None and kind(m) == "macvlan"]


def make_master(ns, name: str = MASTER, peer: str = MASTER_PEER, mtu: int = 1500) -> int:
    """A veth pair, both ends up, whose first end serves as the macvlan master; its index."""
    ns.ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer}, mtu=mtu)
    for n in (name, peer):
        ns.ipr.link("set", index=ns.ipr.link_lookup(ifname=n)[0], state="up")
    return ns.ipr.link_lookup(ifname=name)[0]


@pytest.fixture
def master(host_ns) -> int:
    return make_master(host_ns)


@pytest.fixture
def conf(tmp_path, master):
    def make(version: str = "1.0.0", ipam: dict | None = None, subnet: str = "10.98.0.0/24", **options) -> dict:
        c = {"cniVersion": version, "name": NETWORK, "type": "macvlan", "master": MASTER}
        if ipam is None:
            ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "ranges": [[{"subnet": subnet}]]}
        if ipam:
            c["ipam"] = ipam
        c.update(options)
        return c
    return make


def ip_of(result: dict) -> str:
    return result["ips"][0]["address"].split("/")[0]


# -- ADD: kernel state and traffic ----------------------------------------------------------------------------
def test_two_containers_in_bridge_mode_reach_each_other(cni, host_ns, make_netns, conf):
    a, b = make_netns(), make_netns()
    ra = cni.add("macvlan", conf(), a, container_id="ctr-a")
    rb = cni.add("macvlan", conf(), b, container_id="ctr-b")
    assert ip_of(ra) != ip_of(rb)
    assert icmp_echo(a, ip_of(rb)) and icmp_echo(b, ip_of(ra))
    with tcp_listener(b, ip_of(rb)) as port:
        assert tcp_connect(a, ip_of(rb), port)


def test_add_creates_macvlan_on_master_in_container(cni, host_ns, container_ns, conf, master):
    result = cni.add("macvlan", conf(), container_ns)
    assert result["interfaces"] == [{"name": "eth0", "mac": result["interfaces"][0]["mac"],
                                     "sandbox": container_ns.path}]
    assert result["ips"] == [{"address": "10.98.0.2/24", "gateway": "10.98.0.1", "interface": 0}]
    link = container_ns.link("eth0")
    assert kind(link) == "macvlan"
    assert macvlan_data(link, "IFLA_MACVLAN_MODE") == "bridge"
    assert link.get_attr("IFLA_ADDRESS") == result["interfaces"][0]["mac"]
    assert link.get_attr("IFLA_MTU") == 1500
    assert link["flags"] & IFF_UP
    assert container_ns.addresses("eth0") == ["10.98.0.2/24"]
    assert macvlans(host_ns) == []          # born in the container, nothing on the host side
    assert container_ns.sysctl("net/ipv4/conf/eth0/arp_notify") == "1"


@pytest.mark.parametrize("mode", ["private", "vepa", "bridge"])
def test_mode_and_mtu_are_set_on_the_link(cni, container_ns, conf, mode):
    cni.add("macvlan", conf(mode=mode, mtu=1400), container_ns)
    link = container_ns.link("eth0")
    assert macvlan_data(link, "IFLA_MACVLAN_MODE") == mode
    assert link.get_attr("IFLA_MTU") == 1400


def test_passthru_mode_takes_the_master(cni, container_ns, conf):
    cni.add("macvlan", conf(mode="passthru"), container_ns)
    assert macvlan_data(container_ns.link("eth0"), "IFLA_MACVLAN_MODE") == "passthru"


@pytest.mark.parametrize("source", ["config", "CNI_ARGS", "runtimeConfig"])
def test_mac_comes_from_config_cni_args_or_runtime_config(cni, container_ns, conf, source):
    wanted = "02:11:22:33:44:55"
    options, args = {}, ""
    if source == "config":
        options["mac"] = wanted.upper()
    elif source == "CNI_ARGS":
        options["mac"] = "02:00:00:00:00:99"     # CNI_ARGS wins over the config key
        args = f"IgnoreUnknown=1;K8S_POD_NAME=p;MAC={wanted}"
    else:
        options["runtimeConfig"] = {"mac": wanted}   # wins over both
        args = "MAC=02:00:00:00:00:98"
    result = cni.add("macvlan", conf(**options), container_ns, args=args)
    assert container_ns.link("eth0").get_attr("IFLA_ADDRESS") == wanted
    assert result["interfaces"][0]["mac"] == wanted


def test_bcqueuelen_reaches_the_kernel(cni, container_ns, conf):
    from cni_plugins.macvlan.plugin import _register_bc_queue_len

    _register_bc_queue_len()   # so this process decodes the attribute too
    cni.add("macvlan", conf(bcqueuelen=321), container_ns)
    assert macvlan_data(container_ns.link("eth0"), "IFLA_MACVLAN_BC_QUEUE_LEN") == 321


def test_without_ipam_the_interface_is_up_without_addresses(cni, container_ns, conf):
    result = cni.add("macvlan", conf(ipam={}), container_ns)
    assert "ips" not in result and result["interfaces"][0]["name"] == "eth0"
    assert container_ns.link("eth0")["flags"] & IFF_UP
    assert container_ns.addresses("eth0") == []


def test_default_master_is_the_host_default_route_interface(cni, host_ns, container_ns, conf):
    other = make_master(host_ns, "up0", "up0peer")
    host_ns.ipr.addr("add", index=other, address="10.197.0.2", prefixlen=24)
    host_ns.ipr.route("add", dst="0.0.0.0/0", gateway="10.197.0.1", oif=other)
    c = conf()
    del c["master"]
    cni.add("macvlan", c, container_ns)
    assert container_ns.link("eth0").get_attr("IFLA_LINK") == other


def test_without_master_or_default_route_fails_naming_master(cni, container_ns, conf, tmp_path):
    c = conf()
    del c["master"]
    inv = cni.invoke("macvlan", "ADD", c, container_ns)
    assert inv.rc == 1 and inv.reply["code"] == 7 and "master" in inv.reply["msg"]
    assert "default route" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"] and leases(tmp_path) == []


def test_link_in_container_uses_a_master_inside_the_container(cni, host_ns, container_ns, conf):
    inner = make_master(container_ns, "in0", "in0peer")
    result = cni.add("macvlan", conf(master="in0", linkInContainer=True), container_ns)
    link = container_ns.link("eth0")
    assert kind(link) == "macvlan" and link.get_attr("IFLA_LINK") == inner
    assert link.get_attr("IFLA_LINK_NETNSID") is None      # the master is in the same namespace
    cni.check("macvlan", conf(master="in0", linkInContainer=True, prevResult=result), container_ns)


def test_check_passes_then_detects_a_mode_mismatch_and_a_missing_link(cni, container_ns, conf):
    result = cni.add("macvlan", conf(mode="private"), container_ns)
    cni.check("macvlan", conf(mode="private", prevResult=result), container_ns)
    with pytest.raises(PluginFailed, match="mode 'private'"):
        cni.check("macvlan", conf(mode="vepa", prevResult=result), container_ns)
    container_ns.ipr.link("del", index=container_ns.ipr.link_lookup(ifname="eth0")[0])
    with pytest.raises(PluginFailed, match="not found"):
        cni.check("macvlan", conf(mode="private", prevResult=result), container_ns)


def test_check_without_prev_result_is_code_7(cni, container_ns, conf):
    cni.add("macvlan", conf(), container_ns)
    inv = cni.invoke("macvlan", "CHECK", conf(), container_ns)
    assert inv.reply["code"] == 7 and "prevResult" in inv.reply["msg"]


# -- failures leave nothing behind ----------------------------------------------------------------------------
def test_failed_ipam_leaves_no_macvlan_link(cni, host_ns, container_ns, conf, tmp_path):
    inv = cni.invoke("macvlan", "ADD", conf(ipam={"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                                                  "ranges": [[{"subnet": "not-a-subnet"}]]}), container_ns)
    assert inv.rc == 1, inv.reply
    assert container_ns.link_names() == ["lo"]
    assert macvlans(host_ns) == [] and leases(tmp_path) == []


def test_failure_after_ipam_removes_the_link_and_releases_the_lease(cni, host_ns, container_ns, conf, tmp_path):
    # a route whose gateway is not on any subnet of the interface: the kernel refuses it after IPAM gave the lease
    ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "ranges": [[{"subnet": "10.98.0.0/24"}]],
            "routes": [{"dst": "10.200.0.0/16", "gw": "10.55.0.1"}]}
    inv = cni.invoke("macvlan", "ADD", conf(ipam=ipam), container_ns)
    assert inv.rc == 1 and "10.200.0.0/16" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"]
    assert macvlans(host_ns) == [] and leases(tmp_path) == []


def test_existing_container_interface_is_refused_and_kept(cni, container_ns, conf, tmp_path):
    container_ns.ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "other"})
    inv = cni.invoke("macvlan", "ADD", conf(), container_ns)
    assert inv.rc == 1 and "already exists" in inv.reply["msg"]
    assert kind(container_ns.link("eth0")) == "veth" and leases(tmp_path) == []


# -- DEL --------------------------------------------------------------------------------------------------------
def test_del_twice_removes_the_link_and_releases_the_lease(cni, container_ns, conf, tmp_path):
    result = cni.add("macvlan", conf(), container_ns)
    assert leases(tmp_path) == ["10.98.0.2"]
    cni.delete("macvlan", conf(prevResult=result), container_ns)
    assert container_ns.link_names() == ["lo"] and leases(tmp_path) == []
    cni.delete("macvlan", conf(prevResult=result), container_ns)


def test_del_after_netns_deleted_releases_lease(cni, make_netns, conf, tmp_path):
    ns = make_netns()
    cni.add("macvlan", conf(), ns)
    path = ns.path
    ns.remove()
    assert leases(tmp_path) == ["10.98.0.2"]
    cni.delete("macvlan", conf(), path)
    assert leases(tmp_path) == []


def test_del_succeeds_when_the_master_is_gone(cni, host_ns, container_ns, conf, tmp_path, master):
    cni.add("macvlan", conf(), container_ns)
    host_ns.ipr.link("del", index=master)       # takes the macvlan with it
    cni.delete("macvlan", conf(), container_ns)
    assert leases(tmp_path) == []


# -- STATUS / GC --------------------------------------------------------------------------------------------------
def test_gc_releases_leases_of_attachments_not_valid_any_more(cni, make_netns, conf, tmp_path):
    a, b = make_netns(), make_netns()
    ra = cni.add("macvlan", conf(version="1.1.0"), a, container_id="ctr-a")
    cni.add("macvlan", conf(version="1.1.0"), b, container_id="ctr-b")
    cni.status("macvlan", conf(version="1.1.0"))
    cni.gc("macvlan", conf(version="1.1.0"), [{"containerID": "ctr-a", "ifname": "eth0"}])
    assert leases(tmp_path) == [ip_of(ra)]


# -- versions, daemon, reference plugins ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_results_are_answered_in_the_config_version(cni, container_ns, conf, version):
    result = cni.add("macvlan", conf(version=version), container_ns)
    assert result["cniVersion"] == version
    ip = result["ips"][0]
    assert ip["address"] == "10.98.0.2/24"
    assert ("version" in ip) == version.startswith("0.")
    if version != "0.3.1":
        cni.check("macvlan", conf(version=version, prevResult=result), container_ns)
    cni.delete("macvlan", conf(version=version, prevResult=result), container_ns)
    assert container_ns.link_names() == ["lo"]


def test_add_and_del_through_the_daemon(daemon_cni, container_ns, conf, tmp_path):
    result = daemon_cni.add("macvlan", conf(), container_ns)
    assert kind(container_ns.link("eth0")) == "macvlan" and result["ips"][0]["address"] == "10.98.0.2/24"
    daemon_cni.delete("macvlan", conf(prevResult=result), container_ns)
    assert container_ns.link_names() == ["lo"] and leases(tmp_path) == []


def _mix(tmp_path, macvlan_dir: str, ipam_dir: str) -> str:
    d = tmp_path / f"mix-{len(os.listdir(tmp_path))}"
    d.mkdir()
    os.symlink(os.path.join(macvlan_dir, "macvlan"), d / "macvlan")
    os.symlink(os.path.join(ipam_dir, "host-local"), d / "host-local")
    return str(d)


needs_reference = pytest.mark.skipif(not reference_available(), reason="reference plugins not in /usr/lib/cni")


@needs_reference
@pytest.mark.parametrize("mix", ["ours+ref-ipam", "ref+our-ipam"])
def test_mixed_with_the_reference_gives_the_same_result_and_link(make_cni, make_netns, conf, tmp_path, mix):
    dirs = (OUR_PLUGINS, REFERENCE_PLUGINS) if mix == "ours+ref-ipam" else (REFERENCE_PLUGINS, OUR_PLUGINS)
    mixed, ours = make_cni(_mix(tmp_path, *dirs)), make_cni(OUR_PLUGINS)
    a, b = make_netns(), make_netns()
    options = {"mode": "private", "mtu": 1450, "mac": "02:aa:bb:cc:dd:01"}
    ra = mixed.add("macvlan", conf(**options), a, container_id="ctr-a")
    rb = ours.add("macvlan", conf(**dict(options, mac="02:aa:bb:cc:dd:02")), b, container_id="ctr-b")
    for key in ("cniVersion", "routes", "dns"):
        assert ra.get(key) == rb.get(key)
    assert ra["interfaces"] == [{"name": "eth0", "mac": "02:aa:bb:cc:dd:01", "sandbox": a.path}]
    assert rb["interfaces"] == [{"name": "eth0", "mac": "02:aa:bb:cc:dd:02", "sandbox": b.path}]
    assert [sorted(ip) for ip in ra["ips"]] == [sorted(ip) for ip in rb["ips"]]
    assert {ip_of(ra), ip_of(rb)} == {"10.98.0.2", "10.98.0.3"}
    for ns in (a, b):
        link = ns.link("eth0")
        assert (kind(link), macvlan_data(link, "IFLA_MACVLAN_MODE"), link.get_attr("IFLA_MTU")) == \
            ("macvlan", "private", 1450)
    assert icmp_echo(a, ip_of(rb), timeout=1) is False    # private mode: the two cannot reach each other
    # each side's CHECK accepts the other's ADD
    ours.check("macvlan", conf(**options, prevResult=ra), a, container_id="ctr-a")
    make_cni(_mix(tmp_path, REFERENCE_PLUGINS, OUR_PLUGINS)).check(
        "macvlan", conf(**dict(options, mac="02:aa:bb:cc:dd:02"), prevResult=rb), b, container_id="ctr-b")
    mixed.delete("macvlan", conf(**options), a, container_id="ctr-a")
    ours.delete("macvlan", conf(**options), b, container_id="ctr-b")
    assert a.link_names() == ["lo"] and b.link_names() == ["lo"] and leases(tmp_path) == []


# -- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options,key,value", [
    ({"mode": "foo"}, "mode", "'foo'"),
    ({"mode": 3}, "mode", "3"),
    ({"mtu": -1}, "mtu", "-1"),
    ({"mtu": "1500"}, "mtu", "'1500'"),
    ({"mtu": 9000}, "mtu", "9000"),              # above the master's 1500
    ({"master": "nosuch0"}, "master", "'nosuch0'"),
    ({"master": 5}, "master", "5"),
    ({"master": "a/b"}, "master", "'a/b'"),
    ({"mac": "zz:11:22:33:44:55"}, "mac", "'zz:11:22:33:44:55'"),
    ({"mac": "01:00:5e:00:00:01"}, "mac", "'01:00:5e:00:00:01'"),
    ({"runtimeConfig": {"mac": "nope"}}, "runtimeConfig.mac", "'nope'"),
    ({"linkInContainer": "yes"}, "linkInContainer", "'yes'"),
    ({"bcqueuelen": -1}, "bcqueuelen", "-1"),
    ({"master": "mv0", "linkInContainer": True}, "master", "'mv0'"),   # mv0 is on the host, not in the container
])
def test_malformed_key_is_code_7_naming_key_and_value(cni, container_ns, conf, tmp_path, options, key, value):
    inv = cni.invoke("macvlan", "ADD", conf(**options), container_ns)
    assert inv.rc == 1 and inv.reply["code"] == 7, inv.reply
    assert f"invalid {key} {value}" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"] and leases(tmp_path) == []


def test_malformed_cni_args_mac_is_code_7(cni, container_ns, conf):
    inv = cni.invoke("macvlan", "ADD", conf(), container_ns, args="MAC=12345")
    assert inv.reply["code"] == 7 and "invalid CNI_ARGS MAC '12345'" in inv.reply["msg"]


def test_unknown_cni_args_need_ignore_unknown(cni, container_ns, conf):
    inv = cni.invoke("macvlan", "ADD", conf(), container_ns, args="K8S_POD_NAME=p")
    assert inv.reply["code"] == 4 and "K8S_POD_NAME" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"]
