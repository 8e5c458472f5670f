"""The dhcp IPAM config (the reference's dhcp ``IPAMConfig``) and the DHCP options one lease asks with.

``ipam``: ``daemonSocketPath`` (default /run/cni/dhcp.sock), ``request`` (list of ``{option, skipDefault}``),
``provide`` (list of ``{option, value, fromArg}``), ``priority`` (the metric of the routes). An option is a
name the reference knows (dhcp-options(5) spelling) or a code 1..254. Every error is code 7 and names the
key and the value.

What the lease asks with, as the reference's prepareOptions: the client identifier ``0`` +
``<containerID>/<network>/<ifname>`` (at most 254 bytes), then every provided option (a later one with the
same code wins, ``fromArg`` over ``value`` when that CNI_ARGS key is set), and the parameter request list:
the requested options plus the defaults unless some entry says ``skipDefault``. The reference's defaults
are routers and subnet-mask; here DNS servers, domain name and classless static routes too, so the result
can carry them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cni_plugins.config import option_int, option_str
from cni_plugins.errors import invalid_config
from cni_plugins.ipam.config import ipam_section
from cni_plugins.skel import Request

from . import message

DEFAULT_SOCKET = "/run/cni/dhcp.sock"

OPTION_NAMES = {
    "dhcp-client-identifier": message.CLIENT_ID,
    "subnet-mask": message.SUBNET_MASK,
    "routers": message.ROUTER,
    "host-name": message.HOST_NAME,
    "user-class": message.USER_CLASS,
    "vendor-class-identifier": message.VENDOR_CLASS,
}
DEFAULT_REQUEST = (message.SUBNET_MASK, message.ROUTER, message.DNS_SERVERS, message.DOMAIN_NAME,
                   message.CLASSLESS_ROUTES)
MAX_CLIENT_ID = 254
MAX_VALUE = 255


@dataclass
class DhcpConfig:
    """The dhcp plugin's validated config."""
    socket_path: str = DEFAULT_SOCKET
    priority: int = 0
    provide: dict[int, bytes] = field(default_factory=dict)
    request: list[int] = field(default_factory=list)


def parse_option(value, key: str) -> int:
    if isinstance(value, str) and value in OPTION_NAMES:
        return OPTION_NAMES[value]
    if isinstance(value, str) and value.isdigit() and 0 < int(value) < 255:
        return int(value)
    raise invalid_config(key, value, f"expected one of {sorted(OPTION_NAMES)} or an option code from 1 to 254")


def _list(ipam: dict, key: str) -> list:
    value = ipam.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_config(f"ipam.{key}", value, "expected a list of objects")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid_config(f"ipam.{key}[{i}]", item, "expected an object")
    return value


def _provided(ipam: dict, req: Request) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for i, item in enumerate(_list(ipam, "provide")):
        key = f"ipam.provide[{i}]"
        code = parse_option(item.get("option"), f"{key}.option")
        value = option_str(item, "value", prefix=f"{key}.")
        from_arg = option_str(item, "fromArg", prefix=f"{key}.")
        if len(value.encode()) > MAX_VALUE:
            raise invalid_config(f"{key}.value", value, f"longer than {MAX_VALUE} bytes")
        if value:
            out[code] = value.encode()
        if from_arg and from_arg in req.args:
            arg = req.args[from_arg]
            if len(arg.encode()) > MAX_VALUE:
                raise invalid_config(f"{key}.fromArg", from_arg, f"CNI_ARGS {from_arg} is longer than {MAX_VALUE} bytes")
            out[code] = arg.encode()
    return out


def _requested(ipam: dict) -> list[int]:
    codes: list[int] = []
    skip_default = False
    for i, item in enumerate(_list(ipam, "request")):
        key = f"ipam.request[{i}]"
        if item.get("skipDefault") not in (None, False, True):
            raise invalid_config(f"{key}.skipDefault", item.get("skipDefault"), "expected true or false")
        skip_default = skip_default or bool(item.get("skipDefault"))
        if item.get("option") in (None, ""):
            continue
        code = parse_option(item.get("option"), f"{key}.option")
        if code not in codes:
            codes.append(code)
    if not skip_default:
        codes += [code for code in DEFAULT_REQUEST if code not in codes]
    return codes


def client_id(container_id: str, network: str, ifname: str) -> str:
    return f"{container_id}/{network}/{ifname}"[:MAX_CLIENT_ID]


def load(req: Request) -> DhcpConfig:
    ipam = ipam_section(req)
    socket_path = option_str(ipam, "daemonSocketPath", prefix="ipam.") or DEFAULT_SOCKET
    priority = option_int(ipam, "priority", 0, minimum=0, maximum=2**32 - 1, prefix="ipam.")
    return DhcpConfig(socket_path, priority, _provided(ipam, req), _requested(ipam))


def load_teardown(req: Request) -> DhcpConfig:
    """DEL and GC need only where the daemon listens."""
    ipam = req.config.get("ipam")
    path = ipam.get("daemonSocketPath") if isinstance(ipam, dict) else None
    return DhcpConfig(path if isinstance(path, str) and path else DEFAULT_SOCKET)
