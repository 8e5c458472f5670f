"""portmap: host ports DNATed to the container, on nftables, as a chained plugin.

ADD  : validated config -> layout created once (rules.py) -> one transaction adding this attachment's
       owner-tagged elements (claims refuse a host port another attachment holds) -> route_localnet on the
       host interface towards the container (IPv4 localhost DNAT) -> UDP conntrack flush. Result: prevResult.
DEL  : with the same prevResult and portMappings as ADD, deletes exactly the computed elements plus the
       attachment's receipt in one transaction (which fails whole unless this owner added exactly those);
       otherwise (no prevResult, changed mappings, netns gone) lists the table and removes every element
       tagged with this attachment's owner, in one transaction.
CHECK: the profile's chains exist and every element this attachment needs is there with its owner tag,
       family by family (an IPv4-only container is checked for IPv4 only).
GC   : removes, in this network's profiles, the elements whose owner is not a valid attachment.
All of it in the netns the plugin runs in, in table inet pynet-portmap only.
"""

from __future__ import annotations

import json
import struct

from cni_plugins import nft as nftlib
from cni_plugins import sysctl
from cni_plugins.errors import CNIError, INTERNAL, PLUGIN_NOT_AVAILABLE, invalid_config
from cni_plugins.nft import Nft, NftError
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin, no_config
from cni_plugins.skel import Request
from cni_plugins.types import Result

from . import config, conntrack, rules
from .rules import CLAIMS, FAMILY, TABLE, Profile

# Plugin-specific error code (the spec leaves 100+ to plugins): the host port is held by another attachment.
HOST_PORT_IN_USE = 100


# -- verbs -------------------------------------------------------------------------------------------------
def add(req: Request, cfg: config.PortMapConfig, handles: Handles) -> Result:
    prev = req.require_prev_result("portmap")
    addresses = config.container_addresses(prev)
    entries = config.dnat_entries(cfg.mappings, addresses)
    if not entries:
        return prev
    nft = handles.host.nft
    profile = Profile(cfg.network, cfg.options)
    try:
        claim(nft, profile, entries, req.owner())
    except NftError as exc:
        if not exc.missing:
            raise
        # First ADD of this network (or of the host): the layout is written once, then the same claim again.
        ensure_layout(nft, profile)
        claim(nft, profile, entries, req.owner())
    try:
        if cfg.options.snat and any(e.family == 4 for e in entries):
            _enable_localnet_routing(handles.host, addresses[4].ip)
    except BaseException:
        owner = req.owner()  # a failed ADD leaves nothing behind
        remove(nft, lambda name, tag: tag == owner, claims_too=lambda tag: tag == owner)
        raise
    conntrack.flush_udp(handles.host, _udp_ports((e.family, e.protocol, e.host_port) for e in entries))
    return prev


def delete(req: Request, _conf, handles: Handles) -> None:
    owner = req.owner()
    nft = handles.host.nft
    known = _entries_for_delete(req)
    if known:
        profile, entries = known
        try:  # exact: the receipt exists only if this owner added precisely these elements
            nft.apply(_delete_commands(profile, _wanted(profile, entries), owner), "delete portmap elements")
            conntrack.flush_udp(handles.host, _udp_ports((e.family, e.protocol, e.host_port) for e in entries))
            return
        except NftError as exc:
            if not exc.missing:
                raise
    removed = remove(nft, lambda name, tag: tag == owner, claims_too=lambda tag: tag == owner)
    conntrack.flush_udp(handles.host, _udp_ports(_claim_ports(removed)))


def _entries_for_delete(req: Request):
    """(profile, entries) when DEL carries the same prevResult and portMappings as ADD; None otherwise."""
    try:
        prev = req.prev_result
        cfg = config.load(req)
        if prev is None or not cfg.mappings:
            return None
        entries = config.dnat_entries(cfg.mappings, config.container_addresses(prev))
    except CNIError:
        return None  # DEL never fails on config it could not have accepted at ADD: the scan cleans up
    return (Profile(cfg.network, cfg.options), entries) if entries else None


def check(req: Request, cfg: config.PortMapConfig, handles: Handles) -> None:
    prev = req.require_prev_result("portmap")
    entries = config.dnat_entries(cfg.mappings, config.container_addresses(prev))
    if not entries:
        return
    profile = Profile(cfg.network, cfg.options)
    chains, sets = _listing(handles.host.nft)
    owner = req.owner()
    for family in sorted({e.family for e in entries}):
        if profile.chain(family) not in chains:
            raise CNIError(INTERNAL, f"portmap chain {profile.chain(family)} for network {cfg.network!r} "
                                     f"is missing from table {FAMILY} {TABLE}")
    for entry in entries:
        for name, wanted in profile.elements(entry).items():
            present = {_canon(_key_and_data(e)): nftlib.owner_of(e) for e in sets.get(name, [])}
            for elem in wanted:
                if present.get(_canon(_pair(elem))) != owner:
                    raise CNIError(INTERNAL, f"portmap mapping {entry.describe()} of {owner}: element "
                                             f"{_canon(_pair(elem))} missing from {FAMILY} {TABLE} {name}")


def status(req: Request, _conf, handles: Handles) -> None:
    try:
        handles.host.nft.apply([{"list": {"tables": {"family": FAMILY}}}], "list nftables tables")
    except Exception as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"portmap cannot use nftables: {exc}") from None


def gc(req: Request, _conf, handles: Handles) -> None:
    keep = req.valid_owners()
    prefix = rules.network_prefix(req.network_name) + "_"
    removed = remove(handles.host.nft, lambda name, tag: name.startswith(prefix) and tag not in keep)
    conntrack.flush_udp(handles.host, _udp_ports(_claim_ports(removed)))


PLUGIN = Plugin(name="portmap", load_config=config.load, add=add, delete=delete, check=check, status=status,
                gc=gc,
                # DEL reads the config only as a hint (see _entries_for_delete); GC needs none.
                load_teardown_config=no_config)


# -- layout --------------------------------------------------------------------------------------------------
def ensure_layout(nft: Nft, profile: Profile) -> None:
    """Creates the table and this profile's chains/maps unless they exist (each in one atomic transaction)."""
    validate_conditions(nft, profile.options)
    _create(nft, rules.base_script(), f"create table {FAMILY} {TABLE}")
    _create(nft, profile.script(), f"create portmap chains for network {profile.network!r}")


def validate_conditions(nft: Nft, options: config.Options) -> None:
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
            nft.run_script(script, key, dry_run=True)
        except NftError as exc:
            raise invalid_config(key, cond, f"not an nft match expression ({_first_line(exc.msg)})") \
                from None


def _create(nft: Nft, script: str, what: str) -> None:
    try:
        nft.run_script(script, what)
    except NftError as exc:
        if not exc.exists:  # EEXIST: a concurrent ADD created it first, all of it
            raise


# -- elements ------------------------------------------------------------------------------------------------
def claim(nft: Nft, profile: Profile, entries, owner: str) -> None:
    """Adds the attachment's elements in one transaction; claims (``create``) fail it if a port is taken."""
    commands = _add_commands(profile, _wanted(profile, entries), owner)
    try:
        nft.apply(commands, "add portmap elements")
        return
    except NftError as exc:
        if not exc.exists:
            raise
    holders = _claim_holders(nft, entries)
    taken = [(e, holders[k]) for e in entries if (k := _canon(rules.claim_key(e))) in holders
             and holders[k] != owner]
    if taken:
        entry, holder = taken[0]
        raise CNIError(HOST_PORT_IN_USE, f"host port {entry.describe()} is already mapped by {holder}"
                                         f"{f' (and {len(taken) - 1} more ports)' if len(taken) > 1 else ''}")
    # Only our own elements were in the way (an ADD repeated without DEL): replace them.
    remove(nft, lambda name, tag: tag == owner, claims_too=lambda tag: tag == owner)
    nft.apply(commands, "add portmap elements")


def _wanted(profile: Profile, entries) -> dict[str, dict]:
    """set/map name -> {canonical key: element} for every element the entries need (deduplicated: two host
    ports leading to one container port share one target element)."""
    by_set: dict[str, dict] = {}
    for entry in entries:
        for name, elems in profile.elements(entry).items():
            for elem in elems:
                by_set.setdefault(name, {})[_canon(_pair(elem))] = elem
    return by_set


def _receipt(wanted: dict, owner: str) -> str:
    return rules.receipt_key(owner + _canon(sorted((name, sorted(elems)) for name, elems in wanted.items())))


def _add_commands(profile: Profile, wanted: dict, owner: str) -> list[dict]:
    def tag(elem):
        return [nftlib.element(elem[0], owner), elem[1]] if isinstance(elem, list) else nftlib.element(elem, owner)

    # claims first: a taken port fails the transaction before anything else is looked at
    names = sorted(wanted, key=lambda n: n not in CLAIMS.values())
    commands = [{"create" if name in CLAIMS.values() else "add": {"element": {
        "family": FAMILY, "table": TABLE, "name": name, "elem": [tag(e) for e in wanted[name].values()]}}}
        for name in names]
    commands.append({"add": {"element": {"family": FAMILY, "table": TABLE, "name": profile.receipts(),
                                         "elem": [nftlib.element(_receipt(wanted, owner), owner)]}}})
    return commands


def _delete_commands(profile: Profile, wanted: dict, owner: str) -> list[dict]:
    keys = {name: [e[0] if isinstance(e, list) else e for e in elems.values()] for name, elems in wanted.items()}
    keys[profile.receipts()] = [_receipt(wanted, owner)]
    return [{"delete": {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": elems}}}
            for name, elems in keys.items()]


def remove(nft: Nft, doomed, claims_too=None, attempts: int = 3) -> list:
    """Deletes in one transaction the profile elements for which ``doomed(set name, owner)`` holds, and the
    claims that go with the DNAT map elements among them (plus claims for which ``claims_too(owner)``).

    Returns the removed claims keys (JSON). A concurrent DEL/GC can delete an element between listing and
    deleting (the transaction then fails with ENOENT as a whole): list again.
    """
    for attempt in range(attempts):
        _, sets = _listing(nft)
        gone: dict[str, list] = {}
        claims_wanted: set = set()
        for name, elems in sets.items():
            if name in CLAIMS.values():
                continue
            for e in elems:
                tag = nftlib.owner_of(e)
                if doomed(name, tag):
                    gone.setdefault(name, []).append(nftlib.value_of(e))
                    if isinstance(e, list):  # a DNAT map element: its claim goes with it
                        family = rules.family_of_set(name)
                        claims_wanted.add((_canon(rules.claim_of_map_key(family, nftlib.value_of(e))), tag))
        removed_claims = []
        for name in CLAIMS.values():
            for e in sets.get(name, []):
                key, tag = nftlib.value_of(e), nftlib.owner_of(e)
                if (_canon(key), tag) in claims_wanted or (claims_too and claims_too(tag)):
                    gone.setdefault(name, []).append(key)
                    removed_claims.append((name, key))
        commands = [{"delete": {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": keys}}}
                    for name, keys in gone.items()]
        try:
            nft.apply(commands, "delete portmap elements")
            return removed_claims
        except NftError as exc:
            if not exc.missing or attempt == attempts - 1:
                raise
    return []


def _listing(nft: Nft) -> tuple[set, dict]:
    """(chain names, set/map name -> listed elements) of our table; an absent table is empty."""
    try:
        out = nft.apply([{"list": {"table": {"family": FAMILY, "name": TABLE}}}], f"list table {FAMILY} {TABLE}")
    except NftError as exc:
        if exc.missing:
            return set(), {}
        raise
    chains, sets = set(), {}
    for obj in out:
        if "chain" in obj:
            chains.add(obj["chain"]["name"])
        for kind in ("set", "map"):
            if kind in obj:
                sets[obj[kind]["name"]] = obj[kind].get("elem", [])
    return chains, sets


def _claim_holders(nft: Nft, entries) -> dict:
    _, sets = _listing(nft)
    holders = {}
    for family in {e.family for e in entries}:
        for e in sets.get(CLAIMS[family], []):
            holders[_canon(nftlib.value_of(e))] = nftlib.owner_of(e)
    return holders


def _pair(elem):
    """An expected element as (key, data) for comparison with a listed one."""
    return (elem[0], elem[1]) if isinstance(elem, list) else (elem, None)


def _key_and_data(listed):
    return (nftlib.value_of(listed), listed[1] if isinstance(listed, list) else None)


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True)


def _claim_ports(removed_claims):
    for name, key in removed_claims:
        parts = key["concat"]
        yield rules.family_of_set(name), parts[1], parts[2]


def _udp_ports(triples) -> dict[int, set[int]]:
    ports: dict[int, set[int]] = {4: set(), 6: set()}
    for family, protocol, port in triples:
        if protocol == "udp":
            ports[family].add(port)
    return ports


# -- host side -----------------------------------------------------------------------------------------------
def _enable_localnet_routing(host, container_ip) -> None:
    """route_localnet=1 on the host interface towards the container, so a DNATed 127.0.0.1 connection may
    leave through it (after masquerade) and its replies may come back (as the reference plugin does)."""
    ifname = _route_interface(host, container_ip)
    if ifname and ifname != "lo":
        host.sysctl_write(sysctl.iface_key(4, ifname, "route_localnet"), "1")


def _route_interface(host, ip) -> str | None:
    """The interface of the longest matching main-table route in ``host``, read from procfs (no netlink
    library to load on every IPv4 ADD; the container's connected route is what matters here)."""
    target = int(ip)
    best = None
    with host.open_proc("/proc/thread-self/net/route") as f:
        next(f)
        for line in f:
            fields = line.split()
            # addresses are printed as the kernel's __be32 read as a native integer
            dest, mask = (int.from_bytes(struct.pack("=I", int(v, 16)), "big") for v in (fields[1], fields[7]))
            if target & mask == dest and (best is None or mask > best[0]):
                best = (mask, fields[0])
    return best[1] if best else None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
