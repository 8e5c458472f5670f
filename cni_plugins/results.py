"""CNI result objects: parsed from any supported version, rendered in the version the config asked for.

Addresses use the stdlib ``ipaddress`` types: an ``ip_interface`` keeps both the host address and
its prefix, which is exactly what a CNI ``ips[].address`` holds.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from . import version as cniversion
from .errors import CNIError, DECODING_FAILURE

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _bad(what: str, value) -> CNIError:
    return CNIError(DECODING_FAILURE, f"invalid result: {what} {value!r}")


def parse_interface_address(value) -> IPInterface:
    try:
        return ipaddress.ip_interface(value)
    except (TypeError, ValueError):
        raise _bad("address", value) from None


def parse_address(value) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except (TypeError, ValueError):
        raise _bad("ip", value) from None


def _optional_address(value) -> IPAddress | None:
    """A gateway: absent or empty means none."""
    return parse_address(value) if value else None


def _object(d, what: str) -> dict:
    if not isinstance(d, dict):
        raise _bad(what, d)
    return d


def _list(value, what: str) -> list:
    """A JSON array (absent or null: empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(what, value)
    return value


def _string(value, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(what, value)
    return value


def _strings(value, what: str) -> list[str]:
    return [_string(v, what) for v in _list(value, what)]


def _int(value, what: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise _bad(what, value)
    return value


def parse_network(value) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError):
        raise _bad("dst", value) from None


@dataclass
class Interface:
    """An interface of a result; ``sandbox`` is the netns path of a container-side one."""
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None  # 1.1
    socket_path: str = ""  # 1.1
    pci_id: str = ""  # 1.1

    def to_dict(self, version: str) -> dict:
        out = {"name": self.name}
        if self.mac:
            out["mac"] = self.mac
        if self.sandbox:
            out["sandbox"] = self.sandbox
        if cniversion.at_least(version, "1.1.0"):
            if self.mtu:
                out["mtu"] = self.mtu
            if self.socket_path:
                out["socketPath"] = self.socket_path
            if self.pci_id:
                out["pciID"] = self.pci_id
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Interface":
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise _bad("interface", d)
        return cls(d["name"], _string(d.get("mac"), "interface mac"), _string(d.get("sandbox"), "interface sandbox"),
                   _int(d.get("mtu"), "interface mtu"), _string(d.get("socketPath"), "interface socketPath"),
                   _string(d.get("pciID"), "interface pciID"))


@dataclass
class IPConfig:
    """An address of a result; ``interface`` indexes the result's interfaces."""
    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None

    @property
    def family(self) -> int:
        return self.address.version

    def to_dict(self, version: str) -> dict:
        out: dict = {}
        if cniversion.has_ip_version_field(version):
            out["version"] = str(self.address.version)
        out["address"] = str(self.address)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        if self.interface is not None:
            out["interface"] = self.interface
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "IPConfig":
        d = _object(d, "ips entry")
        return cls(parse_interface_address(d.get("address")), _optional_address(d.get("gateway")),
                   _int(d.get("interface"), "interface index"))


@dataclass
class Route:
    """A route of a result, with the optional attributes of CNI 1.1."""
    dst: IPNetwork
    gw: IPAddress | None = None
    # 1.1 fields
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None

    _V11_FIELDS = ("mtu", "advmss", "priority", "table", "scope")

    def to_dict(self, version: str) -> dict:
        out: dict = {"dst": str(self.dst)}
        if self.gw is not None:
            out["gw"] = str(self.gw)
        if cniversion.at_least(version, "1.1.0"):
            for name in self._V11_FIELDS:
                value = getattr(self, name)
                if value is not None:
                    out[name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Route":
        d = _object(d, "route")
        extra = {name: _int(d[name], f"route {name}") for name in cls._V11_FIELDS if d.get(name) is not None}
        return cls(parse_network(d.get("dst")), _optional_address(d.get("gw")), **extra)


@dataclass
class DNS:
    """The DNS settings of a config or result."""
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.nameservers or self.domain or self.search or self.options)

    def to_dict(self) -> dict:
        out: dict = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_dict(cls, d) -> "DNS":
        if not d:
            return cls()
        _object(d, "dns")
        return cls(_strings(d.get("nameservers"), "dns nameservers"), _string(d.get("domain"), "dns domain"),
                   _strings(d.get("search"), "dns search"), _strings(d.get("options"), "dns options"))


@dataclass
class Result:
    """A CNI result, in any supported version's shape through to_dict/from_dict."""
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

    def to_dict(self, version: str) -> dict:
        out: dict = {"cniVersion": version}
        if self.interfaces:
            out["interfaces"] = [i.to_dict(version) for i in self.interfaces]
        if self.ips:
            out["ips"] = [ip.to_dict(version) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_dict(version) for r in self.routes]
        out["dns"] = self.dns.to_dict()
        return out

    @classmethod
    def from_dict(cls, d) -> "Result":
        """Reads a result of any supported version (fields of later versions are kept when present)."""
        _object(d, "result")
        return cls(
            [Interface.from_dict(i) for i in _list(d.get("interfaces"), "interfaces")],
            [IPConfig.from_dict(ip) for ip in _list(d.get("ips"), "ips")],
            [Route.from_dict(r) for r in _list(d.get("routes"), "routes")],
            DNS.from_dict(d.get("dns")),
        )

    def add_interface(self, iface: Interface) -> int:
        self.interfaces.append(iface)
        return len(self.interfaces) - 1
