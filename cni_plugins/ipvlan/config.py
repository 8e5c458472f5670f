"""The ipvlan plugin's configuration (the reference's plugins/main/ipvlan NetConf), validated once.

``master`` (default: when chained, the one interface of prevResult; else the default route's interface),
``mode`` l2/l3/l3s (default l2), ``mtu``, ``linkInContainer``; ``ipam`` is required unless the plugin is
chained after one whose result has IPs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cni_plugins import container_links
from cni_plugins.config import option_str
from cni_plugins.container_links import LinkOptions
from cni_plugins.errors import invalid_config
from cni_plugins.skel import Request
from cni_plugins.results import DNS

# IFLA_IPVLAN_MODE values (include/uapi/linux/if_link.h)
MODES = {"l2": 0, "l3": 1, "l3s": 2}


@dataclass(frozen=True)
class IpvlanConfig:
    """The ipvlan plugin's validated config."""
    link: LinkOptions = field(default_factory=LinkOptions)
    mode: str = "l2"
    ipam: str | None = None
    dns: DNS = field(default_factory=DNS)

    @property
    def mode_value(self) -> int:
        return MODES[self.mode]


def load(req: Request) -> IpvlanConfig:
    mode = option_str(req.config, "mode") or "l2"
    if mode not in MODES:
        raise invalid_config("mode", mode, f"expected one of {', '.join(MODES)}")
    chained_ips = req.prev_result is not None and bool(req.prev_result.ips)
    ipam = container_links.ipam_options(
        req, "" if chained_ips or req.command != "ADD" else
        "ipvlan needs an IPAM plugin unless it is chained after a plugin whose result has IPs")
    return IpvlanConfig(container_links.link_options(req), mode, ipam, container_links.dns_option(req))
