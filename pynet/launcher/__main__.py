"""``python -m pynet.launcher run ...``: the launcher's commands without loading every other pynet
command group (the start-up path the benchmark measures)."""

import argparse
import sys

from .cli import register


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="pynet")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"), only=argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
