"""`pynet-oci`: runc's command line (the part container engines use) over runtime.py.

Errors are printed as runc prints them (one line on stderr, and to --log in text or JSON), exit status 1.
"""

from __future__ import annotations

import _signal as signal   # see runtime.py
import os
import sys
import time


from . import jsonc as json, runtime
from .errors import OCIError
from .flags import Command, Flag, Namespace

VERSION = "1.1.5-pynet"


GLOBAL = Command([Flag("root", default=runtime.DEFAULT_ROOT), Flag("log"),
                  Flag("log-format", choices=("text", "json"), default="text"), Flag("debug", kind=bool),
                  Flag("systemd-cgroup", kind=bool), Flag("rootless", default="auto"), Flag("criu"),
                  Flag("version", "v", kind=bool), Flag("help", "h", kind=bool)],
                 optional={"command": None}, rest="rest")
_ID = ["id"]
_CREATE = [Flag("bundle", "b", default="."), Flag("pid-file"), Flag("console-socket"), Flag("no-pivot", kind=bool),
           Flag("no-new-keyring", kind=bool), Flag("preserve-fds", kind=int, default=0, choices=range(1 << 16))]
_FORMAT = Flag("format", "f", choices=("table", "json"), default="table")
COMMAND_LINES = {
    "create": Command(_CREATE, _ID),
    "run": Command(_CREATE + [Flag("detach", "d", kind=bool),
                              Flag("keep", kind=bool)], _ID),   # --keep: do not delete the stopped container
    "start": Command(positional=_ID), "state": Command(positional=_ID),
    "pause": Command(positional=_ID), "resume": Command(positional=_ID),
    "events": Command([Flag("interval", default="5s"), Flag("stats", kind=bool)], _ID),
    "kill": Command([Flag("all", "a", kind=bool)], _ID, {"signal": "TERM"}),
    "delete": Command([Flag("force", "f", kind=bool)], _ID),
    "exec": Command([Flag("process", "p"), Flag("tty", "t", kind=bool), Flag("detach", "d", kind=bool),
                     Flag("pid-file"), Flag("console-socket"), Flag("env", "e", append=True), Flag("cwd"),
                     Flag("user", "u"), Flag("preserve-fds", kind=int, default=0)], _ID, rest="cmd"),
    "ps": Command([_FORMAT], _ID, rest="ps_args"),
    "list": Command([_FORMAT, Flag("quiet", "q", kind=bool)]),
    "spec": Command([Flag("bundle", "b", default="."), Flag("rootless", dest="spec_rootless", kind=bool)]),
    "update": Command([Flag("resources", "r"), Flag("blkio-weight", kind=int, default=0)]
                      + [Flag(f) for f in ("cpu-period", "cpu-quota", "cpu-rt-period", "cpu-rt-runtime",
                                           "cpuset-cpus", "cpuset-mems", "memory", "memory-reservation",
                                           "memory-swap", "kernel-memory", "kernel-memory-tcp",
                                           "l3-cache-schema", "mem-bw-schema")]
                      + [Flag("cpu-share", "cpu-shares"), Flag("pids-limit", kind=int, default=0)], _ID),
    "features": Command(),
}


def _log(args, level: str, msg: str) -> None:
    path = getattr(args, "log", None)
    if not path:
        return
    try:
        with open(path, "a") as fh:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if args.log_format == "json":
                fh.write(json.dumps({"level": level, "msg": msg, "time": stamp}) + "\n")
            else:
                fh.write(f"time=\"{stamp}\" level={level} msg={json.dumps(msg)}\n")
    except OSError:
        pass


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = Namespace(log=None, log_format="text")
    try:
        args = GLOBAL.parse("pynet-oci", argv, stop_at_positional=True)
        if args.version:
            from . import config as C

            print(f"pynet-oci version {VERSION}\nspec: {C.OCI_VERSION}")
            return 0
        if args.help or args.command == "help":
            print(f"usage: pynet-oci [global flags] COMMAND [flags] [ID]\ncommands: {', '.join(COMMANDS)}")
            return 0
        if args.systemd_cgroup:
            raise OCIError("--systemd-cgroup is not supported: there is no systemd here (use cgroupfs)")
        if not args.command:
            raise OCIError(f"no command given ({', '.join(COMMANDS)})")
        if args.command not in COMMANDS:
            raise OCIError(f"No help topic for '{args.command}'")   # runc's words for an unknown command
        COMMAND_LINES[args.command].parse(args.command, args.rest, into=args)
        return COMMANDS[args.command](args) or 0
    except OCIError as exc:
        _log(args, "error", str(exc))
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _create(args) -> int:
    c = runtime.create(args.root, args.id, args.bundle, args.pid_file, args.no_pivot,
                       console_socket=args.console_socket, preserve_fds=args.preserve_fds)
    _warn_not_applied(args, c)
    return 0


def _warn_not_applied(args, c) -> None:
    for key, value in c.data["not_applied"].items():
        _log(args, "warning", f"{key} {value!r} not applied (AppArmor and SELinux are not active here)")


def _warn(args, messages) -> None:
    for msg in messages:
        _log(args, "warning", msg)
        print(f"warning: {msg}", file=sys.stderr)


def _start(args) -> int:
    _warn(args, runtime.start(args.root, args.id).warnings)
    return 0


def _state(args) -> int:
    # One line: engines call `state` often, and indenting would need the `json` package (re, enum: ~4 ms).
    print(json.dumps(runtime.Container.load(args.root, args.id).state()))
    return 0


def _kill(args) -> int:
    runtime.kill(args.root, args.id, runtime.parse_signal(args.signal), args.all)
    return 0


def _delete(args) -> int:
    _warn(args, runtime.delete(args.root, args.id, args.force))
    return 0


def _run(args) -> int:
    """create + start; waits for the container (a child: this process is a subreaper) and deletes it."""
    c = runtime.create(args.root, args.id, args.bundle, args.pid_file, args.no_pivot, subreaper=not args.detach,
                       console_socket=args.console_socket, preserve_fds=args.preserve_fds, start_soon=True)
    _warn_not_applied(args, c)
    pid = c.data["pid"]
    try:
        _warn(args, runtime.start(args.root, args.id, reader=c.reader).warnings)
    except OCIError:
        runtime.delete(args.root, args.id, force=True)
        raise
    if args.detach:
        return 0
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda signum, _f: runtime._kill_quiet(pid, signum))
    code = 255
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if got == pid:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            break
    if not args.keep:
        _warn(args, runtime.delete(args.root, args.id, force=True))
    return code


def _json_object(path: str, flag: str) -> dict:
    """The JSON object in file ``path`` (``-``: stdin) given with ``flag``."""
    try:
        if path == "-":
            value = json.load(sys.stdin)
        else:
            with open(path) as fh:
                value = json.load(fh)
    except OSError as exc:
        raise OCIError(f"open {path}: {exc.strerror.lower()}") from None
    except ValueError as exc:
        raise OCIError(f"{flag} {path}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise OCIError(f"{flag} {path}: expected a JSON object")
    return value


def _exec(args) -> int:
    c = runtime.Container.load(args.root, args.id)
    if args.process:
        process = _json_object(args.process, "--process")
    else:
        cmd = args.cmd
        if not cmd:
            raise OCIError("exec: no command given (CMD or --process)")
        process = dict(c.data["process"], args=cmd, terminal=False)
    process["env"] = list(process.get("env") or ()) + args.env
    if args.cwd:
        process["cwd"] = args.cwd
    if args.user:
        uid, _, gid = args.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise OCIError(f"exec --user {args.user!r}: expected UID[:GID] (numbers)")
        process["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if args.tty:
        process["terminal"] = True
    return runtime.exec_(args.root, args.id, process, args.detach, args.pid_file, args.console_socket)


def _ps(args) -> int:
    import subprocess

    pids = runtime.ps(args.root, args.id)
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    out = subprocess.run(["ps", *(args.ps_args or ["-ef"])], capture_output=True, text=True)
    lines = out.stdout.splitlines()
    if not lines:
        raise OCIError(f"ps: {out.stderr.strip()}")
    header = lines[0].split()
    col = header.index("PID") if "PID" in header else 1
    print(lines[0])
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            print(line)
    return 0


def _pause(args) -> int:
    runtime.pause(args.root, args.id)
    return 0


def _resume(args) -> int:
    runtime.resume(args.root, args.id)
    return 0


def _list(args) -> int:
    items = [c.state() for c in runtime.list_all(args.root)]
    if args.quiet:
        for s in items:
            print(s["id"])
    elif args.format == "json":
        print(json.dumps(items))
    else:
        print(f"{'ID':<20} {'PID':<8} {'STATUS':<10} {'BUNDLE':<40} {'CREATED':<32} OWNER")
        for s in items:
            print(f"{s['id']:<20} {s['pid']:<8} {s['status']:<10} {s['bundle']:<40} {s['created']:<32} root")
    return 0


def _update(args) -> int:
    from . import update

    if args.resources:
        res = update.check_resources(_json_object(args.resources, "--resources"), args.resources)
        warnings = []
    else:
        res, warnings = update.from_flags(args)
    _warn(args, warnings + update.update(args.root, args.id, res))
    return 0


def _events(args) -> int:
    from . import events

    try:
        events.stream(args.root, args.id, events.parse_interval(args.interval), args.stats, sys.stdout)
    except BrokenPipeError:
        pass   # the reader went away
    return 0


def _features(args) -> int:
    from pynet.launcher import seccomp_profile, security

    from . import config as C

    print(json.dumps({
        "ociVersionMin": "1.0.0", "ociVersionMax": C.OCI_VERSION,
        "hooks": list(C.HOOK_KINDS),
        "mountOptions": sorted(set(C.MOUNT_FLAGS) | set(C.PROPAGATION)),
        "linux": {
            "namespaces": list(C.NAMESPACES),
            "capabilities": [f"CAP_{c}" for c in security.CAPABILITIES[: security.last_cap() + 1]],
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": security.seccomp_available(), "actions": list(seccomp_profile.ACTIONS),
                        "operators": list(seccomp_profile.OPERATORS)},
            "apparmor": {"enabled": False}, "selinux": {"enabled": False},
        },
    }, indent=2))
    return 0


def _spec(args) -> int:
    from . import config as C

    if args.spec_rootless:
        raise OCIError("spec --rootless: not supported yet (pynet-oci runs as root)")
    path = os.path.join(args.bundle, "config.json")
    if os.path.exists(path):
        raise OCIError(f"File {path} exists. Remove it first")
    with open(path, "w") as fh:
        json.dump(C.default_spec(), fh, indent=2)
        fh.write("\n")
    return 0


COMMANDS = {"create": _create, "start": _start, "state": _state, "kill": _kill, "delete": _delete,
            "run": _run, "exec": _exec, "ps": _ps, "pause": _pause, "resume": _resume, "list": _list,
            "events": _events, "update": _update, "features": _features, "spec": _spec}


# The standard library's directories first (each import otherwise searches the project's and site's
# directories before it), and os._exit at the end: interpreter finalization is not needed.
_SCRIPT = """#!{python} -IS
# pynet-oci, started without site; written by pynet.oci.cli.write_script.
import sys
sys.path[:] = sys.path[1:] + {paths!r}
from pynet.oci.cli import main, exit_now
exit_now(main())
"""


def exit_now(code: int) -> None:
    """Ends the process with ``code`` once stdout and stderr are flushed, skipping finalization."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def write_script(path: str) -> str:
    """The lean `pynet-oci` executable (as cni_install.write_script writes `pynet`)."""
    from pynet.cni_install import atomic_write, import_paths, interpreter

    atomic_write(path, _SCRIPT.format(python=interpreter(), paths=import_paths()), mode=0o755)
    os.chmod(path, 0o755)
    return path


if __name__ == "__main__":
    sys.exit(main())
