"""`pynet net create/ls/inspect/rm`, `attach`, `detach`, `ls`, `inspect`, `status`, `gc`: the runtime side
of CNI for containers that are already running, whoever started them."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys

from cni_plugins import version as cniversion
from cni_plugins.errors import CNIError

from .cli import CommandError

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PROTOCOLS = ("tcp", "udp", "sctp")


# -- shared options ------------------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("locations (also PYNET_CONFIG_DIR, PYNET_CACHE_DIR, PYNET_CNI_PATH, PYNET_NETNS_DIR)")
    # SUPPRESS: an option left out does not overwrite the same option given before the sub-command
    # (should `pynet --config-dir X attach ...` be declared on the top-level parser too).
    g.add_argument("--config-dir", default=argparse.SUPPRESS, help="network definitions (default /etc/cni/net.d)")
    g.add_argument("--cache-dir", default=argparse.SUPPRESS, help="libcni cache dir (default /var/lib/cni)")
    g.add_argument("--cni-path", default=argparse.SUPPRESS,
                   help="plugin dirs, ':'-separated (default: $CNI_PATH, else pynet's, then /opt/cni/bin)")
    g.add_argument("--netns-dir", default=argparse.SUPPRESS, help="where namespaces are pinned (default /run/netns)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _opt(args, name: str, env: str) -> str | None:
    return getattr(args, name, None) or os.environ.get(env)


def _runner(args):
    from .runner import Runner
    from .runner.cache import DEFAULT_CACHE_DIR
    from .runner.netconf import DEFAULT_CONFIG_DIR

    path = _opt(args, "cni_path", "PYNET_CNI_PATH") or os.environ.get("CNI_PATH")
    return Runner(config_dir=_opt(args, "config_dir", "PYNET_CONFIG_DIR") or DEFAULT_CONFIG_DIR,
                  cni_path=path.split(":") if path else None,
                  cache_dir=_opt(args, "cache_dir", "PYNET_CACHE_DIR") or DEFAULT_CACHE_DIR)


def _attachments(args):
    from .runner.attachments import DEFAULT_NETNS_DIR, Attachments

    return Attachments(_runner(args), _opt(args, "netns_dir", "PYNET_NETNS_DIR") or DEFAULT_NETNS_DIR)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


def _table(headers: list[str], rows: list[list]) -> None:
    cells = [headers] + [["-" if v in (None, "", []) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _fail(err: CNIError):
    raise CommandError(str(err)) from None


def _ports(mappings: list[dict]) -> str:
    return ",".join(f"{m.get('hostIP') + ':' if m.get('hostIP') else ''}{m.get('hostPort')}->"
                    f"{m.get('containerPort')}/{m.get('protocol', 'tcp')}" for m in mappings)


# -- net create / ls / inspect / rm ---------------------------------------------------------------------
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


def build_conflist(name: str, subnets: list, bridge: str, gateway: bool, masq: bool, port_map: bool,
                   data_dir: str | None, cni_version: str) -> dict:
    ipam: dict = {"type": "host-local", "ranges": [[{"subnet": str(s)}] for s in subnets]}
    if gateway:
        ipam["routes"] = [{"dst": "0.0.0.0/0" if s.version == 4 else "::/0"}
                          for s in {s.version: s for s in subnets}.values()]
    if data_dir:
        ipam["dataDir"] = data_dir
    plugins: list[dict] = [{"type": "bridge", "bridge": bridge, "isGateway": gateway, "ipMasq": masq,
                            "hairpinMode": True, "ipam": ipam, "capabilities": {"ips": True, "mac": True}}]
    if port_map:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return {"cniVersion": cni_version, "name": name, "plugins": plugins}


def cmd_net_create(args) -> int:
    from .runner.netconf import list_networks

    runner = _runner(args)
    name = args.name
    if not _NAME.match(name):
        raise CommandError(f"invalid network name {name!r}: letters, digits, '_', '.', '-', starting alphanumeric")
    try:
        cniversion.require_supported(args.cni_version)
    except CNIError as err:
        _fail(err)
    networks, _ = list_networks(runner.config_dir)
    if any(n.name == name for n in networks):
        raise CommandError(f"network {name!r} already exists in {runner.config_dir}")
    in_use = _subnets_in_use(networks)
    subnets = []
    for raw in args.subnet or []:
        try:
            net = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise CommandError(f"invalid --subnet {raw!r}: expected a CIDR like 10.89.1.0/24") from None
        clash = next((u for u in in_use + subnets if u.version == net.version and u.overlaps(net)), None)
        if clash:
            raise CommandError(f"--subnet {raw} overlaps {clash}, already used by another network")
        subnets.append(net)
    if not subnets:
        free = (ipaddress.ip_network(f"10.89.{n}.0/24") for n in range(256))
        subnets.append(next((s for s in free if not any(s.overlaps(u) for u in in_use if u.version == 4)), None)
                       or ipaddress.ip_network("10.90.0.0/24"))
    bridge = args.bridge or f"pn-{name}"[:15]
    if len(bridge) > 15 or not _NAME.match(bridge):
        raise CommandError(f"invalid --bridge {bridge!r}: an interface name of at most 15 characters")
    conflist = build_conflist(name, subnets, bridge, args.gateway, args.masq, args.port_map, args.data_dir,
                              args.cni_version)
    os.makedirs(runner.config_dir, exist_ok=True)
    path = os.path.join(runner.config_dir, f"{name}.conflist")
    try:
        with open(path, "x") as f:
            json.dump(conflist, f, indent=2)
            f.write("\n")
    except FileExistsError:
        raise CommandError(f"{path} already exists") from None
    if args.json:
        _print_json({"name": name, "file": path, "config": conflist})
    else:
        print(f"network {name} created: {path} (bridge {bridge}, subnets {', '.join(map(str, subnets))})")
    return 0


def _attachment_counts(args) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in _runner(args).cache.entries():
        counts[entry.network] = counts.get(entry.network, 0) + 1
    return counts


def cmd_net_ls(args) -> int:
    from .runner.netconf import list_networks

    runner = _runner(args)
    networks, broken = list_networks(runner.config_dir)
    counts = _attachment_counts(args)
    rows = [{"name": n.name, "file": n.path, "cniVersion": n.cni_version,
             "plugins": [p["type"] for p in n.plugins], "subnets": [str(s) for s in _subnets_in_use([n])],
             "attachments": counts.get(n.name, 0)} for n in networks]
    if args.json:
        _print_json({"networks": rows, "errors": [{"file": p, "error": e} for p, e in broken]})
    else:
        _table(["NAME", "VERSION", "PLUGINS", "SUBNETS", "ATTACHMENTS", "FILE"],
               [[r["name"], r["cniVersion"], ",".join(r["plugins"]), ",".join(r["subnets"]), r["attachments"],
                 r["file"]] for r in rows])
        for path, err in broken:
            print(f"pynet: skipped {path}: {err}", file=sys.stderr)
    return 0


def cmd_net_inspect(args) -> int:
    from .runner.attachments import describe_entry

    runner = _runner(args)
    try:
        conf = runner.network(args.name)
    except CNIError as err:
        _fail(err)
    entries = runner.cache.entries(network=conf.name)
    out = {"name": conf.name, "file": conf.path, "cniVersion": conf.cni_version,
           "disableCheck": conf.disable_check, "disableGC": conf.disable_gc,
           "capabilities": sorted(conf.capabilities()), "config": json.loads(conf.bytes),
           "plugins": conf.plugins,
           "attachments": [{k: v for k, v in describe_entry(e).items() if k != "result"} for e in entries]}
    _print_json(out)
    return 0


def cmd_net_rm(args) -> int:
    atts = _attachments(args)
    runner = atts.runner
    try:
        conf = runner.network(args.name)
    except CNIError as err:
        _fail(err)
    entries = runner.cache.entries(network=conf.name)
    if entries and not args.force:
        listed = ", ".join(f"{e.container_id}/{e.ifname}" for e in entries)
        raise CommandError(f"network {conf.name!r} has {len(entries)} attachment(s) ({listed}): "
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
    if args.json:
        _print_json({"removed": conf.name, "file": conf.path, "detached": len(entries)})
    else:
        print(f"network {conf.name} removed ({conf.path})" + (f", {len(entries)} attachment(s) detached"
                                                               if entries else ""))
    return 0


# -- attach / detach -------------------------------------------------------------------------------------
def parse_port(spec: str) -> dict:
    """``[HOSTIP:]HOSTPORT:CONTAINERPORT[/PROTO]`` -> a portMappings element."""
    body, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    parts = body.rsplit(":", 2)
    if body.startswith("["):  # [v6]:host:ctr
        host_ip, _, rest = body[1:].partition("]:")
        parts = [host_ip] + rest.split(":")
    if len(parts) not in (2, 3) or proto not in _PROTOCOLS:
        raise CommandError(f"invalid -p {spec!r}: expected [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp|sctp]")
    try:
        host_port, ctr_port = int(parts[-2]), int(parts[-1])
    except ValueError:
        raise CommandError(f"invalid -p {spec!r}: ports must be numbers") from None
    if not (0 < host_port < 65536 and 0 < ctr_port < 65536):
        raise CommandError(f"invalid -p {spec!r}: ports must be 1-65535")
    mapping = {"hostPort": host_port, "containerPort": ctr_port, "protocol": proto}
    if len(parts) == 3 and parts[0]:
        try:
            mapping["hostIP"] = str(ipaddress.ip_address(parts[0]))
        except ValueError:
            raise CommandError(f"invalid -p {spec!r}: bad host IP {parts[0]!r}") from None
    return mapping


def _capability_args(args, conf) -> dict:
    caps: dict = {}
    if args.publish:
        caps["portMappings"] = [parse_port(p) for p in args.publish]
    if args.ip:
        for ip in args.ip:
            try:
                ipaddress.ip_interface(ip)
            except ValueError:
                raise CommandError(f"invalid --ip {ip!r}: expected an address (optionally /prefix)") from None
        caps["ips"] = list(args.ip)
    if args.mac:
        if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", args.mac):
            raise CommandError(f"invalid --mac {args.mac!r}: expected six ':'-separated hex bytes")
        caps["mac"] = args.mac.lower()
    missing = sorted(set(caps) - conf.capabilities())
    if missing:
        flags = {"portMappings": "-p", "ips": "--ip", "mac": "--mac"}
        raise CommandError(f"network {conf.name!r} does not accept {', '.join(flags[m] for m in missing)}: "
                           f"no plugin declares the capability {', '.join(missing)}")
    return caps


def _default_network(runner) -> str:
    from .runner.netconf import list_networks

    names = [n.name for n in list_networks(runner.config_dir)[0]]
    if len(names) == 1:
        return names[0]
    if not names:
        raise CommandError(f"no networks in {runner.config_dir}: create one with `pynet net create NAME`")
    raise CommandError(f"several networks ({', '.join(names)}): choose one with --net")


def _attachment_rows(container, entries) -> list[list]:
    from .runner.attachments import describe_entry

    rows = []
    for e in entries:
        d = describe_entry(e)
        rows.append([container.id, container.pid or "", "yes" if container.alive else "no", d["network"],
                     d["ifname"], ",".join(d["addresses"]), d["mac"], _ports(d["portMappings"])])
    return rows


_HEADERS = ["CONTAINER", "PID", "ALIVE", "NETWORK", "IFNAME", "ADDRESSES", "MAC", "PORTS"]


def cmd_attach(args) -> int:
    atts = _attachments(args)
    runner = atts.runner
    try:
        conf = runner.network(args.net or _default_network(runner))
        caps = _capability_args(args, conf)
        container, entry = atts.attach(args.pid, conf, ifname=args.ifname, capability_args=caps)
    except CNIError as err:
        _fail(err)
    if args.json:
        _print_json(entry.result)
    else:
        _table(_HEADERS, _attachment_rows(container, [entry]))
    return 0


def cmd_detach(args) -> int:
    atts = _attachments(args)
    try:
        removed = atts.detach(args.ref, network=args.net, ifname=args.ifname)
    except CNIError as err:
        _fail(err)
    if args.json:
        _print_json({"detached": [{"containerID": e.container_id, "network": e.network, "ifname": e.ifname}
                                  for e in removed]})
    else:
        for e in removed:
            print(f"detached {e.container_id} {e.ifname} from {e.network}")
    return 0


# -- ls / inspect / status / gc ---------------------------------------------------------------------------
def cmd_ls(args) -> int:
    containers = _attachments(args).containers()
    if args.json:
        _print_json([{**c.describe(), "attachments": [{k: v for k, v in a.items() if k != "result"}
                                                      for a in c.describe()["attachments"]]}
                     for c in containers])
    else:
        _table(_HEADERS, [row for c in containers for row in _attachment_rows(c, c.entries)])
    return 0


def cmd_inspect(args) -> int:
    atts = _attachments(args)
    try:
        container = atts.resolve(args.ref)
    except CNIError as err:
        _fail(err)
    out = container.describe()
    failed = False
    if args.check:
        # CHECK through the chain: the plugins verify the interfaces still match the cached result.
        for att, entry in zip(out["attachments"], container.entries):
            try:
                atts.runner.check(entry.network, entry.container_id, entry.ifname)
                att["check"] = "ok"
            except CNIError as err:
                att["check"], failed = str(err), True
    _print_json(out)
    return 1 if failed else 0


def cmd_status(args) -> int:
    from .runner.netconf import list_networks

    runner = _runner(args)
    if args.name:
        try:
            networks = [runner.network(args.name)]
        except CNIError as err:
            _fail(err)
    else:
        networks = list_networks(runner.config_dir)[0]
    rows, failed = [], False
    for conf in networks:
        try:
            supported = runner.status(conf)
            rows.append({"network": conf.name, "status": "ok" if supported else "unsupported",
                         "message": "" if supported else f"cniVersion {conf.cni_version} predates STATUS"})
        except CNIError as err:
            failed = True
            rows.append({"network": conf.name, "status": "error", "code": err.code, "message": str(err)})
    if args.json:
        _print_json(rows)
    else:
        _table(["NETWORK", "STATUS", "MESSAGE"], [[r["network"], r["status"], r["message"]] for r in rows])
    return 1 if failed else 0


def cmd_gc(args) -> int:
    from .runner.netconf import list_networks

    atts = _attachments(args)
    networks = list_networks(atts.runner.config_dir)[0]
    report = atts.gc(networks)
    if args.json:
        _print_json({"removed": [{k: v for k, v in r.items() if k != "result"} for r in report["removed"]],
                     "errors": report["errors"]})
    else:
        for r in report["removed"]:
            print(f"removed {r['containerID']} {r['ifname']} from {r['network']}")
        if not report["removed"] and not report["errors"]:
            print(f"nothing to collect ({len(networks)} network(s) checked)")
        for e in report["errors"]:
            print(f"pynet: {e}", file=sys.stderr)
    return 1 if report["errors"] else 0


# -- registration -----------------------------------------------------------------------------------------
def register(sub) -> None:
    common = _common()

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
    p.add_argument("--data-dir", help="host-local lease dir (default /var/lib/cni/networks)")
    p.add_argument("--cni-version", default=cniversion.CURRENT, help=f"default {cniversion.CURRENT}")
    p.set_defaults(func=cmd_net_create)

    p = net_sub.add_parser("ls", parents=[common], help="list networks")
    p.set_defaults(func=cmd_net_ls)
    p = net_sub.add_parser("inspect", parents=[common], help="show a network and its attachments")
    p.add_argument("name")
    p.set_defaults(func=cmd_net_inspect)
    p = net_sub.add_parser("rm", parents=[common], help="remove a network definition")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="detach its attachments first")
    p.set_defaults(func=cmd_net_rm)

    p = sub.add_parser("attach", parents=[common], help="add an interface to a running process's netns")
    p.add_argument("pid", type=int)
    p.add_argument("--net", help="network name (default: the only one defined)")
    p.add_argument("--ifname", help="interface name in the container (default: first free ethN)")
    p.add_argument("-p", "--publish", action="append", metavar="[HOSTIP:]HOST:CTR[/PROTO]", help="port mapping")
    p.add_argument("--ip", action="append", help="requested address (capability ips)")
    p.add_argument("--mac", help="requested MAC (capability mac)")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("detach", parents=[common], help="remove interfaces (works after the process died)")
    p.add_argument("ref", metavar="PID|ID")
    p.add_argument("--net")
    p.add_argument("--ifname")
    p.set_defaults(func=cmd_detach)

    p = sub.add_parser("ls", parents=[common], help="list attachments")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("inspect", parents=[common], help="show one container's attachments")
    p.add_argument("ref", metavar="PID|ID")
    p.add_argument("--check", action="store_true", help="also run CHECK through each attachment's chain")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("status", parents=[common], help="STATUS of each network")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("gc", parents=[common], help="remove attachments of processes that are gone")
    p.set_defaults(func=cmd_gc)
