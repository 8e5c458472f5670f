"""host-local IPAM: one address per range set from pools on this host, leases kept on disk.

Every verb holds the network's lock for its whole run, so concurrent invocations (ours or the reference's,
which shares the format and the lock) never hand out one address twice. No netlink here: IPAM only
chooses and records addresses.
"""

from __future__ import annotations

import os

from cni_plugins.errors import CNIError, INTERNAL, INVALID_CONFIG, PLUGIN_NOT_AVAILABLE
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import DNS, IPConfig, Result

from . import allocator
from .config import HostLocalConfig, data_dir, ipam_section, load_host_local, network_name, parse_resolv_conf, requested_ips
from .store import LeaseStore, held_in, io_errors

def add(req: Request, conf: HostLocalConfig, _handles) -> Result:
    wanted = requested_ips(req)
    dns = parse_resolv_conf(conf.resolv_conf) if conf.resolv_conf else DNS()
    ips: list[IPConfig] = []
    with LeaseStore(conf.data_dir, conf.name) as store, io_errors("cannot record lease"):
        leases = store.leases()
        try:
            for index, range_set in enumerate(conf.range_sets):
                requested = next((ip for ip in wanted if range_set.contains(ip)), None)
                if requested is not None:
                    wanted.remove(requested)
                ips.append(allocator.allocate(store, leases, index, range_set, req.container_id, req.ifname,
                                              requested))
            if wanted:
                raise CNIError(INVALID_CONFIG, "failed to allocate all requested IPs: "
                               + ", ".join(f"requested IP address {ip} is not in any range set" for ip in wanted)
                               + f" (range sets: {'; '.join(str(rs) for rs in conf.range_sets)})")
        except BaseException:
            # A failed ADD leaves nothing behind: give back what this call took (best effort, so the
            # original error is the one reported).
            for ip in ips:
                try:
                    store.release(ip.address.ip)
                except OSError:
                    pass
            raise
    return Result(ips=ips, routes=conf.routes, dns=dns)


def _lease_store(req: Request) -> LeaseStore:
    """Only what locating the leases needs: DEL and GC must work even when the ranges changed since ADD."""
    return LeaseStore(data_dir(ipam_section(req)), network_name(req))


def delete(req: Request, store: LeaseStore, _handles) -> None:
    if not os.path.isdir(store.dir):
        return
    with store, io_errors("cannot release lease"):
        store.release_holder(req.container_id, req.ifname)


def check(req: Request, conf: HostLocalConfig, _handles) -> None:
    store = LeaseStore(conf.data_dir, conf.name)
    if not os.path.isdir(store.dir):
        raise CNIError(INTERNAL, f"host-local: no address leased to {req.owner()}: {store.dir} does not exist")
    with store:
        held = held_in(store.leases(), req.container_id, req.ifname)
    for range_set in conf.range_sets:
        if not any(range_set.contains(ip) for ip in held):
            raise CNIError(INTERNAL, f"host-local: no address leased to {req.owner()} in range set {range_set}")
    prev = req.prev_result
    for ipc in prev.ips if prev else []:
        ip = ipc.address.ip
        if any(rs.contains(ip) for rs in conf.range_sets) and ip not in held:
            raise CNIError(INTERNAL, f"host-local: address {ip} of prevResult is not leased to {req.owner()}")


def gc(req: Request, store: LeaseStore, _handles) -> None:
    """Releases every lease whose attachment the runtime no longer knows."""
    valid = req.valid_attachments()
    valid_ids = {cid for cid, _ in valid}
    if not os.path.isdir(store.dir):
        return
    with store, io_errors("cannot release lease"):
        for ip, holder in store.leases().items():
            if holder is None:
                continue  # unreadable: not ours to judge
            if holder.ifname is None:
                keep = holder.container_id in valid_ids  # pre-ifname leases only know the container
            else:
                keep = (holder.container_id, holder.ifname) in valid
            if not keep:
                store.release(ip)


def _unusable(path: str) -> str | None:
    """Why ``path`` could not hold leases, or None; a missing directory is fine if it can be created."""
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def status(req: Request, conf: HostLocalConfig, _handles) -> None:
    store = LeaseStore(conf.data_dir, conf.name)
    why = _unusable(store.dir)
    if why:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"host-local: dataDir {conf.data_dir!r} unusable: {why}")
    if not os.path.isdir(store.dir):
        return  # nothing leased yet: every range set has room
    try:
        with store:
            leases = store.leases()
    except CNIError as err:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"host-local: dataDir {conf.data_dir!r} unusable: {err.msg}") from None
    for range_set in conf.range_sets:
        if not allocator.has_free_address(range_set, leases):
            raise CNIError(PLUGIN_NOT_AVAILABLE, f"host-local: no IP addresses available in range set: {range_set}")


PLUGIN = Plugin(name="host-local", load_config=load_host_local, add=add, delete=delete, check=check,
                status=status, gc=gc, load_teardown_config=_lease_store)
