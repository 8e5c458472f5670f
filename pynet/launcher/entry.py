"""The start-up path of `pynet run`, from pynet.cli (also in the lean script ``write_script`` makes) and
``python -m pynet.launcher``. Every millisecond here is part of each container start, so it imports
nothing but os and sys before the launcher itself, starts the cgroup warm-up before that import, and ends
the process with os._exit once the container is gone and the output is flushed (interpreter teardown
would only free memory the kernel frees anyway)."""

import os
import sys


def run(argv: list) -> None:
    """`pynet run ARGS`; never returns."""
    from . import cgroups

    cgroups.start_warmup()
    from .cli import main_run

    try:
        code = main_run(argv)
    except SystemExit as exc:   # argparse: --help, usage errors
        code = exc.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


# -IS is -I -S (a shebang passes one argument): no site (and none of its .pth processing, ~3 ms), no
# environment variables steering the interpreter; the directories site would add are written in, as for
# the plugin scripts of `pynet cni install`. The console script pip writes for `pynet` cannot do this.
_SCRIPT = """#!{python} -IS
# pynet's command line, started without site; written by pynet.launcher.entry.write_script.
import sys
sys.path[1:1] = {paths!r}
from pynet.cli import main
sys.exit(main())
"""


def write_script(path: str) -> str:
    """Writes a lean `pynet` executable (every command; `run` starts ~5 ms sooner than through the console
    script) to ``path``, atomically; returns the path."""
    from cni_plugins.files import atomic_write
    from pynet.cni_install import import_paths, interpreter

    atomic_write(path, _SCRIPT.format(python=interpreter(), paths=import_paths()), mode=0o755)
    os.chmod(path, 0o755)
    return path
