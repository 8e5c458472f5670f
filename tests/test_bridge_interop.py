"""bridge plugin against the reference: the same config gives the same result and kernel state, and an attachment
made by one implementation is checked and removed by the other (a host can switch implementations)."""

from __future__ import annotations

import pytest

from netns_fixtures import CNI, REFERENCE_PLUGINS, icmp_echo, reference_available

from .test_bridge_support import (  # noqa: F401  (fixtures)
    bcni, brname, conf_factory, leases, port_info, ports_of, veths,
)

pytestmark = pytest.mark.skipif(not reference_available(), reason="reference plugins not installed")


def _shape(result: dict) -> dict:
    """A result without what differs by nature between two runs (random veth names, MACs, sandbox path)."""
    out = dict(result)
    out["interfaces"] = [sorted(k for k in i) for i in result["interfaces"]]
    return out


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
@pytest.mark.parametrize("options", [{"isDefaultGateway": True, "hairpinMode": True, "mtu": 1450},
                                     {"isGateway": True, "dns": {"nameservers": ["10.99.0.53"]}},
                                     {}])
def test_result_and_kernel_state_match_the_reference(bcni, make_netns, conf_factory, brname, tmp_path, version,
                                                     options):
    ref_host = make_netns("pynt-h")
    ref = CNI(ref_host, REFERENCE_PLUGINS)
    ours_ctr, ref_ctr = make_netns(), make_netns()
    conf = conf_factory(version=version, **options)
    ref_conf = dict(conf, ipam=dict(conf["ipam"], dataDir=str(tmp_path / "ref-ipam")))
    ours = bcni.add("bridge", conf, ours_ctr)
    theirs = ref.add("bridge", ref_conf, ref_ctr)
    assert _shape(ours) == _shape(theirs)
    assert ours_ctr.addresses("eth0") == ref_ctr.addresses("eth0")
    assert sorted(map(str, ours_ctr.routes())) == sorted(map(str, ref_ctr.routes()))
    assert bcni.host.addresses(brname) == ref_host.addresses(brname)
    for key in ("mode", "isolated"):
        assert (port_info(bcni.host, ours["interfaces"][1]["name"])[key]
                == port_info(ref_host, theirs["interfaces"][1]["name"])[key])
    assert ours_ctr.link("eth0").get_attr("IFLA_MTU") == ref_ctr.link("eth0").get_attr("IFLA_MTU")


def test_attachment_made_by_reference_is_checked_and_deleted_by_ours(bcni, host_ns, container_ns, conf_factory,
                                                                     brname, tmp_path):
    ref = CNI(host_ns, REFERENCE_PLUGINS)
    conf = conf_factory(isDefaultGateway=True, version="1.0.0")
    result = ref.add("bridge", conf, container_ns)
    bcni.check("bridge", dict(conf, prevResult=result), container_ns)
    bcni.delete("bridge", dict(conf, prevResult=result), container_ns)
    assert "eth0" not in container_ns.link_names() and veths(host_ns) == [] and leases(tmp_path) == []


def test_attachment_made_by_ours_is_checked_and_deleted_by_reference(bcni, host_ns, container_ns, conf_factory,
                                                                     tmp_path):
    ref = CNI(host_ns, REFERENCE_PLUGINS)
    conf = conf_factory(isDefaultGateway=True, version="1.0.0")
    result = bcni.add("bridge", conf, container_ns)
    ref.check("bridge", dict(conf, prevResult=result), container_ns)
    ref.delete("bridge", dict(conf, prevResult=result), container_ns)
    assert "eth0" not in container_ns.link_names() and veths(host_ns) == [] and leases(tmp_path) == []


def test_containers_of_both_implementations_share_one_bridge(bcni, host_ns, make_netns, conf_factory, brname):
    ref = CNI(host_ns, REFERENCE_PLUGINS)
    conf = conf_factory(isGateway=True)
    a, b = make_netns(), make_netns()
    ra = bcni.add("bridge", conf, a, container_id="ours")
    rb = ref.add("bridge", conf, b, container_id="theirs")
    assert len(ports_of(host_ns, brname)) == 2
    assert icmp_echo(a, rb["ips"][0]["address"].split("/")[0]) and icmp_echo(b, ra["ips"][0]["address"].split("/")[0])
