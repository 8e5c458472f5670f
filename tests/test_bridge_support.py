"""Shared fixtures and readers for the bridge tests (no tests here).

Plugin mixes: ``bcni`` is our bridge with the reference host-local (the required interop case, independent of
our IPAM); ``bcni_all`` runs a test with every mix: ours+reference IPAM, all ours, reference bridge+our IPAM.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os

import pytest

from netns_fixtures import OUR_PLUGINS, REFERENCE_PLUGINS, reference_available

AF_BRIDGE = 7
IFF_UP = 0x1
IFF_PROMISC = 0x100
IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40


def our_host_local_available() -> bool:
    return importlib.util.find_spec("cni_plugins.ipam.host_local") is not None


def _mix_dir(tmp_path, bridge_dir: str, ipam_dir: str) -> str:
    d = tmp_path / f"plugins-{os.path.basename(bridge_dir.rstrip('/'))}-{len(os.listdir(tmp_path))}"
    d.mkdir()
    os.symlink(os.path.join(bridge_dir, "bridge"), d / "bridge")
    os.symlink(os.path.join(ipam_dir, "host-local"), d / "host-local")
    return str(d)


MIXES = {
    "bridge=ours,ipam=ref": (OUR_PLUGINS, REFERENCE_PLUGINS),
    "bridge=ours,ipam=ours": (OUR_PLUGINS, OUR_PLUGINS),
    "bridge=ref,ipam=ours": (REFERENCE_PLUGINS, OUR_PLUGINS),
}


def _mixed_cni(make_cni, tmp_path, mix: str):
    bridge_dir, ipam_dir = MIXES[mix]
    if REFERENCE_PLUGINS in (bridge_dir, ipam_dir) and not reference_available():
        pytest.skip("reference plugins not installed in /usr/lib/cni")
    if ipam_dir == OUR_PLUGINS and not our_host_local_available():
        pytest.skip("our host-local (ipam/host_local.py) is not there yet")
    if mix == "bridge=ours,ipam=ours":
        return make_cni(OUR_PLUGINS)
    return make_cni(_mix_dir(tmp_path, bridge_dir, ipam_dir))


@pytest.fixture
def bcni(make_cni, tmp_path):
    """Our bridge, the reference host-local."""
    return _mixed_cni(make_cni, tmp_path, "bridge=ours,ipam=ref")


@pytest.fixture(params=list(MIXES))
def bcni_all(request, make_cni, tmp_path):
    cni = _mixed_cni(make_cni, tmp_path, request.param)
    cni.mix = request.param
    return cni


@pytest.fixture
def brname():
    """A bridge name no other test (or xdist worker) uses."""
    return "pb" + os.urandom(5).hex()


@pytest.fixture
def conf_factory(tmp_path, brname):
    def make(subnet: str = "10.99.0.0/24", version: str = "1.0.0", name: str = "brnet", ipam: dict | None = None,
             **options) -> dict:
        conf = {"cniVersion": version, "name": name, "type": "bridge", "bridge": brname}
        if ipam is None:
            ipam = {"type": "host-local", "dataDir": str(tmp_path / "ipam"),
                    "ranges": [[{"subnet": s}] for s in subnet.split(",")]}
        if ipam:
            conf["ipam"] = ipam
        conf.update(options)
        return conf
    return make


# -- readers of kernel state in the sandbox host netns ---------------------------------------------------------
def link_index(ns, name: str) -> int | None:
    found = ns.ipr.link_lookup(ifname=name)
    return found[0] if found else None


def port_info(ns, name: str) -> dict:
    """IFLA_BRPORT_* of a bridge port, keys without prefix in lower case ({'mode': 1, 'isolated': 0, ...})."""
    msg = ns.link(name)
    data = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_SLAVE_DATA")
    return {key[len("IFLA_BRPORT_"):].lower(): value for key, value in data["attrs"]
            if key.startswith("IFLA_BRPORT_")}


def veths(ns) -> list[str]:
    out = []
    for msg in ns.ipr.get_links():
        info = msg.get_attr("IFLA_LINKINFO")
        if info is not None and info.get_attr("IFLA_INFO_KIND") == "veth":
            out.append(msg.get_attr("IFLA_IFNAME"))
    return out


def ports_of(ns, bridge: str) -> list[str]:
    index = link_index(ns, bridge)
    return [m.get_attr("IFLA_IFNAME") for m in ns.ipr.get_links() if m.get_attr("IFLA_MASTER") == index]


def address_flags(ns, ifname: str, address: str) -> int:
    for msg in ns.ipr.get_addr(index=link_index(ns, ifname)):
        if msg.get_attr("IFA_ADDRESS") == address:
            return msg.get_attr("IFA_FLAGS") or msg["flags"]
    raise AssertionError(f"{address} not on {ifname}")


def nft_elements(ns, family: str, set_name: str, table: str = "pynet-bridge") -> list[tuple[str, str]]:
    """(value as text, comment) of a set's elements; an absent table or set reads as empty."""
    try:
        out = ns.nft_json(f"list set {family} {table} {set_name}")
    except RuntimeError:
        return []
    for obj in out:
        if "set" in obj:
            return [(_text(e["elem"]["val"]), e["elem"].get("comment", "")) if isinstance(e, dict) and "elem" in e
                    else (_text(e), "") for e in obj["set"].get("elem", [])]
    return []


def _text(value) -> str:
    if isinstance(value, dict) and "concat" in value:
        return " . ".join(_text(v) for v in value["concat"])
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    return str(value)


def ip_of(result: dict, index: int = 0) -> str:
    return str(ipaddress.ip_interface(result["ips"][index]["address"]).ip)


def leases(tmp_path, network: str = "brnet") -> list[str]:
    d = tmp_path / "ipam" / network
    if not d.exists():
        return []
    return sorted(n for n in os.listdir(d) if not n.startswith(("last_reserved_ip", "lock", ".")))


def kernel_refuses_vlan_filtering(make_netns) -> str:
    """The reason the kernel refuses bridge VLAN filtering, or '' when it supports it."""
    ns = make_netns("pynt-vl")
    try:
        ns.ipr.link("add", ifname="vlprobe", kind="bridge", br_vlan_filtering=1)
    except Exception as exc:
        return f"kernel refuses bridge VLAN filtering: {exc}"
    finally:
        ns.remove()
    return ""
