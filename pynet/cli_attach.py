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
        rows.append([container.id, container.pid or "", "yes" if container.alive else "no", d["network"],
                     d["ifname"], ",".join(d["addresses"]), d["mac"], _ports(d["portMappings"])])
    return rows


_HEADERS = ["CONTAINER", "PID", "ALIVE", "NETWORK", "IFNAME", "ADDRESSES", "MAC", "PORTS"]


def cmd_attach(args) -> int:
    atts = attachments_of(args)
    runner = atts.runner
    try:
        conf = runner.network(args.net or _default_network(runner))
        caps = _capability_args(args, conf)
        container, entry = atts.attach(args.pid, conf, ifname=args.ifname, capability_args=caps)
    except CNIError as err:
        fail(err)
    if args.json:
        print_json(entry.result)
    else:
        table(_HEADERS, _attachment_rows(container, [entry]))
    return 0


def _detached_line(d) -> str:
    from .runner.attachments import INTERFACE_REMOVED, INTERFACE_UNKNOWN

    e = d.entry
    if d.interface == INTERFACE_REMOVED:
        return f"detached {e.container_id} {e.ifname} from {e.network}"
    if d.interface == INTERFACE_UNKNOWN:
        return (f"released {e.container_id} {e.ifname} from {e.network} on the host side only: its network "
                f"namespace could not be reached ({d.reason}), so DEL ran without it and {e.ifname} was not "
                "checked (it went with the namespace unless something still holds that namespace)")
    return f"not detached: {d.reason}"


def cmd_detach(args) -> int:
    """Exit 0 when every chosen attachment is gone or released (a namespace that could not be reached is
    said so on its line); 1, naming the interface, when one is still in the container after DEL."""
    from .runner.attachments import INTERFACE_PRESENT, InterfaceStayed

    atts = attachments_of(args)
    try:
        done = atts.detach(args.ref, network=args.net, ifname=args.ifname)
    except InterfaceStayed as err:
        done = err.done
    except CNIError as err:
        fail(err)
    stayed = [d for d in done if d.interface == INTERFACE_PRESENT]
    if args.json:
        out: dict = {"detached": [{"containerID": d.entry.container_id, "network": d.entry.network,
                                   "ifname": d.entry.ifname, "interface": d.interface,
                                   **({"reason": d.reason} if d.reason else {})} for d in done]}
        if stayed:
            out["error"] = "; ".join(d.reason for d in stayed)
        print_json(out)
    else:
        for d in done:
            if d.interface != INTERFACE_PRESENT:
                print(_detached_line(d))
        for d in stayed:
            warn(_detached_line(d) + "; the attachment is kept: remove the interface, then detach again")
    return 1 if stayed else 0


# -- ls / inspect / status / gc ---------------------------------------------------------------------------
def cmd_ls(args) -> int:
    containers = attachments_of(args).containers()
    if args.json:
        described = [c.describe() for c in containers]
        print_json([{**d, "attachments": [{k: v for k, v in a.items() if k != "result"} for a in d["attachments"]]}
                    for d in described])
    else:
        table(_HEADERS, [row for c in containers for row in _attachment_rows(c, c.entries)])
    return 0


def cmd_inspect(args) -> int:
    atts = attachments_of(args)
    try:
        container = atts.resolve(args.ref)
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
    print_json(out)
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
    if args.json:
        print_json({"removed": [{k: v for k, v in r.items() if k != "result"} for r in report["removed"]],
                    "errors": report["errors"]})
    else:
        for r in report["removed"]:
            print(f"removed {r['containerID']} {r['ifname']} from {r['network']}")
        if not report["removed"] and not report["errors"]:
            print(f"nothing to collect ({len(networks)} network(s) checked)")
        for e in report["errors"]:
            warn(e)
    return 1 if report["errors"] else 0


def register(sub) -> None:
    common = location_options()

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
