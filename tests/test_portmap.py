"""portmap (nftables) chained after a bridge: real traffic from outside, from the host, from localhost and
hairpin; owner-tagged elements; conflicts, ranges, CHECK, GC, DEL. Plugins run inside the sandbox host_ns."""

from __future__ import annotations

import itertools
import os
import socket
import threading

import pytest

from netns_fixtures import (OUR_PLUGINS, REFERENCE_PLUGINS, PluginFailed, reference_available, tcp_connect,
                            tcp_listener, udp_echo_server, udp_exchange, veth_link)

pytestmark = pytest.mark.skipif(not reference_available(), reason="reference plugins not in /usr/lib/cni")

TABLE = "pynet-portmap"
HOST4, OUT4 = "192.168.77.1", "192.168.77.2"
HOST6, OUT6 = "fd00:77::1", "fd00:77::2"
GW4 = "10.88.0.1"
_names = itertools.count()


def _plugin_dir(tmp_path, bridge: str, portmap: str) -> str:
    """A CNI_PATH directory: bridge and portmap from the given dirs, host-local from the reference."""
    d = tmp_path / f"cni-bin-{next(_names)}"
    d.mkdir()
    os.symlink(os.path.join(bridge, "bridge"), d / "bridge")
    os.symlink(os.path.join(REFERENCE_PLUGINS, "host-local"), d / "host-local")
    os.symlink(os.path.join(portmap, "portmap"), d / "portmap")
    return str(d)


@pytest.fixture
def chain_cni(make_cni, tmp_path):
    """Reference bridge + host-local, our portmap."""
    return make_cni(_plugin_dir(tmp_path, REFERENCE_PLUGINS, OUR_PLUGINS))


def conflist(tmp_path, ipv6: bool = False, **portmap_options) -> dict:
    ranges = [[{"subnet": "10.88.0.0/24", "gateway": GW4}]]
    routes = [{"dst": "0.0.0.0/0"}]
    if ipv6:
        ranges.append([{"subnet": "fd00:88::/64", "gateway": "fd00:88::1"}])
        routes.append({"dst": "::/0"})
    return {
        "cniVersion": "1.0.0",
        "name": "pmnet",
        "plugins": [
            {"type": "bridge", "bridge": f"pm{os.getpid() % 100000}x{next(_names)}", "isGateway": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": ranges, "routes": routes,
                      "dataDir": str(tmp_path / "ipam")}},
            dict({"type": "portmap", "capabilities": {"portMappings": True}}, **portmap_options),
        ],
    }


def mapping(host_port, container_port, protocol="tcp", host_ip="", **extra) -> dict:
    return dict({"hostPort": host_port, "containerPort": container_port, "protocol": protocol,
                 "hostIP": host_ip}, **extra)


def caps(*mappings) -> dict:
    return {"portMappings": list(mappings)}


@pytest.fixture
def outside(host_ns, make_netns):
    """A second netns cabled to host_ns by a veth: the "outside world" (192.168.77.2, fd00:77::2)."""
    out = make_netns("pynt-o")
    # Addresses the bridge gets later skip DAD: a tentative gateway address would drop the first IPv6 packets.
    host_ns.set_sysctl("net/ipv6/conf/default/accept_dad", 0)
    veth_link(host_ns, f"pmo{next(_names)}", out, "eth0", [f"{HOST4}/24", f"{HOST6}/64"],
              [f"{OUT4}/24", f"{OUT6}/64"])
    out.ipr.route("add", dst="0.0.0.0/0", gateway=HOST4)
    out.ipr.route("add", dst="::/0", gateway=HOST6, family=socket.AF_INET6)
    return out


class peer_recorder:
    """A TCP listener in ``ns`` that records the source address of each connection it accepts."""

    def __init__(self, ns, port: int):
        with ns.entered():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(8)
        self.sock.settimeout(5)
        self.seen: list[str] = []

    def wait(self):
        conn, peer = self.sock.accept()
        conn.close()
        self.seen.append(peer[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()


def nft_elements(host_ns) -> dict[str, list]:
    """set/map name -> listed elements of our table."""
    out = {}
    for obj in host_ns.nft_json(f"list table inet {TABLE}"):
        for kind in ("set", "map"):
            if kind in obj:
                out[obj[kind]["name"]] = obj[kind].get("elem", [])
    return out


def owners(host_ns) -> dict[str, set]:
    """set/map name -> owner tags present."""
    result = {}
    for name, elems in nft_elements(host_ns).items():
        tags = set()
        for e in elems:
            e = e[0] if isinstance(e, list) else e
            tags.add(e["elem"].get("comment"))
        result[name] = tags
    return result


def all_owner_tags(host_ns) -> set:
    return set().union(set(), *owners(host_ns).values())


def container_ip(result, version=4) -> str:
    return next(ip["address"].split("/")[0] for ip in result["ips"] if (":" in ip["address"]) == (version == 6))


def test_tcp_reaches_container_from_outside_host_and_localhost(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path)
    result = chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80)), container_id="ctrA")
    with tcp_listener(ctr, "0.0.0.0", 80):
        assert tcp_connect(outside, HOST4, 8080)
        assert tcp_connect(host_ns, HOST4, 8080)
        assert tcp_connect(host_ns, GW4, 8080)
        assert tcp_connect(host_ns, "127.0.0.1", 8080)
        assert not tcp_connect(outside, HOST4, 8081, timeout=0.5)
    wildcard = next(elems for name, elems in nft_elements(host_ns).items() if name.endswith("_w4"))
    assert wildcard == [[{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": "ctrA/eth0"}},
                         {"concat": [container_ip(result), 80]}]]
    assert owners(host_ns)["claims4"] == {"ctrA/eth0"}
    bridge = conf["plugins"][0]["bridge"]
    assert host_ns.sysctl(f"net/ipv4/conf/{bridge}/route_localnet") == "1"
    chain_cni.del_chain(conf, ctr, result, caps(mapping(8080, 80)), container_id="ctrA")
    assert all_owner_tags(host_ns) == set()


def test_hairpin_container_reaches_its_own_host_port(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path)
    chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80)), container_id="ctrA")
    with tcp_listener(ctr, "0.0.0.0", 80):
        assert tcp_connect(ctr, HOST4, 8080)
        assert tcp_connect(ctr, GW4, 8080)


def test_without_snat_hairpin_and_localhost_are_not_masqueraded(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path, snat=False)
    chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80)), container_id="ctrA")
    with tcp_listener(ctr, "0.0.0.0", 80):
        assert tcp_connect(outside, HOST4, 8080)
        assert not tcp_connect(ctr, HOST4, 8080, timeout=0.5)
        assert not tcp_connect(host_ns, "127.0.0.1", 8080, timeout=0.5)
    assert "masquerade" not in host_ns.nft_ruleset()


def test_masq_all_masquerades_outside_traffic_too(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path, masqAll=True, markMasqBit=5)
    chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80)), container_id="ctrA")
    with peer_recorder(ctr, 80) as peers:
        assert tcp_connect(outside, HOST4, 8080, expect=None)
        peers.wait()
    assert peers.seen == [GW4]  # the bridge address: masqueraded
    ruleset = host_ns.nft_ruleset()
    assert "meta mark & 0x00000020 == 0x00000020 masquerade" in ruleset
    assert "10.88.0.0/24" not in ruleset  # no per-subnet hairpin elements with masqAll


def test_udp_mapping_echoes_from_outside_and_from_host(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path)
    chain_cni.add_chain(conf, ctr, caps(mapping(5353, 53, "udp")), container_id="ctrA")
    with udp_echo_server(ctr, "0.0.0.0", 53):
        assert udp_exchange(outside, HOST4, 5353)
        assert udp_exchange(host_ns, HOST4, 5353)
        assert udp_exchange(ctr, HOST4, 5353)
    assert owners(host_ns)["claims4"] == {"ctrA/eth0"}


def test_ipv6_mapping_reaches_container(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path, ipv6=True)
    result = chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80)), container_id="ctrA")
    assert container_ip(result, 6).startswith("fd00:88::")
    with tcp_listener(ctr, "::", 80):
        assert tcp_connect(outside, HOST6, 8080)
        assert tcp_connect(host_ns, HOST6, 8080)
        assert tcp_connect(ctr, HOST6, 8080)  # hairpin over IPv6
        assert tcp_connect(outside, HOST4, 8080)
    tags = owners(host_ns)
    assert tags["claims4"] == tags["claims6"] == {"ctrA/eth0"}
    chain_cni.check_chain(conf, ctr, result, caps(mapping(8080, 80)), container_id="ctrA")


def test_del_removes_exactly_its_elements_and_the_port_stops_forwarding(chain_cni, host_ns, make_netns, outside,
                                                                         tmp_path):
    a, b = make_netns(), make_netns()
    conf = conflist(tmp_path)
    res_a = chain_cni.add_chain(conf, a, caps(mapping(8080, 80)), container_id="ctrA")
    chain_cni.add_chain(conf, b, caps(mapping(8081, 80)), container_id="ctrB")
    assert all_owner_tags(host_ns) == {"ctrA/eth0", "ctrB/eth0"}
    chain_cni.del_chain(conf, a, res_a, caps(mapping(8080, 80)), container_id="ctrA")
    assert all_owner_tags(host_ns) == {"ctrB/eth0"}
    with tcp_listener(b, "0.0.0.0", 80):
        assert tcp_connect(outside, HOST4, 8081)
    with tcp_listener(host_ns, "0.0.0.0", 8080):  # no DNAT left: the host itself answers on 8080
        assert tcp_connect(outside, HOST4, 8080)
    chain_cni.delete("portmap", dict(conf["plugins"][1], name="pmnet", cniVersion="1.0.0"), a,
                     container_id="ctrA")  # DEL again: idempotent


def test_del_without_prev_result_after_netns_is_gone(chain_cni, host_ns, make_netns, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path)
    chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80, "udp"), mapping(8080, 80)), container_id="ctrA")
    path = ctr.path
    ctr.remove()
    pm_conf = {"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap"}
    chain_cni.delete("portmap", pm_conf, path, container_id="ctrA")
    assert all_owner_tags(host_ns) == set()


def test_del_with_other_mappings_than_add_still_removes_everything_it_owns(chain_cni, host_ns, make_netns,
                                                                            tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path)
    result = chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80), mapping(8081, 81)), container_id="ctrA")
    chain_cni.del_chain(conf, ctr, result, caps(mapping(8080, 80)), container_id="ctrA")
    assert all_owner_tags(host_ns) == set()


def test_host_port_held_by_another_container_is_refused(chain_cni, host_ns, make_netns, outside, tmp_path):
    a, b = make_netns(), make_netns()
    conf = conflist(tmp_path)
    res_a = chain_cni.add_chain(conf, a, caps(mapping(8080, 80)), container_id="ctrA")
    with pytest.raises(PluginFailed) as err:
        chain_cni.add_chain(conf, b, caps(mapping(8079, 79), mapping(8080, 81)), container_id="ctrB")
    assert err.value.code == 100
    assert "tcp/8080 on 0.0.0.0 is already mapped by ctrA/eth0" in err.value.msg
    assert all_owner_tags(host_ns) == {"ctrA/eth0"}  # the failed ADD left nothing (not even port 8079)
    # The runtime cleans up the failed attachment with a DEL carrying the same mappings: A's must survive.
    pm = dict(conf["plugins"][1], name="pmnet", cniVersion="1.0.0", prevResult=res_a,
              runtimeConfig=caps(mapping(8079, 79), mapping(8080, 81)))
    chain_cni.delete("portmap", pm, b, container_id="ctrB")
    assert all_owner_tags(host_ns) == {"ctrA/eth0"}
    with tcp_listener(a, "0.0.0.0", 80):
        assert tcp_connect(outside, HOST4, 8080)
    # same port, other protocol: no conflict
    chain_cni.add_chain(conf, make_netns(), caps(mapping(8080, 80, "udp")), container_id="ctrB2")
    chain_cni.del_chain(conf, a, res_a, caps(mapping(8080, 80)), container_id="ctrA")
    chain_cni.add_chain(conf, make_netns(), caps(mapping(8080, 80)), container_id="ctrC")
    assert owners(host_ns)["claims4"] == {"ctrB2/eth0", "ctrC/eth0"}


def test_repeated_add_of_same_attachment_replaces_its_mappings(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path)
    result = chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80)), container_id="ctrA")
    pm = dict(conf["plugins"][1], name="pmnet", cniVersion="1.0.0", prevResult=result,
              runtimeConfig=caps(mapping(8080, 81)))
    chain_cni.add("portmap", pm, ctr, container_id="ctrA")
    with tcp_listener(ctr, "0.0.0.0", 81):
        assert tcp_connect(outside, HOST4, 8080)


def test_port_range_maps_each_host_port_to_its_container_port(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path)
    entries = caps(mapping("9000-9002", 80), mapping(9100, 90, range=2), mapping("9200-9201", "70-71", "udp"))
    result = chain_cni.add_chain(conf, ctr, entries, container_id="ctrA")
    with tcp_listener(ctr, "0.0.0.0", 81, banner=b"81\n"), tcp_listener(ctr, "0.0.0.0", 91, banner=b"91\n"):
        assert tcp_connect(outside, HOST4, 9001, expect=b"81\n")
        assert tcp_connect(outside, HOST4, 9101, expect=b"91\n")
    with udp_echo_server(ctr, "0.0.0.0", 71):
        assert udp_exchange(outside, HOST4, 9201)
    wildcard = next(v for k, v in nft_elements(host_ns).items() if k.endswith("_w4"))
    assert sorted(e[0]["elem"]["val"]["concat"][1] for e in wildcard) == [9000, 9001, 9002, 9100, 9101, 9200, 9201]
    chain_cni.check_chain(conf, ctr, result, entries, container_id="ctrA")


def test_host_ip_limits_the_mapping_to_that_address(chain_cni, host_ns, make_netns, outside, tmp_path):
    a, b = make_netns(), make_netns()
    conf = conflist(tmp_path)
    chain_cni.add_chain(conf, a, caps(mapping(8080, 80, host_ip=HOST4)), container_id="ctrA")
    chain_cni.add_chain(conf, b, caps(mapping(8080, 80, host_ip=GW4)), container_id="ctrB")  # other IP: no clash
    with tcp_listener(a, "0.0.0.0", 80, banner=b"A\n"), tcp_listener(b, "0.0.0.0", 80, banner=b"B\n"):
        assert tcp_connect(outside, HOST4, 8080, expect=b"A\n")
        assert tcp_connect(host_ns, GW4, 8080, expect=b"B\n")
        assert tcp_connect(host_ns, "127.0.0.1", 8080, timeout=0.5) is False


def test_conditions_restrict_which_traffic_is_mapped(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path, conditionsV4=[f"ip saddr != {OUT4}"])
    chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80)), container_id="ctrA")
    with tcp_listener(ctr, "0.0.0.0", 80):
        assert not tcp_connect(outside, HOST4, 8080, timeout=0.5)
        assert tcp_connect(host_ns, HOST4, 8080)


def test_conditions_apply_per_family(chain_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path, ipv6=True, conditionsV6=[f"ip6 saddr != {OUT6}", "meta l4proto tcp"])
    chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80)), container_id="ctrA")
    with tcp_listener(ctr, "::", 80):
        assert not tcp_connect(outside, HOST6, 8080, timeout=0.5)
        assert tcp_connect(outside, HOST4, 8080)


@pytest.mark.parametrize("options, key", [
    ({"conditionsV4": ["-s 1.2.3.4"]}, "conditionsV4"),
    ({"conditionsV6": ["ip6 saddr ::1; flush ruleset"]}, "conditionsV6"),
    ({"markMasqBit": 32}, "markMasqBit"),
    ({"snat": "yes"}, "snat"),
    ({"externalSetMarkChain": "KUBE-MARK-MASQ"}, "externalSetMarkChain"),
])
def test_invalid_options_are_config_errors(chain_cni, make_netns, tmp_path, options, key):
    conf = conflist(tmp_path, **options)
    with pytest.raises(PluginFailed) as err:
        chain_cni.add_chain(conf, make_netns(), caps(mapping(8080, 80)), container_id="ctrA")
    assert err.value.code == 7 and key in err.value.msg


@pytest.mark.parametrize("entry, key", [
    (mapping(0, 80), "hostPort"),
    (mapping(8080, 70000), "containerPort"),
    (mapping(8080, 80, "icmp"), "protocol"),
    (mapping(8080, 80, host_ip="nope"), "hostIP"),
    (mapping("9000-8000", 80), "hostPort"),
    (mapping("9000-9002", "80-81"), "containerPort"),
])
def test_invalid_port_mappings_are_config_errors(chain_cni, make_netns, tmp_path, entry, key):
    with pytest.raises(PluginFailed) as err:
        chain_cni.add_chain(conflist(tmp_path), make_netns(), caps(entry), container_id="ctrA")
    assert err.value.code == 7 and f"portMappings[0].{key}" in err.value.msg


def test_add_without_prev_result_is_refused(cni, container_ns):
    conf = {"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap", "runtimeConfig": caps(mapping(8080, 80))}
    inv = cni.invoke("portmap", "ADD", conf, container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7 and "requires prevResult" in inv.reply["msg"]


def test_result_is_prev_result_unchanged(chain_cni, make_netns, tmp_path):
    conf = conflist(tmp_path)
    conf["cniVersion"] = "0.4.0"
    ctr = make_netns()
    prev = chain_cni.add("bridge", dict(conf["plugins"][0], name="pmnet", cniVersion="0.4.0"), ctr,
                         container_id="ctrA")
    pm = dict(conf["plugins"][1], name="pmnet", cniVersion="0.4.0", prevResult=prev,
              runtimeConfig=caps(mapping(8080, 80)))
    assert chain_cni.add("portmap", pm, ctr, container_id="ctrA") == prev
    pm.pop("runtimeConfig")
    assert chain_cni.add("portmap", pm, ctr, container_id="ctrB") == prev


def test_check_verifies_elements_per_family(chain_cni, host_ns, make_netns, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path)  # IPv4 only: CHECK must not look for IPv6 state
    entries = caps(mapping(8080, 80), mapping(5353, 53, "udp"))
    result = chain_cni.add_chain(conf, ctr, entries, container_id="ctrA")
    chain_cni.check_chain(conf, ctr, result, entries, container_id="ctrA")
    wildcard = next(k for k in nft_elements(host_ns) if k.endswith("_w4"))
    with host_ns.entered():
        import nftables
        rc, _, err = nftables.Nftables().cmd(f"delete element inet {TABLE} {wildcard} {{ udp . 5353 }}")
    assert rc == 0, err
    with pytest.raises(PluginFailed) as failed:
        chain_cni.check_chain(conf, ctr, result, entries, container_id="ctrA")
    assert "udp/5353" in failed.value.msg


def test_gc_removes_elements_of_attachments_no_longer_valid(chain_cni, host_ns, make_netns, tmp_path):
    conf = conflist(tmp_path)
    for i, cid in enumerate(("ctrA", "ctrB", "ctrC")):
        chain_cni.add_chain(conf, make_netns(), caps(mapping(8080 + i, 80), mapping(8080 + i, 80, "udp")),
                            container_id=cid)
    other = dict(conflist(tmp_path), name="othernet")
    chain_cni.add_chain(other, make_netns(), caps(mapping(9090, 80)), container_id="ctrO")
    pm = dict(conf["plugins"][1], name="pmnet", cniVersion="1.1.0")
    chain_cni.gc("portmap", pm, [{"containerID": "ctrB", "ifname": "eth0"}])
    assert owners(host_ns)["claims4"] == {"ctrB/eth0", "ctrO/eth0"}  # other network untouched
    assert all_owner_tags(host_ns) == {"ctrB/eth0", "ctrO/eth0"}
    chain_cni.status("portmap", pm)


def test_concurrent_first_adds_create_the_rules_once(chain_cni, host_ns, make_netns, outside, tmp_path):
    conf = conflist(tmp_path)
    ctrs = [make_netns() for _ in range(4)]
    # The bridge part runs first, serially, so only portmap's first ADDs race.
    prevs = [chain_cni.add("bridge", dict(conf["plugins"][0], name="pmnet", cniVersion="1.0.0"), c,
                           container_id=f"c{i}") for i, c in enumerate(ctrs)]
    errors = []

    def run(i):
        pm = dict(conf["plugins"][1], name="pmnet", cniVersion="1.0.0", prevResult=prevs[i],
                  runtimeConfig=caps(mapping(8000 + i, 80)))
        try:
            chain_cni.add("portmap", pm, ctrs[i], container_id=f"c{i}")
        except PluginFailed as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rules = [o["rule"] for o in host_ns.nft_json(f"list table inet {TABLE}") if "rule" in o]
    per_chain = {}
    for r in rules:
        per_chain[r["chain"]] = per_chain.get(r["chain"], 0) + 1
    assert per_chain["prerouting"] == per_chain["output"] == per_chain["postrouting"] == 1
    assert per_chain["hostports"] == 2
    assert owners(host_ns)["claims4"] == {f"c{i}/eth0" for i in range(4)}
    with tcp_listener(ctrs[3], "0.0.0.0", 80):
        assert tcp_connect(outside, HOST4, 8003)


def test_add_flushes_stale_udp_conntrack_entries(chain_cni, host_ns, make_netns, outside, tmp_path):
    """A UDP flow that hit the host port before the mapping existed must reach the container afterwards."""
    ctr = make_netns()
    conf = conflist(tmp_path)
    # Another mapping first, so NAT hooks are live and the early packet's flow gets its (null) NAT decision.
    chain_cni.add_chain(conf, make_netns(), caps(mapping(7000, 70, "udp")), container_id="other")
    with outside.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    try:
        sock.bind((OUT4, 40000 + os.getpid() % 20000))
        sock.sendto(b"early", (HOST4, 5353))  # no mapping yet: conntrack notes a flow to the host itself
        with udp_echo_server(ctr, "0.0.0.0", 53):
            chain_cni.add_chain(conf, ctr, caps(mapping(5353, 53, "udp")), container_id="ctrA")
            got = b""
            for _ in range(4):
                sock.sendto(b"late", (HOST4, 5353))
                try:
                    got = sock.recv(64)
                    break
                except socket.timeout:
                    continue
        assert got == b"late"
    finally:
        sock.close()


def test_del_flushes_udp_conntrack_entries_of_the_mapping(chain_cni, host_ns, make_netns, outside, tmp_path):
    """After DEL, a UDP flow that was DNATed to the container is decided afresh (here: the host answers)."""
    ctr = make_netns()
    conf = conflist(tmp_path)
    entries = caps(mapping(5353, 53, "udp"))
    result = chain_cni.add_chain(conf, ctr, entries, container_id="ctrA")
    with outside.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    try:
        sock.bind((OUT4, 40000 + os.getpid() % 20000))

        def exchange(payload: bytes) -> bytes:
            for _ in range(4):
                sock.sendto(payload, (HOST4, 5353))
                try:
                    return sock.recv(64)
                except socket.timeout:
                    continue
            return b""

        with udp_echo_server(ctr, "0.0.0.0", 53):
            assert exchange(b"to-container") == b"to-container"
        chain_cni.del_chain(conf, ctr, result, entries, container_id="ctrA")
        with udp_echo_server(host_ns, HOST4, 5353):
            assert exchange(b"to-host") == b"to-host"
    finally:
        sock.close()


def assert_tcp_and_udp_mapped(ctr, host_ns, outside) -> None:
    """8080/tcp -> 80 and 5353/udp -> 53 reach ``ctr`` from outside, from the host's localhost and by hairpin."""
    with tcp_listener(ctr, "0.0.0.0", 80), udp_echo_server(ctr, "0.0.0.0", 53):
        assert tcp_connect(outside, HOST4, 8080)
        assert tcp_connect(host_ns, "127.0.0.1", 8080)
        assert tcp_connect(ctr, HOST4, 8080)
        assert udp_exchange(outside, HOST4, 5353)


@pytest.mark.parametrize("portmap_dir", [REFERENCE_PLUGINS, OUR_PLUGINS], ids=["ref-portmap", "our-portmap"])
def test_chain_with_our_bridge(make_cni, host_ns, make_netns, outside, tmp_path, portmap_dir):
    cni = make_cni(_plugin_dir(tmp_path, OUR_PLUGINS, portmap_dir))
    ctr = make_netns()
    conf = conflist(tmp_path)
    entries = caps(mapping(8080, 80), mapping(5353, 53, "udp"))
    result = cni.add_chain(conf, ctr, entries, container_id="ctrA")
    assert_tcp_and_udp_mapped(ctr, host_ns, outside)
    cni.del_chain(conf, ctr, result, entries, container_id="ctrA")
    with tcp_listener(host_ns, "0.0.0.0", 8080):  # the mapping is gone: the host answers itself
        assert tcp_connect(outside, HOST4, 8080)


def test_neighbour_on_the_bridge_reaches_a_containers_host_port(chain_cni, host_ns, make_netns, outside, tmp_path):
    a, b = make_netns(), make_netns()
    conf = conflist(tmp_path)
    chain_cni.add_chain(conf, a, caps(mapping(8080, 80), mapping(8081, 80)), container_id="ctrA")
    chain_cni.add_chain(conf, b, caps(), container_id="ctrB")
    with tcp_listener(a, "0.0.0.0", 80):
        assert tcp_connect(b, HOST4, 8080)
        assert tcp_connect(b, GW4, 8081)
    with peer_recorder(a, 80) as peers:  # from outside: not masqueraded, the container sees the client
        assert tcp_connect(outside, HOST4, 8080, expect=None)
        peers.wait()
    assert peers.seen == [OUT4]


def test_del_on_a_host_without_portmap_state_succeeds(cni, container_ns):
    conf = {"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap", "runtimeConfig": caps(mapping(8080, 80))}
    cni.delete("portmap", conf, container_ns, container_id="ctrA")
    cni.status("portmap", dict(conf, cniVersion="1.1.0"))


def test_other_tables_are_left_alone(chain_cni, host_ns, make_netns, tmp_path):
    with host_ns.entered():
        import nftables
        rc, _, err = nftables.Nftables().cmd(
            "add table ip other; add chain ip other pre { type nat hook prerouting priority dstnat; }; "
            "add rule ip other pre tcp dport 8080 counter")
    assert rc == 0, err
    before = host_ns.nft_json("list table ip other")
    ctr = make_netns()
    conf = conflist(tmp_path)
    result = chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80)), container_id="ctrA")
    chain_cni.del_chain(conf, ctr, result, caps(mapping(8080, 80)), container_id="ctrA")
    after = host_ns.nft_json("list table ip other")
    assert before == after and sum("rule" in o for o in after) == 1


def test_unspecified_host_ip_selects_one_family(chain_cni, host_ns, make_netns, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path, ipv6=True)
    chain_cni.add_chain(conf, ctr, caps(mapping(8080, 80, host_ip="0.0.0.0"), mapping(8081, 81, host_ip="::"),
                                        mapping(8082, 82, "sctp")), container_id="ctrA")
    claims = {name: sorted(tuple(e["elem"]["val"]["concat"]) for e in elems)
              for name, elems in nft_elements(host_ns).items() if name.startswith("claims")}
    assert claims == {"claims4": [("0.0.0.0", "sctp", 8082), ("0.0.0.0", "tcp", 8080)],
                      "claims6": [("::", "sctp", 8082), ("::", "tcp", 8081)]}


def test_host_port_is_exclusive_across_networks(chain_cni, host_ns, make_netns, tmp_path):
    chain_cni.add_chain(conflist(tmp_path), make_netns(), caps(mapping(8080, 80)), container_id="ctrA")
    other = dict(conflist(tmp_path, masqAll=True), name="othernet")  # other network, other options/profile
    with pytest.raises(PluginFailed) as err:
        chain_cni.add_chain(other, make_netns(), caps(mapping(8080, 80)), container_id="ctrB")
    assert err.value.code == 100 and "ctrA/eth0" in err.value.msg
    assert all_owner_tags(host_ns) == {"ctrA/eth0"}


def test_chain_through_the_resident_daemon(daemon_cni, host_ns, make_netns, outside, tmp_path):
    ctr = make_netns()
    conf = conflist(tmp_path)
    entries = caps(mapping(8080, 80), mapping(5353, 53, "udp"))
    result = daemon_cni.add_chain(conf, ctr, entries, container_id="ctrA")
    assert_tcp_and_udp_mapped(ctr, host_ns, outside)
    daemon_cni.check_chain(conf, ctr, result, entries, container_id="ctrA")
    daemon_cni.del_chain(conf, ctr, result, entries, container_id="ctrA")
    assert all_owner_tags(host_ns) == set()
