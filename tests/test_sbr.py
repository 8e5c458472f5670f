"""sbr plugin: source-based routing in the container netns after our bridge; rules, tables and route lookups
read over netlink inside the container, and real traffic through the sandbox host."""

from __future__ import annotations

import os

import pytest

from netns_fixtures import REFERENCE_PLUGINS, reference_available, tcp_connect, tcp_listener

from .test_bandwidth import mixed_plugin_dir

AF_INET = 2
MAIN = 254
RT_SCOPE_LINK = 253


@pytest.fixture
def net(tmp_path):
    """A conflist factory: our bridge (its own bridge name per network) then sbr."""
    def make(name: str = "sbrnet", subnet: str = "10.81.0.0/24", version: str = "1.0.0", bridge_opts=None,
             **sbr) -> dict:
        bridge = {"type": "bridge", "bridge": "ps" + os.urandom(5).hex(), "isGateway": True,
                  "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                           "ranges": [[{"subnet": s}] for s in subnet.split(",")]}}
        bridge.update(bridge_opts if bridge_opts is not None else {"isDefaultGateway": True})
        return {"cniVersion": version, "name": name, "plugins": [bridge, dict({"type": "sbr"}, **sbr)]}
    return make


def plugin_conf(conflist: dict, i: int, prev: dict | None = None) -> dict:
    conf = dict(conflist["plugins"][i], name=conflist["name"], cniVersion=conflist["cniVersion"])
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def ip_of(result: dict) -> str:
    return result["ips"][0]["address"].split("/")[0]


# -- readers of the container netns --------------------------------------------------------------------------
def rules(ns) -> list[tuple[int, str, int]]:
    """(priority, source, table) of the IPv4 rules that have a source."""
    out = []
    for r in ns.ipr.get_rules(family=AF_INET):
        if r.get_attr("FRA_SRC"):
            out.append((r.get_attr("FRA_PRIORITY"), f"{r.get_attr('FRA_SRC')}/{r['src_len']}",
                        r.get_attr("FRA_TABLE") or r["table"]))
    return sorted(out)


def table(ns, table_id: int) -> list[tuple]:
    """IPv4 routes of a table as (dst, gateway, dev, prefsrc, scope)."""
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ns.ipr.get_links()}
    out = []
    for m in ns.ipr.get_routes(family=AF_INET, table=table_id):
        if (m.get_attr("RTA_TABLE") or m["table"]) != table_id:
            continue
        dst = m.get_attr("RTA_DST")
        out.append((f"{dst}/{m['dst_len']}" if dst else "default", m.get_attr("RTA_GATEWAY"),
                    names.get(m.get_attr("RTA_OIF")), m.get_attr("RTA_PREFSRC"), m["scope"]))
    return sorted(out, key=str)


def route_get(ns, dst: str, src: str | None = None) -> tuple[str, str | None]:
    """(output device, gateway) of the kernel's route lookup inside ``ns``."""
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ns.ipr.get_links()}
    kwargs = {"dst": dst}
    if src:
        kwargs["src"] = src
    [m] = ns.ipr.route("get", **kwargs)
    return names[m.get_attr("RTA_OIF")], m.get_attr("RTA_GATEWAY")


# -- tests ---------------------------------------------------------------------------------------------------
def test_add_moves_interface_routes_to_a_table_looked_up_by_source(cni, container_ns, net):
    conf = net()
    result = cni.add_chain(conf, container_ns)
    ip = ip_of(result)
    assert rules(container_ns) == [(32765, f"{ip}/32", 100)]
    assert table(container_ns, 100) == [("10.81.0.0/24", None, "eth0", ip, RT_SCOPE_LINK),
                                        ("default", "10.81.0.1", "eth0", None, 0)]
    assert table(container_ns, MAIN) == []   # moved, as the reference does
    assert route_get(container_ns, "192.0.2.9", src=ip) == ("eth0", "10.81.0.1")
    cni.check("sbr", plugin_conf(conf, 1, result), container_ns)

    cni.delete("sbr", plugin_conf(conf, 1, result), container_ns)
    assert rules(container_ns) == []
    assert table(container_ns, 100) == []
    cni.delete("sbr", plugin_conf(conf, 1, result), container_ns)   # twice: nothing left, still success
    cni.del_chain(conf, container_ns, result)


def test_packet_from_second_interface_address_leaves_through_it(cni, host_ns, container_ns, net):
    """Two bridge networks in one container (eth0 with the default route, net1) and sbr on net1. The host
    drops packets arriving on the wrong bridge for their source (strict rp_filter), so traffic sourced from
    net1's address gets through only when it leaves via net1."""
    first = net(name="sbr-a", subnet="10.71.0.0/24")
    second = net(name="sbr-b", subnet="10.72.0.0/24", bridge_opts={})
    cni.add("bridge", plugin_conf(first, 0), container_ns)
    prev = cni.add("bridge", plugin_conf(second, 0), container_ns, ifname="net1")
    net1_ip = ip_of(prev)
    host_ns.ipr.addr("add", index=1, address="192.0.2.7", prefixlen=32)
    host_ns.set_sysctl("net/ipv4/conf/all/rp_filter", 1)

    with tcp_listener(host_ns, "192.0.2.7") as port:
        assert route_get(container_ns, "192.0.2.7", src=net1_ip) == ("eth0", "10.71.0.1")
        assert not tcp_connect(container_ns, "192.0.2.7", port, source=net1_ip, timeout=1.0)

        result = cni.add("sbr", plugin_conf(second, 1, prev), container_ns, ifname="net1")
        assert result == prev
        assert rules(container_ns) == [(32765, f"{net1_ip}/32", 100)]
        assert route_get(container_ns, "192.0.2.7", src=net1_ip) == ("net1", "10.72.0.1")
        assert route_get(container_ns, "192.0.2.7") == ("eth0", "10.71.0.1")   # unsourced: the main table
        assert tcp_connect(container_ns, "192.0.2.7", port, source=net1_ip)
        assert tcp_connect(container_ns, "192.0.2.7", port)

        cni.delete("sbr", plugin_conf(second, 1, prev), container_ns, ifname="net1")
        assert rules(container_ns) == [] and table(container_ns, 100) == []
        assert route_get(container_ns, "192.0.2.7", src=net1_ip)[0] == "eth0"


def test_each_interface_gets_its_own_table(cni, container_ns, net):
    first = net(name="sbr-a", subnet="10.73.0.0/24")
    second = net(name="sbr-b", subnet="10.74.0.0/24", bridge_opts={})
    ra = cni.add_chain(first, container_ns)
    rb = cni.add_chain(second, container_ns, ifname="net1")
    assert rules(container_ns) == [(32764, f"{ip_of(rb)}/32", 101), (32765, f"{ip_of(ra)}/32", 100)]
    assert ("default", "10.74.0.1", "net1", None, 0) in table(container_ns, 101)
    cni.delete("sbr", plugin_conf(second, 1, rb), container_ns, ifname="net1")
    assert rules(container_ns) == [(32765, f"{ip_of(ra)}/32", 100)]
    assert table(container_ns, 100) != [] and table(container_ns, 101) == []


def test_add_source_hints_keep_subnet_route_in_main_with_source(cni, container_ns, net):
    conf = net(addSourceHints=True)
    result = cni.add_chain(conf, container_ns)
    ip = ip_of(result)
    assert table(container_ns, MAIN) == [("10.81.0.0/24", None, "eth0", ip, RT_SCOPE_LINK)]
    assert ("default", "10.81.0.1", "eth0", None, 0) in table(container_ns, 100)
    cni.check("sbr", plugin_conf(conf, 1, result), container_ns)


def test_gateways_replace_the_ipam_gateway(cni, container_ns, net):
    conf = net(gateways=["10.81.0.254", "fd00::1"])
    result = cni.add_chain(conf, container_ns)
    assert ("default", "10.81.0.254", "eth0", None, 0) in table(container_ns, 100)
    assert not any(r[0] == "default" and r[1] == "10.81.0.1" for r in table(container_ns, 100))
    cni.check("sbr", plugin_conf(conf, 1, result), container_ns)


def test_configured_table_gets_only_the_rules(cni, container_ns, net):
    conf = net(table=500)
    result = cni.add_chain(conf, container_ns)
    ip = ip_of(result)
    assert rules(container_ns) == [(32765, f"{ip}/32", 500)]
    assert ("default", "10.81.0.1", "eth0", None, 0) in table(container_ns, MAIN)   # nothing moved
    container_ns.ipr.route("add", dst="198.51.100.0", dst_len=24, gateway="10.81.0.1", table=500)
    cni.check("sbr", plugin_conf(conf, 1, result), container_ns)
    cni.delete("sbr", plugin_conf(conf, 1, result), container_ns)
    assert rules(container_ns) == []
    assert table(container_ns, 500) != []   # the configured table is not sbr's to empty


def test_first_table_skips_ids_already_in_use(cni, container_ns, net):
    container_ns.ipr.rule("add", table=100, fwmark=7, priority=1000)
    conf = net()
    result = cni.add_chain(conf, container_ns)
    # the kernel numbers the rule below the first one after "lookup local", as for the reference
    assert rules(container_ns) == [(999, f"{ip_of(result)}/32", 101)]


def test_del_after_netns_deleted_succeeds(cni, make_netns, net):
    ctr = make_netns()
    conf = net()
    result = cni.add_chain(conf, ctr)
    path = ctr.path
    ctr.remove()
    cni.del_chain(conf, path, result)
    cni.del_chain(conf, path, result)


def test_check_notices_a_missing_rule(cni, container_ns, net):
    conf = net()
    result = cni.add_chain(conf, container_ns)
    container_ns.ipr.rule("del", src=ip_of(result), src_len=32, table=100, priority=32765)
    inv = cni.invoke("sbr", "CHECK", plugin_conf(conf, 1, result), container=container_ns)
    assert inv.rc != 0 and ip_of(result) in inv.reply["msg"]


PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.81.0.2/24", "gateway": "10.81.0.1", "interface": 0}]}


@pytest.mark.parametrize("keys,named", [
    ({"table": "x"}, "table"),
    ({"table": 254}, "table"),
    ({"table": -1}, "table"),
    ({"gateways": ["nope"]}, "gateways[] 'nope'"),
    ({"gateways": "10.0.0.1"}, "gateways"),
    ({"gateways": ["10.0.0.1", "10.0.0.2"]}, "gateways"),
    ({"addSourceHints": "yes"}, "addSourceHints"),
])
def test_bad_keys_are_code_7_naming_them(cni, container_ns, keys, named):
    container_ns.ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "peer0"})
    conf = dict({"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr", "prevResult": PREV}, **keys)
    inv = cni.invoke("sbr", "ADD", conf, container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7, inv.reply
    assert named in inv.reply["msg"]
    assert rules(container_ns) == []


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_result_is_the_prev_result_in_every_version(cni, container_ns, net, version):
    conf = net(version=version)
    prev = cni.add("bridge", plugin_conf(conf, 0), container_ns)
    result = cni.add("sbr", plugin_conf(conf, 1, prev), container_ns)
    assert result == prev
    assert result["cniVersion"] == version
    assert len(rules(container_ns)) == 1


def test_same_rules_and_tables_as_the_reference(cni, make_cni, tmp_path, make_netns, net):
    if not reference_available():
        pytest.skip("reference plugins not installed in /usr/lib/cni")
    conf = net()
    ours, ref = make_netns(), make_netns()
    r_ours = cni.add_chain(conf, ours, container_id="ctr-ours")
    ref_cni = make_cni(mixed_plugin_dir(tmp_path, "sbr", REFERENCE_PLUGINS))
    r_ref = ref_cni.add_chain(conf, ref, container_id="ctr-ref")

    def state(ns, result):
        ip = ip_of(result)
        swap = lambda v: "IP" if v == ip else v  # noqa: E731
        return ([tuple(swap(x.split("/")[0]) if isinstance(x, str) and "/" in x else x for x in r) for r in rules(ns)],
                [tuple(swap(x) for x in r) for r in table(ns, 100)], table(ns, MAIN))

    assert state(ours, r_ours) == state(ref, r_ref)
    # our DEL cleans up after the reference's ADD
    cni.delete("sbr", plugin_conf(conf, 1, r_ref), ref, container_id="ctr-ref")
    assert rules(ref) == [] and table(ref, 100) == []


def test_daemon_add_and_del(daemon_cni, container_ns, net):
    conf = net()
    result = daemon_cni.add_chain(conf, container_ns)
    assert rules(container_ns) == [(32765, f"{ip_of(result)}/32", 100)]
    daemon_cni.check("sbr", plugin_conf(conf, 1, result), container_ns)
    daemon_cni.del_chain(conf, container_ns, result)
    assert rules(container_ns) == [] and table(container_ns, 100) == []


def test_dual_stack_gets_a_table_per_address(cni, container_ns, net):
    conf = net(subnet="10.81.0.0/24,fd81::/64")
    result = cni.add_chain(conf, container_ns)
    v4, v6 = (ip["address"].split("/")[0] for ip in result["ips"])
    assert rules(container_ns) == [(32765, f"{v4}/32", 100)]
    v6_rules = [(r.get_attr("FRA_SRC"), r["src_len"], r.get_attr("FRA_TABLE"))
                for r in container_ns.ipr.get_rules(family=10) if r.get_attr("FRA_SRC")]
    assert v6_rules == [(v6, 128, 101)]
    assert route_get(container_ns, "fd99::9", src=v6) == ("eth0", "fd81::1")
    cni.check("sbr", plugin_conf(conf, 1, result), container_ns)
    cni.delete("sbr", plugin_conf(conf, 1, result), container_ns)
    assert not [r for r in container_ns.ipr.get_rules(family=10) if r.get_attr("FRA_SRC")]
    assert rules(container_ns) == []


def test_failed_add_leaves_routes_and_rules_as_they_were(cni, container_ns, net):
    conf = net(gateways=["192.0.2.1"])   # not on the interface's subnet: the kernel refuses the default route
    prev = cni.add("bridge", plugin_conf(conf, 0), container_ns)
    before = table(container_ns, MAIN)
    inv = cni.invoke("sbr", "ADD", plugin_conf(conf, 1, prev), container=container_ns)
    assert inv.rc != 0 and "192.0.2.1" in inv.reply["msg"], inv.reply
    assert rules(container_ns) == []
    assert table(container_ns, 100) == []
    assert table(container_ns, MAIN) == before


def test_no_address_for_the_interface_is_code_7(cni, container_ns, net):
    conf = net()
    prev = cni.add("bridge", plugin_conf(conf, 0), container_ns)
    inv = cni.invoke("sbr", "ADD", plugin_conf(conf, 1, prev), container=container_ns, ifname="net9")
    assert inv.rc != 0 and inv.reply["code"] == 7 and "net9" in inv.reply["msg"]
    assert rules(container_ns) == [] and table(container_ns, MAIN) != []
