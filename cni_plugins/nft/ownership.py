"""Owner-tagged elements in a table laid out by ``layout.Table``: the one place that writes pynet's tables.

Per-container state is set/map elements whose comment is the owner tag (``tags``); rules are written once
per table, never per container, so adding the 500th container costs what the first did, and DEL/GC remove
exactly what an attachment owns by reading the tags back.

``elements`` arguments map a set name to its values in nft JSON (``"10.0.0.2"``, ``{"concat": [...]}``);
a map's value is a ``(key, data)`` pair.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

from .handle import Nft, NftError, element, owner_of, value_of
from .layout import Part, Table
from .tags import network_suffix


# -- building blocks for values --------------------------------------------------------------------------
def concat(*parts) -> dict:
    return {"concat": list(parts)}


def prefix(network) -> dict:
    """An ``ipaddress`` network as an nft prefix (``10.0.0.0/24``)."""
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


def canon(value) -> str:
    """A value (or listed key) as a comparable string."""
    return json.dumps(value, sort_keys=True)


# -- the skeleton ----------------------------------------------------------------------------------------
def write_skeleton(nft: Nft, table: Table) -> None:
    """Creates what is missing of ``table`` and rewrites the rules of the chains that own rules, in one
    transaction: idempotent, and racing writers leave exactly one copy of the rules."""
    nft.run_script(table.skeleton(), f"write table {table.ref}")


def ensure_part(nft: Nft, table: Table, part: Part, what: str = "") -> None:
    """Writes ``part`` unless it is there (EEXIST: a concurrent writer committed all of it first)."""
    try:
        nft.run_script(table.part_script(part), what or f"add to table {table.ref}")
    except NftError as exc:
        if not exc.exists:
            raise


def rules_in_place(nft: Nft, table: Table) -> bool:
    """True when every chain that owns rules holds as many as the layout writes (one ``list chain`` each)."""
    for chain, expected in table.rule_counts().items():
        try:
            out = nft.apply([{"list": {"chain": {"family": table.family, "table": table.name, "name": chain}}}],
                            f"list chain {table.ref} {chain}")
        except NftError as exc:
            if exc.missing:
                return False
            raise
        if sum(1 for obj in out if "rule" in obj) != expected:
            return False
    return True


# -- writing elements ------------------------------------------------------------------------------------
def _cmd(verb: str, table: Table, set_name: str, elems: list) -> dict:
    return {verb: {"element": {"family": table.family, "table": table.name, "name": set_name, "elem": elems}}}


def _tagged(value, tag: str):
    if isinstance(value, (tuple, list)):  # a map element: [key element, data]
        return [element(value[0], tag), value[1]]
    return element(value, tag)


def _key(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def own(nft: Nft, table: Table, tag: str, elements: Mapping[str, Iterable], *, shared: Mapping[str, Iterable] = None,
        exclusive: Iterable[str] = (), check_rules: bool = False, ensure: Callable[[], None] | None = None,
        what: str = "") -> None:
    """Leaves, in one transaction, exactly ``elements`` owned by ``tag`` (an element an earlier owner left
    behind is taken over), plus the untagged ``shared`` elements (added if missing, owned by nobody).

    The common case, none of the elements there yet, is one ``create`` per set: deleting an element makes
    libnftables fetch every element of its set first (a cost that grows with the number of containers),
    creating does not. Only when something is in the way does the replacing transaction (add, delete, add:
    it cannot fail on presence or absence) run. Elements of ``exclusive`` sets are never taken over: a
    present one fails the ADD with NftError.exists. The skeleton is written only when a set is missing
    (the first ADD, or after someone removed the table), or with ``check_rules`` when a chain lost rules;
    ``ensure`` writes instead what a missing set needs when that is more than the skeleton (a ``Part``).
    """
    ensure = ensure or (lambda: write_skeleton(nft, table))
    what = what or f"add elements of {tag} to {table.ref}"
    elements = {name: values for name, values in ((n, list(v)) for n, v in elements.items()) if values}
    exclusive = set(exclusive)
    extra = [_cmd("add", table, name, values) for name, values in
             ((n, [_plain(v) for v in vs]) for n, vs in (shared or {}).items()) if values]
    if check_rules and not rules_in_place(nft, table):
        write_skeleton(nft, table)
    created = [_cmd("create", table, name, [_tagged(v, tag) for v in values]) for name, values in elements.items()]
    try:
        nft.apply(created + extra, what)
        return
    except NftError as exc:
        if exc.missing:
            ensure()
        # Otherwise something is there already (or the create failed otherwise): the replacement decides.
    replaced = []
    for name, values in elements.items():
        if name in exclusive:
            replaced.append(_cmd("create", table, name, [_tagged(v, tag) for v in values]))
            continue
        replaced += [_cmd("add", table, name, [_plain(v) for v in values]),
                     _cmd("delete", table, name, [_key(v) for v in values]),
                     _cmd("add", table, name, [_tagged(v, tag) for v in values])]
    try:
        nft.apply(replaced + extra, what)
    except NftError as exc:
        if not exc.missing:
            raise
        ensure()
        nft.apply(replaced + extra, what)


def delete_exactly(nft: Nft, table: Table, elements: Mapping[str, Iterable], what: str = "") -> None:
    """Deletes exactly these elements in one transaction, which fails as a whole (NftError.missing) unless
    every one is there."""
    keys = {name: [_key(v) for v in values] for name, values in elements.items()}
    nft.apply([_cmd("delete", table, name, k) for name, k in keys.items() if k],
              what or f"delete elements from {table.ref}")


# -- reading and removing ----------------------------------------------------------------------------------
class Listing:
    """One ``list table``: chain names and the listed elements of each set and map (empty if no table)."""

    def __init__(self, nft: Nft, table: Table):
        self.chains: set[str] = set()
        self.sets: dict[str, list] = {}
        try:
            out = nft.apply([{"list": {"table": {"family": table.family, "name": table.name}}}],
                            f"list table {table.ref}")
        except NftError as exc:
            if not exc.missing:
                raise
            out = []
        for obj in out:
            if "chain" in obj:
                self.chains.add(obj["chain"]["name"])
            for kind in ("set", "map"):
                if kind in obj:
                    self.sets[obj[kind]["name"]] = obj[kind].get("elem", [])

    def owners(self, set_name: str) -> dict[str, str]:
        """canon(key) -> owner tag ("" for an untagged element) of one set or map."""
        return {canon(value_of(e)): owner_of(e) for e in self.sets.get(set_name, [])}

    def owned(self, tag: str) -> dict[str, list]:
        """Set name -> listed elements ``tag`` owns."""
        out = {}
        for name, elems in self.sets.items():
            mine = [e for e in elems if owner_of(e) == tag]
            if mine:
                out[name] = mine
        return out


def remove_where(nft: Nft, table: Table, select: Callable[[Listing], Mapping[str, list]], what: str = "",
                 attempts: int = 3) -> dict[str, list]:
    """Deletes in one transaction the listed elements ``select(listing)`` picks (set name -> listed elements);
    returns them. A concurrent deleter can make one vanish between list and delete (the transaction then
    fails as a whole with ENOENT): list again."""
    for attempt in range(attempts):
        doomed = {name: elems for name, elems in select(Listing(nft, table)).items() if elems}
        try:
            nft.apply([_cmd("delete", table, name, [value_of(e) for e in elems]) for name, elems in doomed.items()],
                      what or f"delete elements from {table.ref}")
            return doomed
        except NftError as exc:
            if not exc.missing or attempt == attempts - 1:
                raise
    return {}


def _where_owner(doomed_tag: Callable[[str], bool]):
    def select(listing: Listing) -> dict[str, list]:
        return {name: [e for e in elems if doomed_tag(owner_of(e))] for name, elems in listing.sets.items()}
    return select


def remove_owned(nft: Nft, table: Table, tag: str) -> dict[str, list]:
    """Removes everything ``tag`` owns in ``table``, in one transaction."""
    return remove_where(nft, table, _where_owner(lambda owner: owner == tag), f"delete elements of {tag}")


def collect_garbage(nft: Nft, table: Table, network: str, valid_tags: set[str]) -> dict[str, list]:
    """Removes ``network``'s elements (network-scoped tags) whose owner is not in ``valid_tags``; other
    networks' elements, and untagged ones, stay."""
    suffix = network_suffix(network)
    return remove_where(nft, table, _where_owner(lambda owner: owner.endswith(suffix) and owner not in valid_tags),
                        f"garbage collection of network {network!r}")


def owned(nft: Nft, table: Table, tag: str, sets: Iterable[str] | None = None) -> dict[str, list]:
    """Set name -> keys of the elements ``tag`` owns (for CHECK); only ``sets`` when given, each listed
    on its own (a set's listing does not carry the rest of the table)."""
    if sets is None:
        return {name: [value_of(e) for e in elems] for name, elems in Listing(nft, table).owned(tag).items()}
    out = {}
    for name in sets:
        mine = [value_of(e) for e in nft.list_elements(table.family, table.name, name, table.kind_of(name))
                if owner_of(e) == tag]
        if mine:
            out[name] = mine
    return out


# -- owner-tagged rules in a chain pynet does not own -----------------------------------------------------------
# Another program's table (iptables-nft's ``filter``) cannot hold pynet's sets without confusing that program,
# so per-container state there is rules, each with the owner tag as its comment (iptables shows it as
# ``-m comment --comment <tag>``), appended to the chain and removed by tag.
def base_chain_policies(nft: Nft) -> dict[tuple[str, str, str], str]:
    """(family, table, chain) -> policy of every base chain; lists chains only, not their rules."""
    out = nft.apply([{"list": {"chains": {}}}], "list chains")
    return {(c["family"], c["table"], c["name"]): c["policy"] for obj in out
            if (c := obj.get("chain")) and "hook" in c and "policy" in c}


def add_tagged_rules(nft: Nft, family: str, table: str, chain: str, tag: str, rules: Iterable[list]) -> None:
    """Appends each rule (a list of nft JSON expressions) with comment ``tag``, in one transaction."""
    nft.apply([{"add": {"rule": {"family": family, "table": table, "chain": chain, "expr": expr, "comment": tag}}}
               for expr in rules], f"add rules of {tag} to {family} {table} {chain}")


def remove_tagged_rules(nft: Nft, family: str, table: str, chain: str, doomed: Callable[[str], bool],
                        attempts: int = 3) -> int:
    """Deletes in one transaction the rules of the chain whose comment (owner tag) ``doomed`` picks; an absent
    chain has none. Returns how many went; a concurrent deleter makes the transaction fail whole: list again."""
    where = {"family": family, "table": table, "chain": chain}
    for attempt in range(attempts):
        try:
            out = nft.apply([{"list": {"chain": {"family": family, "table": table, "name": chain}}}],
                            f"list chain {family} {table} {chain}", handles=True)
        except NftError as exc:
            if exc.missing:
                return 0
            raise
        handles = [r["handle"] for obj in out if (r := obj.get("rule")) and r.get("comment") and doomed(r["comment"])]
        try:
            nft.apply([{"delete": {"rule": dict(where, handle=h)}} for h in handles],
                      f"delete rules from {family} {table} {chain}")
            return len(handles)
        except NftError as exc:
            if not exc.missing or attempt == attempts - 1:
                raise
    return 0


def tagged_rules(nft: Nft, family: str, table: str, chain: str, tag: str) -> list[list]:
    """The expressions of the chain's rules tagged ``tag`` (for CHECK); an absent chain has none."""
    try:
        out = nft.apply([{"list": {"chain": {"family": family, "table": table, "name": chain}}}],
                        f"list chain {family} {table} {chain}")
    except NftError as exc:
        if exc.missing:
            return []
        raise
    return [r["expr"] for obj in out if (r := obj.get("rule")) and r.get("comment") == tag]
