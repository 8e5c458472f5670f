"""``python -m pynet.launcher run ...``: the launcher's commands without loading every other pynet
command group; ``run`` takes the start-up path of startup.py."""

import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        from .startup import run

        run(argv[1:])
    import argparse

    from .cli import register

    parser = argparse.ArgumentParser(prog="pynet")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"), only=argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
