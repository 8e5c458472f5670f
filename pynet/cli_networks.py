"""`pynet net create/ls/inspect/rm`: the network definitions (conflists) runtimes attach containers to."""

from __future__ import annotations

import ipaddress
import json
import os
import re

from cni_plugins import version as cniversion
from cni_plugins.errors import CNIError

from .cli_base import (CommandError, attachments_of, fail, location_options, print_format, print_json, runner_of,
                       table, warn)

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def _usable(net) -> int:
    """Addresses host-local can hand out in ``net`` besides the gateway (IPv4: not the network or
    broadcast address of a subnet larger than /31; IPv6: not the subnet-router address)."""
    reserved = (2 if net.prefixlen < 31 else 0) if net.version == 4 else 1
    return max(net.num_addresses - reserved - 1, 0)


def _gateway(raw, subnets):
    """--gateway [ADDR]: True (the first address of each subnet) or the address, checked."""
    if raw is True:
        return True
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        raise CommandError(f"invalid --gateway {raw!r}: not an IP address") from None
    net = next((s for s in subnets if addr in s), None)
    if net is None:
        raise CommandError(f"invalid --gateway {raw}: not in --subnet {', '.join(map(str, subnets))}")
    if net.version == 4 and net.prefixlen < 31 and addr in (net.network_address, net.broadcast_address):
        raise CommandError(f"invalid --gateway {raw}: the network or broadcast address of {net}")
    return addr


def cmd_net_create(args) -> int:
    from .cli_base import locations
    from .runner.conflists import bridge_of, build_conflist, dns_data_dir, free_subnet, routed_here, subnets_in_use
    from .runner.locations import lease_dir
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
    in_use = subnets_in_use(networks)
    routed = routed_here()
    subnets = []
    for raw in args.subnet or []:
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise CommandError(f"invalid --subnet {raw!r}: expected a CIDR like 10.200.1.0/24") from None
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
        try:
            subnets.append(free_subnet(in_use + [r for r, _ in routed]))
        except ValueError as err:
            fail(err)
    gateway = False if args.no_gateway else _gateway(args.gateway if args.gateway is not None else True, subnets)
    bridge = args.bridge or f"pn-{name}"[:15]
    if len(bridge) > 15 or not _NAME.match(bridge):
        raise CommandError(f"invalid --bridge {bridge!r}: an interface name of at most 15 characters")
    sharing = [n.name for n in networks if bridge_of(n) == bridge]
    if sharing and not args.force:
        raise CommandError(f"bridge {bridge} is already the bridge of network {sharing[0]!r}: choose another "
                           "--bridge, or --force to share it")
    locs = locations(args)
    dns = None
    if not args.disable_dns and gateway:
        from .dns import plugin_config
        from cni_plugins.delegate import find_plugin

        try:
            find_plugin("dnsname", tuple(runner.cni_path))
            dns = plugin_config(data_dir=dns_data_dir(locs))
        except CNIError:
            warn(f"no dnsname plugin in the CNI path ({':'.join(runner.cni_path)}): network {name} resolves no "
                 "container names (--disable-dns says so without this warning)")
    conflist = build_conflist(name, subnets, bridge, gateway, not (args.no_masq or args.internal),
                              not args.no_port_map, args.data_dir or lease_dir(locs), args.cni_version, dns=dns,
                              default_route=bool(gateway) and not args.internal)
    os.makedirs(runner.config_dir, exist_ok=True)
    path = os.path.join(runner.config_dir, f"{name}.conflist")
    try:
        with open(path, "x") as f:
            json.dump(conflist, f, indent=2)
            f.write("\n")
    except FileExistsError:
        raise CommandError(f"{path} already exists") from None
    if args.json:
        print_json([{"name": name, "file": path, "config": conflist}])
    else:
        extras = [w for w, on in (("gateway", gateway), ("masquerade", conflist["plugins"][0]["ipMasq"]),
                                  ("ports", not args.no_port_map), ("dns", dns)) if on]
        print(f"network {name} created: {path} (bridge {bridge}, subnets {', '.join(map(str, subnets))}; "
              f"{', '.join(extras) or 'no gateway'})")
    return 0


def _attachment_counts(args) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in runner_of(args).cache.entries():
        counts[entry.network] = counts.get(entry.network, 0) + 1
    return counts


def cmd_net_ls(args) -> int:
    from .runner.conflists import subnets_in_use
    from .runner.netconf import list_networks

    runner = runner_of(args)
    networks, broken = list_networks(runner.config_dir)
    counts = _attachment_counts(args)
    rows = [{"name": n.name, "file": n.path, "cniVersion": n.cni_version,
             "plugins": [p["type"] for p in n.plugins], "subnets": [str(s) for s in subnets_in_use([n])],
             "attachments": counts.get(n.name, 0)} for n in networks]
    for path, err in broken:
        warn(f"skipped {path}: {err}")
    if args.json:
        print_json(rows)
    elif getattr(args, "format", None):
        print_format(args.format, [{"Name": r["name"], "File": r["file"], "Version": r["cniVersion"],
                                    "Plugins": ",".join(r["plugins"]), "Subnets": ",".join(r["subnets"]),
                                    "Attachments": r["attachments"]} for r in rows])
    else:
        table(["NAME", "VERSION", "PLUGINS", "SUBNETS", "ATTACHMENTS", "FILE"],
               [[r["name"], r["cniVersion"], ",".join(r["plugins"]), ",".join(r["subnets"]), r["attachments"],
                 r["file"]] for r in rows])
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
           "attachments": [{k: v for k, v in describe_entry(e).items() if k != "result"} for e in entries]}
    if args.json:
        print_json([out])
        return 0
    from .runner.conflists import bridge_of, has_dns, subnets_in_use

    print(f"Name:          {conf.name}")
    print(f"File:          {conf.path}")
    print(f"CNI version:   {conf.cni_version}")
    print(f"Plugins:       {', '.join(str(p.get('type')) for p in conf.plugins)}")
    print(f"Bridge:        {bridge_of(conf) or '-'}")
    print(f"Subnets:       {', '.join(map(str, subnets_in_use([conf]))) or '-'}")
    print(f"DNS:           {'yes' if has_dns(conf) else 'no'}")
    print(f"Capabilities:  {', '.join(out['capabilities']) or '-'}")
    print(f"Attachments:   {len(entries)}")
    names = {c.id: c.name for c in attachments_of(args).containers() if c.name}
    for a in out["attachments"]:
        print(f"  {_user_of(a['containerID'], names)} {a['ifname']} {','.join(a.get('addresses') or [])}")
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
    containers = atts.containers()
    spares = {c.id for c in containers if c.warm}   # the daemon's warm attachments: nobody uses them yet
    in_use = [e for e in entries if e.container_id not in spares]
    if in_use and not args.force:
        names = {c.id: c.name for c in containers if c.name}
        listed = ", ".join(f"{_user_of(e.container_id, names)}/{e.ifname}" for e in in_use)
        raise CommandError(f"network {conf.name!r} is in use by {len(in_use)} attachment(s) ({listed}): "
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
        print_json([{"removed": conf.name, "file": conf.path, "detached": len(in_use), "host": removed}])
    else:
        print(f"network {conf.name} removed ({conf.path})" + (f", {len(in_use)} attachment(s) detached"
                                                              if in_use else "")
              + (f"; removed {', '.join(removed)}" if removed else ""))
    return 0


def _user_of(attachment_id: str, names: dict | None = None) -> str:
    """The container an attachment belongs to as the user knows it: ``container NAME (ID)`` of a `pynet run`
    container or a named attached process (``names``: id -> name), else the attachment's id."""
    from .launcher import state

    rec = next((r for r in state.all_records()
                if (r.get("network") or {}).get("attachment_id") == attachment_id), None)
    if rec:
        return f"container {rec.get('name')} ({rec.id})"
    name = (names or {}).get(attachment_id)
    return f"container {name} ({attachment_id})" if name else attachment_id


def register(sub) -> None:
    import argparse

    common = location_options()

    net = sub.add_parser("net", aliases=["network"], help="network definitions (conflists); connect, disconnect")
    net_sub = net.add_subparsers(dest="net_command", metavar="SUBCOMMAND")
    net.set_defaults(func=lambda a: (net.print_help(), 2)[1])

    p = net_sub.add_parser("create", parents=[common], help="write a bridge + host-local conflist")
    p.add_argument("name")
    p.add_argument("--subnet", action="append", help="CIDR (repeatable; IPv4 and/or IPv6; default: a free /24 "
                   "of 10.200.0.0/16)")
    p.add_argument("--bridge", help="bridge name (default pn-NAME)")
    p.add_argument("--gateway", nargs="?", const=True, default=None, metavar="ADDR",
                   help="the gateway address (default: the subnet's first address; the bridge is the gateway "
                        "and containers get a default route through it)")
    p.add_argument("--no-gateway", action="store_true", help="no gateway, no default route (and so no DNS)")
    p.add_argument("--internal", action="store_true", help="no default route, no masquerade: containers reach "
                   "only each other and the host")
    p.add_argument("--masq", action="store_true", help=argparse.SUPPRESS)   # the default; kept for old scripts
    p.add_argument("--no-masq", action="store_true", help="do not masquerade traffic leaving the subnet")
    p.add_argument("--port-map", action="store_true", help=argparse.SUPPRESS)   # the default
    p.add_argument("--no-port-map", action="store_true", help="no portmap plugin (no -p)")
    p.add_argument("--disable-dns", action="store_true", help="no dnsname plugin: containers do not resolve "
                   "each other's names")
    p.add_argument("--force", action="store_true", help="share a bridge another network uses")
    p.add_argument("--data-dir", help="host-local lease dir (default: PYNET_DEFAULT_DATA_DIR, else networks/ "
                   "in the cache dir: /var/lib/cni/networks)")
    p.add_argument("--cni-version", default=cniversion.CURRENT, help=f"default {cniversion.CURRENT}")
    p.set_defaults(func=cmd_net_create)

    p = net_sub.add_parser("ls", parents=[common], help="list networks")
    p.add_argument("--format", help="Go-template-like fields per line: {{.Name}} {{.Subnets}} {{.Plugins}} ...")
    p.set_defaults(func=cmd_net_ls)
    p = net_sub.add_parser("inspect", parents=[common], help="show a network and its attachments")
    p.add_argument("name")
    p.set_defaults(func=cmd_net_inspect)
    p = net_sub.add_parser("rm", parents=[common], help="remove a network: its definition, bridge and leases")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="detach its attachments first")
    p.set_defaults(func=cmd_net_rm)
    from .cli_attach import register_network_commands

    register_network_commands(net_sub, common)
