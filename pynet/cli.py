"""`pynet` command line. Each command group lives in its own module exposing ``register(subparsers)``;
a registered sub-command sets ``func(args) -> int`` as its handler and reports a user-facing failure as
pynet.cli_base.CommandError."""

import sys

# Modules that add sub-commands. A module missing here (not written yet) is skipped, not fatal.
COMMAND_MODULES = (
    "pynet.cni_install",   # pynet cni install DIR
    "pynet.cli_networks",  # net create/ls/inspect/rm
    "pynet.cli_attach",    # attach, detach, ls, inspect, status, gc
    "pynet.launcher.cli",  # run, ps, logs, stop, kill, rm, exec, image, stats, container
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


def build_parser():
    """The full parser; argparse is imported here, not at the top, so `pynet run` never loads it."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(prog="pynet", description="CNI networking, container launcher and topologies")
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

    parser = build_parser()
    args = parser.parse_args(argv)
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
        return 1


if __name__ == "__main__":
    sys.exit(main())
