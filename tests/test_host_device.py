"""host-device: a veth end made in the sandbox host netns moved into a container and back, asserted on kernel
state (name, alias, MTU, addresses, up) and on traffic to its peer left in the sandbox host."""

from __future__ import annotations

import json
import os

import pytest

from cni_plugins.skel import build_request
from cni_plugins.host_device import config as hconf
from cni_plugins.host_device import lookup
from netns_fixtures import icmp_echo

IFF_UP = 0x1
VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
HOST_ADDRS = ["10.77.0.1/24", "fd77::1/64"]


class Dev:
    """The host device under test (one end of a veth; its peer stays in the sandbox host with 10.77.0.2)."""

    def __init__(self, host, name, peer):
        self.host, self.name, self.peer = host, name, peer
        self.mac = host.link(name).get_attr("IFLA_ADDRESS")


@pytest.fixture
def dev(host_ns):
    tag = os.urandom(4).hex()
    name, peer = "hd" + tag, "hp" + tag
    host_ns.ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer}, mtu=1400)
    for ifname, addrs in ((name, HOST_ADDRS), (peer, ["10.77.0.2/24"])):
        index = host_ns.ipr.link_lookup(ifname=ifname)[0]
        for a in addrs:
            ip, plen = a.split("/")
            host_ns.ipr.addr("add", index=index, address=ip, prefixlen=int(plen),
                             **({"flags": 0x02} if ":" in ip else {}))
        host_ns.ipr.link("set", index=index, state="up")
    return Dev(host_ns, name, peer)


def conf(tmp_path, version="1.0.0", ipam=None, **keys) -> dict:
    c = {"cniVersion": version, "name": "hdnet", "type": "host-device", "dataDir": str(tmp_path / "hd")}
    if ipam:
        c["ipam"] = ipam
    c.update(keys)
    return c


def host_local(tmp_path, subnet="10.78.0.0/24", **extra) -> dict:
    return {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "ranges": [[{"subnet": subnet}]], **extra}


def leases(tmp_path) -> list[str]:
    d = tmp_path / "ipam" / "hdnet"
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.exists() else []


def state_files(tmp_path) -> list[str]:
    d = tmp_path / "hd"
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else []


def assert_on_host_as_before(dev, up=None):
    msg = dev.host.link(dev.name)
    assert msg is not None, f"{dev.name} is not back on the host"
    assert msg.get_attr("IFLA_ADDRESS") == dev.mac
    assert msg.get_attr("IFLA_MTU") == 1400
    assert not msg.get_attr("IFLA_IFALIAS")
    assert sorted(dev.host.addresses(dev.name)) == sorted(HOST_ADDRS)
    if up is not None:
        assert bool(msg["flags"] & IFF_UP) == up


@pytest.mark.parametrize("version", VERSIONS)
def test_add_moves_device_in_with_addresses_and_del_puts_it_back(cni, dev, container_ns, tmp_path, version):
    result = cni.add("host-device", conf(tmp_path, version, device=dev.name), container_ns)
    assert result["cniVersion"] == version
    assert result["interfaces"] == [{"name": "eth0", "mac": dev.mac, "sandbox": container_ns.path}]
    assert "ips" not in result
    assert dev.host.link(dev.name) is None
    moved = container_ns.link("eth0")
    assert moved.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "veth"
    assert moved.get_attr("IFLA_ADDRESS") == dev.mac and moved.get_attr("IFLA_MTU") == 1400
    assert moved.get_attr("IFLA_IFALIAS") == dev.name
    assert moved["flags"] & IFF_UP
    assert sorted(container_ns.addresses("eth0")) == sorted(HOST_ADDRS)
    # traffic from the container over the moved device to its peer in the sandbox host
    assert icmp_echo(container_ns, "10.77.0.2")
    if version != "0.3.1":
        cni.check("host-device", conf(tmp_path, version, device=dev.name, prevResult=result), container_ns)

    cni.delete("host-device", conf(tmp_path, version, device=dev.name, prevResult=result), container_ns)
    assert "eth0" not in container_ns.link_names()
    assert_on_host_as_before(dev, up=False)   # left down, as the reference leaves it
    assert state_files(tmp_path) == []
    cni.delete("host-device", conf(tmp_path, version, device=dev.name), container_ns)   # a second DEL
    assert_on_host_as_before(dev)


def test_ipam_addresses_go_on_top_and_del_releases_the_lease(cni, dev, container_ns, tmp_path):
    c = conf(tmp_path, ipam=host_local(tmp_path, routes=[{"dst": "10.200.0.0/16", "gw": "10.78.0.1"}]),
             device=dev.name, dns={"nameservers": ["10.78.0.53"]})
    result = cni.add("host-device", c, container_ns)
    assert result["ips"] == [{"address": "10.78.0.2/24", "gateway": "10.78.0.1", "interface": 0}]
    assert result["routes"] == [{"dst": "10.200.0.0/16", "gw": "10.78.0.1"}]
    assert result["dns"] == {"nameservers": ["10.78.0.53"]}
    assert sorted(container_ns.addresses("eth0")) == sorted(HOST_ADDRS + ["10.78.0.2/24"])
    assert {"dst": "10.200.0.0/16", "gw": "10.78.0.1", "dev": "eth0"} in container_ns.routes()
    assert leases(tmp_path) == ["10.78.0.2"]
    cni.check("host-device", dict(c, prevResult=result), container_ns)

    cni.delete("host-device", dict(c, prevResult=result), container_ns)
    assert leases(tmp_path) == []
    assert_on_host_as_before(dev)
    assert "10.78.0.2/24" not in dev.host.addresses(dev.name)


def test_check_fails_when_an_address_or_the_device_is_missing(cni, dev, container_ns, tmp_path):
    c = conf(tmp_path, ipam=host_local(tmp_path), device=dev.name)
    result = cni.add("host-device", c, container_ns)
    inv = cni.invoke("host-device", "CHECK", c, container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7 and "prevResult" in inv.reply["msg"]
    index = container_ns.ipr.link_lookup(ifname="eth0")[0]
    container_ns.ipr.addr("del", index=index, address="10.78.0.2", prefixlen=24)
    inv = cni.invoke("host-device", "CHECK", dict(c, prevResult=result), container=container_ns)
    assert inv.rc != 0 and "10.78.0.2/24" in inv.reply["msg"]
    inv = cni.invoke("host-device", "CHECK", dict(c, prevResult=result), container=container_ns, ifname="eth1")
    assert inv.rc != 0 and "eth1" in inv.reply["msg"]


def test_failed_ipam_puts_the_device_back_under_its_original_name(cni, dev, container_ns, tmp_path):
    inv = cni.invoke("host-device", "ADD", conf(tmp_path, ipam={"type": "no-such-ipam"}, device=dev.name),
                     container=container_ns)
    assert inv.rc != 0 and "no-such-ipam" in inv.reply["msg"]
    assert "eth0" not in container_ns.link_names()
    assert_on_host_as_before(dev, up=True)   # as ADD found it, up included
    assert state_files(tmp_path) == []


def test_failure_after_ipam_releases_the_lease_and_puts_the_device_back(cni, dev, container_ns, tmp_path):
    # the route's gateway is not on any subnet of the container: adding it fails after IPAM allocated
    ipam = host_local(tmp_path, routes=[{"dst": "10.200.0.0/16", "gw": "10.250.0.1"}])
    inv = cni.invoke("host-device", "ADD", conf(tmp_path, ipam=ipam, device=dev.name), container=container_ns)
    assert inv.rc != 0 and "10.200.0.0/16" in inv.reply["msg"]
    assert leases(tmp_path) == []
    assert "eth0" not in container_ns.link_names()
    assert_on_host_as_before(dev, up=True)


def test_del_after_netns_deleted_releases_lease(cni, dev, make_netns, tmp_path):
    ctr = make_netns()
    c = conf(tmp_path, ipam=host_local(tmp_path), device=dev.name)
    result = cni.add("host-device", c, ctr)
    assert leases(tmp_path) == ["10.78.0.2"]
    path = ctr.path
    ctr.remove()   # a veth is destroyed with its netns (a physical device would go to the initial netns)
    cni.delete("host-device", dict(c, prevResult=result), path)
    assert leases(tmp_path) == []
    assert state_files(tmp_path) == []
    assert dev.host.link(dev.name) is None and dev.host.link(dev.peer) is None
    cni.delete("host-device", dict(c, prevResult=result), path)


def test_del_after_netns_deleted_renames_a_device_the_kernel_returned(cni, dev, make_netns, tmp_path):
    """A physical device outlives its netns: the kernel puts it in the initial netns under its container
    name, alias kept. Here that return is done by hand (the sandbox host is not the initial netns)."""
    ctr = make_netns()
    c = conf(tmp_path, ipam=host_local(tmp_path), device=dev.name)
    result = cni.add("host-device", c, ctr)
    host_fd = os.open(dev.host.path, os.O_RDONLY)
    try:
        ctr.ipr.link("set", index=ctr.ipr.link_lookup(ifname="eth0")[0], net_ns_fd=host_fd)
    finally:
        os.close(host_fd)
    path = ctr.path
    ctr.remove()
    assert dev.host.link("eth0").get_attr("IFLA_IFALIAS") == dev.name
    cni.delete("host-device", dict(c, prevResult=result), path)
    assert "eth0" not in dev.host.link_names()
    assert_on_host_as_before(dev, up=False)
    assert leases(tmp_path) == [] and state_files(tmp_path) == []


def test_reference_del_after_netns_deleted_fails_and_keeps_the_lease(ref_cni, dev, make_netns, tmp_path):
    """What ours does differently (plugins#1196): the reference's DEL fails without the netns."""
    ctr = make_netns()
    c = conf(tmp_path, ipam=host_local(tmp_path), device=dev.name)
    ref_cni.add("host-device", c, ctr)
    path = ctr.path
    ctr.remove()
    inv = ref_cni.invoke("host-device", "DEL", c, container=path)
    assert inv.rc != 0
    assert leases(tmp_path) == ["10.78.0.2"]


def test_lookup_by_hwaddr(cni, dev, container_ns, tmp_path):
    c = conf(tmp_path, hwaddr=dev.mac.upper().replace(":", "-"))
    result = cni.add("host-device", c, container_ns)
    assert result["interfaces"][0]["mac"] == dev.mac
    assert container_ns.link("eth0").get_attr("IFLA_IFALIAS") == dev.name
    cni.delete("host-device", c, container_ns)
    assert_on_host_as_before(dev)


def _invoke_with_own_sysfs(cni, host_ns, command, c, container):
    """The plugin in a mount namespace of its own whose /sys was mounted from inside the sandbox host netns
    (as on a real host, where sysfs shows the host's devices)."""
    env = cni.env(command, container, "eth0", "ctr1", "")
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t sysfs sysfs /sys && exec "$0"', cni.find("host-device")]
    proc = host_ns.run(argv, input=json.dumps(c).encode(), env=env)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


def test_lookup_by_kernelpath(cni, host_ns, dev, container_ns, tmp_path):
    c = conf(tmp_path, kernelpath=f"/sys/devices/virtual/net/{dev.name}")
    rc, reply = _invoke_with_own_sysfs(cni, host_ns, "ADD", c, container_ns)
    assert rc == 0, reply
    assert reply["interfaces"][0]["mac"] == dev.mac
    assert container_ns.link("eth0").get_attr("IFLA_IFALIAS") == dev.name
    cni.delete("host-device", c, container_ns)
    assert_on_host_as_before(dev)


def test_kernelpath_missing_from_this_sysfs_is_refused(cni, dev, container_ns, tmp_path):
    # this process's /sys shows the machine's devices, not the sandbox host's: nothing may be moved
    c = conf(tmp_path, kernelpath=f"/sys/devices/virtual/net/{dev.name}")
    inv = cni.invoke("host-device", "ADD", c, container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7
    assert "kernelpath" in inv.reply["msg"] and dev.name in inv.reply["msg"]
    assert "eth0" not in container_ns.link_names()
    assert_on_host_as_before(dev, up=True)


def _request(c: dict, runtime_config: dict | None = None):
    if runtime_config:
        c = dict(c, runtimeConfig=runtime_config)
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/nonexistent"}
    return build_request(env, json.dumps(c).encode())


def _fake_pci(root, dev, pci: str, driver: str = "virtio-pci"):
    """A sysfs PCI device whose net/ entry is ``dev`` as the sandbox host sees it."""
    net = root / "pci" / pci / "net" / dev.name
    net.mkdir(parents=True)
    (net / "ifindex").write_text(f"{dev.host.link(dev.name)['index']}\n")
    (net / "address").write_text(dev.mac + "\n")
    (root / "drivers" / driver).mkdir(parents=True, exist_ok=True)
    os.symlink(root / "drivers" / driver, root / "pci" / pci / "driver")


def test_pci_bus_id_and_device_id_find_the_netdev_of_the_pci_device(dev, tmp_path, monkeypatch):
    root = tmp_path / "sys"
    _fake_pci(root, dev, "0000:00:1f.6")
    monkeypatch.setattr(hconf, "SYS_BUS_PCI", str(root / "pci"))
    monkeypatch.setattr(hconf, "SYS_BUS_AUXILIARY", str(root / "aux"))
    base = conf(tmp_path)
    for c, rc in ((dict(base, pciBusID="00:1f.6"), None), (base, {"deviceID": "0000:00:1f.6"}),
                  (dict(base, pciBusID="0000:00:02.0"), {"deviceID": "0000:00:1f.6"})):
        loaded = hconf.load(_request(c, rc))
        assert loaded.by == "pci" and loaded.value == "0000:00:1f.6" and not loaded.dpdk
        assert lookup.find(dev.host.ipr, loaded)["index"] == dev.host.link(dev.name)["index"]
    with pytest.raises(Exception) as err:
        hconf.load(_request(base, {"deviceID": "0000:00:09.0"}))
    assert err.value.code == 7 and "runtimeConfig.deviceID" in err.value.msg and "0000:00:09.0" in err.value.msg


def test_a_sysfs_entry_of_another_netns_is_not_taken_for_the_same_named_link(dev, tmp_path, monkeypatch):
    entry = tmp_path / "devices" / "virtual" / "net" / dev.name
    entry.mkdir(parents=True)
    (entry / "ifindex").write_text("4242\n")   # same name, another namespace's link
    (entry / "address").write_text(dev.mac + "\n")
    monkeypatch.setattr(hconf, "SYS_DEVICES", str(tmp_path / "devices") + "/")
    loaded = hconf.load(_request(conf(tmp_path, kernelpath=str(entry))))
    with pytest.raises(Exception) as err:
        lookup.find(dev.host.ipr, loaded)
    assert err.value.code == 7 and "kernelpath" in err.value.msg and "another network namespace" in err.value.msg
    (entry / "ifindex").write_text(f"{dev.host.link(dev.name)['index']}\n")
    assert lookup.find(dev.host.ipr, loaded).get_attr("IFLA_IFNAME") == dev.name


def test_pci_device_on_a_userspace_driver_is_dpdk(dev, tmp_path, monkeypatch):
    root = tmp_path / "sys"
    _fake_pci(root, dev, "0000:00:1f.7", driver="vfio-pci")
    monkeypatch.setattr(hconf, "SYS_BUS_PCI", str(root / "pci"))
    assert hconf.load(_request(conf(tmp_path, pciBusID="0000:00:1f.7"))).dpdk


@pytest.mark.parametrize("keys, named", [
    ({"device": "DEV", "hwaddr": "02:00:00:00:00:01"}, ["device", "DEV", "hwaddr", "02:00:00:00:00:01"]),
    ({"device": "DEV", "kernelpath": "/sys/devices/virtual/net/DEV"}, ["device", "kernelpath"]),
    ({}, ["device", "hwaddr", "kernelpath", "pciBusID"]),
    ({"device": "nosuchdev0"}, ["device", "nosuchdev0"]),
    ({"hwaddr": "02:00:00:00:00:99"}, ["hwaddr", "02:00:00:00:00:99"]),
    ({"hwaddr": "not-a-mac"}, ["hwaddr", "not-a-mac"]),
    ({"kernelpath": "/etc/passwd"}, ["kernelpath", "/etc/passwd"]),
    ({"kernelpath": "/sys/devices/../../etc"}, ["kernelpath", "/sys/devices/../../etc"]),
    ({"pciBusID": "zz:1f.6"}, ["pciBusID", "zz:1f.6"]),
    ({"pciBusID": "0000:77:1f.6"}, ["pciBusID", "0000:77:1f.6"]),
    ({"device": 7}, ["device", "7"]),
])
def test_bad_device_naming_is_code_7_and_moves_nothing(cni, dev, container_ns, tmp_path, keys, named):
    keys = {k: v.replace("DEV", dev.name) if isinstance(v, str) else v for k, v in keys.items()}
    inv = cni.invoke("host-device", "ADD", conf(tmp_path, **keys), container=container_ns)
    assert inv.rc != 0 and inv.reply["code"] == 7, inv.reply
    for word in named:
        assert word.replace("DEV", dev.name) in inv.reply["msg"], inv.reply["msg"]
    assert container_ns.link_names() == ["lo"]
    assert_on_host_as_before(dev, up=True)
    assert state_files(tmp_path) == []


def test_ifname_taken_in_the_container_fails_and_leaves_the_device(cni, dev, container_ns, tmp_path):
    container_ns.ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "other0"})
    inv = cni.invoke("host-device", "ADD", conf(tmp_path, device=dev.name), container=container_ns)
    assert inv.rc != 0 and "eth0" in inv.reply["msg"]
    assert_on_host_as_before(dev, up=True)
    # DEL of that failed ADD leaves the container's own eth0 (no alias: not ours) alone
    cni.delete("host-device", conf(tmp_path, device=dev.name), container_ns)
    assert "eth0" in container_ns.link_names()


def test_del_puts_back_the_alias_the_device_had(cni, dev, container_ns, tmp_path):
    index = dev.host.ipr.link_lookup(ifname=dev.name)[0]
    dev.host.ipr.link("set", index=index, ifalias="uplink to rack 7")
    cni.add("host-device", conf(tmp_path, device=dev.name), container_ns)
    assert container_ns.link("eth0").get_attr("IFLA_IFALIAS") == dev.name
    cni.delete("host-device", conf(tmp_path, device=dev.name), container_ns)
    assert dev.host.link(dev.name).get_attr("IFLA_IFALIAS") == "uplink to rack 7"


def test_del_blocked_by_a_new_host_link_of_that_name_keeps_the_device_and_retries(cni, dev, container_ns,
                                                                                    tmp_path):
    c = conf(tmp_path, ipam=host_local(tmp_path), device=dev.name)
    result = cni.add("host-device", dict(c), container_ns)
    dev.host.ipr.link("add", ifname=dev.name, kind="veth", peer={"ifname": "squat" + dev.name[2:]})
    inv = cni.invoke("host-device", "DEL", dict(c, prevResult=result), container=container_ns)
    assert inv.rc != 0 and dev.name in inv.reply["msg"]
    # the device went back into the container (the host briefly had it as eth0): nothing stray on the host
    assert container_ns.link("eth0").get_attr("IFLA_ADDRESS") == dev.mac
    assert "eth0" not in dev.host.link_names()
    assert leases(tmp_path) == []   # the lease is released all the same
    dev.host.ipr.link("del", index=dev.host.ipr.link_lookup(ifname=dev.name)[0])
    cni.delete("host-device", dict(c, prevResult=result), container_ns)
    assert_on_host_as_before(dev, up=False)


def test_reference_add_then_our_del_finds_the_name_in_the_alias(ref_cni, cni, dev, container_ns, tmp_path):
    c = conf(tmp_path, device=dev.name)
    ref_result = ref_cni.add("host-device", c, container_ns)
    assert container_ns.link("eth0").get_attr("IFLA_IFALIAS") == dev.name
    cni.check("host-device", dict(c, prevResult=ref_result), container_ns)
    cni.delete("host-device", c, container_ns)   # no saved state: the alias names the device
    msg = dev.host.link(dev.name)
    assert msg is not None and msg.get_attr("IFLA_ADDRESS") == dev.mac and not msg.get_attr("IFLA_IFALIAS")
    assert "eth0" not in container_ns.link_names()


def test_our_add_then_reference_del_and_the_same_result(ref_cni, cni, dev, container_ns, tmp_path):
    c = conf(tmp_path, version="0.4.0", device=dev.name)
    ours = cni.add("host-device", c, container_ns)
    ref_cni.check("host-device", dict(c, prevResult=ours), container_ns)
    ref_cni.delete("host-device", dict(c, prevResult=ours), container_ns)
    assert dev.host.link(dev.name) is not None and "eth0" not in container_ns.link_names()
    theirs = ref_cni.add("host-device", c, container_ns)
    assert theirs == ours
    ref_cni.delete("host-device", c, container_ns)


def test_gc_forgets_saved_state_of_attachments_no_longer_valid(cni, dev, make_netns, tmp_path):
    a = make_netns()
    c = conf(tmp_path, version="1.1.0", device=dev.name)
    cni.add("host-device", c, a, container_id="ctr_a", ifname="net_1")
    other = tmp_path / "hd" / "ctr-x_eth0.json"
    other.write_text(json.dumps({"name": "x", "network": "another-net"}))
    cni.gc("host-device", c, [{"containerID": "ctr_a", "ifname": "net_1"}])
    assert state_files(tmp_path) == ["ctr-x_eth0.json", "ctr_a_net_1.json"]
    cni.gc("host-device", c, [])
    assert state_files(tmp_path) == ["ctr-x_eth0.json"]


def test_status_of_a_config_naming_its_device_by_capability_only(cni, tmp_path):
    c = conf(tmp_path, "1.1.0", ipam=host_local(tmp_path), capabilities={"deviceID": True})
    cni.status("host-device", c)
    inv = cni.invoke("host-device", "STATUS", dict(c, ipam={"type": "no-such-ipam"}), container=None, ifname="",
                     container_id="")
    assert inv.rc != 0 and "no-such-ipam" in inv.reply["msg"]


def test_add_and_del_through_the_daemon(daemon_cni, dev, container_ns, tmp_path):
    c = conf(tmp_path, ipam=host_local(tmp_path), device=dev.name)
    result = daemon_cni.add("host-device", c, container_ns)
    assert result["interfaces"] == [{"name": "eth0", "mac": dev.mac, "sandbox": container_ns.path}]
    assert sorted(container_ns.addresses("eth0")) == sorted(HOST_ADDRS + ["10.78.0.2/24"])
    assert icmp_echo(container_ns, "10.77.0.2")
    daemon_cni.delete("host-device", dict(c, prevResult=result), container_ns)
    assert_on_host_as_before(dev)
    assert leases(tmp_path) == []
