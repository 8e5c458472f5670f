"""The start-up path of `pynet run`, from pynet.cli (also in the lean script ``write_script`` makes) and
``python -m pynet.launcher``. When a `pynet daemon` listens, the run goes to it (remote.py: a thin client;
the daemon's zygote.py launches the container with the same code); otherwise, or when the daemon declines,
it runs here. Every millisecond here is part of each container start, so it imports
nothing but sys and posix (``os`` costs ~1 ms) before it knows where the run goes, starts the cgroup warm-up before that import, and ends
the process with os._exit once the container is gone and the output is flushed (interpreter teardown
would only free memory the kernel frees anyway)."""

import posix
import sys


def run(argv: list) -> None:
    """`pynet run ARGS`; never returns."""
    code = _via_daemon(argv)
    if code is not None:
        _exit(code)
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
    _exit(code)


def _via_daemon(argv: list):
    """The exit code of the run as served by a listening `pynet daemon`, or None: run it here. Same
    discovery as the CNI plugins' client (PYNET_SOCKET, the default socket; PYNET_DAEMON=off disables)."""
    from cni_plugins.wire import daemon_mode, exists, socket_path

    path = socket_path()
    if daemon_mode() == b"off" or not exists(path):
        return None
    from .remote import run as run_remote

    return run_remote(argv, path)


def _exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    posix._exit(code)


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
    """Writes a lean `pynet` executable (every command; `run` starts ~3 ms sooner than through pip's
    console script) to ``path``, atomically; returns the path. scripts/install.sh puts it in place of
    pip's .venv/bin/pynet."""
    import os

    from cni_plugins.files import atomic_write
    from pynet.cni_install import import_paths, interpreter

    atomic_write(path, _SCRIPT.format(python=interpreter(), paths=import_paths()), mode=0o755)
    os.chmod(path, 0o755)
    return path
