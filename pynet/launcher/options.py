"""`pynet run`'s options: RunOptions (everything a run is asked to do), the table of its flags, and
argv -> RunOptions. The command line and the daemon's zygote both read a run's argv here and hand the
RunOptions to supervise.run.

    parse(argv) -> RunOptions            the fast parser, argparse for what it declines (help, usage
                                         errors: argparse prints them and raises SystemExit)
    parse_fast(argv) -> RunOptions|None  the fast parser alone (None: only argparse can read it)
    to_run_options(namespace)            argparse's (or the fast parser's) namespace -> RunOptions
    add_parser(subparsers)               `run` for the full `pynet` parser

A value that cannot be used raises OptionsError naming it (exit status 125, as Docker's).

This is on the start-up path of every `pynet run`: no argparse, json or dataclasses unless needed.
"""

from __future__ import annotations

import os

from . import cgroups, network
from .value_objects import Fields

DEFAULT_USERNS = (100000, 65536)   # --userns-base, --userns-size


class OptionsError(Exception):
    """A `pynet run` option value that cannot be used; the message names it."""

    exit_code = 125


class RunOptions(Fields):
    FIELDS = {
        "image": None, "rootfs_dir": None, "command": list, "name": None, "hostname": None,
        "detach": False, "rm": False, "init": False, "env": list, "workdir": None,
        "userns": False, "userns_base": DEFAULT_USERNS[0], "userns_size": DEFAULT_USERNS[1],
        "limits": cgroups.Limits, "cap_add": list, "cap_drop": list,
        "seccomp": "default",      # "default" | "unconfined" | the path of a checked profile file
        "no_new_privs": True, "read_only": False,
        "net": network.NetOptions, "dns": list, "volumes": list,
        "user": None, "group_add": list, "ulimits": list, "devices": list, "tmpfs": list,
        "entrypoint": None,        # None: the image's; "": none; else the one executable (Docker's --entrypoint)
        "add_hosts": list,         # [(name, address)] for /etc/hosts
        "interactive": False,      # stdin attached (without it: /dev/null, as Docker's)
        "tty": False,              # a pty from the container's devpts as its stdio (terminal.py)
        "restart": "no",           # no | on-failure | always | unless-stopped (detached runs)
        "restart_retries": None,   # on-failure:N: at most N restarts (None: no limit)
    }


# One table for both parsers: argparse (help, errors, the full `pynet` parser) and parse_fast, which
# covers the plain forms of these options.
RUN_OPTIONS = (
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
    (("--userns-base",), dict(type=int, default=DEFAULT_USERNS[0], metavar="UID")),
    (("--userns-size",), dict(type=int, default=DEFAULT_USERNS[1], metavar="N")),
    (("-m", "--memory"), dict(help="memory limit (e.g. 64m)")),
    (("--cpus",), dict(type=float)),
    (("--pids-limit",), dict(type=int)),
    (("--cpuset-cpus",), dict()),
    (("--cap-add",), dict(action="append", default=[])),
    (("--cap-drop",), dict(action="append", default=[])),
    (("--security-opt",), dict(action="append", default=[], help="seccomp=unconfined|PROFILE.json, "
                                                                  "no-new-privileges=false")),
    (("--read-only",), dict(action="store_true", help="mount the root filesystem read-only")),
    (("-u", "--user"), dict(default=None, metavar="USER[:GROUP]", help="uid[:gid] or name[:group] of the image "
                                                                      "(default: the image's User, else root)")),
    (("--group-add",), dict(action="append", default=[], metavar="GROUP", help="an extra supplementary group")),
    (("--ulimit",), dict(action="append", default=[], metavar="NAME=SOFT[:HARD]",
                         help="a resource limit (default: nofile=1024:1024, as `runc spec`)")),
    (("--device",), dict(action="append", default=[], metavar="HOST[:CTR[:rwm]]", help="give access to a host device")),
    (("--tmpfs",), dict(action="append", default=[], metavar="PATH[:OPTS]",
                        help="a tmpfs at PATH (OPTS: size=, mode=, uid=, gid=, exec, ...; default noexec,nosuid,nodev)")),
    (("--net", "--network"), dict(dest="net", default="default", help="none, host, or a CNI network name "
                                  "(default: 'pynet', a bridge network created on first use)")),
    (("-p", "--publish"), dict(action="append", default=[], metavar="[IP:][HOST[-END]:]CTR[-END][/proto]",
                                help="publish a container port (no HOST: a free one, see `pynet port`)")),
    (("--ip",), dict(help="request this address from the network's IPAM")),
    (("--network-alias",), dict(action="append", default=[], metavar="NAME",
                                help="another DNS name of the container on its network")),
    (("-i", "--interactive"), dict(action="store_true", help="keep stdin attached (without it the container "
                                                             "reads /dev/null)")),
    (("-t", "--tty"), dict(action="store_true", help="give the container a pseudo-terminal (with -i: your terminal "
                                                     "in raw mode, resized with it)")),
    (("--entrypoint",), dict(default=None, metavar="CMD", help="replace the image's Entrypoint (and its Cmd unless "
                                                              "a command is given); '' clears it")),
    (("--add-host",), dict(action="append", default=[], metavar="NAME:IP", help="an /etc/hosts entry")),
    (("--restart",), dict(default="no", metavar="POLICY", help="with -d: no, on-failure[:N], always, "
                                                               "unless-stopped")),
    (("--dns",), dict(action="append", default=[], help="nameserver for /etc/resolv.conf")),
    (("--config-dir",), dict(default=None, help="network definitions")),
    (("--cache-dir",), dict(default=None, help="libcni cache dir")),
    (("--cni-path",), dict(default=None, help="plugin dirs")),
    (("--netns-dir",), dict(default=None, help="netns pin dir")),
)


# -- argv -> RunOptions -----------------------------------------------------------------------------------
def parse(argv: list) -> RunOptions:
    """The RunOptions of `pynet run ARGV`: the fast parser, else argparse (which prints help or a usage
    error and raises SystemExit)."""
    args = fast_namespace(argv)
    if args is None:
        import argparse

        parser = argparse.ArgumentParser(prog="pynet")
        add_parser(parser.add_subparsers(dest="command", metavar="COMMAND"))
        try:
            args = parser.parse_args(["run", *argv])
        except SystemExit as exc:
            if exc.code == 2:   # a usage error: argparse said which; Docker's status for a run pynet refused
                raise SystemExit(OptionsError.exit_code) from None
            raise
    return to_run_options(args)


def parse_fast(argv: list) -> RunOptions | None:
    """The RunOptions of `pynet run ARGV` when the fast parser reads it; None when only argparse can."""
    args = fast_namespace(argv)
    return None if args is None else to_run_options(args)


class _Namespace:
    """What fast_namespace fills: the attributes argparse would set for `run`."""


def fast_namespace(argv: list) -> _Namespace | None:
    """`pynet run` options as argparse parses them, for the forms that need no judgement: exact flags,
    ``--flag value`` / ``--flag=value`` / ``-f value``, then IMAGE and everything after it. Anything else
    (--help, abbreviations, bundled short flags, a value that looks like an option, a bad number, a
    missing value) returns None, and argparse does the parsing, the help and the error messages."""
    args, table = _Namespace(), {}
    for flags, kwargs in RUN_OPTIONS:
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
    return args


def to_run_options(args) -> RunOptions:
    """RunOptions from a namespace with RUN_OPTIONS' destinations and ``args`` (IMAGE and command)."""
    rest = list(args.args)
    if args.rootfs:
        image, command = None, rest
    else:
        if not rest:
            raise OptionsError("`pynet run` needs an IMAGE or --rootfs DIR")
        image, command = rest[0], rest[1:]
    seccomp, no_new_privs = _security(args.security_opt)
    try:
        limits = cgroups.Limits(memory=cgroups.check_memory(args.memory), cpus=cgroups.check_cpus(args.cpus),
                                pids=cgroups.check_pids(args.pids_limit),
                                cpuset_cpus=cgroups.check_cpuset(args.cpuset_cpus))
    except ValueError as exc:   # cgroups.LimitError names the flag and the value
        raise OptionsError(str(exc)) from None
    _check_name(args.name)
    for item in args.env:
        check_env(item)
    for server in args.dns:
        _check_dns(server)
    if args.net in ("none", "host") and (args.publish or args.ip or args.network_alias):
        raise OptionsError(f"-p/--ip/--network-alias make no sense with --net {args.net}")
    _check_dns_names(args)
    try:
        net = network.NetOptions.from_flags(mode=args.net, publish=args.publish, ip=args.ip,
                                            aliases=args.network_alias,
                                            config_dir=args.config_dir, cache_dir=args.cache_dir,
                                            cni_path=args.cni_path, netns_dir=args.netns_dir)
    except ValueError as exc:   # ports.PortSpecError, capabilities.CapabilityError
        raise OptionsError(str(exc)) from None
    extras = _extras(args)
    if args.workdir is not None and not args.workdir.startswith("/"):
        raise OptionsError(f"invalid -w {args.workdir!r}: the working directory must be an absolute path")
    extras["restart"], extras["restart_retries"] = parse_restart(args.restart)
    if extras["restart"] != "no" and not args.detach:
        raise OptionsError(f"--restart {args.restart!r} needs -d (a foreground run ends with its command)")
    if extras["restart"] != "no" and args.rm:
        raise OptionsError(f"--restart {args.restart!r} and --rm conflict (--rm removes the container on exit)")
    return RunOptions(
        **extras, image=image, rootfs_dir=args.rootfs, command=command, name=args.name, hostname=args.hostname,
        detach=args.detach, rm=args.rm, init=args.init, env=list(args.env), workdir=args.workdir,
        userns=args.userns, userns_base=args.userns_base, userns_size=args.userns_size, limits=limits,
        cap_add=list(args.cap_add), cap_drop=list(args.cap_drop), seccomp=seccomp, no_new_privs=no_new_privs,
        read_only=args.read_only, net=net, dns=list(args.dns), volumes=[_volume(v) for v in args.volume],
        entrypoint=args.entrypoint, add_hosts=[parse_add_host(h) for h in args.add_host],
        interactive=args.interactive, tty=args.tty)


def _extras(args) -> dict:
    """The RunOptions of --user, --group-add, --ulimit, --device and --tmpfs, checked (their modules are
    imported only when the flags are given)."""
    out = {"user": args.user, "group_add": list(args.group_add), "ulimits": list(args.ulimit)}
    if args.user is not None and not args.user.strip(":"):
        raise OptionsError(f"invalid --user {args.user!r}: expected uid[:gid] or name[:group]")
    try:
        if args.ulimit:
            from .security import parse_ulimit

            for spec in args.ulimit:
                parse_ulimit(spec)
        if args.device:
            from .devices import parse_device

            out["devices"] = [parse_device(spec) for spec in args.device]
        if args.tmpfs:
            from .rootfs import parse_tmpfs

            out["tmpfs"] = [parse_tmpfs(spec) for spec in args.tmpfs]
    except ValueError as exc:   # SecurityError, DeviceError, rootfs.TmpfsError
        raise OptionsError(str(exc)) from None
    return out


RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


def parse_restart(value: str) -> tuple[str, int | None]:
    """--restart POLICY -> (policy, the most restarts or None): Docker's no, on-failure[:N], always and
    unless-stopped (here the same as always: no daemon restart to survive)."""
    name, sep, count = value.partition(":")
    if name not in RESTART_POLICIES or (sep and name != "on-failure"):
        raise OptionsError(f"invalid --restart {value!r}: one of no, on-failure[:N], always, unless-stopped")
    if not sep:
        return name, None
    if not (count.isascii() and count.isdigit()) or int(count) < 1:
        raise OptionsError(f"invalid --restart {value!r}: N in on-failure:N is a number of restarts, 1 or more")
    return name, int(count)


def parse_add_host(value: str) -> tuple[str, str]:
    """--add-host NAME:IP (an IPv6 address keeps its colons: NAME is up to the first) -> (name, ip)."""
    import ipaddress

    name, _, address = value.partition(":")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_dns_label(label) for label in labels):
        raise OptionsError(f"invalid --add-host {value!r}: NAME:IP with NAME a host name (letters, digits, '-', "
                           "'.')")
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise OptionsError(f"invalid --add-host {value!r}: {address!r} is not an IP address") from None
    return name, address.strip("[]")


def _security(security_opts: list) -> tuple[str, bool]:
    """(seccomp, no_new_privs) of the --security-opt values; a profile file is read and checked here."""
    seccomp, no_new_privs = "default", True
    for opt in security_opts:
        key, _, value = opt.partition("=")
        if key == "seccomp" and value in ("unconfined", "default"):
            seccomp = value
        elif key == "seccomp" and value:
            import os

            from .seccomp_profile import ProfileError, load

            try:
                load(value)
            except ProfileError as exc:
                raise OptionsError(str(exc)) from None
            seccomp = os.path.abspath(value)
        elif key in ("no-new-privileges", "no_new_privs"):
            no_new_privs = value.lower() not in ("false", "0", "no")
        elif key in ("apparmor", "label"):
            continue   # not active on this kernel: accepted and ignored, as Docker does without the LSM
        else:
            raise OptionsError(f"unsupported --security-opt {opt!r}")
    return seccomp, no_new_privs


def _volume(spec: str) -> tuple:
    """-v /HOST:/CONTAINER[:ro] -> (host, container, read_only)."""
    parts = spec.split(":")
    if len(parts) < 2 or not parts[0].startswith("/") or not parts[1].startswith("/"):
        raise OptionsError(f"invalid -v {spec!r}: expected /HOST:/CONTAINER[:ro]")
    if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise OptionsError(f"invalid -v {spec!r}: the only options are ro and rw")
    if not os.path.exists(parts[0]):
        raise OptionsError(f"invalid -v {spec!r}: {parts[0]} does not exist on the host")
    return parts[0], parts[1], len(parts) > 2 and parts[2] == "ro"


# Docker's rule for container names.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _check_name(name: str | None) -> None:
    """--name: Docker's [a-zA-Z0-9][a-zA-Z0-9_.-]*, and not the start of another container's id (a
    reference to it would then be ambiguous)."""
    if not name:
        return   # --name= : no name, as Docker
    if not name[0].isascii() or not name[0].isalnum() or not set(name) <= _NAME_CHARS:
        raise OptionsError(f"invalid --name {name!r}: letters, digits, '_', '.', '-', starting with a letter "
                           "or digit")
    from . import state

    taken = next((r.id for r in state.all_records() if r.id.startswith(name)), None)
    if taken:
        raise OptionsError(f"invalid --name {name!r}: the start of container id {taken[:12]}")


def _dns_label(name: str) -> bool:
    """Whether ``name`` is one DNS label (what the dnsname plugin records: letters, digits, '-', '_')."""
    return 0 < len(name) <= 63 and name[0] != "-" and name[-1] != "-" and \
        all(c.isascii() and (c.isalnum() or c in "-_") for c in name)


def _check_dns_names(args) -> None:
    """--network-alias must be DNS labels; so must --name on a network with DNS (checked only for a name
    that is not one, so the common case reads no network definition)."""
    for alias in args.network_alias:
        if not _dns_label(alias):
            raise OptionsError(f"invalid --network-alias {alias!r}: a DNS name of letters, digits, '-' and '_' "
                               "(at most 63, not starting or ending with '-')")
    if not args.name or _dns_label(args.name) or args.net in ("none", "host"):
        return
    from pynet.runner import locations

    locs = locations.resolve(args.config_dir, args.cache_dir, args.cni_path, args.netns_dir)
    try:
        from pynet.runner.conflists import has_dns

        conf = locations.runner(locs).network(network.DEFAULT_NETWORK if args.net == "default" else args.net)
        dns = has_dns(conf)
    except Exception:  # noqa: BLE001 - no such network yet (the default is made with DNS); attach says more
        dns = args.net == "default"
    if dns:
        raise OptionsError(f"invalid --name {args.name!r}: network {args.net if args.net != 'default' else 'pynet'!r} "
                           "resolves container names, and this is not a DNS name (letters, digits, '-', '_'; "
                           "at most 63)")


def check_env(item: str) -> None:
    """-e KEY[=VALUE]: KEY not empty, without whitespace."""
    key = item.partition("=")[0]
    if not key or any(c.isspace() for c in key):
        raise OptionsError(f"invalid -e {item!r}: the variable name must be non-empty, without spaces")


def _check_dns(server: str) -> None:
    quads = server.split(".")
    if len(quads) == 4 and all(q.isascii() and q.isdigit() and len(q) <= 3 and int(q) < 256 for q in quads):
        return   # the common case, without importing ipaddress on the start-up path
    import ipaddress

    try:
        ipaddress.ip_address(server)
    except ValueError:
        raise OptionsError(f"invalid --dns {server!r}: not an IP address") from None


def add_parser(sub):
    """Adds `run` (from RUN_OPTIONS) to ``sub``, argparse subparsers; returns its parser."""
    import argparse

    p = sub.add_parser("run", help="run a command in a new container", add_help=False,
                       usage="pynet run [options] IMAGE|--rootfs DIR [CMD ...]")
    for flags, kwargs in RUN_OPTIONS:
        p.add_argument(*flags, **kwargs)
    p.add_argument("--help", action="help", help="show this help")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="IMAGE [CMD ...]")
    return p
