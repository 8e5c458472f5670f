"""The vlan plugin's configuration (the reference's plugins/main/vlan NetConf), validated once.

``master`` (required), ``vlanId`` (required, 0..4094), ``mtu``, ``linkInContainer``; ``ipam`` required.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cni_plugins import container_links
from cni_plugins.config import option_int
from cni_plugins.container_links import LinkOptions
from cni_plugins.errors import invalid_config
from cni_plugins.skel import Request
from cni_plugins.results import DNS

MAX_VLAN_ID = 4094


@dataclass(frozen=True)
class VlanConfig:
    """The vlan plugin's validated config."""
    link: LinkOptions
    vlan_id: int
    ipam: str | None = None
    dns: DNS = field(default_factory=DNS)


def load(req: Request) -> VlanConfig:
    if req.config.get("vlanId") is None:
        raise invalid_config("vlanId", None, f"required: the VLAN ID, 0..{MAX_VLAN_ID}")
    vlan_id = option_int(req.config, "vlanId", 0, minimum=0, maximum=MAX_VLAN_ID)
    link = container_links.link_options(
        req, master_required=True, why_required="required: the interface to create the VLAN on")
    ipam = container_links.ipam_options(req, "vlan needs an IPAM plugin for the addresses of its interface")
    return VlanConfig(link, vlan_id, ipam, container_links.dns_option(req))
