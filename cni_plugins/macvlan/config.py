"""The macvlan plugin's configuration (the reference's plugins/main/macvlan NetConf), validated once.

``master`` (default: the interface of the default route), ``mode`` bridge/private/vepa/passthru (default
bridge), ``mtu`` (0..the master's, checked when the master is looked up), ``mac`` (overridden by CNI_ARGS
``MAC``, then by ``runtimeConfig.mac``, as the reference), ``linkInContainer``, ``bcqueuelen``; ``ipam`` is
optional (none: an L2-only interface, up without addresses).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cni_plugins import container_links
from cni_plugins.config import option_int, option_str, requested_mac
from cni_plugins.container_links import LinkOptions
from cni_plugins.errors import invalid_config
from cni_plugins.skel import Request
from cni_plugins.results import DNS

MODES = ("bridge", "private", "vepa", "passthru")
MAX_BC_QUEUE_LEN = 2**32 - 1


@dataclass(frozen=True)
class MacvlanConfig:
    """The macvlan plugin's validated config."""
    link: LinkOptions = field(default_factory=LinkOptions)
    mode: str = "bridge"
    mac: str | None = None
    bcqueuelen: int = 0
    ipam: str | None = None
    dns: DNS = field(default_factory=DNS)


def load(req: Request) -> MacvlanConfig:
    config = req.config
    mode = option_str(config, "mode") or "bridge"
    if mode not in MODES:
        raise invalid_config("mode", mode, f"expected one of {', '.join(MODES)}")
    return MacvlanConfig(link=container_links.link_options(req), mode=mode, mac=requested_mac(req, config_key=True),
                         bcqueuelen=option_int(config, "bcqueuelen", 0, minimum=0, maximum=MAX_BC_QUEUE_LEN),
                         ipam=container_links.ipam_options(req), dns=container_links.dns_option(req))
