"""The start-up path of `pynet run`, from pynet.cli (also in the lean script that
pynet.cni_install.write_script makes) and ``python -m pynet.launcher``. When a `pynet daemon` listens,
the run goes to it (remote.py: a thin client; the daemon's zygote.py launches the container with the
same code); otherwise, or when the daemon declines, it runs here: options.parse, then supervise.run.

Every millisecond here is part of each container start, so it imports nothing but sys and posix (``os``
costs ~1 ms) before it knows where the run goes, starts the cgroup warm-up before the launcher's
imports, and ends the process with os._exit once the container is gone and the output is flushed
(interpreter teardown would only free memory the kernel frees anyway)."""

import posix
import sys


def run(argv: list) -> None:
    """`pynet run ARGS`; never returns."""
    code = _via_daemon(argv)
    if code is not None:
        _exit(code)
    import gc

    # The local launcher's imports (a networked run: the runner, our plugins, pyroute2) make many objects
    # the cyclic collector would keep walking; a high threshold still bounds what a long run leaves.
    gc.set_threshold(100_000, 50, 100)
    from . import cgroups

    cgroups.start_warmup()
    try:
        code = _run_here(argv)
    except SystemExit as exc:   # argparse: --help, usage errors
        code = exc.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    _exit(code)


def _run_here(argv: list) -> int:
    """The run in this process: argv -> RunOptions -> supervise.run, as the daemon's zygote does."""
    from .options import OptionsError, parse
    from .supervise import run as supervise_run

    try:
        opts = parse(argv)
    except OptionsError as exc:
        print(f"pynet: {exc}", file=sys.stderr)
        return exc.exit_code
    return supervise_run(opts)


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
