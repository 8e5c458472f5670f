"""`pynet attach`, `detach`, `ls`, `inspect`, `status`, `gc`: the runtime side of CNI for containers that
are already running, whoever started them (an attachment: one network's interface in a process's netns,
its netns pinned so that detach works after the process died)."""

from __future__ import annotations

from cni_plugins.errors import CNIError, UNKNOWN_CONTAINER

from .cli_base import (CommandError, attachments_of, fail, location_options, print_json, runner_of, table,
                       warn)


def _ports(mappings: list[dict]) -> str:
    return ",".join(f"{m.get('hostIP') + ':' if m.get('hostIP') else ''}{m.get('hostPort')}->"
                    f"{m.get('containerPort')}/{m.get('protocol', 'tcp')}" for m in mappings)


def _capability_args(args, conf) -> dict:
    from .runner import capabilities, ports

    try:
        mappings = [ports.parse_publish(spec) for spec in args.publish or ()]
        ports.check_host_ips(mappings)
        caps = capabilities.capability_args([m.to_cni() for m in ports.assign_host_ports(mappings)], args.ip,
                                            args.mac)
        capabilities.require(conf, caps)
    except ValueError as err:   # ports.PortSpecError, capabilities.CapabilityError
        fail(err)
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
        rows.append([container.id[:12], container.name, container.pid or "", "yes" if container.alive else "no",
                     d["network"], d["ifname"], ",".join(d["addresses"]), d["mac"], _ports(d["portMappings"])])
    return rows


_HEADERS = ["CONTAINER ID", "NAME", "PID", "ALIVE", "NETWORK", "IFNAME", "ADDRESSES", "MAC", "PORTS"]


def _launcher_record(ref: str):
    """The `pynet run` container ``ref`` names (name, ID, unique ID prefix), or None."""
    from .launcher import state

    try:
        return state.find(ref)
    except (state.LookupFailed, OSError):
        return None


def resolve(atts, ref: str):
    """The attachments' Container of ``ref``: a name, ID or unique ID prefix of a `pynet run` container or
    of an attached process, or a PID. CNIError (code 3) saying what exists when nothing matches."""
    rec = _launcher_record(ref) if not ref.isdigit() else None
    if rec is not None:
        att = (rec.get("network") or {}).get("attachment_id") or rec.id
        try:
            return atts.resolve(att)
        except CNIError:
            raise CommandError(f"container {rec.get('name')} ({rec.id[:12]}) has no network attachments") from None
    return atts.resolve(ref)


def _target_pid(atts, ref: str) -> tuple[int, str | None, str | None]:
    """(PID, name, container id) of what `attach REF` adds an interface to: a PID, a `pynet run` container
    (its PID 1, under its own name and ID) or an attached process by name or ID."""
    if ref.isdigit():
        return int(ref), None, None
    rec = _launcher_record(ref)
    if rec is not None:
        if rec.status() != "running":
            raise CommandError(f"container {rec.get('name')} ({rec.id[:12]}) is not running")
        return int(rec.get("pid")), rec.get("name"), (rec.get("network") or {}).get("attachment_id") or rec.id
    try:
        c = atts.resolve(ref)
    except CNIError as err:
        fail(err)
    if not c.alive or not c.pid:
        raise CommandError(f"container {c.name or c.id} is not running")
    return c.pid, c.name, c.id


def _check_name(name: str | None) -> None:
    if name is None:
        return
    from .launcher.options import OptionsError, _check_name as check

    try:
        check(name)
    except OptionsError as err:
        fail(err)


def _aliases(aliases: list[str], conf) -> list[str]:
    from .launcher.options import _dns_label

    for alias in aliases:
        if not _dns_label(alias):
            raise CommandError(f"invalid --alias {alias!r}: a DNS name of letters, digits, '-' and '_' (at most 63, "
                               "not starting or ending with '-')")
    if "aliases" not in conf.capabilities():
        raise CommandError(f"network {conf.name!r} resolves no names (no dnsname plugin): --alias needs one")
    return list(aliases)


def cmd_attach(args) -> int:
    atts = attachments_of(args)
    runner = atts.runner
    _check_name(args.name)
    if args.ifname is not None:
        from cni_plugins.skel import validate_ifname

        try:
            validate_ifname(args.ifname)
        except CNIError as err:   # "invalid CNI_IFNAME ...": said in the flag's terms
            raise CommandError(str(err).replace("CNI_IFNAME", "--ifname").replace("missing --ifname",
                                                                                  "empty --ifname")) from None
    pid, name, cid = _target_pid(atts, args.ref)
    try:
        conf = runner.network(args.net or _default_network(runner))
        caps = _capability_args(args, conf)
        aliases = getattr(args, "alias", None) or []
        if aliases:
            caps["aliases"] = {conf.name: _aliases(aliases, conf)}
        existing = atts.container_of_pid(pid)
        if existing is not None and not args.force:
            same = [e for e in runner.cache.entries(container_id=existing.id) if e.network == conf.name]
            if same:
                raise CommandError(f"container {existing.name or existing.id} is already on network {conf.name!r} "
                                   f"({same[0].ifname}): --force adds another interface")
        cni_args = [("IgnoreUnknown", "1"), ("K8S_POD_NAME", args.name or name)] if (args.name or name) else None
        container, entry = atts.attach(pid, conf, ifname=args.ifname, capability_args=caps, cni_args=cni_args,
                                       name=args.name or name, container_id=cid)
    except CNIError as err:
        fail(err)
    if args.json:
        # the CNI result, with whose it is
        print_json([{"containerID": container.id, "name": container.name, "network": entry.network,
                     "ifname": entry.ifname, **entry.result}])
    else:
        table(_HEADERS, _attachment_rows(container, [entry]))
    return 0


def _detached_line(d, who: str) -> str:
    """``who``: the container as the user knows it, ``name (id)``."""
    from .runner.attachments import INTERFACE_REMOVED, INTERFACE_UNKNOWN

    e = d.entry
    if d.interface == INTERFACE_REMOVED:
        return f"detached {who} {e.ifname} from {e.network}"
    if d.interface == INTERFACE_UNKNOWN:
        return (f"released {who} {e.ifname} from {e.network} on the host side only: its network "
                f"namespace could not be reached ({d.reason}), so DEL ran without it and {e.ifname} was not "
                "checked (it went with the namespace unless something still holds that namespace)")
    return f"not detached: {d.reason}"


def cmd_detach(args) -> int:
    """Exit 0 when every chosen attachment is gone or released (a namespace that could not be reached is
    said so on its line); 1, naming the interface, when one is still in the container after DEL."""
    from .runner.attachments import INTERFACE_PRESENT, InterfaceStayed

    atts = attachments_of(args)
    try:
        c = resolve(atts, args.ref)
        who = f"{c.name} ({c.id})" if c.name else c.id
        done = atts.detach(c.id, network=args.net, ifname=args.ifname)
    except InterfaceStayed as err:
        done = err.done
    except CNIError as err:
        fail(err)
    stayed = [d for d in done if d.interface == INTERFACE_PRESENT]
    if args.json:
        print_json([{"containerID": d.entry.container_id, "network": d.entry.network, "ifname": d.entry.ifname,
                     "interface": d.interface, **({"reason": d.reason} if d.reason else {})} for d in done])
    else:
        for d in done:
            if d.interface != INTERFACE_PRESENT:
                print(_detached_line(d, who))
        for d in stayed:
            warn(_detached_line(d, who) + "; the attachment is kept: remove the interface, then detach again")
    return 1 if stayed else 0


# -- ls / inspect / status / gc ---------------------------------------------------------------------------
def cmd_ls(args) -> int:
    # A daemon spare's warm attachment is nobody's container until a run adopts it: listed with --all only.
    containers = [c for c in attachments_of(args).containers() if args.all or not c.warm]
    if getattr(args, "format", None):
        from .cli_base import print_format
        from .runner.attachments import describe_entry

        rows = []
        for c in containers:
            ds = [describe_entry(e) for e in c.entries]
            rows.append({"ID": c.id, "Name": c.name, "PID": c.pid or "", "Alive": c.alive,
                         "Networks": sorted({d["network"] for d in ds}),
                         "IPs": [a.split("/")[0] for d in ds for a in d["addresses"]],
                         "Ports": _ports([m for d in ds for m in d["portMappings"]])})
        print_format(args.format, rows)
    elif args.json:
        described = [c.describe() for c in containers]
        print_json([{**d, "attachments": [{k: v for k, v in a.items() if k != "result"} for a in d["attachments"]]}
                    for d in described])
    else:
        table(_HEADERS, [row for c in containers for row in _attachment_rows(c, c.entries)])
    return 0


def cmd_inspect(args) -> int:
    atts = attachments_of(args)
    try:
        container = resolve(atts, args.ref)
    except CNIError as err:
        fail(err)
    out = container.describe()
    failed = False
    if args.check:
        # CHECK through the chain: the plugins verify the interfaces still match the cached result.
        for att, entry in zip(out["attachments"], container.entries):
            try:
                netns, why = atts.reach(container, entry)   # a lost pin of a live process is made again
                if not netns:
                    raise CNIError(UNKNOWN_CONTAINER, f"the network namespace cannot be reached: {why}")
                atts.runner.check(entry.network, entry.container_id, entry.ifname, netns=netns)
                att["check"] = "ok"
            except CNIError as err:
                att["check"], failed = str(err), True
    if args.json:
        out["attachments"] = [{k: v for k, v in a.items() if k != "result"} for a in out["attachments"]]
        print_json([out])
    else:
        print(f"Container:  {out['name'] or '-'} ({out['id']})")
        print(f"PID:        {out['pid'] or '-'} ({'alive' if out['alive'] else 'gone'})")
        print(f"Netns:      {out['netns']}{'' if out['reachable'] else ' (not reachable)'}")
        for a in out["attachments"]:
            line = f"  {a['network']}: {a['ifname']} {','.join(a['addresses']) or '-'} {a['mac'] or ''}".rstrip()
            if a["portMappings"]:
                line += f" ports {_ports(a['portMappings'])}"
            if "check" in a:
                line += f" check: {a['check']}"
            print(line)
    return 1 if failed else 0


def cmd_status(args) -> int:
    from .runner.netconf import list_networks

    runner = runner_of(args)
    if args.name:
        try:
            networks = [runner.network(args.name)]
        except CNIError as err:
            fail(err)
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
        print_json(rows)
    else:
        table(["NETWORK", "STATUS", "MESSAGE"], [[r["network"], r["status"], r["message"]] for r in rows])
    return 1 if failed else 0


def cmd_gc(args) -> int:
    from .runner.netconf import list_networks

    atts = attachments_of(args)
    networks = list_networks(atts.runner.config_dir)[0]
    report = atts.gc(networks)
    if args.json:   # what was removed; errors on stderr (and exit 1), as every --json list
        print_json([{k: v for k, v in r.items() if k != "result"} for r in report["removed"]])
        for e in report["errors"]:
            warn(e)
    else:
        for r in report["removed"]:
            print(f"removed {r['containerID']} {r['ifname']} from {r['network']}")
        if not report["removed"] and not report["errors"]:
            print(f"nothing to collect ({len(networks)} network(s) checked)")
        for e in report["errors"]:
            warn(e)
    return 1 if report["errors"] else 0


def cmd_connect(args) -> int:
    """`pynet network connect NET CONTAINER` = `pynet attach CONTAINER --net NET`."""
    args.ref, args.net = args.container, args.network
    for key in ("ifname", "publish", "mac", "name"):
        setattr(args, key, getattr(args, key, None))
    args.ip = [args.ip] if getattr(args, "ip", None) else None
    return cmd_attach(args)


def cmd_disconnect(args) -> int:
    """`pynet network disconnect NET CONTAINER` = `pynet detach CONTAINER --net NET`."""
    args.ref, args.net, args.ifname = args.container, args.network, None
    return cmd_detach(args)


def register_network_commands(net_sub, common) -> None:
    """`connect` and `disconnect` under `pynet net` / `pynet network`, as Docker's."""
    p = net_sub.add_parser("connect", parents=[common], help="attach a container to a network")
    p.add_argument("network")
    p.add_argument("container", metavar="CONTAINER", help="name, ID or unique ID prefix, or a PID")
    p.add_argument("--ip", help="requested address")
    p.add_argument("--alias", action="append", help="another DNS name on the network")
    p.add_argument("--force", action="store_true", help="a second interface on a network it is on")
    p.set_defaults(func=cmd_connect)
    p = net_sub.add_parser("disconnect", parents=[common], help="detach a container from a network")
    p.add_argument("network")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_disconnect)


def register(sub) -> None:
    common = location_options()

    p = sub.add_parser("attach", parents=[common], help="add an interface to a running process's netns")
    p.add_argument("ref", metavar="NAME|ID|PID", help="a `pynet run` container, an attached process, or a PID")
    p.add_argument("--name", help="what to call a process attached by PID (default: <command>-<pid>)")
    p.add_argument("--force", action="store_true", help="a second interface on a network the process is on")
    p.add_argument("--alias", "--network-alias", action="append", help="another DNS name on the network")
    p.add_argument("--net", help="network name (default: the only one defined)")
    p.add_argument("--ifname", help="interface name in the container (default: first free ethN)")
    p.add_argument("-p", "--publish", action="append", metavar="[IP:][HOST[-END]:]CTR[-END][/PROTO]",
                   help="port mapping (no HOST: a free one)")
    p.add_argument("--ip", action="append", help="requested address (capability ips)")
    p.add_argument("--mac", help="requested MAC (capability mac)")
    p.set_defaults(func=cmd_attach)

    p = sub.add_parser("detach", parents=[common], help="remove interfaces (works after the process died)")
    p.add_argument("ref", metavar="NAME|ID|PID")
    p.add_argument("--net")
    p.add_argument("--ifname")
    p.set_defaults(func=cmd_detach)

    p = sub.add_parser("ls", parents=[common], help="list attachments")
    p.add_argument("--format", help="fields per line: {{.ID}} {{.Name}} {{.PID}} {{.Networks}} {{.IPs}} {{.Ports}}")
    p.add_argument("-a", "--all", action="store_true",
                   help="also the daemon spares' warm attachments (made ahead, no run took them yet)")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("inspect", parents=[common], help="show one container's attachments")
    p.add_argument("ref", metavar="NAME|ID|PID")
    p.add_argument("--check", action="store_true", help="also run CHECK through each attachment's chain")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("status", parents=[common], help="STATUS of each network")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("gc", parents=[common], help="remove attachments of processes that are gone")
    p.set_defaults(func=cmd_gc)
