"""`pynet net create/ls/inspect/rm`: the network definitions (conflists) runtimes attach containers to."""

from __future__ import annotations

import ipaddress
import json
import os
import re

from cni_plugins import version as cniversion
from cni_plugins.errors import CNIError

from .cli_base import (CommandError, attachments_of, fail, location_options, print_json, runner_of, table,
                       warn)

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def _subnets_in_use(networks) -> list:
    out = []
    for conf in networks:
        for plugin in conf.plugins:
            ipam = plugin.get("ipam") if isinstance(plugin.get("ipam"), dict) else {}
            candidates = [ipam.get("subnet")] + [r.get("subnet") for rs in ipam.get("ranges") or []
                                                 if isinstance(rs, list) for r in rs if isinstance(r, dict)]
            for s in candidates:
                try:
                    out.append(ipaddress.ip_network(s, strict=False))
                except (TypeError, ValueError):
                    pass
    return out


def _usable(net) -> int:
    """Addresses host-local can hand out in ``net`` besides the gateway (IPv4: not the network or
    broadcast address of a subnet larger than /31; IPv6: not the subnet-router address)."""
    reserved = (2 if net.prefixlen < 31 else 0) if net.version == 4 else 1
    return max(net.num_addresses - reserved - 1, 0)


def _routed_here() -> list:
    """(network, link name) of every route with a destination in this network namespace's main table
    (the subnets of live links here: a network over one could not reach its gateway)."""
    from pyroute2 import IPRoute

    out = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for family in (2, 10):   # AF_INET, AF_INET6
            for route in ipr.get_routes(family=family, table=254):
                dst, plen = route.get_attr("RTA_DST"), route["dst_len"]
                if dst is None or plen == 0 or (family == 10 and dst.startswith("fe80:")):
                    continue
                try:
                    out.append((ipaddress.ip_network(f"{dst}/{plen}", strict=False),
                                names.get(route.get_attr("RTA_OIF"), "?")))
                except ValueError:
                    continue
    return out


def cmd_net_create(args) -> int:
    from .runner.netconf import list_networks

    runner = runner_of(args)
    name = args.name
    if not _NAME.match(name):
        raise CommandError(f"invalid network name {name!r}: letters, digits, '_', '.', '-', starting alphanumeric")
    try:
        cniversion.require_supported(args.cni_version)
    except CNIError as err:
        fail(err)
    networks, _ = list_networks(runner.config_dir)
    if any(n.name == name for n in networks):
        raise CommandError(f"network {name!r} already exists in {runner.config_dir}")
    in_use = _subnets_in_use(networks)
    routed = _routed_here()
    subnets = []
    for raw in args.subnet or []:
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise CommandError(f"invalid --subnet {raw!r}: expected a CIDR like 10.89.1.0/24") from None
        if _usable(net) < 2:
            raise CommandError(f"invalid --subnet {raw!r}: too small, it leaves {_usable(net)} address(es) "
                               "for containers besides the gateway (at least 2 needed: /29 or larger)")
        clash = next((u for u in in_use + subnets if u.version == net.version and u.overlaps(net)), None)
        if clash:
            raise CommandError(f"--subnet {raw} overlaps {clash}, already used by another network")
        link = next((f"{r} on link {name}" for r, name in routed if r.version == net.version and r.overlaps(net)),
                    None)
        if link:
            raise CommandError(f"--subnet {raw} overlaps {link}, routed in this network namespace")
        subnets.append(net)
    if not subnets:
        taken = in_use + [r for r, _ in routed]
        free = (ipaddress.ip_network(f"10.89.{n}.0/24") for n in range(256))
        subnets.append(next((s for s in free if not any(s.overlaps(u) for u in taken if u.version == 4)), None)
                       or ipaddress.ip_network("10.90.0.0/24"))
    bridge = args.bridge or f"pn-{name}"[:15]
    if len(bridge) > 15 or not _NAME.match(bridge):
        raise CommandError(f"invalid --bridge {bridge!r}: an interface name of at most 15 characters")
    from .runner.conflists import build_conflist

    from .cli_base import locations
    from .runner.locations import lease_dir

    conflist = build_conflist(name, subnets, bridge, args.gateway, args.masq, args.port_map,
                              args.data_dir or lease_dir(locations(args)), args.cni_version)
    os.makedirs(runner.config_dir, exist_ok=True)
    path = os.path.join(runner.config_dir, f"{name}.conflist")
    try:
        with open(path, "x") as f:
            json.dump(conflist, f, indent=2)
            f.write("\n")
    except FileExistsError:
        raise CommandError(f"{path} already exists") from None
    if args.json:
        print_json({"name": name, "file": path, "config": conflist})
    else:
        print(f"network {name} created: {path} (bridge {bridge}, subnets {', '.join(map(str, subnets))})")
    return 0


def _attachment_counts(args) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in runner_of(args).cache.entries():
        counts[entry.network] = counts.get(entry.network, 0) + 1
    return counts


def cmd_net_ls(args) -> int:
    from .runner.netconf import list_networks

    runner = runner_of(args)
    networks, broken = list_networks(runner.config_dir)
    counts = _attachment_counts(args)
    rows = [{"name": n.name, "file": n.path, "cniVersion": n.cni_version,
             "plugins": [p["type"] for p in n.plugins], "subnets": [str(s) for s in _subnets_in_use([n])],
             "attachments": counts.get(n.name, 0)} for n in networks]
    if args.json:
        print_json({"networks": rows, "errors": [{"file": p, "error": e} for p, e in broken]})
    else:
        table(["NAME", "VERSION", "PLUGINS", "SUBNETS", "ATTACHMENTS", "FILE"],
               [[r["name"], r["cniVersion"], ",".join(r["plugins"]), ",".join(r["subnets"]), r["attachments"],
                 r["file"]] for r in rows])
        for path, err in broken:
            warn(f"skipped {path}: {err}")
    return 0


def cmd_net_inspect(args) -> int:
    from .runner.attachments import describe_entry

    runner = runner_of(args)
    try:
        conf = runner.network(args.name)
    except CNIError as err:
        fail(err)
    entries = runner.cache.entries(network=conf.name)
    out = {"name": conf.name, "file": conf.path, "cniVersion": conf.cni_version,
           "disableCheck": conf.disable_check, "disableGC": conf.disable_gc,
           "capabilities": sorted(conf.capabilities()), "config": json.loads(conf.bytes),
           "plugins": conf.plugins,
           "attachments": [{k: v for k, v in describe_entry(e).items() if k != "result"} for e in entries]}
    print_json(out)
    return 0


def cmd_net_rm(args) -> int:
    from .runner.conflists import remove_host_side

    atts = attachments_of(args)
    runner = atts.runner
    try:
        conf = runner.network(args.name)
    except CNIError as err:
        fail(err)
    from .launcher.network import wait_pending_detaches

    wait_pending_detaches(runner.cache.cache_dir)   # DELs of `pynet run`s that already answered
    entries = runner.cache.entries(network=conf.name)
    if entries and not args.force:
        listed = ", ".join(f"{_user_of(e.container_id)}/{e.ifname}" for e in entries)
        raise CommandError(f"network {conf.name!r} is in use by {len(entries)} attachment(s) ({listed}): "
                           "detach them first or use --force")
    errors = []
    for e in entries:
        try:
            atts.detach(e.container_id, network=e.network, ifname=e.ifname)
        except CNIError as err:
            errors.append(f"{e.container_id}/{e.ifname}: {err}")
    if errors:
        raise CommandError(f"network {conf.name!r} kept: detaching failed: " + "; ".join(errors))
    os.unlink(conf.path)
    removed = remove_host_side(conf, all_leases=True)
    if args.json:
        print_json({"removed": conf.name, "file": conf.path, "detached": len(entries), "host": removed})
    else:
        print(f"network {conf.name} removed ({conf.path})" + (f", {len(entries)} attachment(s) detached"
                                                              if entries else "")
              + (f"; removed {', '.join(removed)}" if removed else ""))
    return 0


def _user_of(attachment_id: str) -> str:
    """The `pynet run` container (id and name) an attachment belongs to, else the attachment's id."""
    from .launcher import state

    rec = next((r for r in state.all_records()
                if (r.get("network") or {}).get("attachment_id") == attachment_id), None)
    return f"container {rec.id} ({rec.get('name')})" if rec else attachment_id


def register(sub) -> None:
    common = location_options()

    net = sub.add_parser("net", help="network definitions (conflists)")
    net_sub = net.add_subparsers(dest="net_command", metavar="SUBCOMMAND")
    net.set_defaults(func=lambda a: (net.print_help(), 2)[1])

    p = net_sub.add_parser("create", parents=[common], help="write a bridge + host-local conflist")
    p.add_argument("name")
    p.add_argument("--subnet", action="append", help="CIDR (repeatable; IPv4 and/or IPv6)")
    p.add_argument("--bridge", help="bridge name (default pn-NAME)")
    p.add_argument("--gateway", action="store_true", help="the bridge is the gateway (isGateway, default route)")
    p.add_argument("--masq", action="store_true", help="masquerade traffic leaving the subnet (ipMasq)")
    p.add_argument("--port-map", action="store_true", help="add portmap (capability portMappings, for -p)")
    p.add_argument("--data-dir", help="host-local lease dir (default: PYNET_DEFAULT_DATA_DIR, else networks/ "
                   "in the cache dir: /var/lib/cni/networks)")
    p.add_argument("--cni-version", default=cniversion.CURRENT, help=f"default {cniversion.CURRENT}")
    p.set_defaults(func=cmd_net_create)

    p = net_sub.add_parser("ls", parents=[common], help="list networks")
    p.set_defaults(func=cmd_net_ls)
    p = net_sub.add_parser("inspect", parents=[common], help="show a network and its attachments")
    p.add_argument("name")
    p.set_defaults(func=cmd_net_inspect)
    p = net_sub.add_parser("rm", parents=[common], help="remove a network: its definition, bridge and leases")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="detach its attachments first")
    p.set_defaults(func=cmd_net_rm)
