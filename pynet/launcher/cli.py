"""`pynet run`, `ps`, `logs`, `stop`, `kill`, `rm`, `exec`, `stats`, `image ...`, `container ...`.

Exit codes follow Docker: the container's own status for run/exec, 125 when pynet itself failed, 126 when
the command cannot be executed, 127 when it is not found.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from . import cgroups, container, images, network, state
from .container import ContainerError, RunOptions

# argparse (and building its parsers) and json cost ~5 ms of a `pynet run`: imported where used.


def _err(msg: str) -> None:
    print(f"pynet: {msg}", file=sys.stderr)


def _find(ref: str):
    try:
        return state.find(ref)
    except state.LookupFailed as exc:
        raise ContainerError(str(exc), 1) from None


# -- run ---------------------------------------------------------------------------------------------
def _options(args) -> RunOptions:
    rest = list(args.args)
    if args.rootfs:
        image, command = None, rest
    else:
        if not rest:
            raise ContainerError("`pynet run` needs an IMAGE or --rootfs DIR")
        image, command = rest[0], rest[1:]
    sec = {"seccomp": "default", "no_new_privs": True}
    for opt in args.security_opt:
        key, _, value = opt.partition("=")
        if key == "seccomp" and value in ("unconfined", "default"):
            sec["seccomp"] = value
        elif key in ("no-new-privileges", "no_new_privs"):
            sec["no_new_privs"] = value.lower() not in ("false", "0", "no")
        elif key in ("apparmor", "label"):
            continue   # not active on this kernel: accepted and ignored, as Docker does without the LSM
        else:
            raise ContainerError(f"unsupported --security-opt {opt!r}")
    try:
        limits = cgroups.Limits(memory=cgroups.parse_size(args.memory) if args.memory else None,
                                cpus=args.cpus, pids=args.pids_limit, cpuset_cpus=args.cpuset_cpus)
    except ValueError:
        raise ContainerError(f"invalid --memory {args.memory!r}") from None
    if args.net in ("none", "host") and (args.publish or args.ip):
        raise ContainerError(f"-p/--ip make no sense with --net {args.net}")
    try:
        net = network.NetOptions.from_flags(mode=args.net, publish=args.publish, ip=args.ip,
                                            config_dir=args.config_dir, cache_dir=args.cache_dir,
                                            cni_path=args.cni_path, netns_dir=args.netns_dir)
    except ValueError as exc:   # ports.PortSpecError, capabilities.CapabilityError
        raise ContainerError(str(exc)) from None
    volumes = []
    for v in args.volume:
        parts = v.split(":")
        if len(parts) < 2 or not parts[0].startswith("/") or not parts[1].startswith("/"):
            raise ContainerError(f"invalid -v {v!r}: expected /HOST:/CONTAINER[:ro]")
        volumes.append((parts[0], parts[1], len(parts) > 2 and parts[2] == "ro"))
    return RunOptions(
        image=image, rootfs_dir=args.rootfs, command=command, name=args.name, hostname=args.hostname,
        detach=args.detach, rm=args.rm, init=args.init, env=args.env, workdir=args.workdir,
        userns=args.userns, userns_base=args.userns_base, userns_size=args.userns_size, limits=limits,
        cap_add=args.cap_add, cap_drop=args.cap_drop, seccomp=sec["seccomp"], no_new_privs=sec["no_new_privs"],
        read_only=args.read_only, net=net, dns=args.dns, volumes=volumes)


def _forward_signals(pid: int) -> None:
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)


def run_foreground(opts: RunOptions, wait=None, reserved=None, deferred=None) -> int:
    """``wait(rec, pid)`` replaces the plain wait (the daemon's launcher also listens to its client);
    ``reserved``: the daemon's spare (container.Reserved); ``deferred``: see container.cleanup."""
    rec, spec = container.create(opts, reserved)
    pid = container.start(rec, spec, opts.dns or None, reserved)
    _forward_signals(pid)
    code = (wait or container.wait)(rec, pid)
    try:
        container.finish(rec, code, deferred)
    except ContainerError as exc:
        _err(f"cleanup: {exc}")
    return code


def run_detached(opts: RunOptions) -> int:
    """Forks a monitor (own session, stdio to the log) that runs the container to its end; the command
    returns the id once the container's command has been executed."""
    import json

    r, w = os.pipe()
    monitor = os.fork()
    if monitor != 0:
        os.close(w)
        with os.fdopen(r, "rb") as fh:
            line = fh.readline()
        msg = json.loads(line) if line else {"error": "detached launcher died during start", "code": 125}
        if "error" in msg:
            os.waitpid(monitor, 0)
            raise ContainerError(msg["error"], msg.get("code", 125))
        print(msg["id"])
        return 0
    os.close(r)
    code = 0
    try:
        os.setsid()
        rec, spec = container.create(opts)
        log = os.open(rec.file("container.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        rec.update(log=rec.file("container.log"))
        pid = container.start(rec, spec, opts.dns or None)
        os.write(w, json.dumps({"id": rec.id}).encode() + b"\n")
        os.close(w)
        w = -1
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        status = container.wait(rec, pid)
        try:
            container.finish(rec, status)
        except ContainerError as exc:
            _err(f"cleanup: {exc}")
    except ContainerError as exc:
        if w >= 0:
            os.write(w, json.dumps({"error": str(exc), "code": exc.exit_code}).encode() + b"\n")
        code = exc.exit_code
    except BaseException as exc:  # noqa: BLE001
        if w >= 0:
            os.write(w, json.dumps({"error": f"{type(exc).__name__}: {exc}", "code": 125}).encode() + b"\n")
        code = 125
    finally:
        os._exit(code)


def cmd_run(args, wait=None, reserved=None, deferred=None) -> int:
    try:
        opts = _options(args)
        if reserved is not None and (opts.detach or opts.limits.any()):
            raise ContainerError("internal: the daemon's spare launcher takes only plain runs")
        return run_detached(opts) if opts.detach else run_foreground(opts, wait, reserved, deferred)
    except ContainerError as exc:
        _err(str(exc))
        return exc.exit_code


# -- other container commands --------------------------------------------------------------------------
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


def _row(rec) -> dict:
    st = rec.status()
    status = f"exited ({rec.get('exit_code')})" if st == "exited" else st
    return {"id": rec.id, "name": rec.get("name"), "image": rec.get("image"),
            "command": " ".join(rec.get("command") or []), "created": rec.get("created"), "status": status,
            "pid": rec.get("pid") if st == "running" else None,
            "network": (rec.get("network") or {}).get("network") or (rec.get("network") or {}).get("mode")}


@_guard
def cmd_ps(args):
    import json

    rows = [_row(r) for r in state.all_records() if args.all or r.status() == "running"]
    if args.quiet:
        for row in rows:
            print(row["id"][:12])
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        fmt = "{:<12}  {:<20}  {:<16}  {:<24}  {:<12}  {:<14}  {}"
        print(fmt.format("CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "PID"))
        for row in rows:
            print(fmt.format(row["id"][:12], row["name"][:20], str(row["image"])[:16], row["command"][:24],
                             _age(row["created"]), row["status"], row["pid"] or ""))


@_guard
def cmd_logs(args):
    rec = _find(args.container)
    path = rec.get("log")
    if not path:
        raise ContainerError(f"container {rec.id[:12]} was not started with -d: its output went to the terminal", 1)
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


@_guard
def cmd_stop(args):
    for ref in args.containers:
        container.stop(_find(ref), args.time)
        print(ref)


def _signal(name: str) -> int:
    name = name.upper()
    if name.isdigit():
        return int(name)
    try:
        return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))
    except AttributeError:
        raise ContainerError(f"unknown signal {name!r}", 1) from None


@_guard
def cmd_kill(args):
    sig = _signal(args.signal)
    for ref in args.containers:
        container.signal_container(_find(ref), sig)
        print(ref)


@_guard
def cmd_rm(args):
    failed = 0
    for ref in args.containers:
        try:
            container.remove(_find(ref), force=args.force)
            print(ref)
        except ContainerError as exc:
            _err(str(exc))
            failed = 1
    return failed


@_guard
def cmd_exec(args):
    if not args.command:
        raise ContainerError("`pynet exec` needs a command", 1)
    rec = _find(args.container)
    return container.exec_in(rec, args.command, args.env, args.workdir)


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

    print(json.dumps([container.inspect(_find(ref)) for ref in args.containers], indent=2, default=str))


@_guard
def cmd_gc(args):
    for cid in container.gc():
        print(cid)


# -- images -----------------------------------------------------------------------------------------
def _image_guard(fn):
    def wrapped(args):
        try:
            return fn(args) or 0
        except images.ImageError as exc:
            _err(str(exc))
            return 1
    return wrapped


@_image_guard
def cmd_image_import(args):
    image = images.import_image(args.source, args.name)
    print(f"{image['name']} ({len(image['layers'])} layer{'s' if len(image['layers']) != 1 else ''})")


@_image_guard
def cmd_image_ls(args):
    import json

    found = images.list_images()
    if args.json:
        print(json.dumps(found, indent=2))
        return
    fmt = "{:<30}  {:>6}  {:>10}  {}"
    print(fmt.format("IMAGE", "LAYERS", "SIZE", "SOURCE"))
    for img in found:
        print(fmt.format(img["name"], len(img["layers"]), f"{images.size_of(img) / 1048576:.1f}MiB", img.get("source", "")))


@_image_guard
def cmd_image_rm(args):
    in_use = set()
    for rec in state.all_records():
        in_use.update(rec.get("layers") or [])
    for name in args.names:
        images.remove(name, in_use)
        print(images.normalize(name))


@_image_guard
def cmd_image_pull_default(args):
    image = images.build_busybox()
    print(image["name"])


# -- registration --------------------------------------------------------------------------------------
# `pynet run`'s options, one table for both parsers: argparse (help, errors, every other command) and
# parse_run_fast, which covers the plain forms of these options on the start-up path.
_RUN_OPTIONS = (
    (("--rootfs",), dict(metavar="DIR", help="use DIR as the (read-only lower) root filesystem")),
    (("--name",), dict()),
    (("-h", "--hostname"), dict(dest="hostname", default=None, help="container hostname (default: short id)")),
    (("-d", "--detach"), dict(action="store_true", help="run in the background, output to `pynet logs`")),
    (("--rm",), dict(action="store_true", help="remove the container and its writable layer on exit")),
    (("--init",), dict(action="store_true", help="PID 1 is a tiny init that reaps zombies")),
    (("-e", "--env"), dict(action="append", default=[], metavar="KEY[=VALUE]")),
    (("-w", "--workdir"), dict()),
    (("-v", "--volume"), dict(action="append", default=[], metavar="/HOST:/CTR[:ro]")),
    (("--userns",), dict(action="store_true", help="map container root to an unprivileged host uid range")),
    (("--userns-base",), dict(type=int, default=container.DEFAULT_USERNS[0], metavar="UID")),
    (("--userns-size",), dict(type=int, default=container.DEFAULT_USERNS[1], metavar="N")),
    (("-m", "--memory"), dict(help="memory limit (e.g. 64m)")),
    (("--cpus",), dict(type=float)),
    (("--pids-limit",), dict(type=int)),
    (("--cpuset-cpus",), dict()),
    (("--cap-add",), dict(action="append", default=[])),
    (("--cap-drop",), dict(action="append", default=[])),
    (("--security-opt",), dict(action="append", default=[], help="seccomp=unconfined, no-new-privileges=false")),
    (("--read-only",), dict(action="store_true", help="mount the root filesystem read-only")),
    (("--net", "--network"), dict(dest="net", default="default", help="none, host, or a CNI network name "
                                  "(default: 'pynet', a bridge network created on first use)")),
    (("-p", "--publish"), dict(action="append", default=[], metavar="[IP:]HOST:CTR[/proto]")),
    (("--ip",), dict(help="request this address from the network's IPAM")),
    (("--dns",), dict(action="append", default=[], help="nameserver for /etc/resolv.conf")),
    (("--config-dir",), dict(default=None, help="network definitions")),
    (("--cache-dir",), dict(default=None, help="libcni cache dir")),
    (("--cni-path",), dict(default=None, help="plugin dirs")),
    (("--netns-dir",), dict(default=None, help="netns pin dir")),
)


def _add_run(sub) -> None:
    import argparse

    p = sub.add_parser("run", help="run a command in a new container", add_help=False,
                       usage="pynet run [options] IMAGE|--rootfs DIR [CMD ...]")
    for flags, kwargs in _RUN_OPTIONS:
        p.add_argument(*flags, **kwargs)
    p.add_argument("--help", action="help", help="show this help")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="IMAGE [CMD ...]")
    p.set_defaults(func=cmd_run)


class _RunArgs:
    """The namespace parse_run_fast fills: the attributes argparse would set for `run`."""


def parse_run_fast(argv: list) -> _RunArgs | None:
    """`pynet run` options as argparse parses them, for the forms that need no judgement: exact flags,
    ``--flag value`` / ``--flag=value`` / ``-f value``, then IMAGE and everything after it. Anything else
    (--help, abbreviations, bundled short flags, a value that looks like an option, a bad number, a
    missing value) returns None, and argparse does the parsing, the help and the error messages."""
    args, table = _RunArgs(), {}
    for flags, kwargs in _RUN_OPTIONS:
        dest = kwargs.get("dest") or next(f for f in flags if f.startswith("--"))[2:].replace("-", "_")
        default = kwargs.get("default")
        setattr(args, dest, list(default) if isinstance(default, list) else
                False if kwargs.get("action") == "store_true" else default)
        for flag in flags:
            table[flag] = (dest, kwargs.get("action"), kwargs.get("type"))
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag, eq, value = argv[i].partition("=")
        if flag not in table or (eq and not flag.startswith("--")):
            return None
        dest, action, kind = table[flag]
        if action == "store_true":
            if eq:
                return None
            setattr(args, dest, True)
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                return None
            value = argv[i + 1]
            i += 1
        i += 1
        if kind is not None:
            try:
                value = kind(value)
            except ValueError:
                return None
        if action == "append":
            getattr(args, dest).append(value)
        else:
            setattr(args, dest, value)
    args.args = list(argv[i:])
    if args.args[:1] == ["--"]:
        return None
    args.command, args.func = "run", cmd_run
    return args


def main_run(argv: list) -> int:
    """`pynet run ARGS` on the start-up path (pynet.cli and ``python -m pynet.launcher`` come here): the
    fast parse, argparse when it declines."""
    args = parse_run_fast(argv)
    if args is None:
        import argparse

        parser = argparse.ArgumentParser(prog="pynet")
        register(parser.add_subparsers(dest="command", metavar="COMMAND"), only="run")
        args = parser.parse_args(["run", *argv])
    return cmd_run(args)


def register(sub, only: str | None = None) -> None:
    """Adds the launcher's commands; ``only`` builds just that one (argparse parsers cost ~2 ms each)."""
    import argparse

    if only == "run":
        _add_run(sub)
        return
    _add_run(sub)

    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("logs", help="output of a detached container")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("container")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("stop", help="SIGTERM, then SIGKILL after a timeout")
    p.add_argument("-t", "--time", type=float, default=10.0)
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("kill", help="send a signal to a container's PID 1")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("rm", help="remove containers (-f: kill first, also cleans up after a crashed launcher)")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("exec", help="run a command inside a running container (joins all its namespaces)")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-w", "--workdir")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("stats", help="cgroup usage of running containers")
    p.add_argument("--json", action="store_true")
    p.add_argument("containers", nargs="*")
    p.set_defaults(func=cmd_stats)

    img = sub.add_parser("image", help="local image store")
    isub = img.add_subparsers(dest="image_command", metavar="COMMAND")
    p = isub.add_parser("import", help="import a rootfs tar/dir or an OCI image layout (dir or tar)")
    p.add_argument("source")
    p.add_argument("name")
    p.set_defaults(func=cmd_image_import)
    p = isub.add_parser("ls", help="list images")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image_ls)
    p = isub.add_parser("rm", help="remove images (and layers nothing else uses)")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_image_rm)
    p = isub.add_parser("build-default", help="(re)build the embedded busybox image from /bin/busybox")
    p.set_defaults(func=cmd_image_pull_default)
    img.set_defaults(func=lambda a: (img.print_help(), 2)[1])

    ctr = sub.add_parser("container", help="container records: inspect, gc, ls")
    csub = ctr.add_subparsers(dest="container_command", metavar="COMMAND")
    p = csub.add_parser("inspect", help="namespaces, cgroups, mounts, network of containers (JSON)")
    p.add_argument("containers", nargs="+")
    p.set_defaults(func=cmd_inspect)
    p = csub.add_parser("gc", help="clean up containers whose launcher died, and exited --rm leftovers")
    p.set_defaults(func=cmd_gc)
    p = csub.add_parser("ls", help="same as `pynet ps`")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ps)
    ctr.set_defaults(func=lambda a: (ctr.print_help(), 2)[1])
