"""Console-script entry points: one tiny function per plugin executable.

Each names its plugin module as a string, so the module (and pyroute2 with it) is imported only for
verbs that need it.
"""

from .skel import main


def bridge() -> None:
    main("bridge.plugin")


def host_local() -> None:
    main("ipam.host_local")


def static() -> None:
    main("ipam.static")


def loopback() -> None:
    main("loopback.plugin")


def portmap() -> None:
    main("portmap.plugin")


def firewall() -> None:
    main("firewall.plugin")


def tuning() -> None:
    main("tuning.plugin")
