"""A lease's timers and the state machine that keeps it (RFC 2131 4.4.5), free of sockets and clocks so it
can be driven by a fake clock in tests; and the CNI result a DHCPACK stands for.

BOUND until T1 (option 58, else half the lease), then RENEWING: DHCPREQUEST unicast to the server that
granted it, until T2 (option 59, else 85% of the lease, as the reference); then REBINDING: the same request
broadcast, to any server, until the lease expires; then the interface is set down (as the reference) and the
lease is given up. A failed attempt is tried again after half the time left to the next deadline, at least
60 s (RFC 2131 4.4.5), never past it. Maintenance also ends when the container interface goes away.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable

from cni_plugins.errors import CNIError, INTERNAL
from cni_plugins.results import DNS, IPConfig, Result, Route

from . import message

DEFAULT_LEASE_TIME = 3600   # the reference's, when the ACK has no lease time
MIN_RETRY = 60.0
INFINITE = 0xFFFFFFFF   # a lease that never ends (RFC 2131 3.3)
SCOPE_LINK = 253

BOUND, RENEWING, REBINDING, EXPIRED, GONE, STOPPED = "bound", "renewing", "rebinding", "expired", "gone", "stopped"


@dataclass(frozen=True)
class Timers:
    """Absolute times (the maintainer's clock) of T1, T2 and the end of the lease."""
    renew_at: float
    rebind_at: float
    expire_at: float

    @classmethod
    def from_ack(cls, ack: message.Message, now: float) -> "Timers":
        lease = ack.seconds(message.LEASE_TIME)
        if lease == INFINITE:
            return cls(float("inf"), float("inf"), float("inf"))
        if lease is None:
            lease = DEFAULT_LEASE_TIME
        t1 = ack.seconds(message.RENEWAL_TIME)
        t2 = ack.seconds(message.REBINDING_TIME)
        t1 = lease / 2 if t1 is None else min(t1, lease)
        t2 = lease * 85 / 100 if t2 is None else min(t2, lease)
        return cls(now + min(t1, t2), now + t2, now + lease)


class Maintainer:
    """Keeps one lease: ``run`` returns the state it ended in (STOPPED, EXPIRED or GONE).

    ``clock()``: now; ``wait(seconds)``: sleeps, True when asked to stop; ``renew(deadline)`` and
    ``rebind(deadline)``: one exchange that gives up at ``deadline``, returning the new DHCPACK or None;
    ``link_present()``; ``expired()``: what to do when the lease ran out."""

    def __init__(self, timers: Timers, clock: Callable[[], float], wait: Callable[[float], bool],
                 renew: Callable[[float], message.Message | None], rebind: Callable[[float], message.Message | None],
                 link_present: Callable[[], bool], expired: Callable[[], None], log: Callable[[str], None] = print):
        self.timers = timers
        self.state = BOUND
        self.clock, self.wait, self.renew, self.rebind = clock, wait, renew, rebind
        self.link_present, self.expired, self.log = link_present, expired, log
        self.renewals = 0

    def _retry_delay(self, deadline: float) -> float:
        left = deadline - self.clock()
        return max(min(max(left / 2, MIN_RETRY), left), 0.0)

    def step(self) -> bool:
        """One move of the state machine; False when maintenance is over."""
        if not self.link_present():
            self.state = GONE
            return False
        now = self.clock()
        t = self.timers
        if now >= t.expire_at:
            self.state = EXPIRED
            self.expired()
            return False
        if now < t.renew_at:
            self.state = BOUND
            if self.wait(t.renew_at - now):
                self.state = STOPPED
                return False
            return True
        self.state = RENEWING if now < t.rebind_at else REBINDING
        deadline = t.rebind_at if self.state == RENEWING else t.expire_at
        ack = (self.renew if self.state == RENEWING else self.rebind)(deadline)
        if ack is not None:
            self.timers = Timers.from_ack(ack, self.clock())
            self.renewals += 1
            self.state = BOUND
            return True
        delay = self._retry_delay(deadline)
        if delay > 0 and self.wait(delay):
            self.state = STOPPED
            return False
        return True

    def run(self) -> str:
        while self.step():
            pass
        return self.state


def result_of(ack: message.Message) -> Result:
    """The CNI result of a DHCPACK, as the reference builds it: the address with the subnet mask's prefix,
    the first router as gateway; routes from classless static routes (121) when present (RFC 3442: then
    option 33 and the router are ignored), else static routes (33) and a default route via the router.
    DNS servers (6), domain name (15) and search list (119) when the server sent them."""
    prefix = ack.netmask_prefix()
    if prefix is None:
        raise CNIError(INTERNAL, "DHCP option Subnet Mask not found in DHCPACK")
    routers = ack.addresses(message.ROUTER)
    gateway = routers[0] if routers else None
    routes: list[Route] = []
    classless = ack.options.get(message.CLASSLESS_ROUTES)
    if classless:
        for dest, router in message.classless_routes(classless):
            on_link = router == message.ZERO
            routes.append(Route(dest, router, scope=SCOPE_LINK if on_link else None))
    else:
        for dest, router in message.static_routes(ack.options.get(message.STATIC_ROUTES) or b""):
            routes.append(Route(dest, router))
        if gateway is not None:
            routes.append(Route(ipaddress.IPv4Network("0.0.0.0/0"), gateway))
    dns = DNS(nameservers=[str(a) for a in ack.addresses(message.DNS_SERVERS)],
              domain=ack.text(message.DOMAIN_NAME))
    search = ack.options.get(message.DOMAIN_SEARCH)
    if search:
        try:
            dns.search = message.domain_search(search)
        except message.MalformedMessage:
            pass
    address = ipaddress.IPv4Interface(f"{ack.yiaddr}/{prefix}")
    return Result(ips=[IPConfig(address, gateway)], routes=routes, dns=dns)
