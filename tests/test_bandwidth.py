"""bandwidth plugin: chained after our bridge in a sandbox host netns; tbf, ingress, u32/mirred and ifb state
read back over netlink, next to what the reference bandwidth sets for the same config."""

from __future__ import annotations

import os

import pytest

from netns_fixtures import OUR_PLUGINS, REFERENCE_PLUGINS, PluginFailed, reference_available

TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
ETH_P_ALL = 3
TCA_EGRESS_REDIR = 1


def _tick_in_usec() -> float:
    with open("/proc/net/psched") as f:
        t2us, us2t, clock_res, _ = (int(v, 16) for v in f.read().split())
    return t2us / us2t * (clock_res / 1_000_000)


def expected_tbf(rate_bits: int, burst_bits: int) -> dict:
    """What tc prints for ``tbf rate R burst B latency 25ms`` (the reference's parameters), by hand."""
    rate, burst = rate_bits // 8, burst_bits // 8
    return {"rate": rate, "buffer": int(int(burst * 1_000_000 / rate) * _tick_in_usec()),
            "limit": int(rate * 0.025) + burst}


# -- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture
def brname():
    return "pw" + os.urandom(5).hex()


@pytest.fixture
def conflist(tmp_path, brname):
    def make(version: str = "1.0.0", name: str = "bwnet", subnet: str = "10.77.0.0/24", **bw) -> dict:
        bandwidth = {"type": "bandwidth", "capabilities": {"bandwidth": True}}
        bandwidth.update(bw)
        return {"cniVersion": version, "name": name, "plugins": [
            {"type": "bridge", "bridge": brname, "isGateway": True,
             "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "ranges": [[{"subnet": subnet}]]}},
            bandwidth]}
    return make


def mixed_plugin_dir(tmp_path, plugin: str, plugin_dir: str) -> str:
    """A plugin directory with our bridge and host-local and ``plugin`` from ``plugin_dir`` (the reference's
    after our bridge: the chain is the same, only the plugin under test differs)."""
    d = tmp_path / f"mix-{len(os.listdir(tmp_path))}"
    d.mkdir()
    for name in ("bridge", "host-local"):
        os.symlink(os.path.join(OUR_PLUGINS, name), d / name)
    os.symlink(os.path.join(plugin_dir, plugin), d / plugin)
    return str(d)


@pytest.fixture
def ref_bw_cni(make_cni, tmp_path):
    if not reference_available():
        pytest.skip("reference plugins not installed in /usr/lib/cni")
    return make_cni(mixed_plugin_dir(tmp_path, "bandwidth", REFERENCE_PLUGINS))


# -- readers of the host netns -------------------------------------------------------------------------------
def index_of(ns, name: str) -> int | None:
    found = ns.ipr.link_lookup(ifname=name)
    return found[0] if found else None


def kind_of(ns, name: str) -> str | None:
    msg = ns.link(name)
    return msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") if msg is not None else None


def qdisc_kinds(ns, name: str) -> dict[int, str]:
    """parent -> kind of a link's qdiscs (the default noqueue of a veth is left out)."""
    index = index_of(ns, name)
    return {m["parent"]: m.get_attr("TCA_KIND") for m in ns.ipr.get_qdiscs(index=index)
            if m["index"] == index and m.get_attr("TCA_KIND") != "noqueue"}


def tbf_of(ns, name: str) -> dict | None:
    index = index_of(ns, name)
    for m in ns.ipr.get_qdiscs(index=index):
        if m["index"] == index and m["parent"] == TC_H_ROOT and m.get_attr("TCA_KIND") == "tbf":
            p = m.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
            return {"rate": p["rate"], "buffer": p["buffer"], "limit": p["limit"], "handle": m["handle"]}
    return None


def redirect_filters(ns, name: str) -> list[dict]:
    """u32 filters under ingress ffff: as {prio, protocol, classid, mirred: [(eaction, target name)]}."""
    index = index_of(ns, name)
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ns.ipr.get_links()}
    out = []
    for m in ns.ipr.get_filters(index=index, parent=0xFFFF0000):
        opts = m.get_attr("TCA_OPTIONS")
        if m.get_attr("TCA_KIND") != "u32" or opts is None or opts.get_attr("TCA_U32_SEL") is None:
            continue
        acts = opts.get_attr("TCA_U32_ACT")
        mirred = sorted({(a[1].get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")["eaction"],
                          names.get(a[1].get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")["ifindex"]))
                         for a in (acts["attrs"] if acts is not None else [])
                         if a[1].get_attr("TCA_ACT_KIND") == "mirred"})
        info = m["info"]
        out.append({"prio": info >> 16, "protocol": ((info & 0xFF) << 8) | (info >> 8 & 0xFF),
                    "classid": opts.get_attr("TCA_U32_CLASSID"), "mirred": mirred})
    return out


def ifbs(ns) -> list[str]:
    return [m.get_attr("IFLA_IFNAME") for m in ns.ipr.get_links()
            if m.get_attr("IFLA_LINKINFO") is not None
            and m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "ifb"]


def host_veth(result: dict) -> str:
    return result["interfaces"][1]["name"]


SHAPED = {"ingressRate": 1_000_000, "ingressBurst": 100_000, "egressRate": 2_000_000, "egressBurst": 200_000}


# -- tests ---------------------------------------------------------------------------------------------------
def test_add_shapes_both_directions_with_tbf_ifb_and_mirred(cni, host_ns, container_ns, conflist):
    conf = conflist(**SHAPED)
    result = cni.add_chain(conf, container_ns)
    veth = host_veth(result)
    [ifb] = ifbs(host_ns)
    assert ifb.startswith("bwp") and len(ifb) == 15
    assert {"name": ifb, "mac": host_ns.link(ifb).get_attr("IFLA_ADDRESS")} in result["interfaces"]
    assert host_ns.link(ifb).get_attr("IFLA_MTU") == host_ns.link(veth).get_attr("IFLA_MTU")
    assert host_ns.link(ifb)["flags"] & 1  # up

    # ingress (towards the container): tbf at the root of the host veth
    assert tbf_of(host_ns, veth) == dict(expected_tbf(1_000_000, 100_000), handle=0x10000)
    # egress (from the container): ingress qdisc + match-all redirect to the ifb, tbf on the ifb
    assert qdisc_kinds(host_ns, veth) == {TC_H_ROOT: "tbf", TC_H_INGRESS: "ingress"}
    assert redirect_filters(host_ns, veth) == [
        {"prio": 1, "protocol": ETH_P_ALL, "classid": 0x10001, "mirred": [(TCA_EGRESS_REDIR, ifb)]}]
    assert tbf_of(host_ns, ifb) == dict(expected_tbf(2_000_000, 200_000), handle=0x10000)
    cni.check_chain(conf, container_ns, result)

    cni.del_chain(conf, container_ns, result)
    assert ifbs(host_ns) == []
    assert index_of(host_ns, veth) is None


def test_del_removes_ifb_and_host_veth_qdiscs_and_succeeds_twice(cni, host_ns, container_ns, conflist):
    conf = conflist(**SHAPED)
    result = cni.add_chain(conf, container_ns)
    veth = host_veth(result)
    bw = dict(conf["plugins"][1], name=conf["name"], cniVersion=conf["cniVersion"], prevResult=result)
    cni.delete("bandwidth", bw, container_ns)
    assert ifbs(host_ns) == []
    assert qdisc_kinds(host_ns, veth) == {}       # the veth is still there (bridge not deleted yet)
    assert redirect_filters(host_ns, veth) == []
    cni.delete("bandwidth", bw, container_ns)     # idempotent
    with pytest.raises(PluginFailed):
        cni.check("bandwidth", bw, container_ns)   # CHECK sees the shaping gone


def test_del_after_netns_deleted_removes_the_ifb(cni, host_ns, make_netns, conflist):
    ctr = make_netns()
    conf = conflist(**SHAPED)
    result = cni.add_chain(conf, ctr)
    assert len(ifbs(host_ns)) == 1
    path = ctr.path
    ctr.remove()
    cni.del_chain(conf, path, result)
    assert ifbs(host_ns) == []
    cni.del_chain(conf, path, result)


def test_runtime_config_bandwidth_overrides_config(cni, host_ns, container_ns, conflist):
    conf = conflist(ingressRate=1_000_000, ingressBurst=100_000)
    runtime = {"bandwidth": {"ingressRate": 4_000_000, "ingressBurst": 400_000}}
    result = cni.add_chain(conf, container_ns, capability_args=runtime)
    assert tbf_of(host_ns, host_veth(result))["rate"] == 500_000
    assert ifbs(host_ns) == []   # no egress keys in the runtime entry: no ifb
    cni.check_chain(conf, container_ns, result, capability_args=runtime)
    # without the runtime value CHECK holds the config's rate against the kernel's
    with pytest.raises(PluginFailed) as err:
        cni.check_chain(conf, container_ns, result)
    assert "rate" in err.value.msg


def test_containerd_burst_gets_the_longest_bucket_tbf_holds(cni, host_ns, container_ns, conflist):
    """containerd sends burst 2^32-1 bits with every Kubernetes bandwidth annotation: at 1 Mbit/s that bucket
    takes longer to drain than tbf's 32-bit buffer (in scheduler ticks) can say, so it gets the most it can."""
    conf = conflist(ingressRate=1_000_000, ingressBurst=2 ** 32 - 1)
    result = cni.add_chain(conf, container_ns)
    tbf = tbf_of(host_ns, host_veth(result))
    assert tbf["rate"] == 125_000 and tbf["buffer"] == 2 ** 32 - 1
    assert tbf["limit"] == int(125_000 * 0.025) + (2 ** 32 - 1) // 8
    cni.check_chain(conf, container_ns, result)


def test_check_notices_a_changed_tbf(cni, host_ns, container_ns, conflist):
    conf = conflist(egressRate=8_000_000, egressBurst=80_000)
    result = cni.add_chain(conf, container_ns)
    [ifb] = ifbs(host_ns)
    host_ns.ipr.tc("del", index=index_of(host_ns, ifb), parent=TC_H_ROOT)
    with pytest.raises(PluginFailed) as err:
        cni.check_chain(conf, container_ns, result)
    assert ifb in err.value.msg


PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "br0"}, {"name": "veth0"},
                                              {"name": "eth0", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.77.0.2/24", "interface": 2}]}


@pytest.mark.parametrize("keys,named", [
    ({"ingressRate": 1_000_000}, "ingressRate"),
    ({"egressBurst": 1000}, "egressBurst"),
    ({"ingressRate": -8, "ingressBurst": 80}, "ingressRate"),
    ({"egressRate": "1M", "egressBurst": 80}, "egressRate"),
    ({"egressRate": 1_000_000, "egressBurst": 8 * 2 ** 32}, "egressBurst"),
    ({"runtimeConfig": {"bandwidth": {"egressRate": 1_000_000}}}, "runtimeConfig.bandwidth.egressRate"),
    ({"runtimeConfig": {"bandwidth": "fast"}}, "runtimeConfig.bandwidth"),
])
def test_bad_keys_are_code_7_naming_the_key(cni, host_ns, container_ns, keys, named):
    conf = dict({"cniVersion": "1.0.0", "name": "bwnet", "type": "bandwidth", "prevResult": PREV}, **keys)
    inv = cni.invoke("bandwidth", "ADD", conf, container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7, inv.reply
    assert named in inv.reply["msg"]
    assert ifbs(host_ns) == []


def test_failed_add_leaves_no_qdisc_behind(cni, host_ns, container_ns, conflist):
    """A link holding the ifb's name makes the egress half fail after the ingress tbf was set: the tbf goes
    again and the other link is left alone."""
    conf = conflist(**SHAPED)
    bridge_result = cni.add_chain(dict(conf, plugins=conf["plugins"][:1]), container_ns)
    from cni_plugins.bandwidth.plugin import ifb_name
    squatter = ifb_name(conf["name"], "ctr1")
    host_ns.ipr.link("add", ifname=squatter, kind="veth", peer={"ifname": "sq-peer"})
    bw = dict(conf["plugins"][1], name=conf["name"], cniVersion=conf["cniVersion"], prevResult=bridge_result)
    inv = cni.invoke("bandwidth", "ADD", bw, container=container_ns)
    assert inv.rc != 0 and squatter in inv.reply["msg"], inv.reply
    assert qdisc_kinds(host_ns, host_veth(bridge_result)) == {}
    assert kind_of(host_ns, squatter) == "veth"


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_result_passes_prev_result_through_in_every_version(cni, host_ns, container_ns, conflist, version):
    conf = conflist(version=version, ingressRate=1_000_000, ingressBurst=100_000)
    bridge_only = dict(conf, plugins=conf["plugins"][:1])
    prev = cni.add_chain(bridge_only, container_ns)
    result = cni.add("bandwidth", dict(conf["plugins"][1], name=conf["name"], cniVersion=version, prevResult=prev),
                     container_ns)
    assert result == prev   # ingress only: no ifb interface added
    assert tbf_of(host_ns, host_veth(result)) is not None


def test_same_config_gives_the_reference_qdiscs(cni, ref_bw_cni, host_ns, make_netns, conflist):
    conf = conflist(**SHAPED)
    ours_ctr, ref_ctr = make_netns(), make_netns()
    ours = cni.add_chain(conf, ours_ctr, container_id="ctr-ours")
    ref = ref_bw_cni.add_chain(conf, ref_ctr, container_id="ctr-ref")
    ours_ifb, ref_ifb = ours["interfaces"][-1]["name"], ref["interfaces"][-1]["name"]
    from cni_plugins.bandwidth.plugin import ifb_name
    assert ref_ifb == ifb_name(conf["name"], "ctr-ref") and ours_ifb == ifb_name(conf["name"], "ctr-ours")

    for name_ours, name_ref in ((host_veth(ours), host_veth(ref)), (ours_ifb, ref_ifb)):
        assert tbf_of(host_ns, name_ours) == tbf_of(host_ns, name_ref)
        assert qdisc_kinds(host_ns, name_ours) == qdisc_kinds(host_ns, name_ref)
    for key in ("IFLA_MTU", "IFLA_TXQLEN"):
        assert host_ns.link(ours_ifb).get_attr(key) == host_ns.link(ref_ifb).get_attr(key)
    [f_ours] = redirect_filters(host_ns, host_veth(ours))
    [f_ref] = redirect_filters(host_ns, host_veth(ref))
    assert f_ours == dict(f_ref, mirred=[(TCA_EGRESS_REDIR, ours_ifb)])
    assert f_ref["mirred"] == [(TCA_EGRESS_REDIR, ref_ifb)]
    # each implementation's CHECK accepts the other's state (a host can switch implementations)
    cni.check_chain(conf, ref_ctr, ref, container_id="ctr-ref")
    ref_bw_cni.check_chain(conf, ours_ctr, ours, container_id="ctr-ours")
    # and our DEL cleans up after the reference's ADD
    cni.delete("bandwidth", dict(conf["plugins"][1], name=conf["name"], cniVersion=conf["cniVersion"],
                                 prevResult=ref), ref_ctr, container_id="ctr-ref")
    assert ifbs(host_ns) == [ours_ifb]
    assert qdisc_kinds(host_ns, host_veth(ref)) == {}


def test_daemon_add_and_del(daemon_cni, host_ns, container_ns, conflist):
    conf = conflist(**SHAPED)
    result = daemon_cni.add_chain(conf, container_ns)
    assert tbf_of(host_ns, host_veth(result))["rate"] == 125_000
    [ifb] = ifbs(host_ns)
    assert tbf_of(host_ns, ifb)["rate"] == 250_000
    daemon_cni.check_chain(conf, container_ns, result)
    daemon_cni.del_chain(conf, container_ns, result)
    assert ifbs(host_ns) == []


def test_bench_prints_measured_against_configured_and_cleans_up():
    """bench/bandwidth_bench.py stays runnable: one short run prints its table (no number is asserted)."""
    import shutil
    import subprocess
    import sys

    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 not installed (apt-get install iperf3)")
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "bandwidth_bench.py")
    before = {n for n in os.listdir("/run/netns") if n.startswith("pynbw-")}
    proc = subprocess.run([sys.executable, bench, "--seconds", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["direction", "configured", "ours", "Mbit/s"]
    assert [line.split()[0] for line in lines[2:]] == ["ingress", "egress"]
    assert {n for n in os.listdir("/run/netns") if n.startswith("pynbw-")} <= before
