"""Forwarded answers kept for their TTL, so a name asked again is answered without the upstream.

Positive answers live as long as their smallest answer/authority TTL (at most MAX_TTL); negative ones
(NXDOMAIN, or NOERROR with no answer) as long as RFC 2308 says: min(SOA TTL, SOA MINIMUM) of the SOA in
the authority section, at most NEGATIVE_TTL_CAP; without an SOA they are not cached (RFC 2308 §5).
Truncated answers and other rcodes (SERVFAIL, REFUSED...) are never cached. A served answer's TTLs are
counted down by its age in whole seconds. At most ``size`` entries: expired ones go first, then the oldest.
"""

from __future__ import annotations

import struct
import threading

import dns.rcode
import dns.rdatatype

from . import wire

MAX_ENTRIES = 10000
MAX_TTL = 86400
NEGATIVE_TTL_CAP = 300
_TTL = struct.Struct("!I")


class _Entry:
    __slots__ = ("response", "ttls", "stored", "expires", "aged")

    def __init__(self, response: bytes, ttls: list[tuple[int, int]], stored: float, lifetime: int):
        self.response = bytes(response)
        self.ttls = ttls
        self.stored = stored
        self.expires = stored + lifetime
        self.aged = (0, self.response)

    def at(self, now: float) -> bytes:
        age, current = self.aged
        if int(now - self.stored) != age:
            # a new copy each second of age, swapped in whole: the TCP threads read entries too
            age = int(now - self.stored)
            patched = bytearray(self.response)
            for offset, ttl in self.ttls:
                _TTL.pack_into(patched, offset, max(0, ttl - age))
            current = bytes(patched)
            self.aged = (age, current)
        return current


def lifetime(response: bytes) -> tuple[int, list[tuple[int, int]]] | None:
    """(seconds to keep, [(ttl offset, ttl)]) of a response worth caching, else None."""
    rcode, truncated = wire.rcode_and_tc(response)
    if truncated or rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return None
    records = wire.resource_records(response)
    if records is None:
        return None
    answers = [ttl for section, _type, ttl, _o, _e in records if section == 0]
    if rcode == dns.rcode.NOERROR and answers:
        keep = min([ttl for section, _t, ttl, _o, _e in records if section in (0, 1)] + [MAX_TTL])
    else:
        soa = [(ttl, end) for section, rtype, ttl, _o, end in records
               if section == 1 and rtype == dns.rdatatype.SOA]
        if not soa:
            return None
        ttl, end = soa[0]
        keep = min(ttl, _TTL.unpack_from(response, end - 4)[0], NEGATIVE_TTL_CAP)
    if keep <= 0:
        return None
    return keep, [(offset, ttl) for _s, _t, ttl, offset, _e in records]


class AnswerCache:
    """Read without a lock (one dict lookup); changed under one (the UDP loop and TCP threads add)."""

    def __init__(self, size: int = MAX_ENTRIES):
        self.size = size
        self.entries: dict[object, _Entry] = {}
        self._lock = threading.Lock()

    def get(self, key, now: float) -> bytes | None:
        entry = self.entries.get(key)
        if entry is None or now >= entry.expires:
            return None   # (an expired entry stays until replaced or room is made)
        return entry.at(now)

    def put(self, key, response: bytes, now: float) -> bool:
        """Keeps ``response`` if it may be cached; whether it was."""
        kept = lifetime(response)
        if kept is None:
            return False
        seconds, ttls = kept
        entry = _Entry(response, ttls, now, seconds)
        with self._lock:
            self.entries.pop(key, None)
            if len(self.entries) >= self.size:
                self._make_room(now)
            self.entries[key] = entry
        return True

    def drop(self, which) -> None:
        with self._lock:
            self._drop(which)

    def _drop(self, which) -> None:
        for key in [key for key in self.entries if which(key)]:
            del self.entries[key]

    def _make_room(self, now: float) -> None:
        self._drop(lambda key: self.entries[key].expires <= now)
        while len(self.entries) >= self.size:
            del self.entries[next(iter(self.entries))]
