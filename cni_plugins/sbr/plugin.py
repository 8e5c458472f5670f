"""sbr: source-based routing for a container interface made by an earlier plugin (the reference's ``sbr``).

For each IP of CNI_IFNAME in prevResult, inside the container netns:

- without ``table``: a routing table of its own (the first id from 100 that no rule or route uses), a rule
  ``from <ip> lookup <table>`` (priority left to the kernel, as the reference), a default route via the
  gateway (``gateways`` for the IP's family, else the IPAM gateway), and a copy of the interface's
  main-table routes that belong to that IP; then the interface's routes leave the main table (with
  ``addSourceHints`` only its gateway routes leave, and its subnet routes get the IP as source hint);
- with ``table``: only the rules, to that table (its routes come from the IPAM result's ``table`` fields).

DEL deletes the rules whose source is one of the container's addresses and, for the tables sbr chose, the
routes in them; it succeeds with nothing left to do (second DEL, netns or interface gone).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress

from cni_plugins.undo import undo_on_failure
from cni_plugins import netlink
from cni_plugins.errors import CNIError, INTERNAL, INVALID_CONFIG
from cni_plugins.handles import Handles, NetnsHandle
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import IPConfig, Result

from . import config as sbrconfig
from .config import FIRST_TABLE, RESERVED_TABLES, SbrConfig

AF_INET, AF_INET6 = 2, 10
FAMILIES = (AF_INET, AF_INET6)
MAIN = 254
RT_SCOPE_LINK = 253
# What a dumped route keeps when it is copied or put back (the reference copies the whole route, flags reset).
_ROUTE_ATTRS = {"RTA_DST": "dst", "RTA_GATEWAY": "gateway", "RTA_PREFSRC": "prefsrc", "RTA_OIF": "oif",
                "RTA_PRIORITY": "priority"}


def _family(version: int) -> int:
    return AF_INET6 if version == 6 else AF_INET


def _ips(req: Request, prev: Result) -> list[IPConfig]:
    """The IPs of CNI_IFNAME in prevResult; none is an error (the reference then goes on and only empties
    the main table of the interface's routes)."""
    ips = netlink._ips_for(prev, req.ifname)
    if not ips:
        raise CNIError(INVALID_CONFIG, f"sbr: prevResult has no IP addresses for interface {req.ifname!r}")
    return ips


@contextlib.contextmanager
def _locked(ns: NetnsHandle):
    """Serialises sbr runs on one container netns (the reference locks the netns file too): two of them
    must not pick the same free table."""
    try:
        fcntl.flock(ns.fd, fcntl.LOCK_EX)
    except OSError:
        pass
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(ns.fd, fcntl.LOCK_UN)


# -- rules and routes -----------------------------------------------------------------------------------------
def _table_of(msg) -> int:
    return msg.get_attr("FRA_TABLE") or msg.get_attr("RTA_TABLE") or msg["table"]


def _rules(ipr) -> list:
    return [r for family in FAMILIES for r in netlink.dump(ipr.get_rules, family=family)]


def _routes(ipr, table: int | None = None) -> list:
    kwargs = {} if table is None else {"table": table}
    return [r for family in FAMILIES for r in netlink.dump(ipr.get_routes, family=family, **kwargs)
            if table is None or _table_of(r) == table]


def _used_tables(ipr) -> set[int]:
    return {_table_of(r) for r in _rules(ipr)} | {_table_of(r) for r in _routes(ipr)}


def _free_table(used: set[int], candidate: int) -> int:
    while candidate in used or candidate in RESERVED_TABLES:
        candidate += 1
    return candidate


def _rule_kwargs(ip: IPConfig, table: int) -> dict:
    # priority=None: no FRA_PRIORITY, the kernel picks the next one below the last rule (the reference's
    # netlink.NewRule() leaves it unset too); pyroute2 would otherwise send its own 32000.
    return {"family": _family(ip.family), "src": str(ip.address.ip), "src_len": ip.address.max_prefixlen,
            "table": table, "priority": None}


def _add_rule(ipr, ip: IPConfig, table: int) -> None:
    try:
        ipr.rule("add", **_rule_kwargs(ip, table))
    except Exception as exc:
        if netlink.netlink_error_code(exc) != errno.EEXIST:
            raise CNIError(INTERNAL, f"failed to add rule from {ip.address.ip} lookup {table}: {exc}") from None


def _del_rule(ipr, msg) -> None:
    kwargs = {"family": msg["family"], "src": msg.get_attr("FRA_SRC"), "src_len": msg["src_len"],
              "table": _table_of(msg), "priority": msg.get_attr("FRA_PRIORITY")}
    try:
        ipr.rule("del", **kwargs)
    except Exception as exc:
        if netlink.netlink_error_code(exc) not in (errno.ENOENT, errno.ESRCH):
            raise


def _route_kwargs(msg, table: int | None = None) -> dict:
    """ipr.route() arguments recreating a dumped route (in ``table`` when given)."""
    kwargs = {"family": msg["family"], "dst_len": msg["dst_len"], "scope": msg["scope"], "proto": msg["proto"],
              "type": msg["type"], "table": table if table is not None else _table_of(msg)}
    for attr, key in _ROUTE_ATTRS.items():
        value = msg.get_attr(attr)
        if value is not None:
            kwargs[key] = value
    return kwargs


def _route(ipr, command: str, kwargs: dict, quiet=()) -> None:
    try:
        ipr.route(command, **kwargs)
    except Exception as exc:
        if netlink.netlink_error_code(exc) not in quiet:
            dst = f"{kwargs['dst']}/{kwargs['dst_len']}" if kwargs.get("dst") else "default"
            via = f" via {kwargs['gateway']}" if kwargs.get("gateway") else ""
            raise CNIError(INTERNAL, f"failed to {command} route {dst}{via} in table {kwargs.get('table')}: "
                           f"{exc}") from None


def _belongs_to(ip: IPConfig, msg) -> bool:
    """The reference's test for copying a route to an IP's table: its source hint or its gateway is in the
    IP's subnet, or it has neither (a plain link route, of either family)."""
    src, gw = msg.get_attr("RTA_PREFSRC"), msg.get_attr("RTA_GATEWAY")
    if src is None and gw is None:
        return True
    net = ip.address.network
    return any(v is not None and ipaddress.ip_address(v) in net for v in (src, gw))


# -- verbs ----------------------------------------------------------------------------------------------------
def add(req: Request, conf: SbrConfig, handles: Handles) -> Result:
    prev = req.require_prev_result("sbr")
    ips = _ips(req, prev)
    ns = handles.container()
    ipr = ns.ipr
    index = netlink.link_index(ipr, req.ifname)
    if index is None:
        raise CNIError(INTERNAL, f"interface {req.ifname!r} not found in the container")
    with _locked(ns), undo_on_failure("sbr") as undo:
        if conf.table is not None:
            for ip in ips:
                _add_rule(ipr, ip, conf.table)
                undo.append(("rule", lambda ip=ip: ipr.rule("del", **_rule_kwargs(ip, conf.table))))
            return prev
        used = _used_tables(ipr)
        link_routes = [r for r in _routes(ipr, MAIN) if r.get_attr("RTA_OIF") == index]
        table = FIRST_TABLE
        for ip in ips:
            table = _free_table(used, table)
            used.add(table)
            _add_rule(ipr, ip, table)
            undo.append(("rule", lambda ip=ip, table=table: ipr.rule("del", **_rule_kwargs(ip, table))))
            undo.append(("table routes", lambda table=table: _flush_table(ipr, table)))
            gateway = conf.gateways.get(ip.family) or ip.gateway
            if gateway is not None:
                default = {"family": _family(ip.family), "dst_len": 0, "gateway": str(gateway), "oif": index,
                           "table": table}
                _route(ipr, "add", default, quiet=(errno.EEXIST,))
            for msg in link_routes:
                if not _belongs_to(ip, msg):
                    continue
                if gateway is not None and msg["dst_len"] == 0 and msg["family"] == default["family"]:
                    continue   # the default just added wins (the reference's copy would replace it)
                _route(ipr, "replace", _route_kwargs(msg, table))
            table += 1
        _move_main_routes(ipr, ips, index, link_routes, conf.add_source_hints, undo)
    return prev


def _move_main_routes(ipr, ips: list[IPConfig], index: int, link_routes: list, hints: bool, undo: list) -> None:
    """The interface's routes leave the main table once they are in the IPs' tables. With source hints its
    subnet routes stay there with the IP as preferred source, and only the others leave."""
    if hints:
        for ip in ips:
            net = ip.address.network
            original = next((m for m in link_routes if m["dst_len"] == net.prefixlen
                             and m.get_attr("RTA_DST") == str(net.network_address)), None)
            hint = {"family": _family(ip.family), "dst": str(net.network_address), "dst_len": net.prefixlen,
                    "prefsrc": str(ip.address.ip), "oif": index, "scope": RT_SCOPE_LINK, "table": MAIN}
            if original is not None:
                undo.append(("main subnet route", lambda o=original: _route(ipr, "replace", _route_kwargs(o))))
            _route(ipr, "replace", hint)
    for msg in link_routes:
        if hints and msg["scope"] == RT_SCOPE_LINK:
            continue
        _route(ipr, "del", _route_kwargs(msg), quiet=(errno.ESRCH, errno.ENOENT))
        undo.append(("main route", lambda m=msg: _route(ipr, "replace", _route_kwargs(m))))


def _flush_table(ipr, table: int) -> None:
    for msg in _routes(ipr, table):
        _route(ipr, "del", _route_kwargs(msg), quiet=(errno.ESRCH, errno.ENOENT))


def _container_addresses(req: Request, ipr) -> set[str]:
    """The container interface's addresses: the ADD's result's, and what the interface holds now."""
    out = set()
    prev = req.prev_result
    if prev is not None:
        out |= {str(ip.address.ip) for ip in netlink._ips_for(prev, req.ifname)}
    index = netlink.link_index(ipr, req.ifname)
    if index is not None:
        out |= {str(a.ip) for a in netlink.addresses(ipr, index)}
    return out


def _own_rules(ipr, addresses: set[str]) -> list:
    full = {AF_INET: 32, AF_INET6: 128}
    return [r for r in _rules(ipr) if r.get_attr("FRA_SRC") in addresses and r["src_len"] == full[r["family"]]]


def delete(req: Request, table: int | None, handles: Handles) -> None:
    ns = handles.container_if_present()
    if ns is None:
        return
    ipr = ns.ipr
    with _locked(ns):
        addresses = _container_addresses(req, ipr)
        if not addresses:
            return
        tables = set()
        for msg in _own_rules(ipr, addresses):
            _del_rule(ipr, msg)
            tables.add(_table_of(msg))
        if table is None:
            for t in sorted(tables - set(RESERVED_TABLES)):
                _flush_table(ipr, t)


def check(req: Request, conf: SbrConfig, handles: Handles) -> None:
    prev = req.require_prev_result("sbr", "CHECK needs the result of the ADD")
    ipr = handles.container().ipr
    rules = _rules(ipr)
    for ip in _ips(req, prev):
        rule = next((r for r in rules if r.get_attr("FRA_SRC") == str(ip.address.ip)
                     and r["src_len"] == ip.address.max_prefixlen), None)
        if rule is None:
            raise CNIError(INTERNAL, f"no rule from {ip.address.ip} in the container")
        table = _table_of(rule)
        if conf.table is not None:
            if table != conf.table:
                raise CNIError(INTERNAL, f"rule from {ip.address.ip} looks up table {table}, configured {conf.table}")
            continue
        gateway = conf.gateways.get(ip.family) or ip.gateway
        if gateway is not None and not any(m["dst_len"] == 0 and m.get_attr("RTA_GATEWAY") == str(gateway)
                                           for m in _routes(ipr, table) if m["family"] == _family(ip.family)):
            raise CNIError(INTERNAL, f"table {table} of {ip.address.ip} has no default route via {gateway}")


def status(req: Request, conf: SbrConfig, handles: Handles) -> None:
    """The config was valid (the skeleton loaded it); sbr has nothing else to report."""


def _teardown_table(req: Request) -> int | None:
    """DEL needs only ``table`` (whether the tables' routes are sbr's to remove); a bad one counts as unset."""
    try:
        return sbrconfig.parse_table(req.config)
    except CNIError:
        return None


PLUGIN = Plugin(name="sbr", load_config=sbrconfig.parse, add=add, delete=delete, check=check, status=status,
                load_teardown_config=_teardown_table)
