"""pynet's firewall table: its fixed shape (written once, the same for every container) and its elements.

``table inet pynet-firewall``::

    set ctr4 { type ipv4_addr }  set ctr6 { type ipv6_addr }     container addresses, owner-tagged
    set isolated { type ifname }                                  bridges with ingressPolicy same-bridge
    set isolated_self { type ifname . ifname }                    (br . br) for each isolated bridge
    chain admin                                                   the administrator's; pynet never writes it
    chain forward { type filter hook forward priority filter; policy accept;
        jump admin
        iifname @isolated oifname @isolated iifname . oifname != @isolated_self drop
        ip daddr @ctr4 ct state established,related accept;  ip saddr @ctr4 accept
        ip6 daddr @ctr6 ct state established,related accept; ip6 saddr @ctr6 accept
    }

How this relates to the reference (iptables FORWARD -> CNI-FORWARD -> CNI-ADMIN, and the
CNI-ISOLATION-STAGE-1/2 chains of ingressPolicy same-bridge):

- In nftables every base chain on a hook sees every packet, and an ``accept`` ends only the chain it is in;
  a ``drop`` anywhere is final. So pynet's accepts cannot open a hole in another table's drop-policy forward
  chain (the reference punches one by inserting into iptables' FORWARD). pynet's chain has policy accept and
  only ever takes traffic away: the isolation drop, and whatever the administrator puts in ``admin``
  (which, as CNI-ADMIN in the reference, runs first). A host that drops forwarded traffic in its own table
  must accept container traffic there. The accept rules state (and count) what the reference admits; the
  address sets are the per-container state that CHECK, DEL and GC work on. The config key ``backend``
  ("", "iptables", "firewalld") is accepted for reference configs and always means this table.
- same-bridge isolation has the reference's (and Docker's) semantics: traffic routed from one isolated
  bridge into a different isolated bridge is dropped. Traffic from other interfaces (the uplink, published
  ports) still reaches the containers. nft cannot compare ``iifname`` with ``oifname`` directly, hence the
  ``isolated_self`` set of (br . br) pairs. With bridge-nf-call-iptables on (the default in a new netns
  on this kernel) frames bridged between two ports of one bridge also pass the forward hook, with
  iifname = oifname = the bridge, and ``isolated_self`` lets them through; for the same reason a host's
  drop-policy forward chain elsewhere blocks even same-bridge container traffic. Isolated bridges are
  per-bridge state, not per-container: DEL leaves them (as the reference does: other containers may still
  use the bridge) and GC drops the ones whose link no longer exists.
"""

from __future__ import annotations

import ipaddress

FAMILY = "inet"
TABLE = "pynet-firewall"
CHAIN = "forward"
ADMIN_CHAIN = "admin"
ADDR_SETS = {4: "ctr4", 6: "ctr6"}
ISOLATED = "isolated"
ISOLATED_SELF = "isolated_self"

_T = {"family": FAMILY, "table": TABLE}


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _match(left, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _addr(family: int, field: str) -> dict:
    return {"payload": {"protocol": "ip" if family == 4 else "ip6", "field": field}}


def _rule(*expr) -> dict:
    return {"add": {"rule": dict(_T, chain=CHAIN, expr=list(expr))}}


def skeleton(rewrite_rules: bool = True) -> list[dict]:
    """Creates the table, sets and chains if missing and, when asked, (re)writes the forward chain's rules.

    Flushing and rewriting the forward chain inside the same transaction leaves exactly one copy of the
    rules however many ADDs race; the admin chain is only created, never flushed.
    """
    cmds: list[dict] = [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"set": dict(_T, name=ADDR_SETS[4], type="ipv4_addr")}},
        {"add": {"set": dict(_T, name=ADDR_SETS[6], type="ipv6_addr")}},
        {"add": {"set": dict(_T, name=ISOLATED, type="ifname")}},
        {"add": {"set": dict(_T, name=ISOLATED_SELF, type=["ifname", "ifname"])}},
        {"add": {"chain": dict(_T, name=ADMIN_CHAIN)}},
        {"add": {"chain": dict(_T, name=CHAIN, type="filter", hook="forward", prio=0, policy="accept")}},
    ]
    if not rewrite_rules:
        return cmds
    cmds += [
        {"flush": {"chain": dict(_T, name=CHAIN)}},
        _rule({"jump": {"target": ADMIN_CHAIN}}),
        _rule(_match(_meta("iifname"), f"@{ISOLATED}"),
              _match(_meta("oifname"), f"@{ISOLATED}"),
              _match({"concat": [_meta("iifname"), _meta("oifname")]}, f"@{ISOLATED_SELF}", "!="),
              {"counter": None}, {"drop": None}),
    ]
    for family, name in ADDR_SETS.items():
        cmds.append(_rule(_match(_addr(family, "daddr"), f"@{name}"),
                          _match({"ct": {"key": "state"}}, ["established", "related"], "in"),
                          {"counter": None}, {"accept": None}))
        cmds.append(_rule(_match(_addr(family, "saddr"), f"@{name}"), {"counter": None}, {"accept": None}))
    return cmds


def rules_in_place(nft) -> bool:
    """True when the forward chain already holds the rules (so an ADD only adds elements: counters stay)."""
    from cni_plugins.nft import NftError

    try:
        out = nft.apply([{"list": {"chain": dict(_T, name=CHAIN)}}], "list firewall chain")
    except NftError as exc:
        if exc.missing:
            return False
        raise
    expected = sum(1 for cmd in skeleton() if "rule" in cmd.get("add", {}))
    return sum(1 for obj in out if "rule" in obj) == expected


def addr_set(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return ADDR_SETS[address.version]


def element_cmd(verb: str, set_name: str, elems: list) -> dict:
    return {verb: {"element": dict(_T, name=set_name, elem=elems)}}


def isolated_bridge(bridge: str) -> list[dict]:
    return [element_cmd("add", ISOLATED, [bridge]),
            element_cmd("add", ISOLATED_SELF, [{"concat": [bridge, bridge]}])]
