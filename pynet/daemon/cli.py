"""`pynet daemon`: run the resident fast path in the foreground, or install it as a service
(`install`, `uninstall`, `status`: pynet/daemon/service.py)."""

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
    actions = p.add_subparsers(dest="service_action", metavar="{install,uninstall,status}")
    for name, help_text in (("install", "run the daemon as a service: systemd units with socket activation, "
                                        "else a supervisor that restarts it"),
                            ("uninstall", "stop the service and remove its files"),
                            ("status", "whether the service runs, its PIDs and socket")):
        a = actions.add_parser(name, help=help_text)
        a.add_argument("--socket", dest="service_socket", default=None,
                       help=f"socket to serve (default RUN_DIR/pynetd.sock, i.e. {DEFAULT_SOCKET})")
        a.add_argument("--run-dir", default=os.path.dirname(DEFAULT_SOCKET),
                       help="without systemd: where the supervisor keeps its pid, state and log files "
                            "(default %(default)s)")
        a.add_argument("--json", action="store_true", help="print JSON (status)")
        a.set_defaults(func=_service)


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


def _service(args) -> int:
    import json

    from pynet.cli import CommandError

    from . import service

    paths = service.Paths(args.run_dir, args.service_socket)
    try:
        if args.service_action == "status":
            if service.systemd_running():
                running, lines = service.status_systemd()
                print("\n".join(lines))
            else:
                running, info = service.status_supervised(paths)
                print(json.dumps(info, indent=2) if args.json else service.describe(info))
            return 0 if running else 3
        if service.systemd_running():
            said = (service.install_systemd(paths.socket) if args.service_action == "install"
                    else service.uninstall_systemd())
        else:
            said = (service.install_supervised(paths) if args.service_action == "install"
                    else service.uninstall_supervised(paths))
    except service.ServiceError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{args.service_action}: {exc.filename or args.run_dir}: {exc.strerror}") from None
    print("\n".join(said))
    return 0
