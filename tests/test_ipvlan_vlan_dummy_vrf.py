"""ipvlan, vlan, dummy and vrf, and the shared cni_plugins/container_links.py.

This kernel has no ipvlan, 8021q, dummy or vrf driver, so two kinds of tests:
- the netlink requests the plugins build, on a fake IPRoute per namespace that records every call and keeps a
  small link table (kinds, masters, tables), so the ADD/DEL/CHECK logic runs end to end without the driver;
- on the real kernel: ADD fails with code 50 naming the missing driver and leaves no link and no lease (where a
  kernel has the driver, the same tests assert the link instead).
"""

from __future__ import annotations

import errno
import json
import os

import pytest

from cni_plugins import container_links
from cni_plugins.errors import CNIError
from cni_plugins.skel import build_request
from netns_fixtures.runner import PluginFailed

from .test_macvlan import MASTER, leases, master  # noqa: F401  (fixture)

NETWORK = "mvnet"


# -- a fake netlink world ---------------------------------------------------------------------------------------
class FakeNetlinkError(Exception):
    def __init__(self, code: int):
        super().__init__(code, os.strerror(code))
        self.code = code


class Attrs(dict):
    def get_attr(self, name):
        return self.get(name)


def _link_msg(link: dict) -> Attrs:
    data = Attrs(link.get("data", {}))
    info = Attrs(IFLA_INFO_KIND=link["kind"], IFLA_INFO_DATA=data)
    msg = Attrs(IFLA_IFNAME=link["name"], IFLA_MTU=link.get("mtu", 1500), IFLA_ADDRESS=link.get("mac", ""),
                IFLA_MASTER=link.get("master"), IFLA_LINK=link.get("link"), IFLA_LINKINFO=info)
    msg.update(index=link["index"], flags=1 if link.get("up") else 0)
    return msg


# pyroute2 keys of IFLA_INFO_DATA and the attribute the kernel answers with
_DATA = {"macvlan_mode": "IFLA_MACVLAN_MODE", "ipvlan_mode": "IFLA_IPVLAN_MODE", "vlan_id": "IFLA_VLAN_ID",
         "vrf_table": "IFLA_VRF_TABLE", "macvlan_bc_queue_len": "IFLA_MACVLAN_BC_QUEUE_LEN"}


class FakeIPRoute:
    """One namespace's links; ``refuse``: kinds whose driver this fake kernel lacks (EOPNOTSUPP)."""
    next_index = 100

    def __init__(self, world: dict, fd: int, refuse=(), links=(), routes=()):
        self.world, self.fd, self.refuse = world, fd, set(refuse)
        world[fd] = self
        self.links: dict[str, dict] = {}
        self.calls: list[tuple] = []
        self.routes = [dict(r) for r in routes]
        self.fail_rename = False
        for link in links:
            self._new(dict(link))

    def _new(self, link: dict) -> None:
        if "index" not in link:
            FakeIPRoute.next_index += 1
            link["index"] = FakeIPRoute.next_index
        link.setdefault("mac", "02:00:00:00:%02x:%02x" % divmod(link["index"], 256))
        self.links[link["name"]] = link

    def _by(self, ifname=None, index=None) -> dict:
        for link in self.links.values():
            if link["name"] == ifname or link["index"] == index:
                return link
        raise FakeNetlinkError(errno.ENODEV)

    def link(self, command, **kw):
        if command != "get":
            self.calls.append(("link", command, kw))
        if command == "get":
            return [_link_msg(self._by(kw.get("ifname"), kw.get("index")))]
        if command == "add":
            if kw["kind"] in self.refuse:
                raise FakeNetlinkError(errno.EOPNOTSUPP)
            target = self.world[kw["net_ns_fd"]] if "net_ns_fd" in kw else self
            if kw["ifname"] in target.links:
                raise FakeNetlinkError(errno.EEXIST)
            data = {_DATA[k]: v for k, v in kw.items() if k in _DATA}
            target._new({"name": kw["ifname"], "kind": kw["kind"], "data": data, "mtu": kw.get("mtu") or 1500,
                         "link": kw.get("link"), **({"mac": kw["address"]} if "address" in kw else {})})
        elif command == "set":
            link = self._by(index=kw["index"])
            if "ifname" in kw:
                if self.fail_rename:
                    raise FakeNetlinkError(errno.EBUSY)
                del self.links[link["name"]]
                link["name"] = kw["ifname"]
                self.links[link["name"]] = link
            if "master" in kw:
                link["master"] = kw["master"] or None
            if kw.get("state") == "up":
                link["up"] = True
        elif command == "del":
            del self.links[self._by(index=kw["index"])["name"]]
        return []

    def get_links(self):
        return [_link_msg(link) for link in self.links.values()]

    def get_routes(self, family=2, table=254):
        out = []
        for r in self.routes:
            if r["family"] != family:
                continue
            msg = Attrs(RTA_OIF=r.get("oif"), RTA_DST=r.get("dst"), RTA_GATEWAY=r.get("gateway"))
            msg.update(dst_len=r.get("dst_len", 0), scope=r.get("scope", 0), proto=r.get("proto", 3), type=1)
            out.append(msg)
        return out

    def route(self, command, **kw):
        self.calls.append(("route", command, kw))

    def addr(self, command, **kw):
        self.calls.append(("addr", command, kw))

    def setsockopt(self, *args):
        pass

    def nlm_request(self, *args, **kwargs):
        return []     # no addresses


class FakeNetns:
    def __init__(self, ipr: FakeIPRoute):
        self.ipr, self.fd = ipr, ipr.fd
        self.sysctls: dict = {}

    def sysctl_write(self, key, value):
        self.sysctls[key] = value


class FakeHandles:
    def __init__(self, host: FakeNetns, container: FakeNetns | None):
        self.host, self._container = host, container

    def container(self):
        return self._container

    def container_if_present(self):
        return self._container


@pytest.fixture
def world():
    """A fake host netns (fd 10) holding master eth9 (index 9, MTU 1500) and an empty container netns (fd 20)."""
    w: dict = {}
    host = FakeIPRoute(w, 10, links=[{"name": "lo", "kind": "", "index": 1},
                                     {"name": "eth9", "kind": "veth", "index": 9}],
                       routes=[{"family": 2, "dst_len": 0, "oif": 9, "gateway": "10.0.0.1"}])
    container = FakeIPRoute(w, 20, links=[{"name": "lo", "kind": "", "index": 1}])
    return FakeHandles(FakeNetns(host), FakeNetns(container))


def request(plugin: str, command: str = "ADD", args: str = "", **config):
    conf = {"cniVersion": "1.0.0", "name": NETWORK, "type": plugin, **config}
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/run/netns/fake", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/nonexistent", "CNI_ARGS": args}
    return build_request(env, json.dumps(conf).encode())


def run(plugin: str, handles, command: str = "ADD", **config):
    from cni_plugins import registry

    p = registry.get(plugin)
    req = request(plugin, command, **config)
    verb = {"ADD": p.add, "DEL": p.delete, "CHECK": p.check}[command]
    return verb(req, p.config_for(req), handles)


def adds(ipr: FakeIPRoute) -> list[dict]:
    return [kw for what, cmd, kw in ipr.calls if (what, cmd) == ("link", "add")]


PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth9"}],
        "ips": [{"address": "10.5.0.7/24", "gateway": "10.5.0.1"}], "routes": [{"dst": "10.6.0.0/16"}]}


# -- the requests -----------------------------------------------------------------------------------------------
def test_ipvlan_is_born_in_the_container_under_a_temporary_name_and_renamed(world):
    result = run("ipvlan", world, master="eth9", mode="l3", mtu=1400, prevResult=PREV)
    (kw,) = adds(world.host.ipr)
    tmp = kw.pop("ifname")
    assert tmp.startswith("cni") and tmp != "eth0"
    assert kw == {"kind": "ipvlan", "ipvlan_mode": 1, "link": 9, "mtu": 1400, "net_ns_fd": 20}
    renames = [c for c in world.container().ipr.calls if c[1] == "set" and "ifname" in c[2]]
    assert [c[2]["ifname"] for c in renames] == ["eth0"]
    eth0 = world.container().ipr.links["eth0"]
    assert eth0["kind"] == "ipvlan" and eth0["up"]
    # chained without IPAM: prevResult's IPs and routes go on the interface, which is the result's only one
    calls = world.container().ipr.calls
    assert ("addr", "add", {"index": eth0["index"], "address": "10.5.0.7", "prefixlen": 24,
                            "broadcast": "10.5.0.255"}) in calls
    assert any(c[:2] == ("route", "add") and c[2]["dst"] == "10.6.0.0" and c[2]["oif"] == eth0["index"]
               for c in calls)
    assert [i.name for i in result.interfaces] == ["eth0"] and result.ips[0].interface == 0
    assert world.container().sysctls == {"net/ipv4/conf/eth0/arp_notify": "1", "net/ipv6/conf/eth0/ndisc_notify": "1"}


@pytest.mark.parametrize("mode,value", [("l2", 0), ("l3", 1), ("l3s", 2), (None, 0)])
def test_ipvlan_modes(world, mode, value):
    run("ipvlan", world, master="eth9", prevResult=PREV, **({"mode": mode} if mode else {}))
    assert adds(world.host.ipr)[0]["ipvlan_mode"] == value


def test_chained_ipvlan_takes_prev_results_single_interface_as_master(world):
    run("ipvlan", world, prevResult=PREV)
    assert adds(world.host.ipr)[0]["link"] == 9


def test_vlan_request_carries_the_vlan_id(world):
    from cni_plugins.vlan.config import load

    conf = load(request("vlan", master="eth9", vlanId=42, mtu=1500, ipam={"type": "host-local"}))
    master = container_links.find_master(world, conf.link)
    container_links.create_link(request("vlan"), world.container(), "vlan", master, conf.link.mtu,
                                vlan_id=conf.vlan_id)
    (kw,) = adds(world.host.ipr)
    assert {k: v for k, v in kw.items() if k != "ifname"} == {"kind": "vlan", "vlan_id": 42, "link": 9,
                                                               "mtu": 1500, "net_ns_fd": 20}
    assert world.container().ipr.links["eth0"]["data"] == {"IFLA_VLAN_ID": 42}


def test_dummy_is_made_in_the_container_under_its_final_name(world):
    container_links.create_link(request("dummy"), world.container(), "dummy")
    assert adds(world.host.ipr) == []
    assert adds(world.container().ipr) == [{"ifname": "eth0", "kind": "dummy"}]


def test_macvlan_request_and_l2_only_add(world):
    result = run("macvlan", world, master="eth9", mode="vepa", mtu=1450, mac="02:12:34:56:78:9A", bcqueuelen=77)
    (kw,) = adds(world.host.ipr)
    assert {k: v for k, v in kw.items() if k != "ifname"} == {
        "kind": "macvlan", "macvlan_mode": "vepa", "macvlan_bc_queue_len": 77, "link": 9, "mtu": 1450,
        "address": "02:12:34:56:78:9a", "net_ns_fd": 20}
    eth0 = world.container().ipr.links["eth0"]
    assert eth0["up"] and result.interfaces[0].mac == "02:12:34:56:78:9a" and result.ips == []


def test_link_in_container_creates_it_there_without_moving_it(world):
    world.container().ipr._new({"name": "in0", "kind": "veth", "index": 5})
    run("ipvlan", world, master="in0", linkInContainer=True, prevResult=PREV)
    assert adds(world.host.ipr) == []
    (kw,) = adds(world.container().ipr)
    assert kw == {"ifname": "eth0", "kind": "ipvlan", "ipvlan_mode": 0, "link": 5}


def test_default_master_is_the_default_route_interface(world):
    run("macvlan", world)
    assert adds(world.host.ipr)[0]["link"] == 9


def test_mtu_above_the_masters_is_code_7(world):
    with pytest.raises(CNIError) as err:
        run("vlan", world, master="eth9", vlanId=3, mtu=1501, ipam={"type": "host-local"})
    assert err.value.code == 7 and "invalid mtu 1501" in err.value.msg and "1500" in err.value.msg
    assert adds(world.host.ipr) == []


@pytest.mark.parametrize("plugin,config", [("ipvlan", {"master": "eth9", "prevResult": PREV}),
                                           ("macvlan", {"master": "eth9"})])
def test_missing_driver_is_code_50_naming_it_and_nothing_is_left(world, plugin, config):
    world.host.ipr.refuse.add(plugin)
    with pytest.raises(CNIError) as err:
        run(plugin, world, **config)
    assert err.value.code == 50 and f"the kernel has no {plugin} driver" in err.value.msg
    assert list(world.container().ipr.links) == ["lo"] and list(world.host.ipr.links) == ["lo", "eth9"]


def test_failed_rename_removes_the_new_link(world):
    world.container().ipr.fail_rename = True
    with pytest.raises(CNIError, match="failed to rename the macvlan link to 'eth0'"):
        run("macvlan", world, master="eth9")
    assert list(world.container().ipr.links) == ["lo"]


def test_del_removes_the_link_and_tolerates_its_absence(world):
    run("macvlan", world, master="eth9")
    run("macvlan", world, "DEL", master="nosuch0", mtu=-5)   # a config gone bad since ADD does not block DEL
    assert list(world.container().ipr.links) == ["lo"]
    run("macvlan", world, "DEL", master="eth9")
    world._container = None                                  # netns gone
    run("macvlan", world, "DEL", master="eth9")


def test_check_compares_kind_and_kind_data(world):
    from cni_plugins.vlan.config import load

    conf = load(request("vlan", master="eth9", vlanId=7, ipam={"type": "host-local"}))
    iface = container_links.create_link(request("vlan"), world.container(), "vlan",
                                        container_links.find_master(world, conf.link), vlan_id=7)
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mac": iface.mac, "sandbox": "/run/netns/fake"}]}
    container_links.check(request("vlan", "CHECK", prevResult=prev), world, "vlan", "vlan", None,
                          {"IFLA_VLAN_ID": ("vlanId", 7)})
    with pytest.raises(CNIError, match="has vlanId 7, the config says 8"):
        container_links.check(request("vlan", "CHECK", prevResult=prev), world, "vlan", "vlan", None,
                              {"IFLA_VLAN_ID": ("vlanId", 8)})
    with pytest.raises(CNIError, match="is not a ipvlan link"):
        container_links.check(request("vlan", "CHECK", prevResult=prev), world, "ipvlan", "ipvlan", None)


# -- vrf on the fake --------------------------------------------------------------------------------------------
VRF_PREV = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/run/netns/fake"}],
            "ips": [{"address": "10.5.0.7/24", "interface": 0}]}


@pytest.fixture
def vworld(world):
    ipr = world.container().ipr
    ipr._new({"name": "eth0", "kind": "veth", "index": 30})
    ipr._new({"name": "eth1", "kind": "veth", "index": 31})
    ipr._new({"name": "other", "kind": "vrf", "index": 40, "data": {"IFLA_VRF_TABLE": 1}})
    ipr._new({"name": "other2", "kind": "vrf", "index": 41, "data": {"IFLA_VRF_TABLE": 2}})
    ipr.routes = [{"family": 2, "dst_len": 16, "dst": "10.6.0.0", "gateway": "10.5.0.1", "oif": 30},
                  {"family": 2, "dst_len": 24, "dst": "10.5.0.0", "oif": 30, "scope": 253},   # connected: stays
                  {"family": 2, "dst_len": 0, "gateway": "10.9.0.1", "oif": 99}]               # another link's
    return world


def test_vrf_add_creates_the_vrf_on_the_first_free_table_and_enslaves(vworld):
    ipr = vworld.container().ipr
    result = run("vrf", vworld, vrfname="blue", prevResult=VRF_PREV)
    assert [i.name for i in result.interfaces] == ["eth0"] and str(result.ips[0].address) == "10.5.0.7/24"
    assert adds(ipr) == [{"ifname": "blue", "kind": "vrf", "vrf_table": 3}]
    blue = ipr.links["blue"]
    assert blue["up"] and ipr.links["eth0"]["master"] == blue["index"]
    moved = [c[2] for c in ipr.calls if c[:2] == ("route", "replace")]
    assert moved == [{"family": 2, "dst_len": 16, "oif": 30, "scope": 0, "proto": 3, "type": 1, "dst": "10.6.0.0",
                      "gateway": "10.5.0.1", "table": 3}]


def test_vrf_second_interface_joins_the_existing_vrf_and_del_removes_it_with_the_last(vworld):
    ipr = vworld.container().ipr
    run("vrf", vworld, vrfname="blue", table=50, prevResult=VRF_PREV)
    req = request("vrf", vrfname="blue", table=50, prevResult=dict(VRF_PREV, interfaces=[{"name": "eth1"}]))
    req = req.__class__(**{**req.__dict__, "ifname": "eth1"})
    from cni_plugins.vrf.plugin import PLUGIN

    PLUGIN.add(req, PLUGIN.load_config(req), vworld)
    assert len(adds(ipr)) == 1 and ipr.links["eth1"]["master"] == ipr.links["blue"]["index"]
    run("vrf", vworld, "CHECK", vrfname="blue", table=50, prevResult=VRF_PREV)
    run("vrf", vworld, "DEL", vrfname="blue")
    assert "blue" in ipr.links and ipr.links["eth0"].get("master") is None     # eth1 is still a member
    PLUGIN.delete(req, PLUGIN.load_config(req), vworld)
    assert "blue" not in ipr.links and ipr.links["eth1"].get("master") is None
    run("vrf", vworld, "DEL", vrfname="blue")                                 # idempotent


def test_vrf_with_another_table_than_the_existing_one_is_code_7(vworld):
    with pytest.raises(CNIError) as err:
        run("vrf", vworld, vrfname="other", table=9, prevResult=VRF_PREV)
    assert err.value.code == 7 and "invalid table 9" in err.value.msg and "table 1" in err.value.msg


def test_vrf_name_taken_by_another_kind_is_code_7(vworld):
    with pytest.raises(CNIError) as err:
        run("vrf", vworld, vrfname="eth1", prevResult=VRF_PREV)
    assert err.value.code == 7 and "invalid vrfname 'eth1'" in err.value.msg


def test_vrf_enslave_failure_removes_the_vrf_it_created(vworld):
    vworld.container().ipr.links["eth0"]["master"] = 40
    with pytest.raises(CNIError, match="already has a master"):
        run("vrf", vworld, vrfname="blue", prevResult=VRF_PREV)
    assert "blue" not in vworld.container().ipr.links


def test_vrf_missing_driver_is_code_50(vworld):
    vworld.container().ipr.refuse.add("vrf")
    with pytest.raises(CNIError) as err:
        run("vrf", vworld, vrfname="blue", prevResult=VRF_PREV)
    assert err.value.code == 50 and "no vrf driver" in err.value.msg
    assert vworld.container().ipr.links["eth0"].get("master") is None


# -- the real kernel ----------------------------------------------------------------------------------------------
def kernel_has(ns, kind: str, master_index: int) -> bool:
    """Whether this kernel can make a link of ``kind`` (tried in the sandbox host netns, removed at once)."""
    extra = {"ipvlan": {"link": master_index}, "vlan": {"link": master_index, "vlan_id": 5}}.get(kind, {})
    try:
        ns.ipr.link("add", ifname="probe0", kind=kind, **extra)
    except Exception as exc:
        if getattr(exc, "code", None) == errno.EOPNOTSUPP:
            return False
        raise
    ns.ipr.link("del", index=ns.ipr.link_lookup(ifname="probe0")[0])
    return True


def ipam(tmp_path) -> dict:
    return {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "ranges": [[{"subnet": "10.98.0.0/24"}]]}


KINDS = {"ipvlan": ("ipvlan", {"master": MASTER}), "vlan": ("8021q", {"master": MASTER, "vlanId": 5}),
         "dummy": ("dummy", {})}


@pytest.mark.parametrize("plugin", list(KINDS))
def test_add_on_this_kernel_fails_naming_the_driver_or_works(cni, host_ns, container_ns, tmp_path, master, plugin):
    module, options = KINDS[plugin]
    conf = {"cniVersion": "1.0.0", "name": NETWORK, "type": plugin, "ipam": ipam(tmp_path), **options}
    host_links = sorted(host_ns.link_names())
    inv = cni.invoke(plugin, "ADD", conf, container_ns)
    if kernel_has(host_ns, plugin, master):
        assert inv.rc == 0 and inv.reply["interfaces"][0]["name"] == "eth0"
        kind = container_ns.link("eth0").get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND")
        assert kind == plugin and container_ns.addresses("eth0") == ["10.98.0.2/24"]
        cni.delete(plugin, conf, container_ns)
    else:
        assert inv.rc == 1 and inv.reply["code"] == 50, inv.reply
        assert f"the kernel has no {plugin} driver" in inv.reply["msg"] and repr(module) in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"] and sorted(host_ns.link_names()) == host_links
    assert leases(tmp_path) == []
    cni.delete(plugin, conf, container_ns)          # DEL with nothing there succeeds


def test_vrf_after_macvlan_on_this_kernel_fails_naming_the_driver_or_enslaves(cni, host_ns, container_ns, tmp_path,
                                                                             master):
    conflist = {"cniVersion": "1.0.0", "name": NETWORK, "plugins": [
        {"type": "macvlan", "master": MASTER, "ipam": ipam(tmp_path)}, {"type": "vrf", "vrfname": "blue"}]}
    has_vrf = kernel_has(container_ns, "vrf", 0)
    try:
        result = cni.add_chain(conflist, container_ns)
    except PluginFailed as exc:
        assert not has_vrf
        assert exc.plugin == "vrf" and exc.code == 50 and "the kernel has no vrf driver" in exc.msg
        assert "blue" not in container_ns.link_names()
        assert container_ns.link("eth0").get_attr("IFLA_MASTER") is None
        result = None
    else:
        assert has_vrf and container_ns.link("eth0").get_attr("IFLA_MASTER") == \
            container_ns.link("blue")["index"]
    cni.del_chain(conflist, container_ns, result)
    assert container_ns.link_names() == ["lo"] and leases(tmp_path) == []


# -- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("plugin,options,needle", [
    ("vlan", {"vlanId": 5000}, "invalid vlanId 5000"),
    ("vlan", {"vlanId": -1}, "invalid vlanId -1"),
    ("vlan", {"vlanId": "5"}, "invalid vlanId '5'"),
    ("vlan", {}, "invalid vlanId None"),
    ("vlan", {"vlanId": 5, "master": None}, "invalid master None"),
    ("vlan", {"vlanId": 5, "mtu": -1}, "invalid mtu -1"),
    ("vlan", {"vlanId": 5, "ipam": None}, "invalid ipam None"),
    ("ipvlan", {"mode": "l4"}, "invalid mode 'l4'"),
    ("ipvlan", {"mtu": 70000}, "invalid mtu 70000"),
    ("ipvlan", {"master": "nosuch0"}, "invalid master 'nosuch0'"),
    ("ipvlan", {"ipam": None}, "invalid ipam None"),
    ("ipvlan", {"linkInContainer": 1}, "invalid linkInContainer 1"),
    ("dummy", {"ipam": None}, "invalid ipam None"),
    ("vrf", {"vrfname": None}, "invalid vrfname None"),
    ("vrf", {"vrfname": "x" * 16}, "invalid vrfname 'xxxxxxxxxxxxxxxx'"),
    ("vrf", {"vrfname": "blue", "table": -1}, "invalid table -1"),
])
def test_malformed_key_is_code_7_naming_key_and_value(cni, container_ns, tmp_path, master, plugin, options, needle):
    conf = {"cniVersion": "1.0.0", "name": NETWORK, "type": plugin, "master": MASTER, "ipam": ipam(tmp_path),
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]} if plugin == "vrf" else None}
    conf.update(options)
    conf = {k: v for k, v in conf.items() if v is not None}
    inv = cni.invoke(plugin, "ADD", conf, container_ns)
    assert inv.rc == 1 and inv.reply["code"] == 7, inv.reply
    assert needle in inv.reply["msg"]
    assert container_ns.link_names() == ["lo"] and leases(tmp_path) == []


def test_vrf_without_prev_result_is_code_7(cni, container_ns):
    inv = cni.invoke("vrf", "ADD", {"cniVersion": "1.0.0", "name": NETWORK, "type": "vrf", "vrfname": "blue"},
                     container_ns)
    assert inv.reply["code"] == 7 and "prevResult" in inv.reply["msg"]
