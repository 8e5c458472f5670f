from netns_fixtures import icmp_echo

CONF = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}


def test_add_brings_lo_up_and_reports_loopback_addresses(cni, container_ns):
    container_ns.ipr.link("set", index=1, state="down")
    assert not icmp_echo(container_ns, "127.0.0.1", timeout=0.5, attempts=1)
    result = cni.add("loopback", CONF, container_ns)
    assert container_ns.link("lo")["flags"] & 1
    assert icmp_echo(container_ns, "127.0.0.1")
    assert result["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": container_ns.path}]
    assert [ip["address"] for ip in result["ips"]] == ["127.0.0.1/8", "::1/128"]
    assert "version" not in result["ips"][0]


def test_result_in_0_3_1_carries_ip_version(cni, container_ns):
    result = cni.add("loopback", dict(CONF, cniVersion="0.3.1"), container_ns)
    assert result["cniVersion"] == "0.3.1"
    assert [ip["version"] for ip in result["ips"]] == ["4", "6"]


def test_del_brings_lo_down_and_check_notices(cni, container_ns):
    cni.add("loopback", CONF, container_ns)
    cni.check("loopback", CONF, container_ns)
    cni.delete("loopback", CONF, container_ns)
    assert not container_ns.link("lo")["flags"] & 1
    inv = cni.invoke("loopback", "CHECK", CONF, container=container_ns)
    assert inv.rc != 0 and "down" in inv.reply["msg"]


def test_del_succeeds_when_netns_is_gone(cni, make_netns):
    ns = make_netns()
    path = ns.path
    ns.remove()
    cni.delete("loopback", CONF, path)
    cni.delete("loopback", CONF, path)


def test_add_into_vanished_netns_is_unknown_container(cni):
    inv = cni.invoke("loopback", "ADD", CONF, container="/run/netns/pynet-does-not-exist")
    assert inv.rc != 0
    assert inv.reply["code"] == 3 and "does not exist" in inv.reply["msg"]
