"""The ``ipam`` section of a network config, parsed and validated into dataclasses.

IPAM plugins receive the whole config of the plugin that delegates to them; everything they own sits under
``ipam``. Defaults and checks follow the reference host-local (``Range.Canonicalize``) so a config means the
same thing to both implementations. Every error names the key and the value; config errors are CNI code 7,
malformed CNI_ARGS values code 4.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from cni_plugins.config import list_value as _list, option_int, option_path, string_value as _string
from cni_plugins.config import parse_dns  # noqa: F401  (static reads its dns through here)
from cni_plugins.errors import CNIError, INVALID_CONFIG, INVALID_ENVIRONMENT, invalid_config
from cni_plugins.skel import Request
from cni_plugins.results import DNS, IPAddress, IPInterface, IPNetwork, Route

# CNI_ARGS keys IPAM plugins accept; the K8S_* ones are what kubelet-era runtimes always send.
KNOWN_CNI_ARGS = ("IgnoreUnknown", "IP", "GATEWAY", "MAC", "K8S_POD_NAME", "K8S_POD_NAMESPACE",
                  "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
# The spec's rule for network names; it also keeps <dataDir>/<name> from leaving dataDir.
_NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


# -- small typed readers ------------------------------------------------------------------------------

def ipam_section(req: Request) -> dict:
    ipam = req.config.get("ipam")
    if not isinstance(ipam, dict):
        raise CNIError(INVALID_CONFIG, f"invalid ipam {ipam!r}: the network config needs an 'ipam' object")
    return ipam




def parse_ip(value, key: str) -> IPAddress:
    try:
        return ipaddress.ip_address(_string(value, key))
    except ValueError:
        raise invalid_config(key, value, "not an IPv4 or IPv6 address") from None


def parse_cidr(value, key: str) -> IPInterface:
    """An address with its prefix length, host bits kept (``10.1.2.3/24``)."""
    text = _string(value, key)
    if "/" not in text:
        raise invalid_config(key, value, "expected an address in CIDR notation (ADDRESS/PREFIX)")
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise invalid_config(key, value, "not an IPv4 or IPv6 CIDR") from None


def parse_requested_ip(value, key: str, code: int = INVALID_CONFIG) -> IPAddress:
    """A requested address: plain (``10.1.2.3``) or with a prefix, which is ignored (``10.1.2.3/24``)."""
    if isinstance(value, str):
        try:
            ip = ipaddress.ip_interface(value.strip()).ip
        except ValueError:
            pass
        else:
            # ::ffff:a.b.c.d is an IPv4 address to the reference (Go's To4), so it is here too.
            return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped is not None else ip
    raise CNIError(code, f"invalid {key} {value!r}: not an IPv4 or IPv6 address")


def network_name(req: Request) -> str:
    name = req.config.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise invalid_config("name", name, "a network name must start with an alphanumeric character and hold"
                             " only alphanumerics, '_', '.' and '-'")
    return name


def data_dir(ipam: dict) -> str:
    return option_path(ipam, "dataDir", prefix="ipam.") or DEFAULT_DATA_DIR


# -- routes and DNS -----------------------------------------------------------------------------------

_ROUTE_INT_FIELDS = {"mtu": "mtu", "advmss": "advmss", "priority": "priority", "table": "table", "scope": "scope"}


def parse_routes(value, key: str) -> list[Route]:
    routes = []
    for i, item in enumerate(_list(value, key)):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise invalid_config(where, item, "expected an object with 'dst' (and optionally 'gw')")
        try:
            dst = ipaddress.ip_network(_string(item.get("dst"), f"{where}.dst"), strict=False)
        except ValueError:
            raise invalid_config(f"{where}.dst", item.get("dst"), "not an IPv4 or IPv6 CIDR") from None
        gw = None
        if item.get("gw") not in (None, ""):
            gw = parse_ip(item["gw"], f"{where}.gw")
            if gw.version != dst.version:
                raise invalid_config(f"{where}.gw", item["gw"], f"not the same address family as dst {dst}")
        extra = {}
        for name in _ROUTE_INT_FIELDS:
            value = option_int(item, name, None, prefix=f"{where}.")
            if value is not None:
                extra[name] = value
        routes.append(Route(dst, gw, **extra))
    return routes



def parse_resolv_conf(path: str, key: str = "ipam.resolvConf") -> DNS:
    """nameserver/domain/search/options lines of a resolv.conf, as the reference reads them."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise invalid_config(key, path, f"cannot read it: {exc.strerror or exc}") from None
    dns = DNS()
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or fields[0][0] in "#;":
            continue
        if fields[0] == "nameserver":
            dns.nameservers.append(fields[1])
        elif fields[0] == "domain":
            dns.domain = fields[1]
        elif fields[0] == "search":
            dns.search.extend(fields[1:])
        elif fields[0] == "options":
            dns.options.extend(fields[1:])
    return dns


# -- ranges -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Range:
    """One allocation pool: ``range_start..range_end`` (inclusive) inside ``subnet``; ``gateway`` is never handed
    out."""
    subnet: IPNetwork
    range_start: IPAddress
    range_end: IPAddress
    gateway: IPAddress

    @property
    def version(self) -> int:
        return self.subnet.version

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.version and self.range_start <= ip <= self.range_end

    def overlaps(self, other: "Range") -> bool:
        return (self.version == other.version and self.range_start <= other.range_end
                and other.range_start <= self.range_end)

    def interface(self, ip: IPAddress) -> IPInterface:
        return ipaddress.ip_interface(f"{ip}/{self.subnet.prefixlen}")

    def __str__(self) -> str:
        return f"{self.range_start}-{self.range_end}"


@dataclass(frozen=True)
class RangeSet:
    """The pools one address is taken from (tried in order, round-robin across them)."""
    ranges: tuple[Range, ...]

    def range_for(self, ip: IPAddress) -> Range | None:
        return next((r for r in self.ranges if r.contains(ip)), None)

    def contains(self, ip: IPAddress) -> bool:
        return self.range_for(ip) is not None

    def overlaps(self, other: "RangeSet") -> bool:
        return any(a.overlaps(b) for a in self.ranges for b in other.ranges)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.ranges)


def _last_address(subnet: IPNetwork) -> IPAddress:
    # IPv4 keeps its broadcast address out of the pool; IPv6 has none.
    return subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address


def parse_range(value, key: str) -> Range:
    """One range with the reference's defaults: start and gateway at network+1, end at the last host."""
    if not isinstance(value, dict):
        raise invalid_config(key, value, "expected an object with 'subnet' (and optionally rangeStart, rangeEnd,"
                             " gateway)")
    raw_subnet = value.get("subnet")
    if "/" not in _string(raw_subnet, f"{key}.subnet"):
        raise invalid_config(f"{key}.subnet", raw_subnet, "expected CIDR notation (NETWORK/PREFIX)")
    try:
        subnet = ipaddress.ip_network(raw_subnet, strict=False)
    except ValueError:
        raise invalid_config(f"{key}.subnet", raw_subnet, "not an IPv4 or IPv6 CIDR") from None
    if subnet.version == 6 and subnet.network_address.ipv4_mapped is not None:
        raise invalid_config(f"{key}.subnet", raw_subnet, "IPv4-mapped IPv6 subnets are not supported: use the"
                             " IPv4 subnet")
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise invalid_config(f"{key}.subnet", raw_subnet, f"network {subnet} too small to allocate from")

    def address_in_subnet(name):
        raw = value.get(name)
        if raw in (None, ""):
            return None
        ip = parse_ip(raw, f"{key}.{name}")
        if ip.version != subnet.version:
            raise invalid_config(f"{key}.{name}", raw, f"not the same address family as subnet {subnet}")
        if ip not in subnet:
            raise invalid_config(f"{key}.{name}", raw, f"not in subnet {subnet}")
        return ip

    first = subnet.network_address + 1
    gateway = address_in_subnet("gateway") or first
    start = address_in_subnet("rangeStart") or first
    end = address_in_subnet("rangeEnd")
    if end is None:
        end = _last_address(subnet)
    elif end < start:
        raise invalid_config(f"{key}.rangeEnd", value.get("rangeEnd"), f"before rangeStart {start}")
    return Range(subnet, start, end, gateway)


def parse_range_set(value, key: str) -> RangeSet:
    if not isinstance(value, list) or not value:
        raise invalid_config(key, value, "a range set is a non-empty list of ranges")
    ranges = tuple(parse_range(item, f"{key}[{i}]") for i, item in enumerate(value))
    if len({r.version for r in ranges}) > 1:
        raise invalid_config(key, value, "mixed address families in one range set")
    for i, a in enumerate(ranges):
        for j in range(i + 1, len(ranges)):
            if a.overlaps(ranges[j]):
                raise invalid_config(f"{key}[{j}]", value[j], f"overlaps with range {a} ({key}[{i}])")
    return RangeSet(ranges)


def parse_range_sets(value, key: str) -> list[RangeSet]:
    return [parse_range_set(item, f"{key}[{i}]") for i, item in enumerate(_list(value, key))]


def check_no_overlap(range_sets: list[RangeSet], keys: list[str]) -> None:
    for i, a in enumerate(range_sets):
        for j in range(i + 1, len(range_sets)):
            if a.overlaps(range_sets[j]):
                raise CNIError(INVALID_CONFIG, f"invalid {keys[j]}: range set {range_sets[j]} overlaps with"
                               f" range set {a} ({keys[i]})")


# -- host-local ---------------------------------------------------------------------------------------

_LEGACY_RANGE_KEYS = ("subnet", "rangeStart", "rangeEnd", "gateway")


@dataclass
class HostLocalConfig:
    """host-local's validated config."""
    name: str
    data_dir: str
    range_sets: list[RangeSet]
    routes: list[Route] = field(default_factory=list)
    resolv_conf: str = ""


def load_host_local(req: Request) -> HostLocalConfig:
    ipam = ipam_section(req)
    range_sets: list[RangeSet] = []
    keys: list[str] = []
    ip_ranges = req.runtime_config.get("ipRanges")
    if ip_ranges:
        # The runtime manages the pools: its ranges stand in for the configured ones.
        range_sets = parse_range_sets(ip_ranges, "runtimeConfig.ipRanges")
        keys = [f"runtimeConfig.ipRanges[{i}]" for i in range(len(range_sets))]
    else:
        if ipam.get("subnet") not in (None, ""):
            # The pre-"ranges" form: one range at the top of ipam, allocated from first.
            legacy = {k: ipam[k] for k in _LEGACY_RANGE_KEYS if k in ipam}
            range_sets.append(RangeSet((parse_range(legacy, "ipam"),)))
            keys.append("ipam.subnet")
        configured = parse_range_sets(ipam.get("ranges"), "ipam.ranges")
        range_sets += configured
        keys += [f"ipam.ranges[{i}]" for i in range(len(configured))]
    if not range_sets:
        raise CNIError(INVALID_CONFIG, "invalid ipam: no IP ranges specified (set 'ranges' or 'subnet')")
    check_no_overlap(range_sets, keys)
    resolv_conf = option_path(ipam, "resolvConf", prefix="ipam.")
    return HostLocalConfig(
        name=network_name(req),
        data_dir=data_dir(ipam),
        range_sets=range_sets,
        routes=parse_routes(ipam.get("routes"), "ipam.routes"),
        resolv_conf=_string(resolv_conf, "ipam.resolvConf"),
    )


def requested_ips(req: Request) -> list[IPAddress]:
    """Addresses the runtime asks for: CNI_ARGS IP= (comma-separated), args.cni.ips, runtimeConfig.ips."""
    wanted: list[IPAddress] = []
    env_ip = req.cni_arg("IP", known=KNOWN_CNI_ARGS)
    if env_ip:
        wanted += [parse_requested_ip(item, "CNI_ARGS IP", INVALID_ENVIRONMENT)
                   for item in env_ip.split(",") if item.strip()]
    cni_args = req.config_args.get("cni")
    if isinstance(cni_args, dict):
        wanted += [parse_requested_ip(item, "args.cni.ips[]") for item in _list(cni_args.get("ips"), "args.cni.ips")]
    wanted += [parse_requested_ip(item, "runtimeConfig.ips[]")
               for item in _list(req.runtime_config.get("ips"), "runtimeConfig.ips")]
    unique: list[IPAddress] = []
    for ip in wanted:
        if ip not in unique:
            unique.append(ip)
    return unique
