"""firewall plugin: owner-tagged address elements in `inet pynet-firewall`, fixed rules, same-bridge isolation.

The chains run behind the reference bridge + host-local (pynet's bridge is written in parallel); the
firewall is always pynet's.
"""

import ipaddress
import os
import shutil

import pytest

from netns_fixtures import CNI, OUR_PLUGINS, REFERENCE_PLUGINS, PluginFailed, icmp_echo, reference_available
from netns_fixtures import tcp_connect, tcp_listener, veth_link

TABLE = "pynet-firewall"


def _chain_cni(host_ns, tmp_path, firewall_dir):
    if not reference_available():
        pytest.skip("reference bridge/host-local (containernetworking-plugins) not installed")
    d = tmp_path / "plugins"
    d.mkdir()
    for name in ("bridge", "host-local"):
        os.symlink(os.path.join(REFERENCE_PLUGINS, name), d / name)
    os.symlink(os.path.join(firewall_dir, "firewall"), d / "firewall")
    return CNI(host_ns, str(d))


@pytest.fixture
def chain_cni(host_ns, tmp_path):
    """CNI_PATH = one dir: bridge and host-local from the reference, firewall from pynet."""
    return _chain_cni(host_ns, tmp_path, OUR_PLUGINS)


@pytest.fixture(params=["pynet", "reference"])
def either_chain_cni(request, host_ns, tmp_path):
    """The same chain with pynet's or the reference firewall (iptables-nft), to compare behaviour."""
    if request.param == "reference" and not shutil.which("iptables", path="/usr/sbin:/sbin"):
        pytest.skip("the reference firewall needs iptables")
    return _chain_cni(host_ns, tmp_path, OUR_PLUGINS if request.param == "pynet" else REFERENCE_PLUGINS)


def conflist(tmp_path, name="fw-net", bridge="cni-fw0", subnet="10.77.0.0/24", **fw):
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": str(tmp_path / "ipam")}},
        dict({"type": "firewall"}, **fw)]}


def fw_conf(cl, prev=None):
    c = dict(cl["plugins"][-1], name=cl["name"], cniVersion=cl["cniVersion"])
    if prev is not None:
        c["prevResult"] = prev
    return c


def elements(host_ns, set_name="ctr4"):
    """{address: owner tag} of one of the firewall's sets ({} when the table is absent)."""
    for obj in host_ns.nft_json(f"list table inet {TABLE}") if has_table(host_ns) else []:
        if "set" in obj and obj["set"]["name"] == set_name:
            out = {}
            for e in obj["set"].get("elem", []):
                if isinstance(e, dict):
                    out[e["elem"]["val"]] = e["elem"].get("comment", "")
                else:
                    out[e] = ""
            return out
    return {}


def has_table(host_ns):
    return any("table" in o and o["table"]["name"] == TABLE for o in host_ns.nft_json("list tables"))


def forward_rules(host_ns):
    return [o["rule"] for o in host_ns.nft_json(f"list chain inet {TABLE} forward") if "rule" in o]


def ip_of(result):
    return result["ips"][0]["address"].split("/")[0]


def test_add_admits_container_address_with_owner_tag_and_passes_prev_result(chain_cni, host_ns, container_ns,
                                                                           tmp_path):
    cl = conflist(tmp_path)
    result = chain_cni.add_chain(cl, container_ns, container_id="c1")
    ip = ip_of(result)
    assert elements(host_ns) == {ip: "c1/eth0@fw-net"}
    assert [i["name"] for i in result["interfaces"]][0] == "cni-fw0"  # the bridge's result, unchanged
    chain_cni.check("firewall", fw_conf(cl, result), container_ns, container_id="c1")

    chain_cni.del_chain(cl, container_ns, result, container_id="c1")
    assert elements(host_ns) == {}
    with pytest.raises(PluginFailed) as err:
        chain_cni.check("firewall", fw_conf(cl, result), container_ns, container_id="c1")
    assert ip in err.value.msg


def test_rules_are_written_once_per_table_not_per_container(chain_cni, host_ns, make_netns, tmp_path):
    cl = conflist(tmp_path)
    results = [chain_cni.add_chain(cl, make_netns(), container_id=f"c{i}") for i in range(3)]
    assert len(elements(host_ns)) == 3
    assert len(forward_rules(host_ns)) == 6
    assert "jump admin" in host_ns.nft_ruleset()
    assert len({ip_of(r) for r in results}) == 3


def test_del_without_prev_result_after_netns_is_gone_removes_only_own_elements(chain_cni, host_ns, make_netns,
                                                                              tmp_path):
    cl = conflist(tmp_path)
    keep_ns, gone_ns = make_netns(), make_netns()
    kept = chain_cni.add_chain(cl, keep_ns, container_id="keep")
    chain_cni.add_chain(cl, gone_ns, container_id="gone")
    path = gone_ns.path
    gone_ns.remove()
    chain_cni.delete("firewall", fw_conf(cl), path, container_id="gone")
    assert elements(host_ns) == {ip_of(kept): "keep/eth0@fw-net"}
    chain_cni.delete("firewall", fw_conf(cl), path, container_id="gone")


def test_gc_removes_elements_of_invalid_attachments_of_its_own_network_only(chain_cni, host_ns, make_netns,
                                                                          tmp_path):
    a = conflist(tmp_path, name="net-a", bridge="cni-a", subnet="10.77.1.0/24")
    b = conflist(tmp_path, name="net-b", bridge="cni-b", subnet="10.77.2.0/24")
    a1 = chain_cni.add_chain(a, make_netns(), container_id="a1")
    chain_cni.add_chain(a, make_netns(), container_id="a2")
    b1 = chain_cni.add_chain(b, make_netns(), container_id="b1")
    gc_conf = dict(fw_conf(a), cniVersion="1.1.0")
    chain_cni.gc("firewall", gc_conf, [{"containerID": "a1", "ifname": "eth0"}])
    assert elements(host_ns) == {ip_of(a1): "a1/eth0@net-a", ip_of(b1): "b1/eth0@net-b"}


def test_add_without_prev_result_fails_with_invalid_config(cni, container_ns):
    inv = cni.invoke("firewall", "ADD", {"cniVersion": "1.0.0", "name": "n", "type": "firewall"},
                     container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7 and "prevResult" in inv.reply["msg"]


@pytest.mark.parametrize("key,value", [("ingressPolicy", "isolated"), ("backend", "bogus")])
def test_unknown_policy_or_backend_is_rejected_naming_the_value(cni, container_ns, key, value):
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "firewall", key: value,
            "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]}}
    inv = cni.invoke("firewall", "ADD", conf, container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7
    assert key in inv.reply["msg"] and value in inv.reply["msg"]


@pytest.mark.parametrize("backend", ["", "iptables", "firewalld"])
def test_reference_backend_names_are_accepted_and_mean_nftables(cni, host_ns, container_ns, backend):
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "br0"}], "ips": [{"address": "10.1.0.2/24"},
                                                                         {"address": "fd00:1::2/64"}]}
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "firewall", "backend": backend, "prevResult": prev}
    result = cni.add("firewall", conf, container_ns)
    assert result["ips"] == prev["ips"]
    assert elements(host_ns, "ctr4") == {"10.1.0.2": "ctr1/eth0@n"}
    assert elements(host_ns, "ctr6") == {"fd00:1::2": "ctr1/eth0@n"}


def test_same_bridge_needs_bridge_name_in_prev_result(cni, container_ns):
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "firewall", "ingressPolicy": "same-bridge",
            "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]}}
    inv = cni.invoke("firewall", "ADD", conf, container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7 and "same-bridge" in inv.reply["msg"]


@pytest.fixture
def outside(host_ns, make_netns):
    """A netns routed behind host_ns (192.168.77.0/24), with a route back to the container subnets."""
    out = make_netns("pynt-o")
    veth_link(host_ns, "up0", out, "eth0", ["192.168.77.1/24"], ["192.168.77.2/24"])
    out.ipr.route("add", dst="10.77.0.0", dst_len=16, gateway="192.168.77.1")
    return out


def test_same_bridge_policy_isolates_bridges_from_each_other_but_not_from_outside(chain_cni, host_ns, make_netns,
                                                                                 outside, tmp_path):
    a = conflist(tmp_path, name="iso-a", bridge="cni-a", subnet="10.77.1.0/24", ingressPolicy="same-bridge")
    b = conflist(tmp_path, name="iso-b", bridge="cni-b", subnet="10.77.2.0/24", ingressPolicy="same-bridge")
    a1_ns, a2_ns, b1_ns = make_netns(), make_netns(), make_netns()
    a1 = chain_cni.add_chain(a, a1_ns, container_id="a1")
    a2 = chain_cni.add_chain(a, a2_ns, container_id="a2")
    b1 = chain_cni.add_chain(b, b1_ns, container_id="b1")
    assert icmp_echo(a1_ns, ip_of(a2))  # same bridge
    assert not icmp_echo(a1_ns, ip_of(b1), timeout=0.6)  # another isolated bridge
    assert not icmp_echo(b1_ns, ip_of(a1), timeout=0.6)
    assert icmp_echo(outside, ip_of(a1)) and icmp_echo(b1_ns, "192.168.77.2")  # uplink traffic is not isolated
    assert elements(host_ns, "isolated") == {"cni-a": "", "cni-b": ""}
    chain_cni.check("firewall", fw_conf(a, a1), a1_ns, container_id="a1")

    # An open network's bridge is not isolated, as in the reference (only isolated <-> isolated is dropped).
    o = conflist(tmp_path, name="open", bridge="cni-o", subnet="10.77.3.0/24")
    o1_ns = make_netns()
    o1 = chain_cni.add_chain(o, o1_ns, container_id="o1")
    assert icmp_echo(o1_ns, ip_of(a1))

    # DEL keeps the bridge isolated (others may use it); GC drops isolation of bridges that are gone.
    chain_cni.del_chain(b, b1_ns, b1, container_id="b1")
    assert "cni-b" in elements(host_ns, "isolated")
    host_ns.ipr.link("del", index=host_ns.ipr.link_lookup(ifname="cni-b")[0])
    chain_cni.gc("firewall", dict(fw_conf(b), cniVersion="1.1.0"), [])
    assert elements(host_ns, "isolated") == {"cni-a": ""}
    assert set(elements(host_ns)) == {ip_of(a1), ip_of(a2), ip_of(o1)}


def test_same_bridge_connectivity_matches_the_reference(either_chain_cni, make_netns, outside, tmp_path):
    cni = either_chain_cni
    a = conflist(tmp_path, name="iso-a", bridge="cni-a", subnet="10.77.1.0/24", ingressPolicy="same-bridge")
    b = conflist(tmp_path, name="iso-b", bridge="cni-b", subnet="10.77.2.0/24", ingressPolicy="same-bridge")
    o = conflist(tmp_path, name="open", bridge="cni-o", subnet="10.77.3.0/24")
    a1_ns, a2_ns, b1_ns, o1_ns = make_netns(), make_netns(), make_netns(), make_netns()
    a1 = cni.add_chain(a, a1_ns, container_id="a1")
    a2 = cni.add_chain(a, a2_ns, container_id="a2")
    b1 = cni.add_chain(b, b1_ns, container_id="b1")
    o1 = cni.add_chain(o, o1_ns, container_id="o1")
    reach = {
        "a1->a2": icmp_echo(a1_ns, ip_of(a2), timeout=0.6),
        "a1->b1": icmp_echo(a1_ns, ip_of(b1), timeout=0.6),
        "b1->a1": icmp_echo(b1_ns, ip_of(a1), timeout=0.6),
        "o1->a1": icmp_echo(o1_ns, ip_of(a1), timeout=0.6),
        "a1->o1": icmp_echo(a1_ns, ip_of(o1), timeout=0.6),
        "outside->a1": icmp_echo(outside, ip_of(a1), timeout=0.6),
    }
    assert reach == {"a1->a2": True, "a1->b1": False, "b1->a1": False, "o1->a1": True, "a1->o1": True,
                     "outside->a1": True}


def _add_foreign_drop_forward_chain(host_ns):
    """What a host firewall (or Docker's iptables-nft FORWARD policy) looks like: another table, policy drop."""
    import nftables

    with host_ns.entered():
        ctx = nftables.Nftables()
        rc, _, err = ctx.json_cmd({"nftables": [
            {"add": {"table": {"family": "inet", "name": "hostfw"}}},
            {"add": {"chain": {"family": "inet", "table": "hostfw", "name": "fwd", "type": "filter",
                               "hook": "forward", "prio": 0, "policy": "drop"}}}]})
    assert rc == 0, err


def _host_accepts(host_ns, subnet):
    import nftables

    with host_ns.entered():
        ctx = nftables.Nftables()
        net = ipaddress.ip_network(subnet)
        prefix = {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
        rc, _, err = ctx.json_cmd({"nftables": [
            {"add": {"rule": {"family": "inet", "table": "hostfw", "chain": "fwd", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": field}}, "right": prefix}},
                {"accept": None}]}}} for field in ("saddr", "daddr")]})
    assert rc == 0, err


def test_foreign_drop_policy_forward_chain_wins_over_our_accepts(chain_cni, host_ns, make_netns, outside, tmp_path):
    """nftables semantics: every base chain on the forward hook sees the packet and a drop in any is final,
    so the firewall plugin cannot open another table's drop policy (the reference can only because it
    writes into iptables' own FORWARD chain). With bridge-nf-call-iptables on (this kernel's default in a
    new netns) even bridged traffic between two containers passes the forward hook. Everything flows once
    the host's own table accepts the container subnet."""
    host_ns.set_sysctl("net/bridge/bridge-nf-call-iptables", "1")
    _add_foreign_drop_forward_chain(host_ns)
    cl = conflist(tmp_path)
    c1_ns, c2_ns = make_netns(), make_netns()
    c1 = chain_cni.add_chain(cl, c1_ns, container_id="c1")
    c2 = chain_cni.add_chain(cl, c2_ns, container_id="c2")
    assert set(elements(host_ns)) == {ip_of(c1), ip_of(c2)}
    with tcp_listener(c2_ns) as port:
        assert not tcp_connect(c1_ns, ip_of(c2), port, timeout=0.6)
        assert not icmp_echo(c1_ns, "192.168.77.2", timeout=0.6)
        assert not icmp_echo(outside, ip_of(c1), timeout=0.6)

        _host_accepts(host_ns, "10.77.0.0/24")
        assert tcp_connect(c1_ns, ip_of(c2), port)
        assert icmp_echo(c1_ns, "192.168.77.2")
        assert icmp_echo(outside, ip_of(c1))


def test_admin_chain_is_the_administrators_and_survives_adds(chain_cni, host_ns, make_netns, outside, tmp_path):
    cl = conflist(tmp_path)
    c1_ns = make_netns()
    c1 = chain_cni.add_chain(cl, c1_ns, container_id="c1")
    assert icmp_echo(outside, ip_of(c1))
    import nftables

    with host_ns.entered():
        rc, _, err = nftables.Nftables().cmd(f"add rule inet {TABLE} admin ip saddr 192.168.77.2 drop")
    assert rc == 0, err
    chain_cni.add_chain(cl, make_netns(), container_id="c2")
    assert "192.168.77.2 drop" in host_ns.nft_ruleset()
    assert not icmp_echo(outside, ip_of(c1), timeout=0.6)


def _synthetic(ip, network="n"):
    return {"cniVersion": "1.0.0", "name": network, "type": "firewall",
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "br0"}], "ips": [{"address": ip}]}}


def test_address_taken_over_by_a_new_owner_is_retagged_and_old_owners_del_leaves_it(cni, host_ns, container_ns):
    conf = _synthetic("10.1.0.9/24")
    cni.add("firewall", conf, container_ns, container_id="old")
    cni.add("firewall", conf, container_ns, container_id="new")  # e.g. a lease reused after a lost DEL
    assert elements(host_ns) == {"10.1.0.9": "new/eth0@n"}
    cni.delete("firewall", conf, container_ns, container_id="old")
    assert elements(host_ns) == {"10.1.0.9": "new/eth0@n"}
    cni.check("firewall", conf, container_ns, container_id="new")


def test_concurrent_adds_leave_one_copy_of_the_rules(cni, host_ns, container_ns):
    from concurrent.futures import ThreadPoolExecutor

    def add(i):
        return cni.invoke("firewall", "ADD", _synthetic(f"10.1.0.{10 + i}/24"), container=container_ns,
                          container_id=f"c{i}")

    with ThreadPoolExecutor(6) as pool:
        invocations = list(pool.map(add, range(6)))
    assert [inv.rc for inv in invocations] == [0] * 6, [inv.reply for inv in invocations]
    assert len(elements(host_ns)) == 6
    assert len(forward_rules(host_ns)) == 6


def test_check_notices_rules_changed_behind_its_back_and_status_is_ok(cni, host_ns, container_ns):
    conf = _synthetic("10.1.0.7/24")
    cni.add("firewall", conf, container_ns)
    cni.status("firewall", dict(conf, cniVersion="1.1.0"))
    host_ns.nft_json(f"flush chain inet {TABLE} forward")
    with pytest.raises(PluginFailed) as err:
        cni.check("firewall", conf, container_ns)
    assert "forward" in err.value.msg
    cni.add("firewall", _synthetic("10.1.0.8/24"), container_ns, container_id="c2")  # the next ADD repairs them
    cni.check("firewall", conf, container_ns)


def _iptables_nft_forward_drop(host_ns):
    """What iptables-nft leaves after `iptables -P FORWARD DROP` (Docker does that): table ip filter, chain
    FORWARD with policy drop; written through libnftables in the sandbox host."""
    import nftables

    with host_ns.entered():
        rc, _, err = nftables.Nftables().cmd(
            "add table ip filter\n"
            "add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }\n")
    assert rc == 0, err


def _forward_rule_tags(host_ns) -> list[str]:
    return [o["rule"].get("comment", "") for o in host_ns.nft_json("list chain ip filter FORWARD") if "rule" in o]


def test_iptables_nft_forward_drop_policy_is_opened_for_the_container_and_del_closes_it(cni, host_ns, make_netns,
                                                                                        outside, tmp_path):
    _iptables_nft_forward_drop(host_ns)
    cl = conflist(tmp_path)
    cl["plugins"][0]["ipMasq"] = True  # pynet's bridge, masquerading, then the firewall: all of pynet
    c1_ns = make_netns()
    c1 = cni.add_chain(cl, c1_ns, container_id="c1")
    assert _forward_rule_tags(host_ns) == ["c1/eth0@fw-net"] * 2
    assert icmp_echo(c1_ns, "192.168.77.2")
    if shutil.which("iptables-nft", path="/usr/sbin:/sbin"):  # iptables (and Docker) can still read the chain
        shown = host_ns.run(["iptables-nft", "-S", "FORWARD"])
        assert shown.returncode == 0, shown.stderr
        assert f'-s {ip_of(c1)}/32 -m comment --comment "c1/eth0@fw-net" -j ACCEPT' in shown.stdout.decode()
    cni.check("firewall", fw_conf(cl, c1), c1_ns, container_id="c1")

    cni.delete("firewall", fw_conf(cl, c1), c1_ns, container_id="c1")
    assert _forward_rule_tags(host_ns) == []
    assert not icmp_echo(c1_ns, "192.168.77.2", timeout=0.6)  # it was those rules that let it out
    cni.del_chain(cl, c1_ns, c1, container_id="c1")
    assert "policy drop" in host_ns.nft_ruleset()  # the table and its policy are the host's: left as they were


def test_iptables_nft_forward_rules_follow_del_and_gc_and_check_notices_them_gone(cni, host_ns, container_ns):
    _iptables_nft_forward_drop(host_ns)
    for cid, ip in (("a1", "10.1.0.11/24"), ("a2", "10.1.0.12/24")):
        cni.add("firewall", _synthetic(ip), container_ns, container_id=cid)
    cni.add("firewall", _synthetic("10.2.0.13/24", network="other"), container_ns, container_id="b1")
    assert sorted(_forward_rule_tags(host_ns)) == sorted(["a1/eth0@n", "a2/eth0@n", "b1/eth0@other"] * 2)
    cni.gc("firewall", dict(_synthetic("10.1.0.11/24"), cniVersion="1.1.0"), [{"containerID": "a1", "ifname": "eth0"}])
    assert sorted(_forward_rule_tags(host_ns)) == sorted(["a1/eth0@n", "b1/eth0@other"] * 2)
    cni.delete("firewall", _synthetic("10.2.0.13/24", network="other"), container_ns, container_id="b1")
    assert _forward_rule_tags(host_ns) == ["a1/eth0@n"] * 2
    host_ns.nft_json("flush chain ip filter FORWARD")
    with pytest.raises(PluginFailed) as err:
        cni.check("firewall", _synthetic("10.1.0.11/24"), container_ns, container_id="a1")
    assert "FORWARD" in err.value.msg
