"""`pynet` command line. Each command group lives in its own module exposing ``register(subparsers)``;
a registered sub-command sets ``func(args) -> int`` as its handler and reports a user-facing failure as
pynet.cli_base.CommandError."""

import sys

# Modules that add sub-commands. A module missing here (not written yet) is skipped, not fatal.
COMMAND_MODULES = (
    "pynet.cni_install",   # pynet cni install DIR
    "pynet.cli_networks",  # net create/ls/inspect/rm
    "pynet.cli_attach",    # attach, detach, ls, inspect, status, gc
    "pynet.launcher.cli",  # run, ps, logs, stop, kill, rm, exec, image, pull, push, stats, container
    "pynet.topology.cli",  # topology up/check/down/show
    "pynet.daemon.cli",    # daemon
    "pynet.node.cli",      # node run, node ls (multi-node pod network)
)


def __getattr__(name):
    # pynet.cli.CommandError, which the topology and daemon commands raise, without importing cli_base
    # on `pynet run`'s start-up path.
    if name == "CommandError":
        from .cli_base import CommandError

        return CommandError
    raise AttributeError(name)


# Every environment variable pynet reads (the README's "Environment" table lists the same).
ENVIRONMENT = (
    ("PYNET_CONFIG_DIR", "network definitions (default /etc/cni/net.d)"),
    ("PYNET_CACHE_DIR", "libcni cache dir (default /var/lib/cni); DNS records go to its dns/"),
    ("PYNET_CNI_PATH", "plugin dirs, ':'-separated (else CNI_PATH, else pynet's, then /opt/cni/bin)"),
    ("PYNET_NETNS_DIR", "where namespaces are pinned (default /run/netns)"),
    ("PYNET_DEFAULT_DATA_DIR", "host-local lease dir of the networks pynet writes (default <cache dir>/networks)"),
    ("PYNET_ROOT", "image store and containers' layers (default /var/lib/pynet)"),
    ("PYNET_STATE", "container records (default /run/pynet)"),
    ("PYNET_SOCKET", "the daemon's socket (default /run/pynet/pynet.sock)"),
    ("PYNET_DAEMON", "auto (use a running daemon), off, or autostart"),
    ("PYNET_DAEMON_LOST", "internal: set by the plugin shim when the daemon went away mid-request"),
    ("PYNET_TOPOLOGY_STATE_DIR", "topology state files (default /run/pynet/topology)"),
    ("PYNET_TOPOLOGY_CNI", "which plugins topologies run (ours, reference)"),
    ("PYNET_TUNING_ALLOWLIST", "the tuning plugin's sysctl allowlist file"),
    ("PYNET_FUZZ_SAMPLE", "tests only: 'all' runs the plugin fuzz's whole cross product"),
    ("CNI_PATH", "plugin dirs, when PYNET_CNI_PATH is not set"),
)

# Options that may come anywhere on the line, also before the command (`pynet --json ls`): flag -> takes
# a value. Before the command they are moved behind the command words, where each command declares them.
GLOBAL_OPTIONS = {"--json": False, "--config-dir": True, "--cache-dir": True, "--cni-path": True,
                  "--netns-dir": True}


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("pynet")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def _hoist(argv: list[str]) -> tuple[list[str], dict]:
    """Global options given before the command: (argv without them, {dest: value})."""
    out, found, i = [], {}, 0
    while i < len(argv) and argv[i].startswith("-"):
        flag, eq, value = argv[i].partition("=")
        if flag not in GLOBAL_OPTIONS:
            out.append(argv[i])
            i += 1
            continue
        if GLOBAL_OPTIONS[flag] and not eq:
            if i + 1 >= len(argv):
                break   # argparse reports the missing value
            value = argv[i + 1]
            i += 1
        found[flag[2:].replace("-", "_")] = value if GLOBAL_OPTIONS[flag] else True
        i += 1
    return out + argv[i:], found


def build_parser():
    """The full parser; argparse is imported here, not at the top, so `pynet run` never loads it."""
    import argparse
    import importlib

    epilog = "global options (anywhere on the line): --json, --config-dir, --cache-dir, --cni-path, --netns-dir\n\n" \
        "environment:\n" + "\n".join(f"  {k:<26}{v}" for k, v in ENVIRONMENT)
    parser = argparse.ArgumentParser(prog="pynet", description="CNI networking, container launcher and topologies",
                                     epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pynet {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["run"]:
        # Every container start comes through here: the launcher's start-up path, without argparse and
        # every command group's parser (~15 ms). It ends the process itself.
        from pynet.launcher.startup import run

        run(sys.argv[2:])
    from .cli_base import CommandError

    argv, hoisted = _hoist(list(sys.argv[1:] if argv is None else argv))
    if argv[:1] == ["run"]:
        # `pynet --config-dir X run ...`: the locations are run options (before IMAGE); --json means nothing
        from pynet.launcher.startup import run

        run([x for k, v in hoisted.items() if k != "json" for x in (f"--{k.replace('_', '-')}", v)] + argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in hoisted.items():
        if getattr(args, key, None) in (None, False):
            setattr(args, key, value)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        if getattr(args, "json", False):
            import json

            print(json.dumps({"error": str(exc)}))
        else:
            print(f"pynet: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
