"""The nftables layout of portmap, written once, and the owner-tagged elements each attachment adds to it.

One table, ``inet pynet-portmap``, never touched by anything else and touching nothing else::

    table inet pynet-portmap {
        set claims4 { type ipv4_addr . inet_proto . inet_service }  # every host port in use (0.0.0.0 = any address)
        set claims6 { type ipv6_addr . inet_proto . inet_service }  # the same for IPv6 (:: = any address)
        chain prerouting  { type nat hook prerouting priority dstnat;  fib daddr type local jump hostports }
        chain output      { type nat hook output priority -100;        fib daddr type local jump hostports }
        chain hairpin     { type filter hook prerouting priority dstnat + 1;   (after DNAT: sees the new daddr)
            ct state new ct status dnat fib daddr . iif oif exists ip daddr . meta l4proto . th dport @P_t4
                meta mark set meta mark | M                                   (one rule per profile and family) }
        chain postrouting { type nat hook postrouting priority srcnat; meta mark & M == M masquerade }
        chain hostports   { meta nfproto ipv4 <conditionsV4> jump P_v4; meta nfproto ipv6 <conditionsV6> jump P_v6 }

        # one "profile" P per (network name, options): its maps and chains
        map P_h4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }  # hostIP . proto . port
        map P_w4 { type inet_proto . inet_service : ipv4_addr . inet_service }              # any local address
        set P_t4 { type ipv4_addr . inet_proto . inet_service }   # DNAT targets (container . proto . port)
        set P_r  { type ipv6_addr }   # per attachment: a 128-bit digest of everything it added ("receipt")
        chain P_v4 {
            ip saddr 127.0.0.0/8 ip daddr . meta l4proto . th dport @P_h4 meta mark set meta mark | M   # localhost
            meta l4proto { tcp, udp, sctp } dnat ip to ip daddr . meta l4proto . th dport map @P_h4
            ip saddr 127.0.0.0/8 meta l4proto . th dport @P_w4 meta mark set meta mark | M
            meta l4proto { tcp, udp, sctp } dnat ip to meta l4proto . th dport map @P_w4
        }
        ... P_h6, P_w6, P_t6 and chain P_v6 (no localhost rule: ::1 cannot leave the host)
    }

DEL computes the elements from its config and prevResult and deletes them together with the receipt in one
transaction: the receipt exists only if exactly those elements were added by this owner (claims are
exclusive), so nothing of another attachment can go. Without prevResult, or when anything differs, the
transaction fails as a whole and DEL falls back to listing the table and removing by owner tag.

Per packet: one fib lookup, then per profile a jump and a few hash lookups, whatever the number of containers.
Per ADD: one transaction of 3 hash-set elements per host port (claim, DNAT, target). The layout is created by
``create table`` / ``create chain`` transactions: when two first ADDs race, one commits all of it and the
other's transaction fails as a whole with EEXIST, so rules are never doubled.

Hairpin: a DNATed connection that is routed back out of the interface it came in on (the container itself,
or a neighbour on its bridge, reaching a host port) must be masqueraded, or the replies would bypass the
host's NAT. The reference plugin masquerades by the container's subnet; here the kernel's FIB says it:
``fib daddr . iif oif exists`` after DNAT means "the new destination is behind the input interface".
The target set limits this to connections this plugin DNATed. masqAll marks every mapped connection in
the DNAT chain instead; snat=false writes no marking and no masquerade.

A hostIP-specific mapping is tried before the wildcard one, so it wins for its address; the claims sets
make equal (family, hostIP, protocol, port) keys exclusive across every network and profile.
"""

from __future__ import annotations

import ipaddress

from cni_plugins.digest import sha256_bytes, sha256_hex

from .config import DnatEntry, Options

FAMILY = "inet"
TABLE = "pynet-portmap"
CLAIMS = {4: "claims4", 6: "claims6"}
LAYOUT_VERSION = "1"
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_NFPROTO = {4: "ipv4", 6: "ipv6"}
_IP = {4: "ip", 6: "ip6"}
_ANY = {4: "0.0.0.0", 6: "::"}


def network_prefix(network: str) -> str:
    """The part of profile names that identifies the network (for GC, which is per network)."""
    return "p" + sha256_hex(network)[:10]


def profile_name(network: str, options: Options) -> str:
    """``p<network hash>_<options hash>``: networks with different options never share rules."""
    shape = sha256_hex(LAYOUT_VERSION + options.digest())[:8]
    return f"{network_prefix(network)}_{shape}"


def base_script() -> str:
    t = f"{FAMILY} {TABLE}"
    lines = [f'create table {t} {{ comment "pynet portmap: host port DNAT, owner-tagged elements"; }}']
    for family in (4, 6):
        lines.append(f"add set {t} {CLAIMS[family]} {{ type {_ADDR_TYPE[family]} . inet_proto . inet_service; "
                     f'comment "host ports in use ({_ANY[family]} = every local address)"; }}')
    lines += [
        f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}",
        f"add chain {t} output {{ type nat hook output priority -100; policy accept; }}",
        f"add chain {t} hairpin {{ type filter hook prerouting priority -99; policy accept; }}",
        f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}",
        f"add chain {t} hostports",
        f"add rule {t} prerouting fib daddr type local jump hostports",
        f"add rule {t} output fib daddr type local jump hostports",
    ]
    return "\n".join(lines) + "\n"


class Profile:
    """The chains and maps of one (network, options) pair, and the names of its elements' homes."""

    def __init__(self, network: str, options: Options):
        self.network = network
        self.options = options
        self.name = profile_name(network, options)

    def chain(self, family: int) -> str:
        return f"{self.name}_v{family}"

    def specific_map(self, family: int) -> str:
        return f"{self.name}_h{family}"

    def wildcard_map(self, family: int) -> str:
        return f"{self.name}_w{family}"

    def targets(self, family: int) -> str:
        return f"{self.name}_t{family}"

    def receipts(self) -> str:
        return f"{self.name}_r"

    def _family_script(self, family: int) -> list[str]:
        t, ip, addr = f"{FAMILY} {TABLE}", _IP[family], _ADDR_TYPE[family]
        h, w, chain = self.specific_map(family), self.wildcard_map(family), self.chain(family)
        opts = self.options
        lines = [
            f'create chain {t} {chain} {{ comment "portmap network {_quote(self.network)}"; }}',
            f"add map {t} {h} {{ type {addr} . inet_proto . inet_service : {addr} . inet_service; }}",
            f"add map {t} {w} {{ type inet_proto . inet_service : {addr} . inet_service; }}",
            f"add set {t} {self.targets(family)} {{ type {addr} . inet_proto . inet_service; }}",
        ]
        mark = f"meta mark set meta mark | {opts.mark:#x}"
        for dnat_map, key in ((h, f"{ip} daddr . meta l4proto . th dport"), (w, "meta l4proto . th dport")):
            if opts.snat and opts.masq_all:
                lines.append(f"add rule {t} {chain} {key} @{dnat_map} {mark}")
            elif opts.snat and family == 4:
                lines.append(f"add rule {t} {chain} ip saddr 127.0.0.0/8 {key} @{dnat_map} {mark}")
            lines.append(f"add rule {t} {chain} meta l4proto {{ tcp, udp, sctp }} "
                         f"dnat {ip} to {key} map @{dnat_map}")
        lines.append(f"add rule {t} hostports meta nfproto {_NFPROTO[family]} {opts.conditions(family)} "
                     f"jump {chain}")
        if opts.snat and not opts.masq_all:
            lines.append(f"add rule {t} hairpin meta nfproto {_NFPROTO[family]} ct state new ct status dnat "
                         f"fib daddr . iif oif exists {ip} daddr . meta l4proto . th dport "
                         f"@{self.targets(family)} {mark}")
        return lines

    def script(self) -> str:
        lines = self._family_script(4) + self._family_script(6)
        lines.append(f'add set {FAMILY} {TABLE} {self.receipts()} {{ type ipv6_addr; '
                     f'comment "digest of the elements of each attachment"; }}')
        if self.options.snat:
            m = self.options.mark
            lines.append(f"add rule {FAMILY} {TABLE} postrouting meta mark & {m:#x} == {m:#x} masquerade")
        return "\n".join(lines) + "\n"

    # -- elements ----------------------------------------------------------------------------------
    def elements(self, entry: DnatEntry) -> dict[str, list]:
        """set/map name -> [key] or [[key, data]] that ``entry`` needs (its claim included)."""
        f = entry.family
        port_key = [entry.protocol, entry.host_port]
        target = [str(entry.container.ip), entry.container_port]
        out: dict[str, list] = {CLAIMS[f]: [claim_key(entry)]}
        if entry.host_ip is not None:
            out[self.specific_map(f)] = [[{"concat": [str(entry.host_ip)] + port_key}, {"concat": target}]]
        else:
            out[self.wildcard_map(f)] = [[{"concat": port_key}, {"concat": target}]]
        if self.options.snat and not self.options.masq_all:
            out[self.targets(f)] = [{"concat": [target[0], entry.protocol, target[1]]}]
        return out


def claim_key(entry: DnatEntry) -> dict:
    return {"concat": [str(entry.host_ip) if entry.host_ip else _ANY[entry.family], entry.protocol,
                       entry.host_port]}


def receipt_key(text: str) -> str:
    """A 128-bit digest, spelled as an IPv6 address so that an nft set can hold it."""
    return str(ipaddress.IPv6Address(sha256_bytes(text)[:16]))


def claim_of_map_key(family: int, key: dict) -> dict:
    """The claims key that goes with a listed DNAT map key (specific ``ip . proto . port`` or ``proto . port``)."""
    parts = key["concat"]
    return {"concat": list(parts) if len(parts) == 3 else [_ANY[family]] + list(parts)}


def _quote(text: str) -> str:
    """Network names go into a chain comment; keep it a plain nft string whatever the name holds."""
    return "".join(c for c in text if c.isalnum() or c in "-_.:/ ")[:100]


def family_of_set(name: str) -> int:
    return 6 if name.endswith("6") else 4


