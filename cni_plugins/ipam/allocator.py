"""Choosing addresses from a range set, round-robin like the reference host-local.

The search starts just after the last address handed out from the set (``last_reserved_ip.N``) and wraps
around the set's ranges, so a crash-looping container does not get the same address back until the whole
set has been used. Gateways are never handed out.
"""

from __future__ import annotations

from collections.abc import Iterator

from cni_plugins.errors import CNIError, INTERNAL, INVALID_CONFIG
from cni_plugins.results import IPAddress, IPConfig

from .config import Range, RangeSet
from .store import Holder, LeaseStore, held_in


def _span(r: Range, first: IPAddress, last: IPAddress) -> Iterator[tuple[IPAddress, Range]]:
    ip = first
    while ip <= last:
        if ip != r.gateway:
            yield ip, r
        if ip == last:
            return
        ip += 1


def candidates(range_set: RangeSet, last_reserved: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
    """Every allocatable address of the set once, in round-robin order after ``last_reserved``."""
    ranges = range_set.ranges
    start = range_set.range_for(last_reserved) if last_reserved is not None else None
    if start is None:
        for r in ranges:
            yield from _span(r, r.range_start, r.range_end)
        return
    i = ranges.index(start)
    if last_reserved < start.range_end:
        yield from _span(start, last_reserved + 1, start.range_end)
    for k in range(1, len(ranges)):
        r = ranges[(i + k) % len(ranges)]
        yield from _span(r, r.range_start, r.range_end)
    yield from _span(start, start.range_start, last_reserved)


def has_free_address(range_set: RangeSet, leases: dict) -> bool:
    """Counted, not searched: a full /8 is answered as fast as an empty one, and a range larger than the
    whole lease count without counting."""
    for r in range_set.ranges:
        size = int(r.range_end) - int(r.range_start) + 1 - (1 if r.contains(r.gateway) else 0)
        if len(leases) < size:
            return True
        used = sum(1 for ip in leases if r.contains(ip) and ip != r.gateway)
        if used < size:
            return True
    return False


def allocate(store: LeaseStore, leases: dict[IPAddress, Holder | None], index: int, range_set: RangeSet,
             container_id: str, ifname: str, requested: IPAddress | None) -> IPConfig:
    """One address from ``range_set`` (the ``index``-th set) for the attachment, recorded in ``store`` and
    in ``leases`` (the store's leases as read under the same lock)."""
    held = [ip for ip in held_in(leases, container_id, ifname) if range_set.contains(ip)]
    if held:
        raise CNIError(INTERNAL, f"{held[0]} has been allocated to {container_id}/{ifname},"
                       " duplicate allocation is not allowed")
    if requested is not None:
        r = range_set.range_for(requested)
        if r is None:
            raise CNIError(INVALID_CONFIG, f"requested IP address {requested} is not in range set {range_set}")
        if requested == r.gateway:
            raise CNIError(INVALID_CONFIG, f"requested IP address {requested} is the gateway of subnet {r.subnet}")
        if requested in leases or not store.reserve(requested, container_id, ifname, index):
            raise CNIError(INTERNAL, f"requested IP address {requested} is not available in range set {range_set}")
        leases[requested] = Holder(container_id, ifname)
        return IPConfig(r.interface(requested), r.gateway)
    if has_free_address(range_set, leases):
        for ip, r in candidates(range_set, store.last_reserved(index)):
            if ip not in leases and store.reserve(ip, container_id, ifname, index):
                leases[ip] = Holder(container_id, ifname)
                return IPConfig(r.interface(ip), r.gateway)
    raise CNIError(INTERNAL, f"no IP addresses available in range set: {range_set}")
