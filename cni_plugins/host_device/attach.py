"""Steps shared by the plugins that hand the container one interface of their own (host-device, tap): undo
on a failed ADD, IPAM on top of the interface, and the prevResult interface CHECK starts from."""

from __future__ import annotations


from cni_plugins import delegate, netlink
from cni_plugins.errors import CNIError, INTERNAL
from cni_plugins.skel import Request
from cni_plugins.results import DNS, Interface, Result



def ipam_onto(req: Request, handles, ipr, ifname: str, index: int | None, result: Result, ipam_type: str,
              undo: list) -> None:
    """IPAM ADD for ``req`` and its addresses and routes on the container interface (result interface 0), as
    the reference's single-interface plugins do; the lease is released again if a later step fails.
    ``ipr`` None: the addresses are only returned (an interface the kernel does not hold)."""
    ipam = delegate.ipam_add(req, handles)
    undo.append(("IPAM lease", lambda: delegate.ipam_del(req, handles)))
    if not ipam.ips:
        raise CNIError(INTERNAL, f"IPAM plugin {ipam_type!r} returned no IP configuration")
    for ip in ipam.ips:
        ip.interface = 0
    result.ips, result.routes = ipam.ips, ipam.routes
    if ipr is not None:
        netlink.configure_interface(ipr, ifname, result, index=index)


def finish(result: Result, dns: DNS) -> Result:
    """The result's DNS is the config's, as in the reference (an IPAM plugin's DNS answer is not passed on)."""
    result.dns = dns
    return result


def sandbox_interface(req: Request, prev: Result, plugin: str) -> Interface:
    """CHECK: prevResult's entry for CNI_IFNAME in this container's netns."""
    for iface in prev.interfaces:
        if iface.name == req.ifname and iface.sandbox == req.netns:
            return iface
    raise CNIError(INTERNAL, f"{plugin}: prevResult has no interface {req.ifname!r} in sandbox {req.netns!r}")


def check_link(ipr, iface: Interface, plugin: str):
    """CHECK: the container link of a prevResult interface, with the MAC the result gave it."""
    msg = netlink.link(ipr, iface.name)
    if msg is None:
        raise CNIError(INTERNAL, f"{plugin}: interface {iface.name!r} not found in the container")
    if iface.mac and iface.mac.lower() != netlink.mac_of(msg).lower():
        raise CNIError(INTERNAL, f"{plugin}: interface {iface.name!r} MAC {netlink.mac_of(msg)} does not match "
                       f"prevResult's {iface.mac}")
    return msg


def ipam_passthrough(command: str):
    """A STATUS or GC verb that is IPAM's alone (nothing when the config has no IPAM)."""
    def verb(req: Request, conf, handles) -> None:
        if conf.ipam:
            delegate.ipam_verb(req, handles, command)
    return verb
