"""`pynet ps`, `logs`, `stop`, `kill`, `rm`, `exec`, `stats` and `container inspect/gc/ls`: the commands on
containers that exist (their records in the state dir, see state.py), whoever started them.

Exit codes follow Docker: the command's own status for exec, 125 when pynet itself failed, 1 for a
container that cannot be found.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from . import cgroups, container, state
from .container import ContainerError


def _err(msg: str) -> None:
    print(f"pynet: {msg}", file=sys.stderr)


def _find(ref: str):
    try:
        return state.find(ref)
    except state.LookupFailed as exc:
        msg = str(exc)
        if msg.startswith("no such container") and len(ref) < 3 and \
                any(r.id.startswith(ref) for r in state.all_records()):
            msg += " (an ID prefix needs at least 3 characters)"
        elif msg.startswith("no such container"):
            msg += " (a name, an ID or unique ID prefix; `pynet ps -a` lists them)"
        raise ContainerError(msg, 1) from None


def _guard(fn):
    def wrapped(args):
        try:
            return fn(args) or 0
        except ContainerError as exc:
            _err(str(exc))
            return exc.exit_code
    return wrapped


def _age(ts) -> str:
    if not ts:
        return "-"
    secs = int(time.time() - ts)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= n:
            return f"{secs // n}{unit} ago"
    return f"{secs}s ago"


def _attachments(rec) -> list:
    """The cache entries of every network the container is on (its own and those `pynet network connect`
    added), [] when it has none."""
    net = rec.get("network") or {}
    if not net.get("attachment_id"):
        return []
    from pynet.runner import locations

    try:
        return locations.runner(net.get("runner") or {}).cache.entries(container_id=net["attachment_id"])
    except Exception:  # noqa: BLE001 - an unreadable cache: the record's own network below
        return []


def _port_text(m: dict) -> str:
    ip = m.get("hostIP") or "0.0.0.0"
    return f"{ip}:{m.get('hostPort')}->{m.get('containerPort')}/{m.get('protocol', 'tcp')}"


def _row(rec) -> dict:
    st = rec.status()
    status = f"exited ({rec.get('exit_code')})" if st == "exited" else st
    if rec.get("restart_count"):
        status += f", restarted {rec['restart_count']}x"
    net = rec.get("network") or {}
    entries = _attachments(rec) if st == "running" else []
    if entries:
        networks = sorted({e.network for e in entries})
        ips = [ip["address"].split("/")[0] for e in entries for ip in (e.result or {}).get("ips") or []]
        mappings = [m for e in entries for m in e.capability_args.get("portMappings") or []]
    else:
        networks = [net.get("network") or net.get("mode")] if (net.get("network") or net.get("mode")) else []
        ips = [ip["address"].split("/")[0] for ip in (net.get("result") or {}).get("ips") or []] \
            if st == "running" else []
        mappings = list(net.get("publish") or [])
    return {"id": rec.id, "name": rec.get("name"), "image": rec.get("image"),
            "command": " ".join(rec.get("command") or []), "created": rec.get("created"), "status": status,
            "pid": rec.get("pid") if st == "running" else None,
            "network": networks[0] if networks else None, "networks": networks, "ips": ips,
            "ports": [_port_text(m) for m in mappings],
            "restart_policy": (rec.get("restart_policy") or {}).get("name", "no"),
            "restart_count": rec.get("restart_count", 0)}


def _format_row(row: dict) -> dict:
    """A ps row under Docker's --format field names."""
    return {"ID": row["id"][:12], "FullID": row["id"], "Name": row["name"], "Names": row["name"],
            "Image": row["image"], "Command": row["command"], "CreatedAt": _age(row["created"]),
            "Status": row["status"], "PID": row["pid"] or "", "Networks": row["networks"], "IPs": row["ips"],
            "Ports": row["ports"], "RestartPolicy": row["restart_policy"], "RestartCount": row["restart_count"]}


@_guard
def cmd_ps(args):
    import json

    rows = [_row(r) for r in state.all_records() if args.all or r.status() in ("running", "restarting")]
    if args.quiet:
        for row in rows:
            print(row["id"][:12])
    elif args.json:
        print(json.dumps(rows, indent=2))
    elif getattr(args, "format", None):
        from pynet.cli_base import CommandError, print_format

        try:
            print_format(args.format, [_format_row(r) for r in rows])
        except CommandError as exc:
            raise ContainerError(str(exc), 1) from None
    else:
        from pynet.cli_base import table

        table(["CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "NETWORKS", "IPS", "PORTS"],
              [[r["id"][:12], r["name"], str(r["image"])[:16], r["command"][:24], _age(r["created"]), r["status"],
                ",".join(r["networks"]), ",".join(r["ips"]), ", ".join(r["ports"])] for r in rows])


@_guard
def cmd_port(args):
    """`pynet port CONTAINER`: its published ports, Docker's `80/tcp -> 0.0.0.0:32768` lines."""
    import json

    rec = _find(args.container)
    entries = _attachments(rec)
    mappings = [m for e in entries for m in e.capability_args.get("portMappings") or []] if entries else \
        list((rec.get("network") or {}).get("publish") or [])
    if args.json:
        print(json.dumps([{"containerPort": m.get("containerPort"), "protocol": m.get("protocol", "tcp"),
                           "hostIP": m.get("hostIP") or "0.0.0.0", "hostPort": m.get("hostPort")} for m in mappings],
                         indent=2))
        return
    for m in mappings:
        print(f"{m.get('containerPort')}/{m.get('protocol', 'tcp')} -> {m.get('hostIP') or '0.0.0.0'}:{m.get('hostPort')}")


@_guard
def cmd_logs(args):
    rec = _find(args.container)
    path = rec.get("log")
    if getattr(args, "json", False):
        import json

        text = ""
        if path:
            with open(path, "rb") as fh:
                text = fh.read().decode(errors="replace")
        print(json.dumps([{"id": rec.id, "name": rec.get("name"), "log": text}], indent=2))
        return 0
    if not path:
        raise ContainerError(f"container {rec.id[:12]} was not started with -d: its output went to the terminal", 1)
    try:
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(65536)
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    continue
                if not (args.follow and rec.running()):
                    break
                sys.stdout.buffer.flush()
                time.sleep(0.1)
        sys.stdout.buffer.flush()
    except KeyboardInterrupt:   # Ctrl-C ends a follow: the normal way out
        return 130
    except BrokenPipeError:     # `pynet logs ... | head`
        return 0


@_guard
def cmd_stop(args):
    done = []
    for ref in args.containers:
        rec = _find(ref)
        container.stop(rec, args.time)
        done.append(rec)
        if not args.json:
            print(ref)
    _print_done(args, done, "stopped")


def _print_done(args, recs, what: str) -> None:
    """--json of stop, kill, rm: a list of {id, name, <what>: true}."""
    if getattr(args, "json", False):
        import json

        print(json.dumps([{"id": r.id, "name": r.get("name"), what: True} for r in recs], indent=2))


def _signal(name: str) -> int:
    """A signal by number or name (KILL, SIGKILL, kill); ContainerError naming anything else."""
    text = name.upper()
    if text.isdigit():
        number = int(text)
    else:
        number = getattr(signal, text if text.startswith("SIG") else f"SIG{text}", None)
        if not isinstance(number, signal.Signals):
            number = -1   # SIG_DFL, SIG_IGN, SIG_BLOCK...: attributes, not signals
    if number not in signal.valid_signals() or number == 0:
        raise ContainerError(f"invalid signal {name!r}: a name like KILL or TERM, or a number from 1 to "
                             f"{signal.SIGRTMAX}", 1)
    return int(number)


class _Forward:
    """While active: the signals a terminal sends (SIGINT, SIGTERM, SIGHUP, SIGQUIT) go to the commands
    `pynet exec` started (this process's grandchildren: the forked joiner's children) instead of
    interrupting pynet; ``received`` is the last one."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

    def __init__(self):
        self.received = None
        self.saved = {}
        self.owner = os.getpid()

    def __enter__(self):
        for sig in self.SIGNALS:
            self.saved[sig] = signal.signal(sig, self._forward)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

    def _forward(self, signum, _frame):
        self.received = signum
        if os.getpid() != self.owner:
            return   # the forked joiner inherited this handler: it only must not be interrupted
        for child in _children(self.owner):
            for pid in _children(child):
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    return out


@_guard
def cmd_kill(args):
    sig = _signal(args.signal)
    done = []
    for ref in args.containers:
        rec = _find(ref)
        if rec.status() != "running":
            raise ContainerError(f"container {ref} is not running ({rec.status()})", 1)
        try:
            container.signal_container(rec, sig)
        except ContainerError as exc:
            raise ContainerError(str(exc), 1) from None
        except OSError as exc:
            raise ContainerError(f"cannot send signal {args.signal!r} to {ref}: {exc.strerror}", 1) from None
        done.append(rec)
        if not args.json:
            print(ref)
    _print_done(args, done, "signalled")


@_guard
def cmd_rm(args):
    failed, done = 0, []
    for ref in args.containers:
        try:
            rec = _find(ref)
            container.remove(rec, force=args.force)
            done.append(rec)
            if not args.json:
                print(ref)
        except ContainerError as exc:
            _err(str(exc))
            failed = 1
    _print_done(args, done, "removed")
    return failed


@_guard
def cmd_exec(args):
    if not args.command:
        raise ContainerError("`pynet exec` needs a command", 1)
    rec = _find(args.container)
    from .options import OptionsError, check_env

    try:
        for item in args.env:
            check_env(item)
    except OptionsError as exc:
        raise ContainerError(str(exc), exc.exit_code) from None
    with _Forward() as forward:
        code = container.exec_in(rec, args.command, args.env, args.workdir, args.tty, args.interactive)
    if forward.received is not None and code == 125:
        code = 128 + forward.received   # the joiner was interrupted before its command ran
    return code


@_guard
def cmd_stats(args):
    import json

    recs = [_find(r) for r in args.containers] if args.containers else \
        [r for r in state.all_records() if r.status() == "running"]
    rows = []
    for rec in recs:
        st = cgroups.from_paths(rec.get("cgroups") or {}).stats() if rec.running() else {}
        rows.append({"id": rec.id, "name": rec.get("name"), **st})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    fmt = "{:<12}  {:<20}  {:>12}  {:>12}  {:>10}  {:>8}"
    print(fmt.format("CONTAINER ID", "NAME", "MEM USAGE", "MEM LIMIT", "CPU (s)", "PIDS"))
    for r in rows:
        mib = lambda v: "-" if v is None else f"{v / 1048576:.1f}MiB"  # noqa: E731
        cpu = "-" if r.get("cpu_ns") is None else f"{r['cpu_ns'] / 1e9:.2f}"
        print(fmt.format(r["id"][:12], str(r["name"])[:20], mib(r.get("memory_bytes")), mib(r.get("memory_limit")),
                         cpu, r.get("pids") if r.get("pids") is not None else "-"))


@_guard
def cmd_inspect(args):
    import json

    recs = [_find(ref) for ref in args.containers]
    print(json.dumps([container.inspect(r) for r in recs], indent=2, default=str))


@_guard
def cmd_gc(args):
    for cid in container.gc():
        print(cid)


def _ps_parser(p) -> None:
    """`pynet ps` and its twin `pynet container ls`."""
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--format", help="fields per line: {{.ID}} {{.Name}} {{.Image}} {{.Status}} {{.Networks}} "
                                    "{{.IPs}} {{.Ports}} ...")
    p.set_defaults(func=cmd_ps)


def register(sub) -> None:
    import argparse

    _ps_parser(sub.add_parser("ps", help="list containers"))

    p = sub.add_parser("port", help="a container's published ports")
    p.add_argument("--json", action="store_true")
    p.add_argument("container", metavar="CONTAINER", help="name, ID or unique ID prefix")
    p.set_defaults(func=cmd_port)

    p = sub.add_parser("logs", help="output of a detached container")
    p.add_argument("--json", action="store_true")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("container")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("stop", help="SIGTERM, then SIGKILL after a timeout")
    p.add_argument("-t", "--time", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("kill", help="send a signal to a container's PID 1")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("--json", action="store_true")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("rm", help="remove containers (-f: kill first, also cleans up after a crashed launcher)")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("exec", help="run a command inside a running container (joins all its namespaces)")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("-i", "--interactive", action="store_true", help="with -t: relay stdin, the terminal raw")
    p.add_argument("-t", "--tty", action="store_true", help="run the command on a pseudo-terminal")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("stats", help="cgroup usage of running containers")
    p.add_argument("--json", action="store_true")
    p.add_argument("containers", nargs="*")
    p.set_defaults(func=cmd_stats)

    ctr = sub.add_parser("container", help="container records: inspect, gc, ls")
    csub = ctr.add_subparsers(dest="container_command", metavar="COMMAND")
    p = csub.add_parser("inspect", help="namespaces, cgroups, mounts, network of containers (JSON)")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_inspect)
    p = csub.add_parser("gc", help="clean up containers whose launcher died, and exited --rm leftovers")
    p.set_defaults(func=cmd_gc)
    _ps_parser(csub.add_parser("ls", help="same as `pynet ps`"))
    ctr.set_defaults(func=lambda a: (ctr.print_help(), 2)[1])
