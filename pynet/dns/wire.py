"""What the resolver's hot path reads of a message without building dnspython objects.

A plain query (one question, no answer or authority records, at most an EDNS0 OPT record) is reduced to a
key: the same key means the same answer, whatever the query's ID, the case of its name (0x20) or its EDNS
options and payload size. Cached answers are stored whole and sent back with the client's ID and question
bytes spliced in (answer names point at the question by compression, so they take the client's case
too). Anything unusual returns None here and is answered through dnspython (server.Resolver).

Forwarded responses are walked once when they are cached, for where their TTLs are (names skipped, not
decoded: a dnspython parse would cost more than the forwarding), so a cached answer is sent with its TTLs
counted down.
"""

from __future__ import annotations

import struct

import dns.rdatatype

QR_OR_OPCODE = 0xF8   # first flags byte: QR and the opcode
TC = 0x02             # first flags byte
RCODE = 0x0F          # second flags byte
ONE_QUESTION_ONLY = b"\x00\x01\x00\x00\x00\x00"   # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
DO = 0x8000
PTR = struct.pack("!H", dns.rdatatype.PTR)
_OPT = struct.Struct("!HHBBHH")   # after the OPT owner (root): type, payload, ext-rcode, version, flags, rdlen
_RR = struct.Struct("!HHIH")
_COUNTS = struct.Struct("!HHHH")


def scan(wire: bytes) -> tuple | None:
    """(key, qend, limit) of a plain standard query, None for anything else."""
    if len(wire) < 17 or wire[2] & QR_OR_OPCODE or wire[4:10] != ONE_QUESTION_ONLY:
        return None
    end = len(wire)
    i = 12
    while True:
        if i >= end:
            return None
        length = wire[i]
        if length == 0:
            break
        if length > 63:   # a compression pointer or a reserved label type
            return None
        i += length + 1
    qend = i + 5
    if qend > end:
        return None
    # bytes.lower() touches only A-Z; no label length byte is in that range (all are <= 63)
    name = wire[12:i + 1].lower()
    arcount = wire[11] | wire[10] << 8
    if arcount == 0:
        if qend != end:
            return None
        return (wire[2:4], name, wire[i + 1:qend], 0), qend, 512
    if arcount != 1 or qend + 11 > end or wire[qend] != 0:
        return None
    rtype, payload, _ext, version, flags, rdlen = _OPT.unpack_from(wire, qend + 1)
    if rtype != dns.rdatatype.OPT or version != 0 or qend + 11 + rdlen != end:
        return None
    return (wire[2:4], name, wire[i + 1:qend], 1 | (flags & DO)), qend, max(512, payload)


def splice(query: bytes, qend: int, answer: bytes) -> bytes:
    """``answer`` (to the same key) as the answer to ``query``: its ID and its question bytes."""
    return query[:2] + answer[2:12] + query[12:qend] + answer[qend:]


def is_single_label_or_ptr(key: tuple) -> bool:
    """Whether a key's name could become a local name later (a bare container name, a reverse name)."""
    name = key[1]
    return len(name) == name[0] + 2 or key[2][:2] == PTR


def servfail(query: bytes, qend: int) -> bytes:
    """A SERVFAIL to a scanned query: its ID, RD bit and question."""
    return (query[:2] + bytes((0x80 | (query[2] & 0x01), 0x80 | 2)) + b"\x00\x01\x00\x00\x00\x00\x00\x00"
            + query[12:qend])


def rcode_and_tc(response: bytes) -> tuple[int, bool]:
    return response[3] & RCODE, bool(response[2] & TC)


def _skip_name(message: bytes, i: int) -> int:
    """The offset after the (possibly compressed) name at ``i``; names are skipped, never decoded."""
    while True:
        length = message[i]
        if length == 0:
            return i + 1
        if length >= 0xC0:
            return i + 2   # a pointer ends the name
        if length > 63:
            raise ValueError("reserved label type")
        i += length + 1


def resource_records(response: bytes) -> list[tuple[int, int, int, int, int]] | None:
    """(section, type, ttl, ttl_offset, rdata_end) of every record but OPT; None if it does not parse."""
    try:
        qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(response, 4)
        i = 12
        for _ in range(qdcount):
            i = _skip_name(response, i) + 4
        out = []
        for section, count in ((0, ancount), (1, nscount), (2, arcount)):
            for _ in range(count):
                i = _skip_name(response, i)
                rtype, _rclass, ttl, rdlen = _RR.unpack_from(response, i)
                end = i + 10 + rdlen
                if end > len(response):
                    return None
                if rtype != dns.rdatatype.OPT:
                    out.append((section, rtype, ttl, i + 4, end))
                i = end
        return out if i == len(response) else None
    except (struct.error, ValueError, IndexError):
        return None
