"""``-p`` / ``--publish``: the one grammar of a port mapping, and its CNI ``portMappings`` form.

    [HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTOCOL]

HOSTIP is an IPv4 address, an IPv6 address in brackets (``[::1]:8080:80``) or bare (the last two
``:``-separated fields are the ports), or empty (all addresses); both ports are 1-65535; PROTOCOL is tcp
(the default), udp or sctp, in any case. `pynet attach`, `pynet run` and topology files all read it here.

Imported on `pynet run`'s start-up path: nothing beyond builtins at import (``ipaddress``, ~7 ms, only
when a host IP is given).
"""

from __future__ import annotations

PROTOCOLS = ("tcp", "udp", "sctp")
GRAMMAR = "[HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp|sctp]"


class PortSpecError(ValueError):
    """A value that is not a port mapping; the message names the value and what is wrong with it."""


class PortMapping:
    """One published port: ``host_ip`` "" means every address of the host."""

    __slots__ = ("host_port", "container_port", "protocol", "host_ip")

    def __init__(self, host_port: int, container_port: int, protocol: str = "tcp", host_ip: str = ""):
        self.host_port, self.container_port, self.protocol, self.host_ip = host_port, container_port, protocol, host_ip

    def to_cni(self) -> dict:
        """The element of the ``portMappings`` capability argument (what portmap reads)."""
        out = {"hostPort": self.host_port, "containerPort": self.container_port, "protocol": self.protocol}
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out

    def __eq__(self, other) -> bool:
        return type(other) is PortMapping and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None

    def __repr__(self) -> str:
        return f"PortMapping({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"


def parse_publish(spec: str, flag: str = "-p") -> PortMapping:
    """One ``-p`` value; PortSpecError (``invalid -p '...': ...``) when it is not one. ``flag`` names
    where the value came from in that message."""
    def bad(why: str) -> PortSpecError:
        return PortSpecError(f"invalid {flag} {spec!r}: {why}")

    body, _, proto = str(spec).partition("/")
    proto = (proto or "tcp").lower()
    if body.startswith("["):   # [v6]:HOST:CTR
        host_ip, sep, rest = body[1:].partition("]:")
        parts = [host_ip] + rest.split(":") if sep else []
    else:
        parts = body.rsplit(":", 2)
    if len(parts) not in (2, 3) or proto not in PROTOCOLS:
        raise bad(f"expected {GRAMMAR}")
    try:
        host_port, container_port = int(parts[-2]), int(parts[-1])
    except ValueError:
        raise bad("ports must be numbers") from None
    if not (0 < host_port < 65536 and 0 < container_port < 65536):
        raise bad("ports must be 1-65535")
    host_ip = parts[0] if len(parts) == 3 else ""
    if host_ip:
        import ipaddress

        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise bad(f"bad host IP {host_ip!r}") from None
    return PortMapping(host_port, container_port, proto, host_ip)


def to_port_mappings(specs, flag: str = "-p") -> list[dict]:
    """``-p`` values (strings) as the CNI ``portMappings`` capability argument."""
    return [parse_publish(spec, flag).to_cni() for spec in specs or ()]
