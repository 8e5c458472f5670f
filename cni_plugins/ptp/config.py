"""ptp's configuration (the reference's plugins/main/ptp NetConf), validated once.

``ipMasq`` (default false), ``ipMasqBackend`` ("iptables" or "nftables": both are served by pynet's nftables
table, the key is only validated), ``mtu`` (0: the kernel's default; else 68..65535, a veth's range), ``dns``
(replaces IPAM's DNS when any field is set), ``ipam`` (required: a point-to-point link needs addresses).
Every bad value is code 7 naming the key and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cni_plugins.config import option_bool, option_int, option_str, parse_dns
from cni_plugins.errors import invalid_config
from cni_plugins.skel import Request
from cni_plugins.results import DNS

MIN_MTU, MAX_MTU = 68, 65535
MASQ_BACKENDS = ("iptables", "nftables")


@dataclass(frozen=True)
class PtpConfig:
    """The ptp plugin's validated config."""
    ipam: str
    ip_masq: bool = False
    mtu: int | None = None
    dns: DNS = field(default_factory=DNS)


def _ipam(config) -> str:
    ipam = config.get("ipam")
    if not isinstance(ipam, dict) or not ipam:
        raise invalid_config("ipam", ipam, "ptp requires an IPAM configuration (an object with a 'type')")
    kind = ipam.get("type")
    if not isinstance(kind, str) or not kind:
        raise invalid_config("ipam.type", kind, "expected the name of an IPAM plugin")
    return kind




def load(req: Request) -> PtpConfig:
    config = req.config
    mtu = option_int(config, "mtu", 0, minimum=0, maximum=MAX_MTU)
    if mtu and mtu < MIN_MTU:
        raise invalid_config("mtu", mtu, f"expected 0 (the default) or {MIN_MTU}..{MAX_MTU}")
    backend = option_str(config, "ipMasqBackend", None)
    if backend is not None and backend not in MASQ_BACKENDS:
        raise invalid_config("ipMasqBackend", backend, f"expected one of {', '.join(MASQ_BACKENDS)}")
    return PtpConfig(ipam=_ipam(config), ip_masq=option_bool(config, "ipMasq"), mtu=mtu or None,
                     dns=parse_dns(config.get("dns")))


def load_teardown(req: Request) -> PtpConfig:
    """DEL and GC need only the IPAM type and whether masquerade elements may exist: a config gone bad since
    ADD (an MTU out of range, a non-boolean ipMasq) must not keep the lease or the elements from going."""
    config = req.config
    return PtpConfig(ipam=_ipam(config), ip_masq=config.get("ipMasq") not in (None, False))
