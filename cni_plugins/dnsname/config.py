"""The dnsname plugin's configuration (options compatible with containers/dnsname).

Config keys: ``domainName`` (default ``dns.pynet``), ``dataDir`` (where records and resolver state live,
default /run/pynet/dns), ``upstreams`` (resolver addresses to forward to; default: the nameservers of
/etc/resolv.conf). Per container: the name from CNI_ARGS ``K8S_POD_NAME`` (podman sets it),
``args.cni.name`` or ``runtimeConfig.name``; aliases from ``runtimeConfig.aliases`` (the CNI ``aliases``
capability: ``{"<network>": ["a", "b"]}``); upstreams from ``runtimeConfig.dns.servers`` (the ``dns``
capability). Every name must be one DNS label.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from cni_plugins.config import option_abs_path, option_str
from cni_plugins.errors import invalid_config
from cni_plugins.skel import Request

DEFAULT_DOMAIN = "dns.pynet"
DEFAULT_DATA_DIR = "/run/pynet/dns"
RESOLV_CONF = "/etc/resolv.conf"
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$", re.IGNORECASE)
_NETWORK = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


@dataclass(frozen=True)
class DnsnameConfig:
    network: str
    domain: str = DEFAULT_DOMAIN
    data_dir: str = DEFAULT_DATA_DIR
    upstreams: list[str] = field(default_factory=list)
    name: str = ""
    aliases: list[str] = field(default_factory=list)
    container_upstreams: list[str] = field(default_factory=list)


def validate_label(key: str, value) -> str:
    if not isinstance(value, str) or not _LABEL.match(value):
        raise invalid_config(key, value, "not a valid DNS label (letters, digits, '-' and '_', at most 63)")
    return value.lower()


def _domain(value) -> str:
    if not isinstance(value, str) or not value.strip("."):
        raise invalid_config("domainName", value, "expected a domain name like dns.pynet")
    labels = value.strip(".").split(".")
    if len(value) > 253 or not all(_LABEL.match(label) for label in labels):
        raise invalid_config("domainName", value, "not a valid domain name")
    return ".".join(labels).lower()


def _addresses(key: str, value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_config(key, value, "expected a list of IP addresses")
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_address(item)))
        except (TypeError, ValueError):
            raise invalid_config(key, item, "not an IP address") from None
    return out


def resolv_conf_nameservers(path: str = RESOLV_CONF) -> list[str]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        out.append(str(ipaddress.ip_address(parts[1].split("%")[0])))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def parse_data_dir(config: dict) -> str:
    return option_abs_path(config, "dataDir", DEFAULT_DATA_DIR)


def parse_network(req: Request) -> str:
    name = req.network_name
    if not _NETWORK.match(name or ""):
        raise invalid_config("name", name, "dnsname needs a network name of letters, digits, '_', '.', '-'")
    return name


def parse(req: Request) -> DnsnameConfig:
    c = req.config
    network = parse_network(req)
    domain = _domain(option_str(c, "domainName", DEFAULT_DOMAIN))
    data_dir = parse_data_dir(c)
    upstreams = _addresses("upstreams", c.get("upstreams"))
    if c.get("upstreams") is None:
        upstreams = resolv_conf_nameservers()
    rc = req.runtime_config

    name = ""
    pod_name = req.args.get("K8S_POD_NAME")
    if pod_name:
        name = validate_label("CNI_ARGS K8S_POD_NAME", pod_name)
    cni_args = req.config_args.get("cni")
    if isinstance(cni_args, dict) and cni_args.get("name"):
        name = validate_label("args.cni.name", cni_args["name"])
    if rc.get("name"):
        name = validate_label("runtimeConfig.name", rc["name"])

    aliases: list[str] = []
    all_aliases = rc.get("aliases")
    if all_aliases is not None:
        if not isinstance(all_aliases, dict):
            raise invalid_config("runtimeConfig.aliases", all_aliases, "expected {network: [names]}")
        mine = all_aliases.get(network)
        if mine is not None and not isinstance(mine, list):
            raise invalid_config(f"runtimeConfig.aliases.{network}", mine, "expected a list of names")
        for alias in mine or ():
            label = validate_label(f"runtimeConfig.aliases.{network}[]", alias)
            if label not in aliases and label != name:
                aliases.append(label)

    dns_cap = rc.get("dns")
    container_upstreams: list[str] = []
    if dns_cap is not None:
        if not isinstance(dns_cap, dict):
            raise invalid_config("runtimeConfig.dns", dns_cap, "expected {servers, searches, options}")
        container_upstreams = _addresses("runtimeConfig.dns.servers", dns_cap.get("servers"))
    return DnsnameConfig(network, domain, data_dir, upstreams, name, aliases, container_upstreams)


def parse_teardown(req: Request) -> DnsnameConfig:
    """DEL and GC need only where the records are, and whose."""
    return DnsnameConfig(parse_network(req), data_dir=parse_data_dir(req.config))
