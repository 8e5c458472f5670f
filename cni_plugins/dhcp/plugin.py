"""dhcp IPAM: the container's address comes from a DHCP server on its network, through the `dhcp daemon`.

Each verb is one request to the daemon (cni_plugins/dhcp/daemon.py) on ``ipam.daemonSocketPath``, with the
container's network namespace passed as an fd: ADD acquires the lease (DISCOVER/OFFER/REQUEST/ACK from
inside the container namespace, for the container interface's MAC) and the daemon keeps renewing it; DEL
releases it (DHCPRELEASE); CHECK asks that the daemon still holds it with prevResult's address; GC releases
the network's leases of attachments no longer valid; STATUS fails (code 50) while no daemon listens.
Without a daemon ADD and DEL fail with code 11 (try again later) naming the socket.

The client identifier is ``<containerID>/<network>/<ifname>`` as the reference's; options as in
cni_plugins/dhcp/config.py.
"""

from __future__ import annotations

from cni_plugins.errors import CNIError, INTERNAL, PLUGIN_NOT_AVAILABLE
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Result

from . import config as dhcp_config
from . import rpc
from .config import DhcpConfig


def _client_id(req: Request) -> str:
    return dhcp_config.client_id(req.container_id, req.network_name, req.ifname)


def _args(req: Request, conf: DhcpConfig | None = None) -> dict:
    args = {"clientID": _client_id(req), "containerID": req.container_id, "network": req.network_name,
            "ifname": req.ifname, "netns": req.netns}
    if conf is not None:
        args["options"] = {str(code): value.hex() for code, value in conf.provide.items()}
        args["request"] = conf.request
    return args


def _result(reply: dict, conf: DhcpConfig) -> Result:
    result = Result.from_dict(reply.get("result") or {})
    if conf.priority:
        for route in result.routes:
            route.priority = conf.priority
    return result


def add(req: Request, conf: DhcpConfig, handles: Handles) -> Result:
    container = handles.container()
    return _result(rpc.call(conf.socket_path, rpc.ALLOCATE, _args(req, conf), [container.fd]), conf)


def delete(req: Request, conf: DhcpConfig, handles: Handles) -> None:
    container = handles.container_if_present()
    rpc.call(conf.socket_path, rpc.RELEASE, _args(req), [container.fd] if container is not None else [])


def check(req: Request, conf: DhcpConfig, handles: Handles) -> None:
    prev = req.require_prev_result("dhcp", "CHECK needs the result of the ADD in the network config")
    held = _result(rpc.call(conf.socket_path, rpc.CHECK, _args(req)), conf)
    have = {ip.address for ip in held.ips}
    if not any(ip.address in have for ip in prev.ips):
        raise CNIError(INTERNAL, f"dhcp: the lease of {_client_id(req)} is for "
                       f"{', '.join(str(a) for a in have)}, not for prevResult's "
                       f"{', '.join(str(ip.address) for ip in prev.ips) or 'nothing'}")


def status(req: Request, conf: DhcpConfig, handles: Handles) -> None:
    rpc.call(conf.socket_path, rpc.STATUS, {}, unavailable_code=PLUGIN_NOT_AVAILABLE)


def gc(req: Request, conf: DhcpConfig, handles: Handles) -> None:
    keep = [dhcp_config.client_id(cid, req.network_name, ifname) for cid, ifname in req.valid_attachments()]
    rpc.call(conf.socket_path, rpc.GC, {"network": req.network_name, "keep": keep})


PLUGIN = Plugin(name="dhcp", load_config=dhcp_config.load, add=add, delete=delete, check=check, status=status,
                gc=gc, load_teardown_config=dhcp_config.load_teardown)
