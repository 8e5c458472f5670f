"""The firewall plugin's configuration, validated once: CNI input -> FirewallConfig."""

from __future__ import annotations

from dataclasses import dataclass

from cni_plugins.errors import invalid_config

INGRESS_OPEN = "open"
INGRESS_SAME_BRIDGE = "same-bridge"
INGRESS_POLICIES = (INGRESS_OPEN, INGRESS_SAME_BRIDGE)

# The reference picks firewalld or iptables. pynet always writes nftables (its own table), so these names
# are accepted for configs written for the reference and all mean the same thing here.
BACKENDS = ("", "iptables", "firewalld", "nftables")


@dataclass(frozen=True)
class FirewallConfig:
    ingress_policy: str = INGRESS_OPEN
    backend: str = ""


def _string(config: dict, key: str, default: str = "") -> str:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid_config(key, value, "must be a string")
    return value


def parse(config: dict) -> FirewallConfig:
    backend = _string(config, "backend")
    if backend not in BACKENDS:
        raise invalid_config("backend", backend, f"expected one of {list(BACKENDS)} (pynet always uses nftables)")
    policy = _string(config, "ingressPolicy") or INGRESS_OPEN
    if policy not in INGRESS_POLICIES:
        raise invalid_config("ingressPolicy", policy, f"expected one of {list(INGRESS_POLICIES)}")
    # iptablesAdminChainName and firewalldZone belong to backends pynet does not have; the admin hook is
    # always the `admin` chain of pynet's table.
    _string(config, "iptablesAdminChainName")
    _string(config, "firewalldZone")
    return FirewallConfig(ingress_policy=policy, backend=backend)
