"""bridge plugin nftables state: ipMasq and macspoofchk elements, their removal on DEL and GC, and their effect."""

from __future__ import annotations

import pytest

from netns_fixtures import OUR_PLUGINS, icmp_echo, reference_available, veth_link

from .test_bridge_support import (  # noqa: F401  (fixtures)
    bcni, brname, conf_factory, ip_of, leases, link_index, nft_elements, our_host_local_available,
)


def masq(host_ns) -> list[tuple[str, str]]:
    return nft_elements(host_ns, "inet", "masq4") + nft_elements(host_ns, "inet", "masq6")


def spoof(host_ns) -> list[tuple[str, str]]:
    return nft_elements(host_ns, "bridge", "guarded") + nft_elements(host_ns, "bridge", "allowed")


@pytest.fixture
def outside(host_ns, make_netns):
    """A netns beyond the host (192.168.77.2) that has no route back to the container subnet."""
    out = make_netns("pynt-o")
    veth_link(host_ns, "uplink", out, "eth0", ["192.168.77.1/24"], ["192.168.77.2/24"])
    return out


def test_ip_masq_element_is_owned_by_the_attachment_and_rules_are_written_once(bcni, host_ns, make_netns,
                                                                                conf_factory):
    conf = conf_factory(isGateway=True, ipMasq=True)
    a, b = make_netns(), make_netns()
    ra = bcni.add("bridge", conf, a, container_id="ctr-a")
    rb = bcni.add("bridge", conf, b, container_id="ctr-b")
    assert sorted(masq(host_ns)) == [(ip_of(ra), "ctr-a/eth0@brnet"), (ip_of(rb), "ctr-b/eth0@brnet")]
    assert (f"{ip_of(ra)} . 10.99.0.0/24", "ctr-a/eth0@brnet") in nft_elements(host_ns, "inet", "local4")
    ruleset = host_ns.nft_ruleset()
    assert ruleset.count("masquerade") == 2  # one rule per family, however many containers


def test_ip_masq_lets_container_reach_beyond_the_host(bcni, host_ns, container_ns, outside, conf_factory):
    conf = conf_factory(isDefaultGateway=True, ipMasq=True)
    bcni.add("bridge", conf, container_ns)
    assert icmp_echo(container_ns, "192.168.77.2")


def test_without_ip_masq_replies_from_beyond_cannot_come_back(bcni, host_ns, container_ns, outside, conf_factory):
    bcni.add("bridge", conf_factory(isDefaultGateway=True), container_ns)
    assert not icmp_echo(container_ns, "192.168.77.2", timeout=0.6, attempts=2)
    assert "pynet-bridge" not in host_ns.nft_ruleset()


def test_ip_masq_element_removed_on_del(bcni, host_ns, container_ns, conf_factory):
    conf = conf_factory(isGateway=True, ipMasq=True)
    result = bcni.add("bridge", conf, container_ns)
    bcni.delete("bridge", dict(conf, prevResult=result), container_ns)
    assert masq(host_ns) == [] and nft_elements(host_ns, "inet", "local4") == []


def test_del_after_netns_deleted_removes_masq_element_and_lease(bcni, host_ns, make_netns, conf_factory, tmp_path):
    conf = conf_factory(isGateway=True, ipMasq=True, macspoofchk=True)
    ns = make_netns()
    result = bcni.add("bridge", conf, ns)
    assert masq(host_ns) and spoof(host_ns) and leases(tmp_path)
    path = ns.path
    ns.remove()
    bcni.delete("bridge", dict(conf, prevResult=result), path)
    assert masq(host_ns) == [] and spoof(host_ns) == [] and leases(tmp_path) == []
    bcni.delete("bridge", dict(conf, prevResult=result), path)


def test_del_keeps_other_containers_elements(bcni, host_ns, make_netns, conf_factory):
    conf = conf_factory(isGateway=True, ipMasq=True)
    a, b = make_netns(), make_netns()
    bcni.add("bridge", conf, a, container_id="keep-a")
    rb = bcni.add("bridge", conf, b, container_id="gone-b")
    bcni.delete("bridge", dict(conf, prevResult=rb), b, container_id="gone-b")
    assert [owner for _, owner in masq(host_ns)] == ["keep-a/eth0@brnet"]


def test_check_fails_when_masq_element_is_gone(bcni, host_ns, container_ns, conf_factory):
    conf = conf_factory(isGateway=True, ipMasq=True)
    result = bcni.add("bridge", conf, container_ns)
    bcni.check("bridge", dict(conf, prevResult=result), container_ns)
    host_ns.nft_json(f"flush set inet pynet-bridge masq4")
    inv = bcni.invoke("bridge", "CHECK", dict(conf, prevResult=result), container=container_ns)
    assert inv.rc != 0 and "ipMasq" in inv.reply["msg"]


def test_macspoofchk_allows_own_mac_and_drops_spoofed_frames(bcni, host_ns, container_ns, conf_factory):
    conf = conf_factory(isGateway=True, macspoofchk=True)
    result = bcni.add("bridge", conf, container_ns)
    host_veth, mac = result["interfaces"][1]["name"], result["interfaces"][2]["mac"]
    assert (host_veth, "ctr1/eth0@brnet") in nft_elements(host_ns, "bridge", "guarded")
    assert (f"{host_veth} . {mac}", "ctr1/eth0@brnet") in nft_elements(host_ns, "bridge", "allowed")
    assert icmp_echo(container_ns, "10.99.0.1")
    container_ns.ipr.link("set", index=link_index(container_ns, "eth0"), address="0a:00:00:00:66:66")
    assert not icmp_echo(container_ns, "10.99.0.1", timeout=0.6, attempts=2)
    bcni.delete("bridge", dict(conf, prevResult=result), container_ns)
    assert spoof(host_ns) == []


def test_gc_removes_elements_of_attachments_no_longer_valid(make_cni, host_ns, make_netns, conf_factory):
    cni = make_cni(OUR_PLUGINS)
    conf = conf_factory(version="1.1.0", ipam={}, macspoofchk=True)
    other = dict(conf_factory(version="1.1.0", ipam={}, macspoofchk=True, name="othernet"), bridge="pbother")
    cni.add("bridge", conf, make_netns(), container_id="live")
    cni.add("bridge", conf, make_netns(), container_id="stale")
    cni.add("bridge", other, make_netns(), container_id="elsewhere")
    cni.gc("bridge", conf, [{"containerID": "live", "ifname": "eth0"}])
    owners = {owner for _, owner in spoof(host_ns)}
    assert owners == {"live/eth0@brnet", "elsewhere/eth0@othernet"}


def test_gc_passes_through_to_ipam_and_cleans_masq(make_cni, host_ns, make_netns, conf_factory, tmp_path):
    if not our_host_local_available():
        pytest.skip("our host-local is not there yet (the reference 1.1.1 has no GC)")
    cni = make_cni(OUR_PLUGINS)
    conf = conf_factory(version="1.1.0", isGateway=True, ipMasq=True)
    live = cni.add("bridge", conf, make_netns(), container_id="live")
    cni.add("bridge", conf, make_netns(), container_id="stale")
    assert len(leases(tmp_path)) == 2
    cni.gc("bridge", conf, [{"containerID": "live", "ifname": "eth0"}])
    assert masq(host_ns) == [(ip_of(live), "live/eth0@brnet")]
    assert leases(tmp_path) == [ip_of(live)]


def test_reused_address_is_reowned_and_late_del_of_old_owner_keeps_it(make_cni, host_ns, make_netns, conf_factory,
                                                                       tmp_path):
    if not reference_available():
        pytest.skip("reference static IPAM not installed")
    plugins = tmp_path / "static-plugins"
    plugins.mkdir()
    (plugins / "bridge").symlink_to(f"{OUR_PLUGINS}/bridge")
    (plugins / "static").symlink_to("/usr/lib/cni/static")
    cni = make_cni(str(plugins))
    conf = conf_factory(isGateway=True, ipMasq=True,
                        ipam={"type": "static", "addresses": [{"address": "10.99.0.5/24"}]})
    old = make_netns()
    cni.add("bridge", conf, old, container_id="old")
    old.remove()  # the runtime lost the container without a DEL
    cni.add("bridge", conf, make_netns(), container_id="new")
    assert masq(host_ns) == [("10.99.0.5", "new/eth0@brnet")]
    cni.delete("bridge", conf, old.path, container_id="old")
    assert masq(host_ns) == [("10.99.0.5", "new/eth0@brnet")]
    assert nft_elements(host_ns, "inet", "local4") == [("10.99.0.5 . 10.99.0.0/24", "new/eth0@brnet")]


def test_del_whose_prev_result_names_another_containers_address_removes_only_its_own(bcni, host_ns, make_netns,
                                                                                     conf_factory):
    # DEL removes by owner tag, whatever addresses the prevResult names (a guard for any DEL by key).
    conf = conf_factory(isGateway=True, ipMasq=True)
    a, b = make_netns(), make_netns()
    bcni.add("bridge", conf, a, container_id="mine-a")
    rb = bcni.add("bridge", conf, b, container_id="other-b")
    bcni.delete("bridge", dict(conf, prevResult=rb), a, container_id="mine-a")
    assert masq(host_ns) == [(ip_of(rb), "other-b/eth0@brnet")]
    assert [owner for _, owner in nft_elements(host_ns, "inet", "local4")] == ["other-b/eth0@brnet"]
