"""A network's resolver process, as the dnsname plugin starts it::

    python -S -m pynet.dns.supervise --state-dir DIR --network NAME --socket-fds FD,...

with the sockets the plugin bound (sockets.py) inherited as FD,...; without ``--socket-fds`` it binds the
records' gateway addresses itself and writes the pid file (a resolver run by hand, in the foreground).

Socket activation, in two steps. Started with sockets, the process first lies dormant: it imports
nothing beyond what the interpreter has loaded at start and waits on the raw descriptors for a query, a
TCP connection or the end of its first second. Most containers of a network that lives for one
short-lived container (``pynet run --rm``: its DEL kills the resolver) never ask, and their resolver then
costs an exec and no imports — the watchdog's own (logging, sockets, the records) take ~40 ms of CPU,
which would compete with the run on a busy machine. After that, the watchdog (watchdog.py) takes the
sockets over; queries sent meanwhile wait in their buffers.
"""

from __future__ import annotations

import os
import select
import signal
import sys

DORMANT = 1.0   # seconds; the watchdog's own idle step (loading the serving code) follows one like it
USAGE = "python -m pynet.dns.supervise --state-dir DIR --network NAME [--socket-fds FD,...]"


def _options(argv: list[str]) -> dict:
    """{"--state-dir": ..., "--network": ..., "--socket-fds": ...} (no argparse: it is a heavy import, and
    the plugin is this command's only caller)."""
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: {USAGE}\n\n{__doc__.split(chr(10) + chr(10))[0]}")
        raise SystemExit(0)
    out = {"--socket-fds": ""}
    it = iter(argv)
    for name in it:
        value = next(it, None)
        if name not in ("--state-dir", "--network", "--socket-fds") or value is None:
            raise SystemExit(f"usage: {USAGE}\nunexpected argument: {name!r}")
        out[name] = value
    for name in ("--state-dir", "--network"):
        if name not in out:
            raise SystemExit(f"usage: {USAGE}\nmissing: {name}")
    return out


def _dormant(fds: list[int]) -> bool:
    """Waits for a client on ``fds`` for at most DORMANT seconds; whether one knocked. SIGINT and SIGTERM
    end the process meanwhile (there is nothing of its own to stop yet)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    readable, _, _ = select.select(fds, [], [], DORMANT)
    return bool(readable)


def main(argv=None) -> int:
    opts = _options(sys.argv[1:] if argv is None else argv)
    os.chdir("/")   # holding no directory of the plugin's caller
    data_dir, network = opts["--state-dir"], opts["--network"]
    fds = [int(fd) for fd in opts["--socket-fds"].split(",") if fd]
    knocked = _dormant(fds) if fds else True

    import logging

    from cni_plugins import syscalls
    from cni_plugins.dnsname import records as store

    from . import sockets as listening
    from .watchdog import Watchdog

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if fds:
        sockets = listening.adopt(fds)
    else:
        try:
            addresses = store.listen_addresses(store.load(data_dir, network))
            sockets = {address: listening.listen(address) for address in addresses}
        except OSError as exc:
            print(f"pynet dns: {exc.strerror or exc}", file=sys.stderr)
            return 1
        with store.locked(data_dir):
            store.write_pid_file(data_dir, network, os.getpid(), syscalls.proc_start_time(os.getpid()),
                                 list(sockets))
    watchdog = Watchdog(data_dir, network, sockets)
    if not knocked:
        watchdog.idle()
    return watchdog.run()


if __name__ == "__main__":
    sys.exit(main())
