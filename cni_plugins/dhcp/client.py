"""The DHCP client of one container interface: its sockets, made inside the container's network namespace,
and the exchanges (acquire, renew, rebind, release).

A packet socket (AF_PACKET, SOCK_DGRAM, IPv4) bound to the interface sends and receives whole IPv4/UDP
datagrams (cni_plugins/dhcp/message.py frames them), so the client works before the interface has an
address, like the reference's nclient4. A datagram socket made in the same namespace serves the interface
ioctls (index, flags). Both are created with the calling thread inside the namespace for that moment only
(``syscalls.entered``); they stay bound to it, so nothing else here ever enters a namespace.

Retransmission as the reference: the first four resends 2 s apart, then 4 s doubling up to ``resend_max``,
each ±1 s (never above ``timeout``); an exchange gives up after ``resend_timeout`` (or at the caller's
deadline).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

from cni_plugins import syscalls

from . import message
from .message import Message

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
BROADCAST_MAC = b"\xff" * 6
SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCGIFINDEX = 0x8913, 0x8914, 0x8933
IFF_UP, IFF_RUNNING = 0x1, 0x40
FAST_RESENDS, FAST_DELAY, SLOW_DELAY0 = 4, 2.0, 4.0
CANCEL_POLL = 0.25   # how soon an exchange notices it was cancelled


class ExchangeFailed(Exception):
    pass


@dataclass(frozen=True)
class Timing:
    """How long the client waits and how often it asks again."""
    timeout: float = 10.0          # the longest wait for an answer before sending again
    resend_max: float = 62.0       # the longest delay between resends
    resend_timeout: float = 208.0  # an exchange gives up after this long
    broadcast: bool = False        # ask servers to broadcast their replies (BROADCAST flag)


def resend_delays(timing: Timing, rand=random.uniform):
    """The waits between transmissions of one message, as the reference's backoffRetry."""
    delay = SLOW_DELAY0
    n = 0
    while True:
        if n < FAST_RESENDS:
            base = FAST_DELAY
        else:
            base = delay
            delay = min(delay * 2, timing.resend_max)
        n += 1
        yield max(0.5, min(base + rand(-1.0, 1.0), timing.timeout))


class Interface:
    """The container interface as the client sees it, through sockets made in its namespace."""

    def __init__(self, netns_fd: int, ifname: str, bring_up: bool = True):
        self.ifname = ifname
        with syscalls.entered(netns_fd):
            self._ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                self._packet = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                             socket.htons(ETH_P_IP))
            except BaseException:
                self._ctl.close()
                raise
        try:
            self.index = self._ioctl_index()
            if self.index is None:
                raise ExchangeFailed(f"error looking up {ifname!r}: no such interface in the container")
            # A packet socket bound to a link that is down reports ENETDOWN on its next use: up first (as
            # the reference sets a link that is down up).
            self.was_down = not self.is_up()
            if self.was_down and bring_up:
                self.set_up()
            self._packet.bind((ifname, ETH_P_IP))
            self.mac: bytes = self._packet.getsockname()[4]
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()   # one exchange at a time on this socket

    # -- the link --------------------------------------------------------------------------------------------
    def _ifreq(self, request: int, data: bytes = b""):
        return fcntl.ioctl(self._ctl.fileno(), request, struct.pack("16s", self.ifname.encode()) + data.ljust(24, b"\0"))

    def _ioctl_index(self) -> int | None:
        try:
            return struct.unpack_from("i", self._ifreq(SIOCGIFINDEX), 16)[0]
        except OSError:
            return None

    def present(self) -> bool:
        """The interface is still there (same name, same index)."""
        return self._ioctl_index() == self.index

    def set_up(self, up: bool = True) -> None:
        flags = struct.unpack_from("H", self._ifreq(SIOCGIFFLAGS), 16)[0]
        want = flags | IFF_UP if up else flags & ~IFF_UP
        if want != flags:
            self._ifreq(SIOCSIFFLAGS, struct.pack("H", want))

    def is_up(self) -> bool:
        return bool(self._flags() & IFF_UP)

    def _flags(self) -> int:
        return struct.unpack_from("H", self._ifreq(SIOCGIFFLAGS), 16)[0]

    def wait_running(self, timeout: float) -> bool:
        """Waits for the carrier (IFF_RUNNING: the kernel's link watch has seen the link come up, so a bridge
        port it is plugged into forwards again)."""
        deadline = time.monotonic() + timeout
        while not self._flags() & IFF_RUNNING:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # -- datagrams -------------------------------------------------------------------------------------------
    def send(self, msg: Message, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, dst_mac: bytes) -> None:
        # A link that went down since the last send left ENETDOWN pending on the packet socket (reported on
        # its next use even once the link is up again): reading SO_ERROR clears it.
        self._packet.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        packet = message.udp_datagram(src, dst, msg.encode())
        self._packet.sendto(packet, (self.ifname, ETH_P_IP, 0, 0, dst_mac))

    def receive(self, until: float, accept, cancel: threading.Event | None = None) -> tuple[Message, bytes] | None:
        """The first DHCP reply that ``accept(msg)`` takes before ``until`` (monotonic), with the sender's MAC;
        None at ``until`` or soon after ``cancel`` is set."""
        while True:
            left = until - time.monotonic()
            if left <= 0 or (cancel is not None and cancel.is_set()):
                return None
            ready, _, _ = select.select([self._packet], [], [], min(left, CANCEL_POLL))
            if not ready:
                return None
            try:
                packet, addr = self._packet.recvfrom(65535)
            except BlockingIOError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            parsed = message.parse_udp_datagram(packet)
            if parsed is None:
                continue
            try:
                reply = Message.decode(parsed[1])
            except message.MalformedMessage:
                continue
            if reply.op == message.BOOTREPLY and reply.chaddr[:6] == self.mac and accept(reply):
                return reply, addr[4]

    def close(self) -> None:
        for sock in (getattr(self, "_packet", None), getattr(self, "_ctl", None)):
            if sock is not None:
                sock.close()


@dataclass
class Client:
    """The exchanges of one lease: ``options`` (code -> value, the client identifier and provided options)
    and ``request`` (the parameter request list) go into every message, as the reference's modifiers."""
    iface: Interface
    options: dict[int, bytes]
    request: list[int]
    timing: Timing
    cancel: threading.Event | None = None   # set: exchanges in progress give up (a DEL during a renewal)

    def _message(self, kind: int, xid: int, **fields) -> Message:
        opts = {message.MESSAGE_TYPE: bytes((kind,))}
        opts.update(self.options)
        extra = fields.pop("extra", {})
        opts.update(extra)
        if kind in (message.DISCOVER, message.REQUEST) and self.request:
            opts[message.PARAMETER_LIST] = bytes(self.request)
            opts[message.MAX_MESSAGE_SIZE] = struct.pack("!H", 1500)
        flags = message.FLAG_BROADCAST if self.timing.broadcast and kind != message.RELEASE else 0
        return Message(message.BOOTREQUEST, xid, self.iface.mac, flags=flags, options=opts, **fields)

    def _exchange(self, build, expect: tuple[int, ...], deadline: float | None, src=message.ZERO,
                  dst=message.BROADCAST, dst_mac=BROADCAST_MAC, xid: int | None = None) -> tuple[Message, bytes]:
        """Sends ``build(xid, secs)`` until a reply of a type in ``expect`` (or a NAK) arrives; ``xid``: the
        transaction's (a new one when None)."""
        start = time.monotonic()
        give_up = start + self.timing.resend_timeout
        if deadline is not None:   # time.monotonic()'s
            give_up = min(give_up, deadline)
        if xid is None:
            xid = random.getrandbits(32)
        with self.iface._lock:
            for delay in resend_delays(self.timing):
                now = time.monotonic()
                if now >= give_up:
                    break
                if self.cancel is not None and self.cancel.is_set():
                    raise ExchangeFailed("cancelled")
                self.iface.send(build(xid, min(int(now - start), 0xFFFF)), src, dst, dst_mac)
                got = self.iface.receive(min(now + delay, give_up),
                                         lambda m: m.xid == xid and m.message_type in expect + (message.NAK,),
                                         self.cancel)
                if got is not None:
                    return got
        names = "/".join(message.TYPE_NAMES[t] for t in expect)
        raise ExchangeFailed(f"no {names} from a DHCP server on {self.iface.ifname!r} within "
                             f"{min(self.timing.resend_timeout, max(give_up - start, 0)):g}s")

    def acquire(self, deadline: float | None = None) -> tuple[Message, bytes]:
        """DISCOVER, OFFER, REQUEST, ACK (a NAK starts over); the ACK and the server's MAC."""
        for _ in range(4):
            offer, _mac = self._exchange(lambda xid, secs: self._message(message.DISCOVER, xid, secs=secs),
                                         (message.OFFER,), deadline)
            if offer.message_type == message.NAK:
                continue
            extra = {message.REQUESTED_IP: offer.yiaddr.packed}
            if offer.server_id is not None:
                extra[message.SERVER_ID] = offer.server_id.packed
            # SELECTING: the request carries the offer's xid (RFC 2131, table 5)
            ack, mac = self._exchange(lambda xid, secs: self._message(message.REQUEST, xid, secs=secs, extra=extra),
                                      (message.ACK,), deadline, xid=offer.xid)
            if ack.message_type == message.ACK:
                return ack, mac
        raise ExchangeFailed(f"the DHCP server refused (DHCPNAK) every address it offered on {self.iface.ifname!r}")

    def extend(self, lease: Message, server_mac: bytes, deadline: float, broadcast: bool) -> tuple[Message, bytes]:
        """RENEWING (unicast to the server that granted ``lease``) or REBINDING (broadcast): a DHCPREQUEST
        with ciaddr set; raises ExchangeFailed on a NAK or no answer."""
        ip = lease.yiaddr
        server = lease.server_id or lease.siaddr
        dst, dst_mac = (message.BROADCAST, BROADCAST_MAC) if broadcast else (server, server_mac)
        ack, mac = self._exchange(lambda xid, secs: self._message(message.REQUEST, xid, secs=secs, ciaddr=ip),
                                  (message.ACK,), deadline, src=ip, dst=dst, dst_mac=dst_mac)
        if ack.message_type != message.ACK:
            raise ExchangeFailed(f"the DHCP server refused to extend the lease of {ip} (DHCPNAK)")
        if ack.yiaddr != ip:
            raise ExchangeFailed(f"the DHCP server answered the renewal of {ip} with {ack.yiaddr}")
        return ack, mac

    def release(self, lease: Message, server_mac: bytes) -> None:
        """DHCPRELEASE, unicast to the server (no answer comes)."""
        server = lease.server_id or lease.siaddr
        extra = {message.SERVER_ID: server.packed}
        msg = self._message(message.RELEASE, random.getrandbits(32), ciaddr=lease.yiaddr, extra=extra)
        msg.options.pop(message.PARAMETER_LIST, None)
        with self.iface._lock:
            self.iface.send(msg, lease.yiaddr, server, server_mac)


def client_options(client_id: str, provided: dict[int, bytes]) -> dict[int, bytes]:
    """The client identifier (type 0: not a hardware address) then the provided options, which may
    replace it, as the reference's withClientID and withAllOptions."""
    opts = {message.CLIENT_ID: b"\0" + client_id.encode()}
    opts.update(provided)
    return opts


def close_quietly(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
