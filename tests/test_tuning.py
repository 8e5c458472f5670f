import json
import os

import pytest

from netns_fixtures import PluginFailed

IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200


@pytest.fixture
def ctr(container_ns):
    """A container netns holding eth0 (one end of a veth whose other end stays inside too)."""
    container_ns.ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "peer0"})
    return container_ns


def conf(tmp_path, **keys):
    prev = {"cniVersion": "1.0.0",
            "interfaces": [{"name": "br0", "mac": "02:00:00:00:00:01"},
                           {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.9.0.2/24", "interface": 1}]}
    c = {"cniVersion": "1.0.0", "name": "tune-net", "type": "tuning", "dataDir": str(tmp_path / "tuning"),
         "prevResult": prev}
    c.update(keys)
    return c


def link(ns, name="eth0"):
    msg = ns.link(name)
    return {"mac": msg.get_attr("IFLA_ADDRESS"), "mtu": msg.get_attr("IFLA_MTU"),
            "txqlen": msg.get_attr("IFLA_TXQLEN"), "promisc": bool(msg["flags"] & IFF_PROMISC),
            "allmulti": bool(msg["flags"] & IFF_ALLMULTI)}


def invoke_with_env(cni, command, c, ns, **extra_env):
    env = cni.env(command, ns, "eth0", "ctr1", "")
    env.update(extra_env)
    return cni.invoke("tuning", command, c, env=env)


def test_add_sets_link_attributes_and_del_restores_originals(cni, ctr, tmp_path):
    before = link(ctr)
    c = conf(tmp_path, mac="0a:58:0a:09:00:63", mtu=1400, promisc=True, allmulti=True, txQLen=123)
    result = cni.add("tuning", c, ctr)
    assert link(ctr) == {"mac": "0a:58:0a:09:00:63", "mtu": 1400, "txqlen": 123, "promisc": True, "allmulti": True}
    assert [i["mac"] for i in result["interfaces"]] == ["02:00:00:00:00:01", "0a:58:0a:09:00:63"]
    assert result["ips"] == c["prevResult"]["ips"]
    saved = json.loads((tmp_path / "tuning" / "ctr1_eth0.json").read_text())
    assert saved["link"] == {"mac": before["mac"], "mtu": before["mtu"], "promisc": False,
                             "allmulti": before["allmulti"], "txQLen": before["txqlen"]}
    cni.check("tuning", dict(c, prevResult=result), ctr)

    cni.delete("tuning", c, ctr)
    assert link(ctr) == before
    assert not (tmp_path / "tuning" / "ctr1_eth0.json").exists()
    cni.delete("tuning", c, ctr)  # idempotent


def test_sysctls_are_set_in_the_container_only_with_ifname_substituted(cni, ctr, host_ns, tmp_path):
    host_before = host_ns.sysctl("net/ipv4/conf/all/arp_ignore")
    c = conf(tmp_path, sysctl={"net.ipv4.conf.IFNAME.arp_ignore": "1", "net.ipv4.conf.all.arp_ignore": "2"})
    cni.add("tuning", c, ctr)
    assert ctr.sysctl("net/ipv4/conf/eth0/arp_ignore") == "1"
    assert ctr.sysctl("net/ipv4/conf/all/arp_ignore") == "2"
    assert host_ns.sysctl("net/ipv4/conf/all/arp_ignore") == host_before
    cni.check("tuning", c, ctr)
    ctr.set_sysctl("net/ipv4/conf/all/arp_ignore", "0")
    inv = cni.invoke("tuning", "CHECK", c, container=ctr)
    assert inv.rc != 0 and "arp_ignore" in inv.reply["msg"]


def test_non_net_sysctl_is_refused_with_invalid_config(cni, ctr, tmp_path):
    for key in ("kernel.hostname", "net/../kernel/hostname"):
        inv = cni.invoke("tuning", "ADD", conf(tmp_path, sysctl={key: "x"}), container=ctr)
        assert inv.rc != 0 and inv.reply["code"] == 7 and key in inv.reply["msg"]


def test_allowlist_file_limits_sysctls(cni, ctr, tmp_path):
    allow = tmp_path / "allowlist.conf"
    allow.write_text("^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n\n")
    ok = conf(tmp_path, sysctl={"net.ipv4.conf.IFNAME.arp_filter": "1"})
    inv = invoke_with_env(cni, "ADD", ok, ctr, PYNET_TUNING_ALLOWLIST=str(allow))
    assert inv.rc == 0, inv.reply
    assert ctr.sysctl("net/ipv4/conf/eth0/arp_filter") == "1"

    bad = conf(tmp_path, sysctl={"net.ipv4.ip_forward": "1"})
    inv = invoke_with_env(cni, "ADD", bad, ctr, PYNET_TUNING_ALLOWLIST=str(allow))
    assert inv.rc != 0 and inv.reply["code"] == 7 and "net.ipv4.ip_forward" in inv.reply["msg"]
    assert ctr.sysctl("net/ipv4/ip_forward") == "0"
    # no allowlist file: every net.* sysctl is allowed
    inv = invoke_with_env(cni, "ADD", bad, ctr, PYNET_TUNING_ALLOWLIST=str(tmp_path / "absent.conf"))
    assert inv.rc == 0, inv.reply
    assert ctr.sysctl("net/ipv4/ip_forward") == "1"


def test_mac_from_cni_args_and_args_cni_override_config(cni, ctr, tmp_path):
    c = conf(tmp_path, mac="0a:58:00:00:00:01")
    cni.add("tuning", c, ctr, args="IgnoreUnknown=1;MAC=0a:58:00:00:00:02")
    assert link(ctr)["mac"] == "0a:58:00:00:00:02"
    c2 = conf(tmp_path, mac="0a:58:00:00:00:01", args={"cni": {"mac": "0a:58:00:00:00:03", "mtu": 1300}})
    result = cni.add("tuning", c2, ctr, container_id="ctr2")
    assert link(ctr)["mac"] == "0a:58:00:00:00:03" and link(ctr)["mtu"] == 1300
    assert result["interfaces"][1]["mac"] == "0a:58:00:00:00:03"


def test_failed_add_puts_back_what_it_changed(cni, ctr, tmp_path):
    before = link(ctr)
    c = conf(tmp_path, mtu=1400, sysctl={"net.ipv4.conf.IFNAME.no_such_knob": "1"})
    ctr.set_sysctl("net/ipv4/conf/eth0/arp_ignore", "0")
    inv = cni.invoke("tuning", "ADD", c, container=ctr)
    assert inv.rc != 0 and inv.reply["code"] == 7 and "no_such_knob" in inv.reply["msg"]
    assert link(ctr) == before
    # the kernel refuses an MTU above the veth maximum after the sysctl was written: both are undone
    c = conf(tmp_path, mtu=70000, sysctl={"net.ipv4.conf.IFNAME.arp_ignore": "1"})
    inv = cni.invoke("tuning", "ADD", c, container=ctr)
    assert inv.rc != 0 and "mtu" in inv.reply["msg"]
    assert ctr.sysctl("net/ipv4/conf/eth0/arp_ignore") == "0"
    assert link(ctr) == before
    assert os.listdir(tmp_path / "tuning") == []


def test_add_needs_prev_result(cni, ctr, tmp_path):
    c = conf(tmp_path, mtu=1400)
    del c["prevResult"]
    inv = cni.invoke("tuning", "ADD", c, container=ctr)
    assert inv.rc != 0 and inv.reply["code"] == 7 and "prevResult" in inv.reply["msg"]


def test_invalid_mac_names_key_and_value(cni, ctr, tmp_path):
    inv = cni.invoke("tuning", "ADD", conf(tmp_path, mac="zz:00"), container=ctr)
    assert inv.rc != 0 and inv.reply["code"] == 7 and "mac" in inv.reply["msg"] and "zz:00" in inv.reply["msg"]


def test_del_after_netns_deleted_drops_saved_file(cni, make_netns, tmp_path):
    ns = make_netns()
    ns.ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "peer0"})
    c = conf(tmp_path, mtu=1400)
    cni.add("tuning", c, ns)
    saved = tmp_path / "tuning" / "ctr1_eth0.json"
    assert saved.exists()
    path = ns.path
    ns.remove()
    cni.delete("tuning", c, path)
    assert not saved.exists()
    cni.delete("tuning", c, path)


def test_check_notices_changed_mtu(cni, ctr, tmp_path):
    c = conf(tmp_path, mtu=1400)
    cni.add("tuning", c, ctr)
    cni.check("tuning", c, ctr)
    ctr.ipr.link("set", index=ctr.ipr.link_lookup(ifname="eth0")[0], mtu=1500)
    with pytest.raises(PluginFailed) as err:
        cni.check("tuning", c, ctr)
    assert "mtu" in err.value.msg


def test_repeated_add_keeps_the_first_originals(cni, ctr, tmp_path):
    before = link(ctr)
    cni.add("tuning", conf(tmp_path, mtu=1400), ctr)
    cni.add("tuning", conf(tmp_path, mtu=1300, txQLen=50), ctr)
    assert link(ctr)["mtu"] == 1300 and link(ctr)["txqlen"] == 50
    cni.delete("tuning", conf(tmp_path), ctr)
    assert link(ctr) == before
