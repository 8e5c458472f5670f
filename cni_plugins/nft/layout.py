"""A table layout as data: the table, its sets and maps, its chains and their fixed rules.

A plugin declares its table once, as a value, in nft's own syntax where syntax is needed (a rule reads
as ``nft list`` shows it)::

    MASQ = Table("inet", "pynet-bridge", sets=(Set("masq4", "ipv4_addr"), ...),
                 chains=(Chain("postrouting", hook="nat postrouting", priority="srcnat",
                               rules=("ip saddr @masq4 masquerade",)),))

A chain that declares rules owns them: writing the skeleton flushes it and writes them again in the
same transaction, so however many first ADDs race, exactly one copy is left. A chain declared without
rules is only created (an administrator's chain, or one that ``Part``s add rules to) and never flushed.

Names of sets and chains are written unquoted (nft 1.0.6 has no quoting for them): they must be plain
identifiers that are not nft keywords (``fwd``, ``counter``, ... are refused with a syntax error).

A ``Part`` is what a table gains per configuration (portmap's per-network profile): its own sets and
chains plus rules appended to the table's chains. It is written by ``create chain`` of its chains, so
the first writer commits all of it and any other's transaction fails as a whole with EEXIST.
"""

from __future__ import annotations

from dataclasses import dataclass


def _quoted(text: str) -> str:
    """A comment as a plain nft string whatever the text holds."""
    return '"' + "".join(c for c in text if c.isalnum() or c in "-_.:/ ()=,+") + '"'


@dataclass(frozen=True)
class Set:
    """A set, or a map when ``data`` is given; ``type`` and ``data`` in nft syntax (``ipv4_addr . ifname``)."""
    name: str
    type: str
    data: str = ""
    flags: tuple[str, ...] = ()
    comment: str = ""

    @property
    def kind(self) -> str:
        return "map" if self.data else "set"

    def spec(self) -> str:
        parts = [f"type {self.type}" + (f" : {self.data}" if self.data else "")]
        if self.flags:
            parts.append("flags " + ", ".join(self.flags))
        if self.comment:
            parts.append(f"comment {_quoted(self.comment)}")
        return "{ " + "; ".join(parts) + "; }"


@dataclass(frozen=True)
class Chain:
    """A chain; a base chain when ``hook`` is given as ``"<type> <hook>"`` (``"nat postrouting"``)."""
    name: str
    hook: str = ""
    priority: str | int = 0
    policy: str = "accept"
    rules: tuple[str, ...] = ()
    comment: str = ""

    def spec(self) -> str:
        parts = []
        if self.hook:
            kind, hook = self.hook.split()
            parts += [f"type {kind} hook {hook} priority {self.priority}", f"policy {self.policy}"]
        if self.comment:
            parts.append(f"comment {_quoted(self.comment)}")
        return ("{ " + "; ".join(parts) + "; }") if parts else ""


@dataclass(frozen=True)
class Part:
    """Sets, chains and rules in the table's chains (``(chain, rule)``) that are written together, once."""
    sets: tuple[Set, ...] = ()
    chains: tuple[Chain, ...] = ()
    rules: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Table:
    """One nftables table as data: what ``ensure`` creates and owner-tagged elements go into."""
    family: str
    name: str
    sets: tuple[Set, ...] = ()
    chains: tuple[Chain, ...] = ()
    comment: str = ""

    @property
    def ref(self) -> str:
        return f"{self.family} {self.name}"

    def kind_of(self, set_name: str) -> str:
        """'set' or 'map' (a name the table does not declare, a Part's, reads as 'set')."""
        return next((s.kind for s in self.sets if s.name == set_name), "set")

    def skeleton(self) -> str:
        """The nft script that creates what is missing and rewrites the rules of the chains that own rules."""
        t = self.ref
        lines = [f"add table {t}" + (f" {{ comment {_quoted(self.comment)}; }}" if self.comment else "")]
        lines += [f"add {s.kind} {t} {s.name} {s.spec()}" for s in self.sets]
        lines += [f"add chain {t} {c.name} {c.spec()}".rstrip() for c in self.chains]
        for c in self.chains:
            if c.rules:
                lines.append(f"flush chain {t} {c.name}")
                lines += [f"add rule {t} {c.name} {rule}" for rule in c.rules]
        return "\n".join(lines) + "\n"

    def part_script(self, part: Part) -> str:
        t = self.ref
        lines = [f"create chain {t} {c.name} {c.spec()}".rstrip() for c in part.chains]
        lines += [f"add {s.kind} {t} {s.name} {s.spec()}" for s in part.sets]
        lines += [f"add rule {t} {c.name} {rule}" for c in part.chains for rule in c.rules]
        lines += [f"add rule {t} {chain} {rule}" for chain, rule in part.rules]
        return "\n".join(lines) + "\n"

    def rule_counts(self) -> dict[str, int]:
        """Chain name -> how many rules the skeleton writes into it (chains that own rules only)."""
        return {c.name: len(c.rules) for c in self.chains if c.rules}
