"""``pynet topology up|check|down|show|validate FILE.yaml``: thin wrappers over the engine in this package."""

from __future__ import annotations

import json
import os
import sys

from pynet import topology
from pynet.cli import CommandError

from .state import netns_exists, valid_name


def register(subparsers) -> None:
    top = subparsers.add_parser("topology", help="network topologies from YAML: up, check, down, show")
    sub = top.add_subparsers(dest="topology_command", metavar="ACTION")
    top.set_defaults(func=lambda args: (top.print_help(), 2)[1])

    def common(p, state=True):
        p.add_argument("file", metavar="FILE.yaml")
        if state:
            p.add_argument("--state-dir", help="where state files live (default $PYNET_TOPOLOGY_STATE_DIR "
                                               "or /run/pynet/topologies)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("up", help="create the topology's namespaces, links, CNI attachments and routes")
    common(p)
    p.add_argument("--cni-path", help="colon-separated plugin dirs (default: pynet's plugins)")
    p.add_argument("--cni-runtime", choices=("runner", "fixtures"),
                   help="run CNI chains through pynet.runner (default) or netns_fixtures.runner")
    p.add_argument("--check", action="store_true", help="run the checks after up (exit 1 on mismatch)")
    p.add_argument("--keep-on-failure", action="store_true", help="leave a failed up in place to inspect")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("check", help="run the checks: who reaches whom, expected vs actual")
    common(p)
    p.add_argument("--only", type=int, action="append", metavar="N", help="run check number N (1-based)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("down", help="remove everything of the topology (also after a crashed up)")
    p.add_argument("file", metavar="FILE.yaml|NAME")
    p.add_argument("--state-dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-del", action="store_true", help="skip CNI DEL, just remove the namespaces")
    p.add_argument("--all-runs", action="store_true",
                   help="without a state file: remove every pynet.NAME.* namespace (all runs, all state dirs)")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("show", help="draw the topology: text, DOT, SVG or PNG")
    common(p)
    p.add_argument("--format", "-f", choices=("text", "dot", "svg", "png"), default=None,
                   help="default: text on a terminal; taken from -o's extension otherwise")
    p.add_argument("--output", "-o", help="write here instead of stdout")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("ls", help="topologies with a state file: name, run, phase, live namespaces")
    p.add_argument("--state-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("validate", help="check the file without creating anything")
    common(p, state=False)
    p.set_defaults(func=cmd_validate)


def _load(path: str):
    try:
        return topology.load(path)
    except topology.TopologyError as exc:
        raise CommandError(str(exc)) from None


def _deployment(topo, state_dir):
    try:
        return topology.attach(topo, state_dir)
    except topology.DeployError as exc:
        raise CommandError(str(exc)) from None


def _print_report(report, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        sys.stdout.write(report.matrix())
    return 0 if report.ok else 1


def cmd_validate(args) -> int:
    topo = _load(args.file)
    if args.json:
        print(json.dumps({"name": topo.name, "valid": True, "nodes": len(topo.nodes), "links": len(topo.links),
                          "checks": len(topo.checks)}))
    else:
        counts = ", ".join(_count(n, what) for n, what in ((len(topo.nodes), "node"), (len(topo.links), "link"),
                                                            (len(topo.checks), "check")))
        print(f"{args.file}: topology {topo.name} is valid ({counts})")
    return 0


def cmd_up(args) -> int:
    topo = _load(args.file)
    cni_path = args.cni_path.split(":") if args.cni_path else None
    try:
        dep = topology.up(topo, state_dir=args.state_dir, cni_path=cni_path, keep_on_failure=args.keep_on_failure,
                          cni_runtime=args.cni_runtime)
    except topology.DeployError as exc:
        raise CommandError(str(exc)) from None
    try:
        if args.json:
            out = {"name": dep.name, "run": dep.run, "state": dep.store.path(dep.name),
                   "namespaces": dep.state["namespaces"], "addresses": dep.state["addresses"]}
            if args.check:
                report = dep.check()
                out["checks"] = report.to_dict()
                print(json.dumps(out, indent=1))
                return 0 if report.ok else 1
            print(json.dumps(out, indent=1))
            return 0
        sys.stdout.write(topology.render.text(topo, dep))
        if args.check:
            return _print_report(dep.check(), False)
        return 0
    finally:
        dep.close()


def cmd_check(args) -> int:
    topo = _load(args.file)
    only = _check_indexes(topo, args.only)
    dep = _deployment(topo, args.state_dir)
    missing = dep.missing_nodes()
    if missing:   # one clear message rather than ENOENT from every check that touches them
        raise CommandError(str(topology.NamespaceGone(dep, missing)))
    try:
        return _print_report(dep.check(only), args.json)
    finally:
        dep.close()


def _check_indexes(topo, numbers: list[int] | None) -> list[int] | None:
    """--only's numbers are the matrix's (1-based); one the file lacks is an error, not an empty run."""
    if not numbers:
        return None
    unknown = [n for n in numbers if not 1 <= n <= len(topo.checks)]
    if unknown:
        raise CommandError(f"unknown check {', '.join(map(str, unknown))}: topology {topo.name} has "
                           + (f"checks 1 to {len(topo.checks)}" if topo.checks else "no checks"))
    return [n - 1 for n in numbers]


def _name_of(arg: str) -> str:
    """down takes the YAML (only its name is read, so a broken file can still be taken down) or a name."""
    if not os.path.exists(arg):
        return arg
    import yaml

    try:
        with open(arg) as f:
            doc = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CommandError(f"{arg}: cannot read the topology name: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise CommandError(f"{arg}: no 'name' in the file")
    return doc["name"]


def _checked_name(arg: str) -> str:
    name = _name_of(arg)
    if not valid_name(name):
        raise CommandError(f"{arg}: neither a topology file nor a topology name ({name!r})")
    return name


def cmd_down(args) -> int:
    name = _checked_name(args.file)
    report = topology.down(name, args.state_dir, cni_del=not args.no_del, all_runs=args.all_runs)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for warning in report["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        if report["orphans"]:
            print(f"topology {name}: no state here, but {len(report['orphans'])} namespaces of other runs exist "
                  f"({', '.join(report['orphans'][:3])}...); --all-runs removes them", file=sys.stderr)
        ended = f", ended {_count(len(report['services']), 'service')}" if report["services"] else ""
        print(f"topology {name}: removed {len(report['namespaces'])} namespaces{ended}")
    return 0


def cmd_show(args) -> int:
    topo = _load(args.file)
    dep = None
    try:
        dep = topology.attach(topo, args.state_dir)
    except topology.DeployError:
        pass   # not up: draw what the file declares
    fmt = args.format or (os.path.splitext(args.output)[1].lstrip(".") if args.output else "text")
    if fmt not in ("text", "dot", "svg", "png"):
        raise CommandError(f"unknown format {fmt!r}; use text, dot, svg or png")
    if args.json and fmt == "text":
        data = {"name": topo.name, "up": dep is not None, "run": dep.run if dep else None,
                "nodes": {n.name: {"kind": n.kind, "host": n.host or None,
                                   "namespace": dep.state["namespaces"][n.name] if dep else None,
                                   "addresses": [list(a) for a in dep.addresses(n.name)] if dep else []}
                          for n in topo.nodes.values()},
                "links": [{"kind": l.kind, "endpoints": [str(l.a), str(l.b)],
                           "addresses": [l.a.address or None, l.b.address or None]} for l in topo.links],
                "services": {s.name: {"node": s.node, "command": s.command,
                                      "ready": s.ready.describe() if s.ready else None,
                                      **_service_state(dep, s.name)} for s in topo.services.values()}}
        print(json.dumps(data, indent=1))
        return 0
    if fmt == "text":
        data = topology.render.text(topo, dep).encode()
    else:
        source = topology.render.dot(topo, dep)
        if fmt == "dot":
            data = source.encode()
        else:
            try:
                data = topology.render.render(source, fmt)
            except RuntimeError as exc:
                raise CommandError(str(exc)) from None
    if dep is not None:
        dep.close()
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data)
        print(f"wrote {args.output} ({fmt}, {len(data)} bytes)")
    elif fmt == "png":
        raise CommandError("PNG goes to a file: add -o FILE.png")
    else:
        sys.stdout.buffer.write(data)
    return 0


def _service_state(dep, name: str) -> dict:
    record = topology.services.record(dep.state, name) if dep else None
    if record is None:
        return {"pid": None, "running": False}
    return {"pid": record["pid"], "running": topology.services.running(record), "log": record["log"]}


def cmd_ls(args) -> int:
    store = topology.StateStore(args.state_dir)
    rows = []
    for entry in sorted(os.listdir(store.directory)) if os.path.isdir(store.directory) else []:
        if not entry.endswith(".json") or not valid_name(entry[:-5]):
            continue
        state = store.read(entry[:-5]) or {}
        namespaces = list((state.get("namespaces") or {}).values())
        alive = sum(netns_exists(n) for n in namespaces)
        services = state.get("services") or []
        rows.append({"name": entry[:-5], "run": state.get("run"), "phase": state.get("phase", "corrupt"),
                     "nodes": len(namespaces), "alive": alive, "services": len(services),
                     "services_running": sum(map(topology.services.running, services)),
                     "file": state.get("file", "")})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"no topologies in {store.directory}")
        return 0
    print(f"{'NAME':<24} {'RUN':<7} {'PHASE':<9} {'NAMESPACES':<11} {'SERVICES':<9} FILE")
    for r in rows:
        print(f"{r['name']:<24} {r['run'] or '-':<7} {r['phase']:<9} {str(r['alive']) + '/' + str(r['nodes']):<11} "
              f"{str(r['services_running']) + '/' + str(r['services']):<9} {r['file']}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
