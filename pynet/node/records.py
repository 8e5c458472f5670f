"""What a node publishes in the store: one record per node, JSON."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass

BACKENDS = ("vxlan", "host-gw")


@dataclass(frozen=True)
class NodeRecord:
    name: str
    subnet: str          # the node's pod subnet, e.g. 10.244.3.0/24
    public_ip: str       # its underlay address
    backend: str
    vtep_mac: str = ""   # vxlan only

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.subnet)

    @property
    def vtep_ip(self) -> str:
        """The subnet's .0, the address of the node's VXLAN device (flannel's L3 scheme)."""
        return str(self.network.network_address)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw) -> "NodeRecord | None":
        """A record read back; None for anything that is not one (a foreign or damaged key is skipped)."""
        try:
            data = json.loads(raw)
            record = cls(**{k: str(data[k]) for k in ("name", "subnet", "public_ip", "backend")},
                         vtep_mac=str(data.get("vtep_mac", "")))
            record.network
            ipaddress.ip_address(record.public_ip)
        except (ValueError, TypeError, KeyError):
            return None
        return record
