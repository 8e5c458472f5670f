"""host-device: an existing host link moved into the container (the reference's `host-device`).

ADD: find the device -> save its state -> move it into the container netns renamed to CNI_IFNAME (alias =
its host name), its addresses added again there, up -> IPAM (optional) on top. A failed step puts the
device back on the host as it was (name, alias, addresses, MTU, up) and releases the lease.
DEL: the device goes back to the host under its original name with its saved addresses and MTU, left down
(as the reference leaves it), then IPAM releases. No device in the container (second DEL) or no container
netns is fine: IPAM still releases (the reference fails there and leaks the lease: plugins#1196). Without
the netns, a virtual device is gone with it; a physical one the kernel put in the initial netns is given
its name back when that is the host netns here.
A DPDK device (userspace driver, no netdev) is not moved: IPAM's result is returned as is.
"""

from __future__ import annotations

import os

from cni_plugins import delegate, netlink
from cni_plugins.undo import undo_on_failure
from cni_plugins.errors import CNIError
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Interface, Result

from cni_plugins.bridge.links import require_absent

from . import attach, lookup, move
from . import config as hconf
from .config import HostDeviceConfig

NAME = "host-device"


def add(req: Request, conf: HostDeviceConfig, handles: Handles) -> Result:
    ns, host = handles.container(), handles.host
    result = Result(interfaces=[Interface(req.ifname, sandbox=req.netns)])
    with undo_on_failure(NAME) as undo:
        index = None
        if not conf.dpdk:
            require_absent(ns.ipr, req.ifname)
            msg = lookup.find(host.ipr, conf)
            saved = move.Saved.of(host.ipr, msg, req.network_name)
            state = move.state_path(conf.data_dir, req.container_id, req.ifname)
            move.save(state, saved)
            undo.append(("saved state", lambda: move.forget(state)))
            undo.append(("the move", lambda: move.move_out(ns, host, req.ifname, saved, restore_up=True)))
            index = move.move_in(host, ns, msg, req.ifname, saved.addresses)
            result.interfaces[0].mac = netlink.mac_by_name(ns.ipr, req.ifname) or ""
        if conf.ipam:
            # a DPDK device's addresses are for its userspace driver: returned, not configured
            attach.ipam_onto(req, handles, None if conf.dpdk else ns.ipr, req.ifname, index, result, conf.ipam,
                             undo)
        return attach.finish(result, conf.dns)


def delete(req: Request, conf: HostDeviceConfig, handles: Handles) -> None:
    saved = move.load(conf.data_dir, req.container_id, req.ifname)
    ns = handles.container_if_present()
    failure = None
    try:
        if ns is not None:
            move.move_out(ns, handles.host, req.ifname, saved)
        elif saved is not None:
            move.reclaim(handles.host, saved)
    except CNIError as exc:
        failure = exc  # the lease is still released; the runtime retries DEL for the device
    if conf.ipam:
        delegate.ipam_del(req, handles)
    if failure is not None:
        raise failure
    move.forget(move.state_path(conf.data_dir, req.container_id, req.ifname))


def check(req: Request, conf: HostDeviceConfig, handles: Handles) -> None:
    prev = req.require_prev_result(NAME, "CHECK needs the result of the ADD")
    ns = handles.container()
    if conf.ipam:
        delegate.ipam_verb(req, handles, "CHECK")
    if conf.dpdk:
        return
    iface = attach.sandbox_interface(req, prev, NAME)
    attach.check_link(ns.ipr, iface, NAME)
    netlink.check_interface(ns.ipr, req.ifname, prev)


def gc(req: Request, conf: HostDeviceConfig, handles: Handles) -> None:
    """IPAM's GC, and this network's saved states of attachments that are not valid any more (a DEL that
    never came, or came to another plugin)."""
    valid = {os.path.basename(move.state_path(conf.data_dir, container_id, ifname))
             for container_id, ifname in req.valid_attachments()}
    for file_name, saved in move.saved_attachments(conf.data_dir):
        if saved.network == req.network_name and file_name not in valid:
            move.forget(os.path.join(conf.data_dir, file_name))
    if conf.ipam:
        delegate.ipam_verb(req, handles, "GC")


PLUGIN = Plugin(name=NAME, load_config=hconf.load, add=add, delete=delete, check=check,
                status=attach.ipam_passthrough("STATUS"), gc=gc, load_teardown_config=hconf.load_teardown)
