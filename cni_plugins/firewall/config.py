"""The firewall plugin's configuration, validated once: CNI input -> FirewallConfig."""

from __future__ import annotations

from dataclasses import dataclass

from cni_plugins.config import option_str
from cni_plugins.errors import invalid_config

INGRESS_OPEN = "open"
INGRESS_SAME_BRIDGE = "same-bridge"
INGRESS_POLICIES = (INGRESS_OPEN, INGRESS_SAME_BRIDGE)

# The reference picks firewalld or iptables. pynet always writes nftables (its own table), so these names
# are accepted for configs written for the reference and all mean the same thing here.
BACKENDS = ("", "iptables", "firewalld", "nftables")


@dataclass(frozen=True)
class FirewallConfig:
    """The firewall plugin's validated config."""
    ingress_policy: str = INGRESS_OPEN
    backend: str = ""


def parse(config: dict) -> FirewallConfig:
    backend = option_str(config, "backend")
    if backend not in BACKENDS:
        raise invalid_config("backend", backend, f"expected one of {list(BACKENDS)} (pynet always uses nftables)")
    policy = option_str(config, "ingressPolicy") or INGRESS_OPEN
    if policy not in INGRESS_POLICIES:
        raise invalid_config("ingressPolicy", policy, f"expected one of {list(INGRESS_POLICIES)}")
    # iptablesAdminChainName and firewalldZone belong to backends pynet does not have; the admin hook is
    # always the `admin` chain of pynet's table.
    option_str(config, "iptablesAdminChainName")
    option_str(config, "firewalldZone")
    return FirewallConfig(ingress_policy=policy, backend=backend)
