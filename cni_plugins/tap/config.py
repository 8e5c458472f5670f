"""tap's configuration (the reference's plugins/main/tap NetConf), validated once.

``mac`` (overridden by CNI_ARGS ``MAC``, then by the ``mac`` capability, as in the reference), ``mtu``,
``multiQueue``, ``owner`` (uid) and ``group`` (gid) of the tap, ``bridge`` (a bridge in the container netns
the tap becomes a port of), ``selinuxContext`` (refused: the reference labels the tap by running `ip` under
that context; pynet creates it in-process), ``ipam`` optional, ``dns``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cni_plugins import delegate
from cni_plugins.config import option_bool, option_int, option_str, parse_dns, requested_mac, validate_link_name
from cni_plugins.errors import invalid_config
from cni_plugins.skel import Request
from cni_plugins.results import DNS

# A tap's MTU range: ETH_MIN_MTU .. 65535 minus its Ethernet header (the tun driver's max_mtu).
MIN_MTU, MAX_MTU = 68, 65521
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no owner"


@dataclass(frozen=True)
class TapConfig:
    """The tap device's validated settings."""
    mac: str | None = None
    mtu: int | None = None
    multi_queue: bool = False
    owner: int | None = None
    group: int | None = None
    bridge: str | None = None
    ipam: str | None = None
    dns: DNS = field(default_factory=DNS)


def load(req: Request) -> TapConfig:
    config = req.config
    mtu = option_int(config, "mtu")
    if mtu and not MIN_MTU <= mtu <= MAX_MTU:
        raise invalid_config("mtu", mtu, f"expected {MIN_MTU}..{MAX_MTU} (a tap's MTU range)")
    owner = option_int(config, "owner", None, minimum=0, maximum=MAX_ID)
    group = option_int(config, "group", None, minimum=0, maximum=MAX_ID)
    selinux = option_str(config, "selinuxContext")
    if selinux:
        raise invalid_config("selinuxContext", selinux, "not supported by pynet (it creates the tap in-process, "
                             "not by running `ip` under an SELinux exec label)")
    bridge = option_str(config, "bridge") or None
    if bridge is not None:
        bridge = validate_link_name("bridge", bridge)
    return TapConfig(mac=requested_mac(req, config_key=True), mtu=mtu or None, multi_queue=option_bool(config, "multiQueue"), owner=owner,
                     group=group, bridge=bridge, ipam=delegate.ipam_type(req), dns=parse_dns(config.get("dns")))


def load_teardown(req: Request) -> TapConfig:
    """DEL and GC need only the IPAM type (a config whose MAC or MTU went bad must not stop the teardown)."""
    return TapConfig(ipam=delegate.ipam_type(req))
