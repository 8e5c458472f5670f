"""portmap's input, validated once: plugin options, the runtime's portMappings and the container addresses.

Port ranges: an entry's ``hostPort`` may be a string ``"8080-8090"`` (then ``containerPort`` is either the
first port of the container range or a string range of the same length), or an integer with a netavark-style
``"range": N`` (N ports starting at hostPort and at containerPort). Either way hostPort+i maps to
containerPort+i, one map element per port.

hostIP: absent or "" means every local address of both families; "0.0.0.0" and "::" mean every local address
of that one family (as the reference plugin reads them); any other address limits the mapping to it.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from cni_plugins.config import option_bool, option_int
from cni_plugins.digest import sha256_hex
from cni_plugins.errors import CNIError, INVALID_CONFIG, invalid_config
from cni_plugins.skel import Request
from cni_plugins.results import IPConfig, Result

PROTOCOLS = ("tcp", "udp", "sctp")
DEFAULT_MARK_BIT = 13
# Characters that would end or comment out an nft command: a condition must stay one rule fragment.
_CONDITION_FORBIDDEN = (";", "\n", "\r", "#")


@dataclass(frozen=True)
class Options:
    """What shapes the rules. Networks with equal options (and name) share one set of chains and maps."""
    snat: bool = True
    masq_all: bool = False
    mark_bit: int = DEFAULT_MARK_BIT
    conditions_v4: str = ""
    conditions_v6: str = ""

    @property
    def mark(self) -> int:
        return 1 << self.mark_bit

    def conditions(self, family: int) -> str:
        return self.conditions_v4 if family == 4 else self.conditions_v6

    def digest(self) -> str:
        text = json.dumps([self.snat, self.masq_all, self.mark_bit, self.conditions_v4, self.conditions_v6])
        return sha256_hex(text)


@dataclass(frozen=True)
class PortMapping:
    """One runtime entry: ``count`` consecutive host ports starting at ``host_port``."""
    host_port: int
    container_port: int
    protocol: str
    host_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # None: every local address
    count: int = 1

    def families(self) -> tuple[int, ...]:
        return (4, 6) if self.host_ip is None else (self.host_ip.version,)

    def specific_ip(self, family: int):
        """The host address this mapping is limited to in ``family``, None for every local address."""
        if self.host_ip is None or self.host_ip.is_unspecified:
            return None
        return self.host_ip if self.host_ip.version == family else None


@dataclass(frozen=True)
class DnatEntry:
    """One host port of one family, DNATed to one container address and port."""
    family: int
    host_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # None: every local address
    protocol: str
    host_port: int
    container: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    container_port: int

    def describe(self) -> str:
        where = str(self.host_ip) if self.host_ip else ("0.0.0.0" if self.family == 4 else "::")
        return f"{self.protocol}/{self.host_port} on {where}"


def _conditions(raw: dict, key: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_config(key, value, "must be a list of nft match expressions (strings)")
    for part in value:
        bad = [c for c in _CONDITION_FORBIDDEN if c in part]
        if bad:
            raise invalid_config(key, value, f"must be nft match expressions of one rule; {bad[0]!r} is not allowed")
    return " ".join(v.strip() for v in value if v.strip())


def parse_options(raw: dict) -> Options:
    if raw.get("externalSetMarkChain") is not None:
        raise invalid_config("externalSetMarkChain", raw["externalSetMarkChain"],
                             "names an iptables chain; the nftables portmap marks packets itself (use markMasqBit)")
    bit = option_int(raw, "markMasqBit", DEFAULT_MARK_BIT, minimum=0, maximum=31)
    return Options(snat=option_bool(raw, "snat", True), masq_all=option_bool(raw, "masqAll"), mark_bit=bit,
                   conditions_v4=_conditions(raw, "conditionsV4"), conditions_v6=_conditions(raw, "conditionsV6"))


def _port(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise invalid_config(key, value, "must be a port number from 1 to 65535")
    return value


def _port_or_range(key: str, value) -> tuple[int, int]:
    """(first port, count) from an integer or a ``"first-last"`` string."""
    if isinstance(value, str):
        first, sep, last = value.partition("-")
        try:
            lo, hi = int(first), int(last if sep else first)
        except ValueError:
            raise invalid_config(key, value, "must be a port number or a range 'first-last'") from None
        _port(key, lo), _port(key, hi)
        if hi < lo:
            raise invalid_config(key, value, "range end is below its start")
        return lo, hi - lo + 1
    return _port(key, value), 1


def parse_mapping(index: int, entry) -> PortMapping:
    where = f"runtimeConfig.portMappings[{index}]"
    if not isinstance(entry, dict):
        raise invalid_config(where, entry, "must be an object")
    host_port, count = _port_or_range(f"{where}.hostPort", entry.get("hostPort"))
    container_port, container_count = _port_or_range(f"{where}.containerPort", entry.get("containerPort"))
    if "range" in entry:
        n = entry["range"]
        if count != 1 or isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise invalid_config(f"{where}.range", n, "must be a positive integer with an integer hostPort")
        count = n
    if container_count not in (1, count):
        raise invalid_config(f"{where}.containerPort", entry.get("containerPort"),
                             f"range holds {container_count} ports, the host range {count}")
    for key, first in (("hostPort", host_port), ("containerPort", container_port)):
        if first + count - 1 > 65535:
            raise invalid_config(f"{where}.{key}", entry.get(key), f"range of {count} ports runs past 65535")
    protocol = "tcp" if entry.get("protocol") in (None, "") else entry.get("protocol")
    if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
        raise invalid_config(f"{where}.protocol", protocol, f"must be one of {list(PROTOCOLS)}")
    raw_ip = "" if entry.get("hostIP") is None else entry.get("hostIP")
    try:
        if not isinstance(raw_ip, str):
            raise TypeError(raw_ip)   # ip_address() would take a number
        host_ip = ipaddress.ip_address(raw_ip) if raw_ip else None
    except (TypeError, ValueError):
        raise invalid_config(f"{where}.hostIP", raw_ip, "must be an IP address") from None
    return PortMapping(host_port, container_port, protocol.lower(), host_ip, count)


def parse_mappings(runtime_config: dict) -> tuple[PortMapping, ...]:
    raw = runtime_config.get("portMappings")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise invalid_config("runtimeConfig.portMappings", raw, "must be a list")
    return tuple(parse_mapping(i, entry) for i, entry in enumerate(raw))


def container_addresses(result: Result) -> dict[int, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The first address of each family, preferring addresses on a container (sandbox) interface."""
    def in_container(ip: IPConfig) -> bool:
        return ip.interface is not None and 0 <= ip.interface < len(result.interfaces) \
            and bool(result.interfaces[ip.interface].sandbox)

    chosen: dict = {}
    for ip in sorted(result.ips, key=lambda ip: not in_container(ip)):  # stable: keeps order within each group
        chosen.setdefault(ip.family, ip.address)
    return chosen


def dnat_entries(mappings, addresses: dict) -> list[DnatEntry]:
    """Every (family, host address, protocol, host port) the mappings ask for; duplicates are an error."""
    entries: list[DnatEntry] = []
    seen: dict = {}
    for mapping in mappings:
        for family in mapping.families():
            container = addresses.get(family)
            if container is None:
                continue  # as the reference: a family the container has no address in is skipped
            for i in range(mapping.count):
                entry = DnatEntry(family, mapping.specific_ip(family), mapping.protocol, mapping.host_port + i,
                                  container, mapping.container_port + i)
                key = (family, entry.host_ip, entry.protocol, entry.host_port)
                if key in seen:
                    raise CNIError(INVALID_CONFIG, f"invalid runtimeConfig.portMappings: {entry.describe()} is "
                                                   "mapped twice")
                seen[key] = entry
                entries.append(entry)
    return entries


@dataclass(frozen=True)
class PortMapConfig:
    """portmap's validated config."""
    network: str
    options: Options
    mappings: tuple[PortMapping, ...]


def load(req: Request) -> PortMapConfig:
    return PortMapConfig(req.network_name, parse_options(req.config), parse_mappings(req.runtime_config))
