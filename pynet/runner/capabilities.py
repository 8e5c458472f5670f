"""Capability arguments from a runtime's flags (``-p``, ``--ip``, ``--mac``), validated, and the check that
a network accepts them: libcni passes a capability argument only to plugins declaring it, so one no
plugin declares would silently do nothing. `pynet attach` and `pynet run` both go through here.

Import-light (``ipaddress`` and ``re`` only when a value is checked): `pynet run` reads its options with it.
"""

from __future__ import annotations

# The flag that sets each capability, for messages.
FLAGS = {"portMappings": "-p", "ips": "--ip", "mac": "--mac"}
_MAC = r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}"


class CapabilityError(ValueError):
    """A flag value that is not valid, or a capability the network does not accept; the message says which."""


def check_ip(ip: str) -> str:
    """``ip``: an address, optionally with /prefix (as the ``ips`` capability takes it)."""
    import ipaddress

    try:
        ipaddress.ip_interface(ip)
    except ValueError:
        raise CapabilityError(f"invalid --ip {ip!r}: expected an address (optionally /prefix)") from None
    return ip


def check_mac(mac: str) -> str:
    """``mac`` in lower case; six ':'-separated hex bytes."""
    import re

    if not re.fullmatch(_MAC, mac):
        raise CapabilityError(f"invalid --mac {mac!r}: expected six ':'-separated hex bytes")
    return mac.lower()


def capability_args(port_mappings: list[dict] | None = None, ips: list[str] | None = None,
                    mac: str | None = None) -> dict:
    """The ``capability_args`` of Runner.add: ``port_mappings`` as ports.to_port_mappings gives them,
    ``ips`` and ``mac`` checked here. Empty ones are left out."""
    caps: dict = {}
    if port_mappings:
        caps["portMappings"] = list(port_mappings)
    if ips:
        caps["ips"] = [check_ip(ip) for ip in ips]
    if mac:
        caps["mac"] = check_mac(mac)
    return caps


def require(conf, caps: dict) -> None:
    """CapabilityError unless some plugin of ``conf`` (a NetworkConfigList) declares each of ``caps``."""
    missing = sorted(set(caps) - conf.capabilities())
    if missing:
        raise CapabilityError(f"network {conf.name!r} does not accept {', '.join(FLAGS.get(m, m) for m in missing)}: "
                              f"no plugin declares the capability {', '.join(missing)}")
