"""The bridge plugin's configuration: the JSON of the reference plugin, validated once into a typed object.

Every key and default follows the reference (plugins/main/bridge): ``bridge`` "cni0",
``preserveDefaultVlan`` true, everything else off. A wrong type or value fails with code 7 naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cni_plugins import delegate
from cni_plugins.config import option_bool, option_int, option_str, parse_dns, requested_mac, validate_link_name
from cni_plugins.errors import CNIError, INVALID_CONFIG, invalid_config
from cni_plugins.skel import Request
from cni_plugins.results import DNS

DEFAULT_BRIDGE = "cni0"
# veth and bridge both accept 68..65535 (ETH_MIN_MTU..ETH_MAX_MTU for veth, IP_MAX_MTU for a bridge).
MIN_MTU, MAX_MTU = 68, 65535
MAX_VLAN = 4094

_BOOLS = {
    "is_gateway": "isGateway",
    "is_default_gateway": "isDefaultGateway",
    "force_address": "forceAddress",
    "ip_masq": "ipMasq",
    "hairpin_mode": "hairpinMode",
    "promisc_mode": "promiscMode",
    "macspoofchk": "macspoofchk",
    "enable_dad": "enabledad",
    "disable_container_interface": "disableContainerInterface",
    "port_isolation": "portIsolation",
}


@dataclass(frozen=True)
class BridgeConfig:
    """The bridge plugin's validated config."""
    bridge: str = DEFAULT_BRIDGE
    is_gateway: bool = False
    is_default_gateway: bool = False
    force_address: bool = False
    ip_masq: bool = False
    mtu: int | None = None
    hairpin_mode: bool = False
    promisc_mode: bool = False
    vlan: int = 0
    vlan_trunk: tuple[int, ...] = ()
    preserve_default_vlan: bool = True
    macspoofchk: bool = False
    enable_dad: bool = False
    disable_container_interface: bool = False
    port_isolation: bool = False
    mac: str | None = None
    ipam: str | None = None  # the IPAM plugin's type; None for an L2-only network
    dns: DNS = field(default_factory=DNS)

    @property
    def vlan_filtering(self) -> bool:
        return bool(self.vlan or self.vlan_trunk)




def _trunk_id(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_VLAN:
        raise invalid_config(key, value, f"expected a VLAN ID between 1 and {MAX_VLAN}")
    return value


def _vlan_trunk(raw) -> tuple[int, ...]:
    """The trunk's VLAN IDs, sorted and without duplicates (the reference's collectVlanTrunk)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise invalid_config("vlanTrunk", raw, "expected a list of {id} or {minID, maxID} objects")
    vids: set[int] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise invalid_config("vlanTrunk", item, "expected an object with id or minID and maxID")
        lo, hi = item.get("minID"), item.get("maxID")
        if (lo is None) != (hi is None):
            raise invalid_config("vlanTrunk", item, "minID and maxID must be given together")
        if lo is not None:
            lo, hi = _trunk_id("vlanTrunk.minID", lo), _trunk_id("vlanTrunk.maxID", hi)
            if hi < lo:
                raise invalid_config("vlanTrunk", item, "minID is greater than maxID")
            vids.update(range(lo, hi + 1))
        if item.get("id") is not None:
            vids.add(_trunk_id("vlanTrunk.id", item["id"]))
    return tuple(sorted(vids))


def load(req: Request) -> BridgeConfig:
    config = req.config
    flags = {field: option_bool(config, key) for field, key in _BOOLS.items()}
    if "preserveDefaultVlan" in config:
        # present but null reads as false, unlike an absent key
        flags["preserve_default_vlan"] = option_bool(config, "preserveDefaultVlan", False)
    if flags["is_default_gateway"]:
        flags["is_gateway"] = True

    bridge = validate_link_name("bridge", option_str(config, "bridge") or DEFAULT_BRIDGE)

    mtu = option_int(config, "mtu")
    if mtu and not MIN_MTU <= mtu <= MAX_MTU:
        raise invalid_config("mtu", mtu, f"expected {MIN_MTU}..{MAX_MTU}")

    vlan = option_int(config, "vlan")
    if not 0 <= vlan <= MAX_VLAN:
        raise invalid_config("vlan", vlan, f"expected a VLAN ID between 0 and {MAX_VLAN}")
    trunk = _vlan_trunk(config.get("vlanTrunk"))
    if vlan and trunk:
        raise CNIError(INVALID_CONFIG, "invalid vlan and vlanTrunk: cannot set both (a port is either an access "
                       "port or a trunk port)")

    if flags["hairpin_mode"] and flags["promisc_mode"]:
        raise CNIError(INVALID_CONFIG, "invalid hairpinMode and promiscMode: cannot set both at the same time")

    ipam = delegate.ipam_type(req)
    if ipam and flags["disable_container_interface"]:
        raise CNIError(INVALID_CONFIG, f"invalid disableContainerInterface true: cannot be used with IPAM "
                       f"(ipam type {ipam!r}) since a down interface cannot hold addresses")

    return BridgeConfig(bridge=bridge, mtu=mtu or None, vlan=vlan, vlan_trunk=trunk, mac=requested_mac(req, args_cni=True),
                        ipam=ipam, dns=parse_dns(config.get("dns")), **flags)
