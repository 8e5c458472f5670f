"""bridge plugin: containers attached to a bridge in the sandbox host netns, asserted on kernel state and traffic."""

from __future__ import annotations

import ipaddress

import pytest

from netns_fixtures import icmp_echo

from .test_bridge_support import (  # noqa: F401  (fixtures)
    IFA_F_NODAD, IFA_F_TENTATIVE, IFF_PROMISC, IFF_UP, address_flags, bcni, bcni_all, brname, conf_factory,
    ip_of, leases, link_index, port_info, ports_of, veths,
)


def test_add_attaches_container_to_new_bridge_with_gateway(bcni_all, host_ns, container_ns, conf_factory, brname):
    conf = conf_factory(isGateway=True)
    result = bcni_all.add("bridge", conf, container_ns)

    bridge, host_veth, ctr = result["interfaces"]
    assert bridge["name"] == brname and ctr["name"] == "eth0" and ctr["sandbox"] == container_ns.path
    assert result["ips"] == [{"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 2}]
    assert container_ns.addresses("eth0") == ["10.99.0.2/24"]
    assert container_ns.link("eth0").get_attr("IFLA_ADDRESS") == ctr["mac"]
    assert host_ns.addresses(brname) == ["10.99.0.1/24"]
    assert host_ns.link(brname).get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge"
    assert host_ns.link(brname).get_attr("IFLA_ADDRESS") == bridge["mac"]
    assert ports_of(host_ns, brname) == [host_veth["name"]]
    assert host_ns.link(host_veth["name"]).get_attr("IFLA_ADDRESS") == host_veth["mac"]
    assert host_ns.link(host_veth["name"])["flags"] & IFF_UP
    assert host_ns.sysctl("net.ipv4.ip_forward") == "1"
    assert icmp_echo(container_ns, "10.99.0.1")


def test_two_containers_reach_each_other_and_the_gateway(bcni_all, host_ns, make_netns, conf_factory):
    conf = conf_factory(isGateway=True)
    a, b = make_netns(), make_netns()
    ra = bcni_all.add("bridge", conf, a, container_id="ctr-a")
    rb = bcni_all.add("bridge", conf, b, container_id="ctr-b")
    assert ip_of(ra) != ip_of(rb)
    assert icmp_echo(a, ip_of(rb)) and icmp_echo(b, ip_of(ra))
    assert icmp_echo(a, "10.99.0.1") and icmp_echo(b, "10.99.0.1")


def test_del_removes_container_interface_and_host_veth(bcni_all, host_ns, container_ns, conf_factory, brname,
                                                         tmp_path):
    conf = conf_factory(isGateway=True)
    result = bcni_all.add("bridge", conf, container_ns)
    bcni_all.delete("bridge", dict(conf, prevResult=result), container_ns)
    assert "eth0" not in container_ns.link_names()
    assert veths(host_ns) == []
    assert ports_of(host_ns, brname) == []
    assert leases(tmp_path) == []
    bcni_all.delete("bridge", dict(conf, prevResult=result), container_ns)  # idempotent


def test_l2_only_network_brings_interface_up_without_addresses(bcni, host_ns, container_ns, conf_factory, brname):
    conf = conf_factory(ipam={})
    result = bcni.add("bridge", conf, container_ns)
    assert "ips" not in result
    assert container_ns.link("eth0")["flags"] & IFF_UP
    assert container_ns.addresses("eth0") == []
    assert host_ns.addresses(brname) == []
    assert len(ports_of(host_ns, brname)) == 1
    bcni.delete("bridge", conf, container_ns)
    assert veths(host_ns) == []


def test_disable_container_interface_leaves_it_down(bcni, host_ns, container_ns, conf_factory, brname):
    conf = conf_factory(ipam={}, disableContainerInterface=True)
    bcni.add("bridge", conf, container_ns)
    assert not container_ns.link("eth0")["flags"] & IFF_UP
    assert len(ports_of(host_ns, brname)) == 1


def test_is_default_gateway_adds_default_route_via_bridge(bcni, host_ns, container_ns, conf_factory):
    conf = conf_factory(isDefaultGateway=True)
    result = bcni.add("bridge", conf, container_ns)
    assert {"dst": "0.0.0.0/0", "gw": "10.99.0.1"} in result["routes"]
    assert {"dst": "default", "gw": "10.99.0.1", "dev": "eth0"} in container_ns.routes()
    assert result["ips"][0]["gateway"] == "10.99.0.1"


def test_without_default_gateway_there_is_no_default_route(bcni, container_ns, conf_factory):
    bcni.add("bridge", conf_factory(isGateway=True), container_ns)
    assert [r for r in container_ns.routes() if r["dst"] == "default"] == []


def test_without_is_gateway_the_bridge_has_no_address(bcni, host_ns, container_ns, conf_factory, brname):
    result = bcni.add("bridge", conf_factory(), container_ns)
    assert host_ns.addresses(brname) == []
    assert container_ns.addresses("eth0") == [result["ips"][0]["address"]]


def test_hairpin_mode_sets_the_port_flag(bcni, host_ns, container_ns, conf_factory):
    result = bcni.add("bridge", conf_factory(hairpinMode=True), container_ns)
    assert port_info(host_ns, result["interfaces"][1]["name"])["mode"] == 1


def test_port_is_not_hairpin_or_isolated_by_default(bcni, host_ns, container_ns, conf_factory):
    result = bcni.add("bridge", conf_factory(), container_ns)
    info = port_info(host_ns, result["interfaces"][1]["name"])
    assert info["mode"] == 0 and info["isolated"] == 0


def test_port_isolation_sets_the_isolated_flag_and_stops_port_to_port_traffic(bcni, host_ns, make_netns,
                                                                             conf_factory):
    conf = conf_factory(isGateway=True, portIsolation=True)
    a, b = make_netns(), make_netns()
    ra = bcni.add("bridge", conf, a, container_id="iso-a")
    rb = bcni.add("bridge", conf, b, container_id="iso-b")
    assert port_info(host_ns, ra["interfaces"][1]["name"])["isolated"] == 1
    assert icmp_echo(a, "10.99.0.1")  # the bridge itself is not an isolated port
    assert not icmp_echo(a, ip_of(rb), timeout=0.6, attempts=2)


def test_promisc_mode_sets_the_bridge_promiscuous(bcni, host_ns, container_ns, conf_factory, brname):
    bcni.add("bridge", conf_factory(promiscMode=True), container_ns)
    assert host_ns.link(brname)["flags"] & IFF_PROMISC


def test_an_existing_bridge_is_adopted_set_up_and_made_promiscuous(bcni, host_ns, make_netns, conf_factory, brname):
    first = bcni.add("bridge", conf_factory(), make_netns(), container_id="first")
    host_ns.ipr.link("set", index=host_ns.link(brname)["index"], state="down")
    second = bcni.add("bridge", conf_factory(promiscMode=True), make_netns(), container_id="second")
    bridge = host_ns.link(brname)
    assert bridge["flags"] & IFF_PROMISC and bridge["flags"] & 1
    assert second["interfaces"][0] == {"name": brname, "mac": bridge.get_attr("IFLA_ADDRESS")}
    assert first["interfaces"][0]["name"] == brname


def test_mtu_is_set_on_both_veth_ends_and_the_new_bridge(bcni, host_ns, container_ns, conf_factory, brname):
    result = bcni.add("bridge", conf_factory(mtu=1400), container_ns)
    assert container_ns.link("eth0").get_attr("IFLA_MTU") == 1400
    assert host_ns.link(result["interfaces"][1]["name"]).get_attr("IFLA_MTU") == 1400
    assert host_ns.link(brname).get_attr("IFLA_MTU") == 1400


@pytest.mark.parametrize("source", ["CNI_ARGS", "args", "runtimeConfig"])
def test_mac_is_taken_from_each_source(bcni, container_ns, conf_factory, source):
    mac = "0a:58:0a:63:00:42"
    conf, args = conf_factory(), ""
    if source == "CNI_ARGS":
        args = f"IgnoreUnknown=1;MAC={mac.upper()};K8S_POD_NAME=web"
    elif source == "args":
        conf["args"] = {"cni": {"mac": mac}}
    else:
        conf["runtimeConfig"] = {"mac": mac}
    result = bcni.add("bridge", conf, container_ns, args=args)
    assert container_ns.link("eth0").get_attr("IFLA_ADDRESS") == mac
    assert result["interfaces"][2]["mac"] == mac


def test_runtime_config_mac_wins_over_args_and_cni_args(bcni, container_ns, conf_factory):
    conf = dict(conf_factory(), args={"cni": {"mac": "0a:00:00:00:00:02"}}, runtimeConfig={"mac": "0a:00:00:00:00:03"})
    bcni.add("bridge", conf, container_ns, args="IgnoreUnknown=1;MAC=0a:00:00:00:00:01")
    assert container_ns.link("eth0").get_attr("IFLA_ADDRESS") == "0a:00:00:00:00:03"


def test_ipv6_address_is_added_without_dad_by_default(bcni, container_ns, conf_factory):
    result = bcni.add("bridge", conf_factory("10.99.0.0/24,fd99::/64", isGateway=True), container_ns)
    v6 = str(ipaddress.ip_interface(result["ips"][1]["address"]).ip)
    flags = address_flags(container_ns, "eth0", v6)
    assert flags & IFA_F_NODAD and not flags & IFA_F_TENTATIVE
    assert sorted(container_ns.addresses("eth0")) == sorted(ip["address"] for ip in result["ips"])
    assert container_ns.sysctl("net/ipv6/conf/eth0/accept_dad") == "0"


def test_enabledad_keeps_duplicate_address_detection(bcni, container_ns, conf_factory):
    result = bcni.add("bridge", conf_factory("fd98::/64", enabledad=True), container_ns)
    v6 = str(ipaddress.ip_interface(result["ips"][0]["address"]).ip)
    assert not address_flags(container_ns, "eth0", v6) & IFA_F_NODAD
    assert container_ns.sysctl("net/ipv6/conf/eth0/accept_dad") == "1"


def test_dual_stack_gateway_addresses_and_forwarding(bcni, host_ns, make_netns, conf_factory, brname):
    conf = conf_factory("10.99.0.0/24,fd99::/64", isDefaultGateway=True)
    a, b = make_netns(), make_netns()
    ra = bcni.add("bridge", conf, a, container_id="ds-a")
    rb = bcni.add("bridge", conf, b, container_id="ds-b")
    assert sorted(host_ns.addresses(brname)) == ["10.99.0.1/24", "fd99::1/64"]
    assert host_ns.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert {"dst": "::/0", "gw": "fd99::1"} in ra["routes"]
    assert icmp_echo(a, "fd99::1") and icmp_echo(a, ip_of(rb, 1))


def test_existing_bridge_address_conflict_fails_unless_force_address(bcni, host_ns, make_netns, conf_factory,
                                                                     brname, tmp_path):
    host_ns.ipr.link("add", ifname=brname, kind="bridge")
    host_ns.ipr.addr("add", index=link_index(host_ns, brname), address="10.50.0.1", prefixlen=24)
    conf = conf_factory(isGateway=True)
    inv = bcni.invoke("bridge", "ADD", conf, container=make_netns())
    assert inv.rc != 0 and "already has an IP address" in inv.reply["msg"]
    assert host_ns.addresses(brname) == ["10.50.0.1/24"]
    bcni.add("bridge", dict(conf, forceAddress=True), make_netns(), container_id="forced")
    assert host_ns.addresses(brname) == ["10.99.0.1/24"]


def test_existing_non_bridge_link_with_the_bridge_name_is_an_error(bcni, host_ns, container_ns, conf_factory,
                                                                    brname):
    host_ns.ipr.link("add", ifname=brname, kind="veth", peer={"ifname": brname + "p"})
    inv = bcni.invoke("bridge", "ADD", conf_factory(), container=container_ns)
    assert inv.rc != 0 and "not a bridge" in inv.reply["msg"]
    assert "eth0" not in container_ns.link_names()


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_config_versions_are_answered_in_their_own_version(bcni_all, container_ns, conf_factory, version):
    if version == "1.1.0" and bcni_all.mix.endswith("ipam=ref"):
        pytest.skip("reference host-local 1.1.1 does not speak 1.1.0")
    if version == "1.1.0" and bcni_all.mix.startswith("bridge=ref"):
        pytest.skip("reference bridge 1.1.1 does not speak 1.1.0")
    conf = conf_factory(version=version, isGateway=True)
    result = bcni_all.add("bridge", conf, container_ns)
    assert result["cniVersion"] == version
    assert [i["name"] for i in result["interfaces"]][2] == "eth0"
    ip = result["ips"][0]
    assert ip["address"] == "10.99.0.2/24" and ip["interface"] == 2
    assert ("version" in ip) == (version in ("0.3.1", "0.4.0"))
    if version != "0.3.1":
        bcni_all.check("bridge", dict(conf, prevResult=result), container_ns)
    bcni_all.delete("bridge", dict(conf, prevResult=result), container_ns)
    assert "eth0" not in container_ns.link_names()


def test_result_carries_ipam_dns_and_config_dns_overrides_it(bcni, make_netns, conf_factory):
    conf = conf_factory(dns={"nameservers": ["10.99.0.53"], "search": ["example.test"]})
    result = bcni.add("bridge", conf, make_netns())
    assert result["dns"] == {"nameservers": ["10.99.0.53"], "search": ["example.test"]}


def test_check_passes_on_intact_attachment_and_fails_after_address_removed(bcni_all, container_ns, conf_factory):
    conf = conf_factory(isDefaultGateway=True, version="1.0.0")
    result = bcni_all.add("bridge", conf, container_ns)
    bcni_all.check("bridge", dict(conf, prevResult=result), container_ns)
    index = link_index(container_ns, "eth0")
    container_ns.ipr.addr("del", index=index, address="10.99.0.2", prefixlen=24)
    inv = bcni_all.invoke("bridge", "CHECK", dict(conf, prevResult=result), container=container_ns)
    assert inv.rc != 0 and "10.99.0.2" in inv.reply["msg"]


def test_check_fails_when_host_veth_left_the_bridge(bcni, host_ns, container_ns, conf_factory):
    conf = conf_factory(isGateway=True)
    result = bcni.add("bridge", conf, container_ns)
    host_ns.ipr.link("set", index=link_index(host_ns, result["interfaces"][1]["name"]), master=0)
    inv = bcni.invoke("bridge", "CHECK", dict(conf, prevResult=result), container=container_ns)
    assert inv.rc != 0 and "not attached to bridge" in inv.reply["msg"]


def test_check_fails_when_default_route_removed(bcni, container_ns, conf_factory):
    conf = conf_factory(isDefaultGateway=True)
    result = bcni.add("bridge", conf, container_ns)
    container_ns.ipr.route("del", dst="0.0.0.0/0", gateway="10.99.0.1")
    inv = bcni.invoke("bridge", "CHECK", dict(conf, prevResult=result), container=container_ns)
    assert inv.rc != 0 and "route" in inv.reply["msg"]


def test_check_without_prev_result_is_an_error(bcni, container_ns, conf_factory):
    conf = conf_factory()
    bcni.add("bridge", conf, container_ns)
    inv = bcni.invoke("bridge", "CHECK", conf, container=container_ns)
    assert inv.rc != 0 and "prevResult" in inv.reply["msg"]


def test_status_passes_through_to_ipam(make_cni, conf_factory, tmp_path):
    from .test_bridge_support import our_host_local_available
    if not our_host_local_available():
        pytest.skip("our host-local is not there yet (the reference 1.1.1 has no STATUS)")
    from netns_fixtures import OUR_PLUGINS
    cni = make_cni(OUR_PLUGINS)
    conf = conf_factory(version="1.1.0")
    cni.status("bridge", conf)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    conf["ipam"]["dataDir"] = str(blocked / "sub")
    inv = cni.invoke("bridge", "STATUS", conf, container=None, ifname="", container_id="")
    assert inv.rc != 0 and inv.reply["code"] == 50
