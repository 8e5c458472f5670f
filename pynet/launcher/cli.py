"""The launcher's command line: `pynet run` (options.py reads it, supervise.run runs it), the commands on
existing containers (cli_containers.py: ps, logs, stop, kill, rm, exec, stats, container ...) and on
images (cli_images.py: image ...).

`pynet run` from a shell does not come through here: pynet.cli sends it to startup.py, which skips
argparse. This is `run` as one command of the full parser (and of ``python -m pynet.launcher``).
"""

from __future__ import annotations

import sys

from . import options, supervise


def cmd_run(args) -> int:
    """`pynet run` parsed by argparse."""
    try:
        opts = options.to_run_options(args)
    except options.OptionsError as exc:
        print(f"pynet: {exc}", file=sys.stderr)
        return exc.exit_code
    return supervise.run(opts)


def register(sub, only: str | None = None) -> None:
    """Adds the launcher's commands; ``only="run"`` builds just that one (argparse parsers cost ~2 ms each)."""
    options.add_parser(sub).set_defaults(func=cmd_run)
    if only == "run":
        return
    from . import cli_containers, cli_images

    cli_containers.register(sub)
    cli_images.register(sub)
