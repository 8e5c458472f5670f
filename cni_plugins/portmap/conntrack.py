"""Flushing UDP conntrack entries for mapped host ports, over ctnetlink (pyroute2's NFCTSocket).

UDP has no handshake: a flow that hit a host port before the DNAT existed (or while it pointed at a
container that is gone) keeps its stale conntrack entry, and with it its old NAT decision, for as long as
packets keep coming. Deleting the entries makes the next packet go through the NAT chains again.
"""

from __future__ import annotations

import _socket   # the C module: `socket` costs ~2 ms at start-up, and only constants are needed
import errno
import sys

_AF = {4: _socket.AF_INET, 6: _socket.AF_INET6}


def flush_udp(host, ports_by_family: dict[int, set[int]]) -> int:
    """Deletes UDP entries of ``host`` (a NetnsHandle) whose original destination port is one of the given
    ports; returns how many.

    Best effort, as in the reference: a failure is reported on stderr and never fails the CNI operation.
    """
    if not any(ports_by_family.values()):
        return 0
    from pyroute2.conntrack import Conntrack, NFCTAttrTuple

    deleted = 0
    for family, ports in ports_by_family.items():
        if not ports:
            continue
        try:
            with host.make(Conntrack, nfgen_family=_AF[family]) as ct:
                # One filtered dump per family: every dump walks the whole conntrack hash table in the kernel,
                # so the port test is done here rather than with one dump per port.
                wanted = NFCTAttrTuple(family=_AF[family], proto=_socket.IPPROTO_UDP)
                stale = [e for e in ct.dump_entries(tuple_orig=wanted) if e.tuple_orig.dport in ports]
                for entry in stale:
                    try:
                        ct.delete(entry)
                        deleted += 1
                    except Exception as exc:
                        if getattr(exc, "code", None) != errno.ENOENT:  # expired meanwhile: fine
                            raise
        except Exception as exc:
            print(f"portmap: failed to flush UDP conntrack entries (IPv{family}, ports {sorted(ports)}): {exc}",
                  file=sys.stderr)
    return deleted
