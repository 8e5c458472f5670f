"""Running one container to its end: the API of `pynet run` (RunOptions in, exit code out), called by
the command line (startup.py, cli.py) and by the daemon's zygote alike.

In the foreground the launcher forwards the signals it gets to PID 1, waits for it and cleans up; the
exit code is the container's own (Docker's: 125 when pynet failed, 126 not executable, 127 not found).
With ``detach`` a monitor process (its own session, stdio to the container's log) does that instead and
the caller prints the container's id once the command has been executed.
"""

from __future__ import annotations

import os
import signal
import sys

from . import container
from .container import ContainerError
from .options import RunOptions

# The signals a foreground launcher passes on to the container's PID 1 (the daemon's thin client,
# remote.py, forwards the same ones).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def run(opts: RunOptions, wait=None, reserved=None, deferred=None) -> int:
    """Runs the container ``opts`` describe; its exit code. A failure is printed (``pynet: ...``) and
    given as its exit code. ``wait(rec, pid)`` replaces the plain wait (the daemon's launcher also listens
    to its client); ``reserved``: the daemon's spare (container.Reserved); ``deferred``: see
    container.cleanup."""
    try:
        if reserved is not None and (opts.detach or opts.limits.any()):
            raise ContainerError("internal: the daemon's spare launcher takes only plain runs")
        return run_detached(opts) if opts.detach else run_foreground(opts, wait, reserved, deferred)
    except ContainerError as exc:
        _err(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:   # Ctrl-C before the container ran: create/start undid their work
        _err("interrupted before the container started")
        return 128 + signal.SIGINT


def run_foreground(opts: RunOptions, wait=None, reserved=None, deferred=None) -> int:
    rec, spec = container.create(opts, reserved)
    if not opts.interactive:
        _stdin_from_devnull()
    pid, master = _start(rec, spec, opts, reserved)
    forward_signals(pid)
    code = _wait(rec, pid, master, opts.interactive, wait or container.wait)
    try:
        container.finish(rec, code, deferred)
    except ContainerError as exc:
        _err(f"cleanup: {exc}")
    return code


def _stdin_from_devnull() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _start(rec, spec, opts: RunOptions, reserved=None, undo: bool = True) -> tuple[int, int | None]:
    """container.start, with -t a terminal.Console for the pty; (PID 1, the pty master or None)."""
    console = None
    if opts.tty:
        from . import terminal

        console = terminal.Console()
        spec.console, spec.console_size = console.fd, terminal.window_size()
    pid = container.start(rec, spec, opts.dns or None, reserved, undo)
    try:
        return pid, console.receive() if console is not None else None
    except OSError as exc:
        os.kill(pid, signal.SIGKILL)
        raise ContainerError(f"-t: {exc}") from None


def _wait(rec, pid: int, master: int | None, interactive: bool, wait) -> int:
    """``wait(rec, pid)``; with a pty ``master``, its output relayed (and stdin with ``interactive``)."""
    if master is None:
        return wait(rec, pid)
    from . import terminal

    return terminal.relay(master, pid, interactive, lambda: wait(rec, pid))


def forward_signals(pid: int) -> None:
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for sig in FORWARDED:
        signal.signal(sig, forward)


def run_detached(opts: RunOptions) -> int:
    """Forks a monitor (own session, stdio to the log) that runs the container to its end; the command
    returns the id once the container's command has been executed."""
    import json

    r, w = os.pipe()
    monitor = os.fork()
    if monitor != 0:
        os.close(w)
        with os.fdopen(r, "rb") as fh:
            line = fh.readline()
        msg = json.loads(line) if line else {"error": "detached launcher died during start", "code": 125}
        if "error" in msg:
            os.waitpid(monitor, 0)
            raise ContainerError(msg["error"], msg.get("code", 125))
        print(msg["id"])
        return 0
    os.close(r)
    code = 0
    try:
        os.setsid()
        rec, spec = container.create(opts)
        log = os.open(rec.file("container.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        _stdin_from_devnull()
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        rec.update(log=rec.file("container.log"))
        pid, master = _start(rec, spec, opts)
        os.write(w, json.dumps({"id": rec.id}).encode() + b"\n")
        os.close(w)
        w = -1
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        status = _monitor(rec, spec, opts, pid, master)
        try:
            container.finish(rec, status)
        except ContainerError as exc:
            _err(f"cleanup: {exc}")
    except ContainerError as exc:
        if w >= 0:
            os.write(w, json.dumps({"error": str(exc), "code": exc.exit_code}).encode() + b"\n")
        code = exc.exit_code
    except BaseException as exc:  # noqa: BLE001
        if w >= 0:
            os.write(w, json.dumps({"error": f"{type(exc).__name__}: {exc}", "code": 125}).encode() + b"\n")
        code = 125
    finally:
        os._exit(code)


def _monitor(rec, spec, opts: RunOptions, pid: int, master: int | None) -> int:
    """A detached container's PID 1 to its end, started again while its --restart policy says so (after
    Docker's back-off: 100 ms, doubled for each restart of a run shorter than 10 s); the last exit code."""
    import time

    delay = 0.1
    while True:
        started = time.monotonic()
        code = _wait(rec, pid, master, False, container.wait)
        rec = rec.reload()
        if not container.should_restart(rec, code):
            return code
        try:
            container.prepare_restart(rec, code)
        except Exception as exc:  # noqa: BLE001 - the network DEL failed: no second attach on top of it
            _err(f"restart: {exc}")
            return code
        delay = 0.1 if time.monotonic() - started >= 10 else delay
        deadline = time.monotonic() + delay
        delay = min(delay * 2, 60.0)
        while time.monotonic() < deadline:
            if container.stop_requested(rec):
                return code   # `stop`/`rm` came during the back-off
            time.sleep(0.05)
        try:
            pid, master = _start(rec, spec, opts, undo=False)
        except ContainerError as exc:
            _err(f"restart: {exc}")
            return exc.exit_code
        if container.stop_requested(rec):
            os.kill(pid, signal.SIGKILL)   # `stop` came while this start was under way


def _err(msg: str) -> None:
    print(f"pynet: {msg}", file=sys.stderr)
