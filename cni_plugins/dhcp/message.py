"""DHCPv4 messages (RFC 2131) and their options (RFC 2132, 3442, 3396): encoded and decoded here, plus the
IPv4/UDP framing the client needs before it has an address (a packet socket sends and receives whole IP
datagrams).

pyroute2 0.7's ``pyroute2.dhcp`` was the first candidate, but it cannot be used: its encoder always writes
its own client identifier (type 1 + chaddr) and vendor class ``pyroute2`` over whatever is asked, knows
neither classless static routes (121) nor arbitrary option codes, and its address-list encoder joins bytes
as str (fails on Python 3). So this module is the wire format, small and tested (tests/test_dhcp.py).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

BOOTREQUEST, BOOTREPLY = 1, 2
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {DISCOVER: "DHCPDISCOVER", OFFER: "DHCPOFFER", REQUEST: "DHCPREQUEST", DECLINE: "DHCPDECLINE",
              ACK: "DHCPACK", NAK: "DHCPNAK", RELEASE: "DHCPRELEASE", INFORM: "DHCPINFORM"}

# Option codes (RFC 2132 unless noted).
PAD = 0
SUBNET_MASK = 1
ROUTER = 3
DNS_SERVERS = 6
HOST_NAME = 12
DOMAIN_NAME = 15
STATIC_ROUTES = 33
REQUESTED_IP = 50
LEASE_TIME = 51
OVERLOAD = 52
MESSAGE_TYPE = 53
SERVER_ID = 54
PARAMETER_LIST = 55
MAX_MESSAGE_SIZE = 57
RENEWAL_TIME = 58
REBINDING_TIME = 59
VENDOR_CLASS = 60
CLIENT_ID = 61
USER_CLASS = 77
DOMAIN_SEARCH = 119     # RFC 3397
CLASSLESS_ROUTES = 121  # RFC 3442
END = 255

MAGIC = b"\x63\x82\x53\x63"
FLAG_BROADCAST = 0x8000
CLIENT_PORT, SERVER_PORT = 68, 67
# The fixed BOOTP part: op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr sname file.
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
MIN_LENGTH = 300   # BOOTP's minimum message size; some relays drop shorter ones
ZERO = ipaddress.IPv4Address(0)
BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class MalformedMessage(ValueError):
    pass


@dataclass
class Message:
    """One DHCP message, field by field."""
    op: int
    xid: int
    chaddr: bytes                       # the client's hardware address (6 bytes for Ethernet)
    ciaddr: ipaddress.IPv4Address = ZERO
    yiaddr: ipaddress.IPv4Address = ZERO
    siaddr: ipaddress.IPv4Address = ZERO
    giaddr: ipaddress.IPv4Address = ZERO
    flags: int = 0
    secs: int = 0
    hops: int = 0
    options: dict[int, bytes] = field(default_factory=dict)   # code -> value, in the order given

    # -- reading options ----------------------------------------------------------------------------------
    @property
    def message_type(self) -> int | None:
        value = self.options.get(MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    def address(self, code: int) -> ipaddress.IPv4Address | None:
        value = self.options.get(code)
        return ipaddress.IPv4Address(value) if value is not None and len(value) == 4 else None

    def addresses(self, code: int) -> list[ipaddress.IPv4Address]:
        value = self.options.get(code) or b""
        return [ipaddress.IPv4Address(value[i:i + 4]) for i in range(0, len(value) - len(value) % 4, 4)]

    def seconds(self, code: int) -> int | None:
        value = self.options.get(code)
        return struct.unpack("!I", value)[0] if value is not None and len(value) == 4 else None

    def text(self, code: int) -> str:
        return (self.options.get(code) or b"").rstrip(b"\0").decode("utf-8", "replace")

    @property
    def server_id(self) -> ipaddress.IPv4Address | None:
        return self.address(SERVER_ID)

    def netmask_prefix(self) -> int | None:
        """The subnet mask option as a prefix length; None when absent or not a contiguous mask."""
        mask = self.address(SUBNET_MASK)
        if mask is None:
            return None
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
        except ValueError:
            return None

    # -- wire -----------------------------------------------------------------------------------------------
    def encode(self) -> bytes:
        head = _HEADER.pack(self.op, 1, len(self.chaddr), self.hops, self.xid, self.secs, self.flags,
                            self.ciaddr.packed, self.yiaddr.packed, self.siaddr.packed, self.giaddr.packed,
                            self.chaddr.ljust(16, b"\0"), b"", b"")
        body = bytearray(MAGIC)
        for code, value in self.options.items():
            body += encode_option(code, value)
        body.append(END)
        out = head + bytes(body)
        return out.ljust(MIN_LENGTH, b"\0")

    @classmethod
    def decode(cls, data: bytes) -> "Message":
        if len(data) < _HEADER.size + len(MAGIC):
            raise MalformedMessage(f"DHCP message of {len(data)} bytes is shorter than the BOOTP header")
        (op, _htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
         bootfile) = _HEADER.unpack_from(data)
        if data[_HEADER.size:_HEADER.size + 4] != MAGIC:
            raise MalformedMessage("not a DHCP message (no magic cookie)")
        options = decode_options(data[_HEADER.size + 4:])
        overload = options.get(OVERLOAD)
        if overload and len(overload) == 1:   # options continued in the file and/or sname fields
            extra = {}
            if overload[0] & 1:
                extra = decode_options(bootfile, into=extra)
            if overload[0] & 2:
                extra = decode_options(sname, into=extra)
            for code, value in extra.items():
                options[code] = options.get(code, b"") + value
        return cls(op, xid, chaddr[:min(hlen, 16)], ipaddress.IPv4Address(ciaddr), ipaddress.IPv4Address(yiaddr),
                   ipaddress.IPv4Address(siaddr), ipaddress.IPv4Address(giaddr), flags, secs, hops, options)


def encode_option(code: int, value: bytes) -> bytes:
    """One option; a value over 255 bytes is split into several instances of the code (RFC 3396)."""
    if not 0 < code < 255:
        raise ValueError(f"option code {code} cannot carry a value")
    out = bytearray()
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [b""]
    for chunk in chunks:
        out += bytes((code, len(chunk))) + chunk
    return bytes(out)


def decode_options(data: bytes, into: dict | None = None) -> dict[int, bytes]:
    """code -> value; instances of one code are concatenated (RFC 3396)."""
    options = {} if into is None else into
    i = 0
    while i < len(data):
        code = data[i]
        if code == PAD:
            i += 1
            continue
        if code == END:
            break
        if i + 1 >= len(data) or i + 2 + data[i + 1] > len(data):
            raise MalformedMessage(f"option {code} runs past the end of the message")
        length = data[i + 1]
        options[code] = options.get(code, b"") + data[i + 2:i + 2 + length]
        i += 2 + length
    return options


# -- option values ------------------------------------------------------------------------------------------
def classless_routes(value: bytes) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]:
    """Option 121 (RFC 3442): (destination, router) pairs; router 0.0.0.0 means on-link."""
    routes = []
    i = 0
    while i < len(value):
        width = value[i]
        if width > 32:
            raise MalformedMessage(f"classless route with prefix length {width}")
        octets = (width + 7) // 8
        if i + 1 + octets + 4 > len(value):
            raise MalformedMessage("classless route option is truncated")
        dest = value[i + 1:i + 1 + octets].ljust(4, b"\0")
        router = value[i + 1 + octets:i + 5 + octets]
        routes.append((ipaddress.IPv4Network((dest, width), strict=False), ipaddress.IPv4Address(router)))
        i += 5 + octets
    return routes


def encode_classless_routes(routes) -> bytes:
    out = bytearray()
    for dest, router in routes:
        dest = ipaddress.IPv4Network(dest)
        out.append(dest.prefixlen)
        out += dest.network_address.packed[:(dest.prefixlen + 7) // 8]
        out += ipaddress.IPv4Address(router).packed
    return bytes(out)


def static_routes(value: bytes) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]]:
    """Option 33: (destination, router) pairs with classful destinations, as the reference reads them."""
    routes = []
    for i in range(0, len(value) - len(value) % 8, 8):
        dest = ipaddress.IPv4Address(value[i:i + 4])
        first = dest.packed[0]
        prefix = 8 if first < 128 else 16 if first < 192 else 24
        routes.append((ipaddress.IPv4Network((dest, prefix), strict=False), ipaddress.IPv4Address(value[i + 4:i + 8])))
    return routes


def domain_search(value: bytes) -> list[str]:
    """Option 119 (RFC 3397): DNS-encoded names with compression pointers into the option itself."""
    names, i = [], 0
    while i < len(value):
        labels, j, end, hops = [], i, None, 0
        while True:
            if j >= len(value):
                raise MalformedMessage("domain search option is truncated")
            length = value[j]
            if length == 0:
                j += 1
                break
            if length & 0xC0 == 0xC0:
                if j + 1 >= len(value) or hops > 64:
                    raise MalformedMessage("bad compression pointer in the domain search option")
                if end is None:
                    end = j + 2
                j = ((length & 0x3F) << 8) | value[j + 1]
                hops += 1
                continue
            labels.append(value[j + 1:j + 1 + length].decode("ascii", "replace"))
            j += 1 + length
        names.append(".".join(labels))
        i = end if end is not None else j
    return names


# -- IPv4 + UDP framing for a packet socket -------------------------------------------------------------------
def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_datagram(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, payload: bytes,
                 sport: int = CLIENT_PORT, dport: int = SERVER_PORT) -> bytes:
    """An IPv4 packet (no options, TTL 64, DF clear) carrying ``payload`` in UDP, checksums filled in."""
    udp_len = 8 + len(payload)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0x10, 20 + udp_len, 0, 0, 64, 17, 0, src.packed, dst.packed)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def parse_udp_datagram(packet: bytes, dport: int = CLIENT_PORT):
    """(source address, UDP payload) of an IPv4/UDP packet to ``dport``; None for anything else (other
    protocols, ports, fragments, truncated packets). The UDP checksum is not verified: a packet from a
    local sender over a veth carries a partial checksum (offloaded, never filled in), as dhclient found."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 17:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack("!H", packet[2:4])[0]
    frag = struct.unpack("!H", packet[6:8])[0]
    if ihl < 20 or total > len(packet) or total < ihl + 8 or frag & 0x3FFF:
        return None
    _sport, port, length, _csum = struct.unpack("!HHHH", packet[ihl:ihl + 8])
    if port != dport or length < 8 or ihl + length > total:
        return None
    return ipaddress.IPv4Address(packet[12:16]), packet[ihl + 8:ihl + length]
