"""``-p`` / ``--publish``: the one grammar of a port mapping, and its CNI ``portMappings`` form.

    [HOSTIP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/PROTOCOL]      (Docker's grammar)

HOSTIP is an IPv4 address, an IPv6 address in brackets (``[::1]:8080:80``) or bare (the last two
``:``-separated fields are the ports), or empty (all addresses); ports are 1-65535; a range maps port by
port (``8092-8093:80-81``; a container range needs a host range of the same length, or no host port);
no HOSTPORT: a free host port is chosen when the mapping is used (assign_host_ports, ``pynet port``
shows it); PROTOCOL is tcp (the default), udp or sctp, in any case. `pynet attach`, `pynet run` and
topology files all read it here.

Imported on `pynet run`'s start-up path: nothing beyond builtins at import (``ipaddress``, ~7 ms, only
when a host IP is given).
"""

from __future__ import annotations

PROTOCOLS = ("tcp", "udp", "sctp")
GRAMMAR = "[HOSTIP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/tcp|udp|sctp]"


class PortSpecError(ValueError):
    """A value that is not a port mapping; the message names the value and what is wrong with it."""


class PortMapping:
    """One published port (or ``count`` consecutive ports): ``host_ip`` "" means every address of the host;
    ``host_port`` 0 means any free port (assign_host_ports picks it)."""

    __slots__ = ("host_port", "container_port", "protocol", "host_ip", "count")

    def __init__(self, host_port: int, container_port: int, protocol: str = "tcp", host_ip: str = "",
                 count: int = 1):
        self.host_port, self.container_port, self.protocol, self.host_ip = host_port, container_port, protocol, host_ip
        self.count = count

    def to_cni(self) -> dict:
        """The element of the ``portMappings`` capability argument (what portmap reads; a range as
        "first-last" strings, which pynet's portmap takes)."""
        def port(first):
            return first if self.count == 1 else f"{first}-{first + self.count - 1}"
        out = {"hostPort": port(self.host_port), "containerPort": port(self.container_port),
               "protocol": self.protocol}
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out

    def __str__(self) -> str:
        """Docker's form: ``0.0.0.0:8080->80/tcp``."""
        def ports(first):
            return str(first) if self.count == 1 else f"{first}-{first + self.count - 1}"
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else (self.host_ip or "0.0.0.0")
        return f"{ip}:{ports(self.host_port)}->{ports(self.container_port)}/{self.protocol}"

    def __eq__(self, other) -> bool:
        return type(other) is PortMapping and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None

    def __repr__(self) -> str:
        return f"PortMapping({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"


def _port_range(text: str, bad) -> tuple[int, int]:
    """"80" -> (80, 1), "80-81" -> (80, 2)."""
    first, sep, last = text.partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise bad("ports must be numbers") from None
    if not (0 < lo < 65536 and 0 < hi < 65536):
        raise bad("ports must be 1-65535")
    if hi < lo:
        raise bad(f"the range {text} ends below its start")
    return lo, hi - lo + 1


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
    if not parts or len(parts) > 3 or proto not in PROTOCOLS or not parts[-1]:
        raise bad(f"expected {GRAMMAR}")
    container_port, count = _port_range(parts[-1], bad)
    host_port, host_count = 0, count
    if len(parts) >= 2 and parts[-2]:
        host_port, host_count = _port_range(parts[-2], bad)
    if host_count != count:
        raise bad(f"the host range holds {host_count} ports, the container range {count}")
    host_ip = parts[0] if len(parts) == 3 else ""
    if host_ip:
        import ipaddress

        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise bad(f"bad host IP {host_ip!r}") from None
    return PortMapping(host_port, container_port, proto, host_ip, count)


def _free_ports(protocol: str, host_ip: str, count: int) -> int | None:
    """The first of ``count`` consecutive ports free for ``protocol`` on ``host_ip`` in this netns (the
    kernel's ephemeral choice for one port; for a range, tried from there)."""
    import socket

    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM

    def free(port: int) -> int:
        with socket.socket(family, kind) as s:
            s.bind((host_ip, port))
            return s.getsockname()[1]

    for _ in range(64):
        try:
            first = free(0)
            if first + count - 1 > 65535:
                continue
            for port in range(first + 1, first + count):
                free(port)
            return first
        except OSError:
            continue
    return None


def assign_host_ports(mappings: list[PortMapping]) -> list[PortMapping]:
    """Gives each mapping without a host port (``-p 80``) a free one of this netns, as Docker does."""
    for m in mappings:
        if m.host_port == 0:
            port = _free_ports(m.protocol, m.host_ip, m.count)
            if port is None:
                raise PortSpecError(f"invalid -p {m.container_port}: no {m.count} free host port(s) found")
            m.host_port = port
    return mappings


def check_host_ips(mappings: list[PortMapping], flag: str = "-p") -> None:
    """PortSpecError when a mapping's host IP is not an address of this network namespace (traffic could
    never reach it)."""
    import errno
    import socket

    for m in mappings:
        if not m.host_ip:
            continue
        family = socket.AF_INET6 if ":" in m.host_ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.bind((m.host_ip, 0))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise PortSpecError(f"invalid {flag} host IP {m.host_ip}: not an address of this host") \
                        from None
                raise


def to_port_mappings(specs, flag: str = "-p") -> list[dict]:
    """``-p`` values (strings) as the CNI ``portMappings`` capability argument (free host ports chosen for
    those without one)."""
    return [m.to_cni() for m in assign_host_ports([parse_publish(spec, flag) for spec in specs or ()])]
