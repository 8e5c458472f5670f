"""static IPAM driven through its executable."""

import pytest

NET = "static-net"
NS = "/run/netns/unused"  # static never looks at the netns


def conf(version="1.0.0", **ipam):
    return {"cniVersion": version, "name": NET, "type": "bridge", "ipam": dict(type="static", **ipam)}


def failure(cni, c, command="ADD", **kw):
    inv = cni.invoke("static", command, c, container=NS, **kw)
    assert inv.rc != 0, inv.reply
    return inv.reply


def test_add_returns_configured_addresses_routes_and_dns(cni, container_ns):
    c = conf(version="1.1.0",
             addresses=[{"address": "10.130.0.5/24", "gateway": "10.130.0.1"}, {"address": "fd00:130::5/64"}],
             routes=[{"dst": "0.0.0.0/0", "gw": "10.130.0.1"}, {"dst": "fd00:1::/64", "table": 100}],
             dns={"nameservers": ["10.130.0.53"], "domain": "example.test", "search": ["example.test"],
                  "options": ["ndots:1"]})
    result = cni.add("static", c, container_ns)
    assert result == {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.130.0.5/24", "gateway": "10.130.0.1"}, {"address": "fd00:130::5/64"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.130.0.1"}, {"dst": "fd00:1::/64", "table": 100}],
        "dns": {"nameservers": ["10.130.0.53"], "domain": "example.test", "search": ["example.test"],
                "options": ["ndots:1"]},
    }


def test_result_in_0_3_1_carries_ip_version(cni):
    c = conf(version="0.3.1", addresses=[{"address": "10.130.0.5/24"}, {"address": "fd00:130::5/64"}])
    result = cni.add("static", c, NS)
    assert [ip["version"] for ip in result["ips"]] == ["4", "6"]


def test_cni_args_ip_adds_addresses_and_gateway_applies_to_those_containing_it(cni):
    c = conf(addresses=[{"address": "10.131.0.5/24"}])
    result = cni.add("static", c, NS, args="IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.132.0.5/24, fd00:132::5/64;"
                                            "GATEWAY=10.132.0.1,fd00:132::1,10.131.0.1")
    # As in the reference: GATEWAY= only concerns the addresses given by IP=.
    assert result["ips"] == [{"address": "10.131.0.5/24"},
                             {"address": "10.132.0.5/24", "gateway": "10.132.0.1"},
                             {"address": "fd00:132::5/64", "gateway": "fd00:132::1"}]


def test_args_cni_ips_and_then_runtime_config_ips_replace_addresses(cni):
    c = conf(addresses=[{"address": "10.133.0.5/24", "gateway": "10.133.0.1"}])
    with_args = dict(c, args={"cni": {"ips": ["10.134.0.5/24"]}})
    assert cni.add("static", with_args, NS, args="IP=10.135.0.5/24")["ips"] == [{"address": "10.134.0.5/24"}]
    with_rc = dict(with_args, runtimeConfig={"ips": ["10.136.0.5/24", "fd00:136::5/64"]})
    assert [ip["address"] for ip in cni.add("static", with_rc, NS)["ips"]] == ["10.136.0.5/24", "fd00:136::5/64"]


@pytest.mark.parametrize("ipam, key, value", [
    ({"addresses": [{"address": "10.0.0.5"}]}, "ipam.addresses[0].address", "10.0.0.5"),
    ({"addresses": [{"address": "10.0.0.500/24"}]}, "ipam.addresses[0].address", "10.0.0.500/24"),
    ({"addresses": [{"address": "10.0.0.5/24", "gateway": "nope"}]}, "ipam.addresses[0].gateway", "nope"),
    ({"addresses": [{"address": "10.0.0.5/24", "gateway": "fd00::1"}]}, "ipam.addresses[0].gateway", "fd00::1"),
    ({"addresses": "10.0.0.5/24"}, "ipam.addresses", "10.0.0.5/24"),
    ({"routes": [{"dst": "bogus"}]}, "ipam.routes[0].dst", "bogus"),
    ({"routes": [{"dst": "10.0.0.0/8", "gw": "fd00::1"}]}, "ipam.routes[0].gw", "fd00::1"),
    ({"dns": {"nameservers": "10.0.0.53"}}, "ipam.dns.nameservers", "10.0.0.53"),
])
def test_invalid_config_is_code_7_naming_key_and_value(cni, ipam, key, value):
    reply = failure(cni, conf(**ipam))
    assert reply["code"] == 7, reply
    assert key in reply["msg"] and value in reply["msg"], reply["msg"]


def test_invalid_runtime_ips_and_cni_args_are_rejected(cni):
    reply = failure(cni, dict(conf(), runtimeConfig={"ips": ["10.0.0.5"]}))
    assert reply["code"] == 7 and "runtimeConfig.ips[0]" in reply["msg"]
    reply = failure(cni, conf(), args="IP=10.0.0.5")
    assert reply["code"] == 4 and "CNI_ARGS IP" in reply["msg"]
    reply = failure(cni, conf(), args="IP=10.0.0.5/24;GATEWAY=x")
    assert reply["code"] == 4 and "CNI_ARGS GATEWAY" in reply["msg"]
    assert failure(cni, conf(), args="FOO=1")["code"] == 4


def test_missing_ipam_section_is_config_error(cni):
    reply = failure(cni, {"cniVersion": "1.0.0", "name": NET, "type": "bridge"})
    assert reply["code"] == 7 and "ipam" in reply["msg"]


def test_del_is_a_successful_no_op(cni, make_netns):
    ns = make_netns()
    path = ns.path
    ns.remove()
    cni.delete("static", conf(addresses=[{"address": "10.137.0.5/24"}]), path)


def test_check_compares_config_with_prev_result(cni):
    c = conf(addresses=[{"address": "10.138.0.5/24", "gateway": "10.138.0.1"}])
    result = cni.add("static", c, NS)
    cni.check("static", dict(c, prevResult=result), NS)
    wrong_gw = {"cniVersion": "1.0.0", "ips": [{"address": "10.138.0.5/24", "gateway": "10.138.0.254"}]}
    assert "gateway" in failure(cni, dict(c, prevResult=wrong_gw), command="CHECK")["msg"]
    missing = {"cniVersion": "1.0.0", "ips": [{"address": "10.139.0.5/24"}]}
    assert "10.138.0.5/24" in failure(cni, dict(c, prevResult=missing), command="CHECK")["msg"]
    assert "prevResult" in failure(cni, c, command="CHECK")["msg"]
