"""tap: a persistent tap device created in the container netns, asserted over netlink (kind tun, IFLA_TUN_*
flags, owner, group, MAC, MTU, master, addresses) and through a process attaching to it."""

from __future__ import annotations

import fcntl
import os
import struct

import pytest

from cni_plugins.tap.tuntap import IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, TUNSETIFF

IFF_UP = 0x1
VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def conf(tmp_path, version="1.0.0", ipam=None, **keys) -> dict:
    c = {"cniVersion": version, "name": "tapnet", "type": "tap"}
    if ipam:
        c["ipam"] = ipam
    c.update(keys)
    return c


def host_local(tmp_path, **extra) -> dict:
    return {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "ranges": [[{"subnet": "10.79.0.0/24"}]],
            **extra}


def leases(tmp_path) -> list[str]:
    d = tmp_path / "ipam" / "tapnet"
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []


def tun_info(ns, name="eth0") -> dict:
    """kind and IFLA_TUN_* of a link, keys without prefix in lower case."""
    msg = ns.link(name)
    info = msg.get_attr("IFLA_LINKINFO")
    out = {"kind": info.get_attr("IFLA_INFO_KIND")}
    data = info.get_attr("IFLA_INFO_DATA")
    if data is not None:
        out.update({k[len("IFLA_TUN_"):].lower(): v for k, v in data["attrs"] if k.startswith("IFLA_TUN_")})
    return out


def tuns(ns) -> list[str]:
    return [m.get_attr("IFLA_IFNAME") for m in ns.ipr.get_links()
            if (m.get_attr("IFLA_LINKINFO") is not None
                and m.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "tun")]


@pytest.mark.parametrize("version", VERSIONS)
def test_add_creates_a_persistent_tap_with_the_configured_attributes(cni, host_ns, container_ns, tmp_path, version):
    host_links = host_ns.link_names()
    c = conf(tmp_path, version, mac="0a:58:0a:4f:00:09", mtu=1450, multiQueue=True, owner=1234, group=5678)
    result = cni.add("tap", c, container_ns)
    assert result["cniVersion"] == version
    assert result["interfaces"] == [{"name": "eth0", "mac": "0a:58:0a:4f:00:09", "sandbox": container_ns.path}]
    info = tun_info(container_ns)
    assert info["kind"] == "tun" and info["type"] == 2            # IFF_TAP
    assert info["owner"] == 1234 and info["group"] == 5678
    assert info["multi_queue"] == 1 and info["pi"] == 0
    assert info["persist"] == 1                                  # no process holds it, and it stays
    msg = container_ns.link("eth0")
    assert msg.get_attr("IFLA_ADDRESS") == "0a:58:0a:4f:00:09" and msg.get_attr("IFLA_MTU") == 1450
    assert msg["flags"] & IFF_UP
    assert host_ns.link_names() == host_links                    # born in the container, never on the host
    if version != "0.3.1":
        cni.check("tap", dict(c, prevResult=result), container_ns)

    cni.delete("tap", dict(c, prevResult=result), container_ns)
    assert "eth0" not in container_ns.link_names()
    cni.delete("tap", dict(c, prevResult=result), container_ns)   # a second DEL


def test_defaults_no_owner_single_queue_and_a_process_can_attach(cni, container_ns, tmp_path):
    cni.add("tap", conf(tmp_path), container_ns)
    info = tun_info(container_ns)
    assert "owner" not in info and "group" not in info           # nobody's: the kernel reports no owner
    assert info["multi_queue"] == 0 and info["persist"] == 1
    assert container_ns.link("eth0").get_attr("IFLA_MTU") == 1500
    # a VM's process attaches to the tap by name in the container netns
    with container_ns.entered():
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", b"eth0", IFF_TAP | IFF_NO_PI))
        with pytest.raises(OSError):   # a multi-queue attach to a single-queue tap is refused
            with container_ns.entered():
                fd2 = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd2, TUNSETIFF, struct.pack("16sH22x", b"eth0", IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE))
            finally:
                os.close(fd2)
    finally:
        os.close(fd)
    assert "eth0" in container_ns.link_names()                   # still there after the process let go


def test_ipam_addresses_on_the_tap_and_del_releases_the_lease(cni, container_ns, tmp_path):
    c = conf(tmp_path, ipam=host_local(tmp_path, routes=[{"dst": "10.201.0.0/16"}]), dns={"search": ["tap.test"]})
    result = cni.add("tap", c, container_ns)
    assert result["ips"] == [{"address": "10.79.0.2/24", "gateway": "10.79.0.1", "interface": 0}]
    assert result["dns"] == {"search": ["tap.test"]}
    assert container_ns.addresses("eth0") == ["10.79.0.2/24"]
    assert {"dst": "10.201.0.0/16", "gw": "10.79.0.1", "dev": "eth0"} in container_ns.routes()
    assert container_ns.sysctl("net/ipv4/conf/eth0/arp_notify") == "1"
    assert leases(tmp_path) == ["10.79.0.2"]
    cni.check("tap", dict(c, prevResult=result), container_ns)
    index = container_ns.ipr.link_lookup(ifname="eth0")[0]
    container_ns.ipr.addr("del", index=index, address="10.79.0.2", prefixlen=24)
    inv = cni.invoke("tap", "CHECK", dict(c, prevResult=result), container=container_ns)
    assert inv.rc != 0 and "10.79.0.2/24" in inv.reply["msg"]

    cni.delete("tap", dict(c, prevResult=result), container_ns)
    assert leases(tmp_path) == [] and tuns(container_ns) == []


def test_failed_ipam_leaves_nothing(cni, container_ns, tmp_path):
    inv = cni.invoke("tap", "ADD", conf(tmp_path, ipam={"type": "no-such-ipam"}), container=container_ns)
    assert inv.rc != 0 and "no-such-ipam" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"]
    ipam = host_local(tmp_path, routes=[{"dst": "10.201.0.0/16", "gw": "10.250.0.1"}])
    inv = cni.invoke("tap", "ADD", conf(tmp_path, ipam=ipam), container=container_ns)
    assert inv.rc != 0 and "10.201.0.0/16" in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"] and leases(tmp_path) == []


def test_bridge_makes_the_tap_a_port_of_a_bridge_in_the_container(cni, container_ns, tmp_path):
    container_ns.ipr.link("add", ifname="br0", kind="bridge")
    cni.add("tap", conf(tmp_path, bridge="br0"), container_ns)
    assert container_ns.link("eth0").get_attr("IFLA_MASTER") == container_ns.ipr.link_lookup(ifname="br0")[0]
    cni.delete("tap", conf(tmp_path, bridge="br0"), container_ns)
    assert container_ns.link_names() == ["lo", "br0"]


def test_missing_bridge_fails_and_leaves_no_tap(cni, container_ns, tmp_path):
    container_ns.ipr.link("add", ifname="notbr", kind="veth", peer={"ifname": "notbr-p"})
    for name in ("nobr0", "notbr"):
        inv = cni.invoke("tap", "ADD", conf(tmp_path, bridge=name), container=container_ns)
        assert inv.rc != 0 and name in inv.reply["msg"]
        assert tuns(container_ns) == []


def test_mac_from_runtime_config_wins_over_cni_args_and_config(cni, container_ns, tmp_path):
    c = conf(tmp_path, mac="0a:58:00:00:00:01")
    r = cni.add("tap", c, container_ns, args="MAC=0a:58:00:00:00:02")
    assert r["interfaces"][0]["mac"] == "0a:58:00:00:00:02"
    cni.delete("tap", c, container_ns)
    c = dict(c, runtimeConfig={"mac": "0a:58:00:00:00:03"})
    r = cni.add("tap", c, container_ns, args="MAC=0a:58:00:00:00:02")
    assert r["interfaces"][0]["mac"] == "0a:58:00:00:00:03"
    assert container_ns.link("eth0").get_attr("IFLA_ADDRESS") == "0a:58:00:00:00:03"


@pytest.mark.parametrize("keys, named", [
    ({"mtu": 70000}, ["mtu", "70000"]),
    ({"mtu": 20}, ["mtu", "20"]),
    ({"owner": -1}, ["owner", "-1"]),
    ({"group": "wheel"}, ["group", "wheel"]),
    ({"mac": "zz:00:00:00:00:01"}, ["mac", "zz:00:00:00:00:01"]),
    ({"multiQueue": "yes"}, ["multiQueue", "yes"]),
    ({"bridge": "a/b"}, ["bridge", "a/b"]),
    ({"selinuxContext": "system_u:system_r:container_t:s0"}, ["selinuxContext"]),
    ({"runtimeConfig": {"mac": "01:00:5e:00:00:01"}}, ["runtimeConfig.mac", "01:00:5e:00:00:01"]),
])
def test_bad_config_is_code_7_naming_the_key_and_creates_nothing(cni, container_ns, tmp_path, keys, named):
    inv = cni.invoke("tap", "ADD", conf(tmp_path, **keys), container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7, inv.reply
    for word in named:
        assert word in inv.reply["msg"], inv.reply["msg"]
    assert container_ns.link_names() == ["lo"]


def test_ifname_taken_fails_and_del_leaves_a_link_that_is_not_a_tap(cni, container_ns, tmp_path):
    container_ns.ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "peer0"})
    inv = cni.invoke("tap", "ADD", conf(tmp_path), container=container_ns)
    assert inv.rc != 0 and "eth0" in inv.reply["msg"]
    assert tuns(container_ns) == []
    cni.delete("tap", conf(tmp_path), container_ns)
    assert "eth0" in container_ns.link_names()


def test_del_after_netns_deleted_releases_lease(cni, make_netns, tmp_path):
    ctr = make_netns()
    c = conf(tmp_path, ipam=host_local(tmp_path))
    cni.add("tap", c, ctr)
    path = ctr.path
    ctr.remove()
    cni.delete("tap", c, path)
    assert leases(tmp_path) == []


def test_gc_and_status_go_to_ipam(cni, make_netns, tmp_path):
    c = conf(tmp_path, "1.1.0", ipam=host_local(tmp_path))
    cni.add("tap", c, make_netns(), container_id="ctr-a")
    cni.add("tap", c, make_netns(), container_id="ctr-b")
    assert leases(tmp_path) == ["10.79.0.2", "10.79.0.3"]
    cni.gc("tap", c, [{"containerID": "ctr-b", "ifname": "eth0"}])
    assert leases(tmp_path) == ["10.79.0.3"]
    cni.status("tap", c)


def test_add_and_del_through_the_daemon(daemon_cni, container_ns, tmp_path):
    c = conf(tmp_path, ipam=host_local(tmp_path), owner=0, group=0)
    result = daemon_cni.add("tap", c, container_ns)
    assert result["interfaces"][0]["name"] == "eth0"
    assert tun_info(container_ns)["type"] == 2 and tun_info(container_ns)["owner"] == 0
    assert container_ns.addresses("eth0") == ["10.79.0.2/24"]
    daemon_cni.delete("tap", dict(c, prevResult=result), container_ns)
    assert tuns(container_ns) == [] and leases(tmp_path) == []
