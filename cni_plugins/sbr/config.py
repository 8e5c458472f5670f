"""The sbr plugin's configuration (the reference's PluginConf): ``table``, ``gateways``, ``addSourceHints``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cni_plugins.config import option_bool
from cni_plugins.errors import invalid_config
from cni_plugins.skel import Request

FIRST_TABLE = 100          # the reference's firstTableID
RESERVED_TABLES = {0: "unspec", 253: "default", 254: "main", 255: "local"}
TABLE_MAX = 2 ** 32 - 1


@dataclass(frozen=True)
class SbrConfig:
    """Source-based routing's validated settings."""
    table: int | None = None
    gateways: dict = None   # IP version -> gateway address
    add_source_hints: bool = False


def parse_table(config: dict) -> int | None:
    table = config.get("table")
    if table is None:
        return None
    if not isinstance(table, int) or isinstance(table, bool) or not 1 <= table <= TABLE_MAX:
        raise invalid_config("table", table, f"expected a routing table id from 1 to {TABLE_MAX}")
    if table in RESERVED_TABLES:
        raise invalid_config("table", table, f"is the kernel's {RESERVED_TABLES[table]} table")
    return table


def _gateways(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise invalid_config("gateways", value, "expected a list of at most one IPv4 and one IPv6 address")
    if len(value) > 2:
        raise invalid_config("gateways", value, "cannot contain more than 2 entries (one IPv4, one IPv6)")
    out: dict = {}
    for item in value:
        try:
            address = ipaddress.ip_address(item)
        except (TypeError, ValueError):
            raise invalid_config("gateways[]", item, "expected an IP address") from None
        if address.version in out:
            raise invalid_config("gateways", value, f"holds two IPv{address.version} addresses")
        out[address.version] = address
    return out


def parse(req: Request) -> SbrConfig:
    c = req.config
    return SbrConfig(parse_table(c), _gateways(c.get("gateways")), option_bool(c, "addSourceHints", False))
