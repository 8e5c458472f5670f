"""`pynet daemon`: run the resident fast path in the foreground."""

from __future__ import annotations

import os

from cni_plugins.wire import DEFAULT_SOCKET


def register(sub) -> None:
    p = sub.add_parser("daemon", help="serve CNI plugin requests from a resident process (fast path)")
    p.add_argument("--socket", default=os.environ.get("PYNET_SOCKET", DEFAULT_SOCKET),
                   help=f"unix socket to listen on (default {DEFAULT_SOCKET}; plugins find it there or via PYNET_SOCKET)")
    p.add_argument("--containers", action="store_true",
                   help="also serve `pynet run` (forks a launcher zygote that keeps one container slot, with "
                        "its cgroups, prepared ahead)")
    p.set_defaults(func=_daemon)


def _daemon(args) -> int:
    from pynet.cli import CommandError

    from .server import AlreadyRunning, run

    def ready():
        print(f"pynet daemon listening on {args.socket}", flush=True)

    try:
        run(args.socket, ready, serve_containers=args.containers)
    except AlreadyRunning as exc:
        raise CommandError(str(exc)) from None
    return 0
