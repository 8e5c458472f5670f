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

The table is declared below as data (``LAYOUT``, and ``Profile.part()`` per profile) and written, like the
elements, through ``cni_plugins.nft``.

Per packet: one fib lookup, then per profile a jump and a few hash lookups, whatever the number of containers.
Per ADD: one transaction of 3 hash-set elements per host port (claim, DNAT, target). The table's own rules
are flushed and rewritten in the transaction that writes them; a profile is created by ``create chain``
transactions: when two first ADDs race, one commits all of it and the other's transaction fails as a whole
with EEXIST, so rules are never doubled.

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

from cni_plugins import nft
from cni_plugins.digest import sha256_bytes, sha256_hex
from cni_plugins.errors import CNIError, INTERNAL, invalid_config
from cni_plugins.nft import Chain, NftError, Part, Set, Table

from .config import DnatEntry, Options

FAMILY = "inet"
TABLE = "pynet-portmap"
CLAIMS = {4: "claims4", 6: "claims6"}
LAYOUT_VERSION = "1"
# Plugin-specific error code (the spec leaves 100+ to plugins): the host port is held by another attachment.
HOST_PORT_IN_USE = 100
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_NFPROTO = {4: "ipv4", 6: "ipv6"}
_IP = {4: "ip", 6: "ip6"}
_ANY = {4: "0.0.0.0", 6: "::"}

_TO_HOSTPORTS = "fib daddr type local jump hostports"
LAYOUT = Table(FAMILY, TABLE, comment="pynet portmap: host port DNAT, owner-tagged elements", sets=tuple(
    Set(CLAIMS[family], f"{_ADDR_TYPE[family]} . inet_proto . inet_service",
        comment=f"host ports in use ({_ANY[family]} = every local address)") for family in (4, 6)
), chains=(
    Chain("prerouting", hook="nat prerouting", priority="dstnat", rules=(_TO_HOSTPORTS,)),
    Chain("output", hook="nat output", priority=-100, rules=(_TO_HOSTPORTS,)),
    # The next three only get the profiles' rules (see Profile.part): created here, never flushed.
    Chain("hairpin", hook="filter prerouting", priority=-99),
    Chain("postrouting", hook="nat postrouting", priority="srcnat"),
    Chain("hostports"),
))


def network_prefix(network: str) -> str:
    """The part of profile names that identifies the network (for GC, which is per network)."""
    return "p" + sha256_hex(network)[:10]


def profile_name(network: str, options: Options) -> str:
    """``p<network hash>_<options hash>``: networks with different options never share rules."""
    shape = sha256_hex(LAYOUT_VERSION + options.digest())[:8]
    return f"{network_prefix(network)}_{shape}"


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

    def _family_part(self, family: int) -> Part:
        ip, addr = _IP[family], _ADDR_TYPE[family]
        h, w, chain = self.specific_map(family), self.wildcard_map(family), self.chain(family)
        opts = self.options
        mark = f"meta mark set meta mark | {opts.mark:#x}"
        chain_rules = []
        for dnat_map, key in ((h, f"{ip} daddr . meta l4proto . th dport"), (w, "meta l4proto . th dport")):
            if opts.snat and opts.masq_all:
                chain_rules.append(f"{key} @{dnat_map} {mark}")
            elif opts.snat and family == 4:
                chain_rules.append(f"ip saddr 127.0.0.0/8 {key} @{dnat_map} {mark}")
            chain_rules.append(f"meta l4proto {{ tcp, udp, sctp }} dnat {ip} to {key} map @{dnat_map}")
        rules = [("hostports", f"meta nfproto {_NFPROTO[family]} {opts.conditions(family)} jump {chain}")]
        if opts.snat and not opts.masq_all:
            rules.append(("hairpin", f"meta nfproto {_NFPROTO[family]} ct state new ct status dnat "
                                     f"fib daddr . iif oif exists {ip} daddr . meta l4proto . th dport "
                                     f"@{self.targets(family)} {mark}"))
        return Part(
            sets=(Set(h, f"{addr} . inet_proto . inet_service", data=f"{addr} . inet_service"),
                  Set(w, "inet_proto . inet_service", data=f"{addr} . inet_service"),
                  Set(self.targets(family), f"{addr} . inet_proto . inet_service")),
            chains=(Chain(chain, rules=tuple(chain_rules), comment=f"portmap network {_quote(self.network)}"),),
            rules=tuple(rules))

    def part(self) -> Part:
        """The profile's maps, sets, chains and its rules in the table's chains, written once."""
        v4, v6 = self._family_part(4), self._family_part(6)
        rules = v4.rules + v6.rules
        if self.options.snat:
            m = self.options.mark
            rules += (("postrouting", f"meta mark & {m:#x} == {m:#x} masquerade"),)
        return Part(sets=v4.sets + v6.sets + (Set(self.receipts(), "ipv6_addr",
                                                  comment="digest of the elements of each attachment"),),
                    chains=v4.chains + v6.chains, rules=rules)

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




# -- the layout, written when an ADD meets a missing set ------------------------------------------------------
def ensure_layout(handle: nft.Nft, profile: Profile) -> None:
    """Writes the table (idempotent) and this profile's chains/maps unless they exist (all or nothing)."""
    validate_conditions(handle, profile.options)
    nft.write_skeleton(handle, LAYOUT)
    nft.ensure_part(handle, LAYOUT, profile.part(), f"create portmap chains for network {profile.network!r}")


def validate_conditions(handle: nft.Nft, options: Options) -> None:
    """Lets libnftables judge conditionsV4/V6 as match expressions of a rule (dry run: nothing changes)."""
    for family, key in ((4, "conditionsV4"), (6, "conditionsV6")):
        cond = options.conditions(family)
        if not cond:
            continue
        scratch = f"{FAMILY} {TABLE}-check"
        script = (f"add table {scratch}\n"
                  f"add chain {scratch} c {{ type nat hook prerouting priority dstnat; }}\n"
                  f"add chain {scratch} t\n"
                  f"add rule {scratch} c meta nfproto ipv{family} {cond} jump t\n")
        try:
            handle.run_script(script, key, dry_run=True)
        except NftError as exc:
            first_line = (exc.msg.strip().splitlines() or [exc.msg])[0]
            raise invalid_config(key, cond, f"not an nft match expression ({first_line})") from None


# -- an attachment's elements ----------------------------------------------------------------------------------
def claim(handle: nft.Nft, profile: Profile, entries, owner: str) -> None:
    """Adds the attachment's elements in one transaction; claims never replace: a host port another
    attachment holds fails the ADD (HOST_PORT_IN_USE)."""
    wanted = _wanted(profile, entries)
    # claims first: a taken port fails the transaction before anything else is looked at
    elements = {name: list(wanted[name].values()) for name in sorted(wanted, key=lambda n: n not in CLAIMS.values())}
    elements[profile.receipts()] = [_receipt(wanted, owner)]

    def own() -> None:
        nft.own(handle, LAYOUT, owner, elements, exclusive=CLAIMS.values(),
                ensure=lambda: ensure_layout(handle, profile), what="add portmap elements")

    try:
        own()
        return
    except NftError as exc:
        if not exc.exists:
            raise
    listing = nft.Listing(handle, LAYOUT)
    holders = {k: v for family in {e.family for e in entries} for k, v in listing.owners(CLAIMS[family]).items()}
    taken = [(e, holders[k]) for e in entries if (k := nft.canon(claim_key(e))) in holders and holders[k] != owner]
    if taken:
        entry, holder = taken[0]
        raise CNIError(HOST_PORT_IN_USE, f"host port {entry.describe()} is already mapped by {holder}"
                                         f"{f' (and {len(taken) - 1} more ports)' if len(taken) > 1 else ''}")
    # Only our own elements were in the way (an ADD repeated without DEL): replace them.
    remove(handle, lambda name, tag: tag == owner, claims_too=lambda tag: tag == owner)
    own()


def release(handle: nft.Nft, profile: Profile, entries, owner: str) -> None:
    """Deletes exactly the elements ``entries`` need plus the receipt, in one transaction that fails as a whole
    (NftError.missing) unless this owner added precisely these elements."""
    wanted = _wanted(profile, entries)
    elements = {name: list(elems.values()) for name, elems in wanted.items()}
    elements[profile.receipts()] = [_receipt(wanted, owner)]
    nft.delete_exactly(handle, LAYOUT, elements, "delete portmap elements")


def remove(handle: nft.Nft, doomed, claims_too=None) -> list:
    """Deletes in one transaction the profile elements for which ``doomed(set name, owner)`` holds, and the
    claims that go with the DNAT map elements among them (plus claims for which ``claims_too(owner)``).
    Returns the removed claims as (set name, key)."""
    def select(listing: nft.Listing) -> dict[str, list]:
        gone: dict[str, list] = {}
        claims_wanted: set = set()
        for name, elems in listing.sets.items():
            if name in CLAIMS.values():
                continue
            for e in elems:
                tag = nft.owner_of(e)
                if doomed(name, tag):
                    gone.setdefault(name, []).append(e)
                    if isinstance(e, list):  # a DNAT map element: its claim goes with it
                        key = claim_of_map_key(family_of_set(name), nft.value_of(e))
                        claims_wanted.add((nft.canon(key), tag))
        for name in CLAIMS.values():
            for e in listing.sets.get(name, []):
                tag = nft.owner_of(e)
                if (nft.canon(nft.value_of(e)), tag) in claims_wanted or (claims_too and claims_too(tag)):
                    gone.setdefault(name, []).append(e)
        return gone

    removed = nft.remove_where(handle, LAYOUT, select, "delete portmap elements")
    return [(name, nft.value_of(e)) for name in CLAIMS.values() for e in removed.get(name, [])]


def verify(handle: nft.Nft, profile: Profile, entries, owner: str) -> None:
    """CHECK: the profile's chains exist and every element ``entries`` need is there, owned by ``owner``."""
    listing = nft.Listing(handle, LAYOUT)
    for family in sorted({e.family for e in entries}):
        if profile.chain(family) not in listing.chains:
            raise CNIError(INTERNAL, f"portmap chain {profile.chain(family)} for network {profile.network!r} "
                                     f"is missing from table {FAMILY} {TABLE}")
    for entry in entries:
        for name, wanted in profile.elements(entry).items():
            present = {nft.canon(_key_and_data(e)): nft.owner_of(e) for e in listing.sets.get(name, [])}
            for elem in wanted:
                if present.get(nft.canon(_pair(elem))) != owner:
                    raise CNIError(INTERNAL, f"portmap mapping {entry.describe()} of {owner}: element "
                                             f"{nft.canon(_pair(elem))} missing from {FAMILY} {TABLE} {name}")


def claim_ports(removed_claims):
    """(family, protocol, host port) of removed claims."""
    for name, key in removed_claims:
        parts = key["concat"]
        yield family_of_set(name), parts[1], parts[2]


def _wanted(profile: Profile, entries) -> dict[str, dict]:
    """set/map name -> {canonical key: element} for every element the entries need (deduplicated: two host
    ports leading to one container port share one target element)."""
    by_set: dict[str, dict] = {}
    for entry in entries:
        for name, elems in profile.elements(entry).items():
            for elem in elems:
                by_set.setdefault(name, {})[nft.canon(_pair(elem))] = elem
    return by_set


def _receipt(wanted: dict, owner: str) -> str:
    return receipt_key(owner + nft.canon(sorted((name, sorted(elems)) for name, elems in wanted.items())))


def _pair(elem):
    """An expected element as (key, data) for comparison with a listed one."""
    return (elem[0], elem[1]) if isinstance(elem, list) else (elem, None)


def _key_and_data(listed):
    return (nft.value_of(listed), listed[1] if isinstance(listed, list) else None)
