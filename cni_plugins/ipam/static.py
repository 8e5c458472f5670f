"""static IPAM: hands back exactly the addresses, routes and DNS it is configured (or asked) with.

Precedence as in the reference static plugin (measured against /usr/lib/cni/static 1.1.1):
``ipam.addresses`` plus CNI_ARGS ``IP=`` (comma-separated CIDRs; ``GATEWAY=`` applies to those CNI_ARGS
addresses that contain it); ``args.cni.ips`` replaces all of them; ``runtimeConfig.ips`` replaces that.
Nothing is allocated, so DEL has nothing to undo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cni_plugins.errors import CNIError, INTERNAL, INVALID_ENVIRONMENT, invalid_config
from cni_plugins.plugin import Plugin, no_config
from cni_plugins.skel import Request
from cni_plugins.results import DNS, IPAddress, IPConfig, IPInterface, Result, Route

from .config import KNOWN_CNI_ARGS, ipam_section, parse_cidr, parse_dns, parse_ip, parse_routes


@dataclass
class StaticConfig:
    """static IPAM's validated config."""
    addresses: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)


def _address(address: IPInterface, gateway: IPAddress | None, key: str, raw_gateway) -> IPConfig:
    if gateway is not None and gateway.version != address.version:
        raise invalid_config(key, raw_gateway, f"not the same address family as address {address}")
    return IPConfig(address, gateway)


def _configured(ipam: dict) -> list[IPConfig]:
    value = ipam.get("addresses")
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_config("ipam.addresses", value, "expected a list of {address, gateway} objects")
    out = []
    for i, item in enumerate(value):
        key = f"ipam.addresses[{i}]"
        if not isinstance(item, dict):
            raise invalid_config(key, item, "expected an object with 'address' (and optionally 'gateway')")
        address = parse_cidr(item.get("address"), f"{key}.address")
        raw_gw = item.get("gateway")
        gateway = parse_ip(raw_gw, f"{key}.gateway") if raw_gw not in (None, "") else None
        out.append(_address(address, gateway, f"{key}.gateway", raw_gw))
    return out


def _from_cni_args(req: Request) -> list[IPConfig]:
    raw_ip = req.cni_arg("IP", known=KNOWN_CNI_ARGS) or ""
    raw_gw = req.cni_arg("GATEWAY", known=KNOWN_CNI_ARGS) or ""
    out = []
    for item in filter(None, (s.strip() for s in raw_ip.split(","))):
        try:
            out.append(IPConfig(parse_cidr(item, "CNI_ARGS IP")))
        except CNIError as err:
            raise CNIError(INVALID_ENVIRONMENT, err.msg) from None
    for item in filter(None, (s.strip() for s in raw_gw.split(","))):
        try:
            gateway = parse_ip(item, "CNI_ARGS GATEWAY")
        except CNIError as err:
            raise CNIError(INVALID_ENVIRONMENT, err.msg) from None
        for ipc in out:
            if gateway in ipc.address.network:
                ipc.gateway = gateway
    return out


def _cidr_list(value, key: str) -> list[IPConfig]:
    if not isinstance(value, list):
        raise invalid_config(key, value, "expected a list of CIDR strings")
    return [IPConfig(parse_cidr(item, f"{key}[{i}]")) for i, item in enumerate(value)]


def load(req: Request) -> StaticConfig:
    ipam = ipam_section(req)
    addresses = _configured(ipam) + _from_cni_args(req)
    cni_args = req.config_args.get("cni")
    if isinstance(cni_args, dict) and cni_args.get("ips"):
        addresses = _cidr_list(cni_args["ips"], "args.cni.ips")
    if req.runtime_config.get("ips"):
        addresses = _cidr_list(req.runtime_config["ips"], "runtimeConfig.ips")
    return StaticConfig(addresses, parse_routes(ipam.get("routes"), "ipam.routes"), parse_dns(ipam.get("dns"), "ipam.dns"))


def add(req: Request, conf: StaticConfig, _handles) -> Result:
    return Result(ips=conf.addresses, routes=conf.routes, dns=conf.dns)


def delete(req: Request, _conf, _handles) -> None:
    return None


def check(req: Request, conf: StaticConfig, _handles) -> None:
    """Every address this config yields must be in prevResult, with the configured gateway."""
    prev = req.require_prev_result("static", "CHECK needs the result of the ADD in the network config")
    found = {ipc.address.ip: ipc for ipc in prev.ips}
    for want in conf.addresses:
        got = found.get(want.address.ip)
        if got is None:
            raise CNIError(INTERNAL, f"static: address {want.address} of {req.ifname} missing from prevResult")
        if want.gateway is not None and got.gateway != want.gateway:
            raise CNIError(INTERNAL, f"static: address {want.address} of {req.ifname} has gateway {got.gateway},"
                           f" expected {want.gateway}")


PLUGIN = Plugin(name="static", load_config=load, add=add, delete=delete, check=check,
                load_teardown_config=no_config)
