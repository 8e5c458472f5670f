"""bridge plugin failure modes: config errors, failed ADDs that must leave nothing behind, races, VLANs."""

from __future__ import annotations

import concurrent.futures

import pytest

from netns_fixtures import icmp_echo

from .test_bridge_support import (  # noqa: F401  (fixtures)
    bcni, brname, conf_factory, ip_of, kernel_refuses_vlan_filtering, leases, link_index, nft_elements, ports_of,
    veths,
)


@pytest.mark.parametrize("key,value,needle", [
    ("mtu", 10, "mtu"),
    ("mtu", 70000, "mtu"),
    ("mtu", "1500", "mtu"),
    ("isGateway", "yes", "isGateway"),
    ("bridge", "a-name-far-too-long", "bridge"),
    ("vlan", 4095, "vlan"),
    ("vlanTrunk", [{"minID": 10}], "vlanTrunk"),
    ("vlanTrunk", [{"minID": 20, "maxID": 10}], "vlanTrunk"),
    ("runtimeConfig", {"mac": "not-a-mac"}, "runtimeConfig.mac"),
    ("runtimeConfig", {"mac": "01:00:5e:00:00:01"}, "multicast"),
])
def test_invalid_config_is_code_7_naming_the_key_and_changes_nothing(bcni, host_ns, container_ns, conf_factory,
                                                                     brname, tmp_path, key, value, needle):
    conf = dict(conf_factory(isGateway=True), **{key: value})
    inv = bcni.invoke("bridge", "ADD", conf, container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7
    assert needle in inv.reply["msg"]
    assert brname not in host_ns.link_names() and veths(host_ns) == [] and leases(tmp_path) == []


@pytest.mark.parametrize("options,needle", [
    ({"vlan": 10, "vlanTrunk": [{"id": 11}]}, "vlanTrunk"),
    ({"hairpinMode": True, "promiscMode": True}, "promiscMode"),
    ({"disableContainerInterface": True}, "disableContainerInterface"),
])
def test_conflicting_options_are_refused(bcni, container_ns, conf_factory, options, needle):
    inv = bcni.invoke("bridge", "ADD", conf_factory(**options), container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7 and needle in inv.reply["msg"]


def test_unknown_cni_args_need_ignore_unknown(bcni, container_ns, conf_factory):
    inv = bcni.invoke("bridge", "ADD", conf_factory(ipam={}), container=container_ns, args="FOO=bar")
    assert inv.rc != 0 and inv.reply["code"] == 4 and "FOO" in inv.reply["msg"]


def test_add_into_vanished_netns_is_code_3_and_changes_nothing(bcni, host_ns, make_netns, conf_factory, brname,
                                                                tmp_path):
    ns = make_netns()
    path = ns.path
    ns.remove()
    inv = bcni.invoke("bridge", "ADD", conf_factory(isGateway=True), container=path)
    assert inv.rc != 0 and inv.reply["code"] == 3
    assert brname not in host_ns.link_names() and leases(tmp_path) == []


def test_existing_container_ifname_is_a_clear_error_and_nothing_changes(bcni, host_ns, container_ns,
                                                                        conf_factory, brname, tmp_path):
    container_ns.ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth0peer"})
    before = sorted(container_ns.link_names())
    inv = bcni.invoke("bridge", "ADD", conf_factory(isGateway=True), container=container_ns)
    assert inv.rc != 0 and "eth0" in inv.reply["msg"] and "already exists" in inv.reply["msg"]
    assert sorted(container_ns.link_names()) == before
    assert brname not in host_ns.link_names() and veths(host_ns) == [] and leases(tmp_path) == []


def test_exhausted_range_fails_add_and_leaves_no_veth(bcni, host_ns, make_netns, conf_factory, brname):
    conf = conf_factory("10.98.0.0/30", isGateway=True)
    first = bcni.add("bridge", conf, make_netns(), container_id="first")
    second = make_netns()
    inv = bcni.invoke("bridge", "ADD", conf, container=second, container_id="second")
    assert inv.rc != 0
    assert veths(host_ns) == [first["interfaces"][1]["name"]]
    assert ports_of(host_ns, brname) == [first["interfaces"][1]["name"]]
    assert "eth0" not in second.link_names()


def test_failure_after_ipam_releases_lease_and_removes_everything(bcni, host_ns, container_ns, conf_factory,
                                                                  brname, tmp_path):
    # The bridge holds another address: setting the gateway fails after IPAM, veth, and macspoofchk succeeded.
    host_ns.ipr.link("add", ifname=brname, kind="bridge")
    host_ns.ipr.addr("add", index=link_index(host_ns, brname), address="10.50.0.1", prefixlen=24)
    conf = conf_factory(isGateway=True, ipMasq=True, macspoofchk=True)
    inv = bcni.invoke("bridge", "ADD", conf, container=container_ns)
    assert inv.rc != 0 and "already has an IP address" in inv.reply["msg"]
    assert leases(tmp_path) == []
    assert veths(host_ns) == [] and "eth0" not in container_ns.link_names()
    assert nft_elements(host_ns, "bridge", "guarded") == [] and nft_elements(host_ns, "inet", "masq4") == []


def test_del_without_netns_still_releases_the_lease(bcni, container_ns, conf_factory, tmp_path):
    conf = conf_factory(isGateway=True)
    result = bcni.add("bridge", conf, container_ns)
    assert leases(tmp_path) == [ip_of(result)]
    bcni.delete("bridge", dict(conf, prevResult=result), None)
    assert leases(tmp_path) == []


def test_concurrent_adds_to_a_fresh_bridge_all_succeed(bcni, host_ns, make_netns, conf_factory, brname,
                                                       tmp_path):
    conf = conf_factory(isGateway=True, ipMasq=True, macspoofchk=True)
    count = 24
    containers = [make_netns() for _ in range(count)]
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        results = list(pool.map(lambda i: bcni.add("bridge", conf, containers[i], container_id=f"race{i}"),
                                range(count)))
    ips = {ip_of(r) for r in results}
    assert len(ips) == count
    assert sorted(ports_of(host_ns, brname)) == sorted(r["interfaces"][1]["name"] for r in results)
    assert host_ns.addresses(brname) == ["10.99.0.1/24"]
    assert len(nft_elements(host_ns, "inet", "masq4")) == count
    assert host_ns.nft_ruleset().count("masquerade") == 2
    assert icmp_echo(containers[0], ip_of(results[-1])) and icmp_echo(containers[-1], "10.99.0.1")
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda i: bcni.delete("bridge", dict(conf, prevResult=results[i]), containers[i],
                                            container_id=f"race{i}"), range(count)))
    assert veths(host_ns) == [] and leases(tmp_path) == []
    assert nft_elements(host_ns, "inet", "masq4") == [] and nft_elements(host_ns, "bridge", "allowed") == []


# -- VLANs: this kernel may lack bridge VLAN filtering ------------------------------------------------------
@pytest.fixture
def vlan_refused(make_netns) -> str:
    return kernel_refuses_vlan_filtering(make_netns)


@pytest.mark.parametrize("options", [{"vlan": 100}, {"vlanTrunk": [{"id": 5}, {"minID": 10, "maxID": 12}]}])
def test_vlan_refused_by_kernel_is_a_clear_error_leaving_nothing(bcni, host_ns, container_ns, conf_factory, brname,
                                                                 tmp_path, vlan_refused, options):
    if not vlan_refused:
        pytest.skip("this kernel supports bridge VLAN filtering")
    inv = bcni.invoke("bridge", "ADD", conf_factory(isGateway=True, **options), container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 2
    assert "VLAN filtering" in inv.reply["msg"] and next(iter(options)) in inv.reply["msg"]
    assert brname not in host_ns.link_names() and veths(host_ns) == [] and leases(tmp_path) == []
    assert "eth0" not in container_ns.link_names()


def _port_vlans(ns, port: str) -> dict[int, int]:
    msgs = ns.ipr.get_links(link_index(ns, port), family=7, ext_mask=2)
    spec = msgs[0].get_attr("IFLA_AF_SPEC")
    return {v["vid"]: v["flags"] for k, v in spec["attrs"] if k == "IFLA_BRIDGE_VLAN_INFO"}


def test_vlan_makes_the_port_an_untagged_pvid_access_port(bcni, host_ns, container_ns, conf_factory, vlan_refused):
    if vlan_refused:
        pytest.skip(vlan_refused)
    result = bcni.add("bridge", conf_factory(vlan=100, preserveDefaultVlan=False), container_ns)
    assert _port_vlans(host_ns, result["interfaces"][1]["name"]) == {100: 0x2 | 0x4}


def test_vlan_trunk_makes_the_port_carry_tagged_vlans(bcni, host_ns, container_ns, conf_factory, vlan_refused):
    if vlan_refused:
        pytest.skip(vlan_refused)
    conf = conf_factory(vlanTrunk=[{"id": 5}, {"minID": 10, "maxID": 12}])
    result = bcni.add("bridge", conf, container_ns)
    vlans = _port_vlans(host_ns, result["interfaces"][1]["name"])
    assert {5, 10, 11, 12} <= set(vlans) and 1 in vlans  # preserveDefaultVlan defaults to true


def test_del_succeeds_when_only_the_unmounted_netns_file_is_left(bcni, container_ns, conf_factory, tmp_path):
    conf = conf_factory(isGateway=True)
    result = bcni.add("bridge", conf, container_ns)
    leftover = tmp_path / "netns-file"
    leftover.write_text("")
    bcni.delete("bridge", dict(conf, prevResult=result), str(leftover))
    assert leases(tmp_path) == []


def test_del_refuses_the_plugins_own_netns(bcni, host_ns, conf_factory, brname):
    conf = conf_factory(ipam={})
    host_ns.ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth0p"})
    inv = bcni.invoke("bridge", "DEL", conf, container=host_ns.path)
    assert inv.rc != 0 and inv.reply["code"] == 4
    assert "eth0" in host_ns.link_names()
