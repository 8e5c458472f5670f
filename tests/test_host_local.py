"""host-local IPAM driven through its executable, leases asserted on disk (dataDir always under tmp_path)."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from netns_fixtures import PluginFailed

NET = "hl-net"


def conf(tmp_path, ranges=None, version="1.0.0", **ipam):
    body = {"type": "host-local", "dataDir": str(tmp_path / "leases")}
    if ranges is not None:
        body["ranges"] = ranges
    body.update(ipam)
    # IPAM plugins receive the whole config of the plugin that delegates to them.
    return {"cniVersion": version, "name": NET, "type": "bridge", "ipam": body}


def subnet(cidr, **extra):
    return dict(subnet=cidr, **extra)


def lease_dir(tmp_path):
    return tmp_path / "leases" / NET


def leases(tmp_path):
    """{ip text: raw file bytes} of every lease file."""
    d = lease_dir(tmp_path)
    return {name: (d / name).read_bytes() for name in os.listdir(d)
            if name not in ("lock",) and not name.startswith("last_reserved_ip.")}


def addresses(result):
    return [ip["address"] for ip in result["ips"]]


def add(cni, c, container_id, ns="/run/netns/unused", **kw):
    return cni.add("host-local", c, ns, container_id=container_id, **kw)


def failure(cni, c, container_id="ctrx", command="ADD", **kw):
    inv = cni.invoke("host-local", command, c, container="/run/netns/unused", container_id=container_id, **kw)
    assert inv.rc != 0, inv.reply
    return inv.reply


# -- allocation and the on-disk format ----------------------------------------------------------------

def test_add_leases_first_host_and_writes_reference_lease_files(cni, container_ns, tmp_path):
    c = conf(tmp_path, [[subnet("10.10.0.0/24")]])
    result = cni.add("host-local", c, container_ns, container_id="ctr1", ifname="eth0")
    assert result["ips"] == [{"address": "10.10.0.2/24", "gateway": "10.10.0.1"}]
    assert leases(tmp_path) == {"10.10.0.2": b"ctr1\r\neth0"}
    assert (lease_dir(tmp_path) / "last_reserved_ip.0").read_text() == "10.10.0.2"
    assert (lease_dir(tmp_path) / "lock").exists()
    assert "interfaces" not in result


def test_round_robin_continues_after_last_reserved_not_at_released_address(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.10.0.0/24")]])
    assert [addresses(add(cni, c, cid)) for cid in ("a", "b", "c")] == [["10.10.0.2/24"], ["10.10.0.3/24"],
                                                                        ["10.10.0.4/24"]]
    cni.delete("host-local", c, "/run/netns/unused", container_id="b")
    assert addresses(add(cni, c, "d")) == ["10.10.0.5/24"]
    assert sorted(leases(tmp_path)) == ["10.10.0.2", "10.10.0.4", "10.10.0.5"]


def test_round_robin_wraps_to_range_start_and_skips_gateway(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.10.0.0/24", rangeStart="10.10.0.10", rangeEnd="10.10.0.13",
                                 gateway="10.10.0.11")]])
    assert [addresses(add(cni, c, cid))[0] for cid in ("a", "b", "c")] == ["10.10.0.10/24", "10.10.0.12/24",
                                                                           "10.10.0.13/24"]
    cni.delete("host-local", c, "/run/netns/unused", container_id="a")
    result = add(cni, c, "d")
    assert result["ips"] == [{"address": "10.10.0.10/24", "gateway": "10.10.0.11"}]


def test_exhausted_range_fails_and_leaves_leases_unchanged(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.10.0.0/24", rangeStart="10.10.0.10", rangeEnd="10.10.0.11")]])
    add(cni, c, "a")
    add(cni, c, "b")
    reply = failure(cni, c, "c")
    assert reply["msg"] == "no IP addresses available in range set: 10.10.0.10-10.10.0.11"
    assert sorted(leases(tmp_path)) == ["10.10.0.10", "10.10.0.11"]


def test_defaults_mask_subnet_and_exclude_ipv4_broadcast(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.20.0.3/29")]])  # host bits are masked: 10.20.0.0/29
    results = [add(cni, c, f"c{i}") for i in range(5)]
    assert [r["ips"][0]["address"] for r in results] == [f"10.20.0.{i}/29" for i in range(2, 7)]
    assert {r["ips"][0]["gateway"] for r in results} == {"10.20.0.1"}
    assert "no IP addresses available" in failure(cni, c, "c9")["msg"]


def test_ipv6_range_ends_at_last_address(cni, tmp_path):
    c = conf(tmp_path, [[subnet("fd00:10::/126")]])
    assert add(cni, c, "a")["ips"] == [{"address": "fd00:10::2/126", "gateway": "fd00:10::1"}]
    assert addresses(add(cni, c, "b")) == ["fd00:10::3/126"]
    assert "no IP addresses available" in failure(cni, c, "c")["msg"]
    assert sorted(leases(tmp_path)) == ["fd00:10::2", "fd00:10::3"]


def test_dual_stack_takes_one_address_per_range_set(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.30.0.0/24")], [subnet("fd00:30::/64")]])
    result = add(cni, c, "a", ifname="net1")
    assert result["ips"] == [{"address": "10.30.0.2/24", "gateway": "10.30.0.1"},
                             {"address": "fd00:30::2/64", "gateway": "fd00:30::1"}]
    assert leases(tmp_path) == {"10.30.0.2": b"a\r\nnet1", "fd00:30::2": b"a\r\nnet1"}
    assert (lease_dir(tmp_path) / "last_reserved_ip.1").read_text() == "fd00:30::2"


def test_ranges_of_one_set_are_used_in_turn(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.40.0.0/30"), subnet("10.41.0.0/30")]])
    assert add(cni, c, "a")["ips"] == [{"address": "10.40.0.2/30", "gateway": "10.40.0.1"}]
    assert add(cni, c, "b")["ips"] == [{"address": "10.41.0.2/30", "gateway": "10.41.0.1"}]
    assert failure(cni, c, "c")["msg"] == ("no IP addresses available in range set: "
                                           "10.40.0.1-10.40.0.2,10.41.0.1-10.41.0.2")


def test_legacy_top_level_subnet_form(cni, tmp_path):
    c = conf(tmp_path, subnet="10.50.0.0/24", rangeStart="10.50.0.100", rangeEnd="10.50.0.110",
             gateway="10.50.0.254")
    assert add(cni, c, "a")["ips"] == [{"address": "10.50.0.100/24", "gateway": "10.50.0.254"}]


def test_same_attachment_twice_is_duplicate_allocation_but_another_ifname_is_not(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.10.0.0/24")]])
    add(cni, c, "a")
    reply = failure(cni, c, "a")
    assert "10.10.0.2 has been allocated to a/eth0, duplicate allocation is not allowed" in reply["msg"]
    assert addresses(add(cni, c, "a", ifname="eth1")) == ["10.10.0.3/24"]


# -- requested addresses ------------------------------------------------------------------------------

def test_cni_args_ip_reserves_requested_addresses_in_each_family(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.60.0.0/24")], [subnet("fd00:60::/64")]])
    result = add(cni, c, "a", args="IgnoreUnknown=1;K8S_POD_NAME=p;IP=fd00:60::99,10.60.0.50")
    assert addresses(result) == ["10.60.0.50/24", "fd00:60::99/64"]
    assert leases(tmp_path)["10.60.0.50"] == b"a\r\neth0"
    # The cursor follows requested addresses too, as the reference does.
    assert (lease_dir(tmp_path) / "last_reserved_ip.0").read_text() == "10.60.0.50"
    assert addresses(add(cni, c, "b"))[0] == "10.60.0.51/24"


def test_args_cni_ips_and_runtime_config_ips_are_requests(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.61.0.0/24")]])
    assert addresses(add(cni, dict(c, args={"cni": {"ips": ["10.61.0.7"]}}), "a")) == ["10.61.0.7/24"]
    assert addresses(add(cni, dict(c, runtimeConfig={"ips": ["10.61.0.8/24"]}), "b")) == ["10.61.0.8/24"]


def test_requested_address_already_taken_is_refused(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.62.0.0/24")]])
    add(cni, c, "a", args="IP=10.62.0.9")
    reply = failure(cni, c, "b", args="IP=10.62.0.9")
    assert reply["msg"] == "requested IP address 10.62.0.9 is not available in range set 10.62.0.1-10.62.0.254"
    assert leases(tmp_path) == {"10.62.0.9": b"a\r\neth0"}


def test_requested_address_outside_ranges_fails_and_rolls_back(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.63.0.0/24")], [subnet("fd00:63::/64")]])
    reply = failure(cni, c, "a", args="IP=10.99.0.9")
    assert reply["code"] == 7
    assert "requested IP address 10.99.0.9 is not in any range set" in reply["msg"]
    assert leases(tmp_path) == {}


def test_failure_in_a_later_range_set_releases_earlier_ones(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.63.0.0/24")], [subnet("fd00:63::/126")]])
    add(cni, c, "a")
    add(cni, c, "b")
    assert failure(cni, c, "c")["msg"] == "no IP addresses available in range set: fd00:63::1-fd00:63::3"
    assert sorted(leases(tmp_path)) == ["10.63.0.2", "10.63.0.3", "fd00:63::2", "fd00:63::3"]


def test_requested_gateway_is_refused(cni, tmp_path):
    reply = failure(cni, conf(tmp_path, [[subnet("10.64.0.0/24")]]), "a", args="IP=10.64.0.1")
    assert reply["code"] == 7 and "gateway" in reply["msg"]


def test_malformed_requested_ip_is_rejected(cni, tmp_path):
    reply = failure(cni, conf(tmp_path, [[subnet("10.64.0.0/24")]]), "a", args="IP=10.64.0.500")
    assert reply["code"] == 4 and "CNI_ARGS IP" in reply["msg"] and "10.64.0.500" in reply["msg"]


def test_unknown_cni_args_fail_unless_ignore_unknown(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.65.0.0/24")]])
    assert failure(cni, c, "a", args="FOO=1")["code"] == 4
    assert addresses(add(cni, c, "a", args="IgnoreUnknown=1;FOO=1")) == ["10.65.0.2/24"]


def test_runtime_config_ip_ranges_replace_configured_ranges(cni, tmp_path):
    c = dict(conf(tmp_path, [[subnet("10.66.0.0/24")]]),
             runtimeConfig={"ipRanges": [[{"subnet": "10.67.0.0/24", "rangeStart": "10.67.0.20"}]]})
    assert add(cni, c, "a")["ips"] == [{"address": "10.67.0.20/24", "gateway": "10.67.0.1"}]


# -- result contents ----------------------------------------------------------------------------------

def test_routes_and_resolv_conf_reach_the_result(cni, tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# comment\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.test\n"
                      "search a.test b.test\noptions ndots:2 edns0\n; other comment\n")
    c = conf(tmp_path, [[subnet("10.70.0.0/24")]], version="1.1.0", resolvConf=str(resolv),
             routes=[{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.70.0.254", "priority": 5}])
    result = add(cni, c, "a")
    assert result["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.70.0.254", "priority": 5}]
    assert result["dns"] == {"nameservers": ["10.0.0.53", "fd00::53"], "domain": "example.test",
                             "search": ["a.test", "b.test"], "options": ["ndots:2", "edns0"]}


@pytest.mark.parametrize("version, has_version_field", [("0.3.1", True), ("0.4.0", True), ("1.0.0", False)])
def test_result_is_rendered_in_config_version(cni, tmp_path, version, has_version_field):
    result = add(cni, conf(tmp_path, [[subnet("10.71.0.0/24")], [subnet("fd00:71::/64")]], version=version), "a")
    assert result["cniVersion"] == version
    if has_version_field:
        assert [ip["version"] for ip in result["ips"]] == ["4", "6"]
    else:
        assert all("version" not in ip for ip in result["ips"])


# -- configuration errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("ranges, key, value", [
    ([[{"subnet": "10.0.0.0/31"}]], "ipam.ranges[0][0].subnet", "10.0.0.0/31"),
    ([[{"subnet": "10.0.0.0/32"}]], "ipam.ranges[0][0].subnet", "10.0.0.0/32"),
    ([[{"subnet": "fd00::/127"}]], "ipam.ranges[0][0].subnet", "fd00::/127"),
    ([[{"subnet": "fd00::/128"}]], "ipam.ranges[0][0].subnet", "fd00::/128"),
    ([[{"subnet": "10.0.0.0/33"}]], "ipam.ranges[0][0].subnet", "10.0.0.0/33"),
    ([[{"subnet": "nonsense"}]], "ipam.ranges[0][0].subnet", "nonsense"),
    ([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]], "ipam.ranges[0][0].rangeStart", "10.0.1.5"),
    ([[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.5"}]], "ipam.ranges[0][0].rangeEnd", "10.0.1.5"),
    ([[{"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}]], "ipam.ranges[0][0].gateway", "10.0.1.1"),
    ([[{"subnet": "10.0.0.0/24", "gateway": "fd00::1"}]], "ipam.ranges[0][0].gateway", "fd00::1"),
    ([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.5"}]],
     "ipam.ranges[0][0].rangeEnd", "10.0.0.5"),
    ([[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.128/25"}]], "ipam.ranges[0][1]", "10.0.0.128/25"),
    ([[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]], "ipam.ranges[0]", "mixed address families"),
    ([[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]], "ipam.ranges[1]", "overlaps"),
    ([[]], "ipam.ranges[0]", "[]"),
    ([], "ipam", "no IP ranges"),
])
def test_invalid_ranges_are_config_errors_naming_key_and_value(cni, tmp_path, ranges, key, value):
    reply = failure(cni, conf(tmp_path, ranges))
    assert reply["code"] == 7, reply
    assert key in reply["msg"] and value in reply["msg"], reply["msg"]
    assert not (tmp_path / "leases").exists()


def test_missing_ipam_section_and_bad_network_name_are_config_errors(cni, tmp_path):
    reply = failure(cni, {"cniVersion": "1.0.0", "name": NET, "type": "bridge"})
    assert reply["code"] == 7 and "ipam" in reply["msg"]
    reply = failure(cni, dict(conf(tmp_path, [[subnet("10.0.0.0/24")]]), name="../escape"))
    assert reply["code"] == 7 and "../escape" in reply["msg"]


def test_unreadable_resolv_conf_is_config_error(cni, tmp_path):
    missing = str(tmp_path / "nope.conf")
    reply = failure(cni, conf(tmp_path, [[subnet("10.0.0.0/24")]], resolvConf=missing))
    assert reply["code"] == 7 and "ipam.resolvConf" in reply["msg"] and missing in reply["msg"]


def test_unusable_data_dir_is_io_failure(cni, tmp_path):
    (tmp_path / "leases").write_text("not a directory")
    reply = failure(cni, conf(tmp_path, [[subnet("10.0.0.0/24")]]))
    assert reply["code"] == 5 and str(tmp_path / "leases") in reply["msg"]


# -- DEL and CHECK ------------------------------------------------------------------------------------

def test_del_releases_only_this_attachment_and_is_idempotent(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.80.0.0/24")], [subnet("fd00:80::/64")]])
    add(cni, c, "a")
    add(cni, c, "a", ifname="eth1")
    cni.delete("host-local", c, "/run/netns/unused", container_id="a", ifname="eth0")
    assert leases(tmp_path) == {"10.80.0.3": b"a\r\neth1", "fd00:80::3": b"a\r\neth1"}
    cni.delete("host-local", c, "/run/netns/unused", container_id="a", ifname="eth0")
    assert len(leases(tmp_path)) == 2


def test_del_with_nothing_ever_allocated_succeeds_without_creating_state(cni, tmp_path):
    cni.delete("host-local", conf(tmp_path, [[subnet("10.81.0.0/24")]]), "/run/netns/unused", container_id="a")
    assert not (tmp_path / "leases").exists()


def test_del_releases_lease_in_legacy_container_id_only_format(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.82.0.0/24")]])
    add(cni, c, "other")
    (lease_dir(tmp_path) / "10.82.0.77").write_text("legacy-ctr")
    cni.delete("host-local", c, "/run/netns/unused", container_id="legacy-ctr")
    assert sorted(leases(tmp_path)) == ["10.82.0.2"]


def test_check_passes_with_lease_and_fails_after_del(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.83.0.0/24")]], version="0.4.0")
    result = add(cni, c, "a")
    cni.check("host-local", dict(c, prevResult=result), "/run/netns/unused", container_id="a")
    cni.delete("host-local", c, "/run/netns/unused", container_id="a")
    reply = failure(cni, dict(c, prevResult=result), "a", command="CHECK")
    assert "a/eth0" in reply["msg"]


def test_check_notices_prev_result_address_not_leased(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.84.0.0/24")]])
    add(cni, c, "a")
    forged = {"cniVersion": "1.0.0", "ips": [{"address": "10.84.0.99/24"}]}
    reply = failure(cni, dict(c, prevResult=forged), "a", command="CHECK")
    assert "10.84.0.99" in reply["msg"]


# -- GC and STATUS ------------------------------------------------------------------------------------

def test_gc_releases_leases_of_unknown_attachments_only(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.90.0.0/24")]], version="1.1.0")
    add(cni, c, "keep")
    add(cni, c, "keep", ifname="eth1")
    add(cni, c, "gone")
    (lease_dir(tmp_path) / "10.90.0.100").write_text("keep")  # pre-ifname lease of a live container
    (lease_dir(tmp_path) / "10.90.0.101").write_text("stale")
    cni.gc("host-local", c, [{"containerID": "keep", "ifname": "eth0"}])
    assert sorted(leases(tmp_path)) == ["10.90.0.100", "10.90.0.2"]
    assert (lease_dir(tmp_path) / "lock").exists()
    assert (lease_dir(tmp_path) / "last_reserved_ip.0").exists()
    # Freed addresses are allocatable again.
    assert addresses(add(cni, c, "new", args="IP=10.90.0.3")) == ["10.90.0.3/24"]


def test_gc_with_empty_valid_list_releases_everything_and_rejects_malformed_list(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.91.0.0/24")]], version="1.1.0")
    add(cni, c, "a")
    cni.gc("host-local", c, [])
    assert leases(tmp_path) == {}
    with pytest.raises(PluginFailed) as err:
        cni.gc("host-local", c, [{"containerID": 5}])
    assert err.value.code == 7 and "cni.dev/valid-attachments" in err.value.msg


def test_status_reports_plugin_not_available_when_a_range_set_is_full(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.92.0.0/24")], [subnet("10.93.0.0/24", rangeStart="10.93.0.5",
                                                            rangeEnd="10.93.0.6")]], version="1.1.0")
    cni.status("host-local", c)  # nothing allocated, not even a directory yet
    add(cni, c, "a")
    cni.status("host-local", c)
    add(cni, c, "b")
    with pytest.raises(PluginFailed) as err:
        cni.status("host-local", c)
    assert err.value.code == 50 and "10.93.0.5-10.93.0.6" in err.value.msg
    cni.delete("host-local", c, "/run/netns/unused", container_id="a")
    cni.status("host-local", c)


def test_status_reports_unusable_data_dir(cni, tmp_path):
    (tmp_path / "leases").write_text("not a directory")
    with pytest.raises(PluginFailed) as err:
        cni.status("host-local", conf(tmp_path, [[subnet("10.94.0.0/24")]], version="1.1.0"))
    assert err.value.code == 50 and "dataDir" in err.value.msg


def test_status_rejects_invalid_config(cni, tmp_path):
    with pytest.raises(PluginFailed) as err:
        cni.status("host-local", conf(tmp_path, [[subnet("10.0.0.0/31")]], version="1.1.0"))
    assert err.value.code == 7


# -- crash safety and concurrency ---------------------------------------------------------------------

def test_leftover_temporary_of_a_crashed_writer_is_never_a_lease(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.95.0.0/24")]])
    add(cni, c, "a")
    (lease_dir(tmp_path) / ".pynet-tmp-1-dead").write_bytes(b"b\r\n")
    assert addresses(add(cni, c, "b")) == ["10.95.0.3/24"]
    assert sorted(os.listdir(lease_dir(tmp_path))) == ["10.95.0.2", "10.95.0.3", "last_reserved_ip.0", "lock"]


def test_fifty_concurrent_adds_get_fifty_distinct_addresses(cni, tmp_path):
    c = conf(tmp_path, [[subnet("10.96.0.0/24")], [subnet("fd00:96::/120")]])

    def one(i):
        return cni.invoke("host-local", "ADD", c, container="/run/netns/unused", container_id=f"ctr{i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        invocations = list(pool.map(one, range(50)))
    assert [inv.rc for inv in invocations] == [0] * 50, [inv.reply for inv in invocations if inv.rc]
    v4 = {inv.reply["ips"][0]["address"] for inv in invocations}
    v6 = {inv.reply["ips"][1]["address"] for inv in invocations}
    assert len(v4) == 50 and len(v6) == 50
    on_disk = leases(tmp_path)
    assert len(on_disk) == 100
    assert {on_disk[a.split("/")[0]] for a in v4} == {f"ctr{i}\r\neth0".encode() for i in range(50)}
