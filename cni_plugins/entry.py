"""Console-script entry points: one tiny function per plugin executable.

Each names its plugin module as a string: the thin client (stdlib only) answers VERSION or forwards to
the daemon without importing it; only a standalone run imports the module (and pyroute2 with it).
"""

from .client import run

PLUGIN_MODULES = {
    "bridge": "bridge.plugin",
    "host-local": "ipam.host_local",
    "static": "ipam.static",
    "loopback": "loopback.plugin",
    "portmap": "portmap.plugin",
    "firewall": "firewall.plugin",
    "tuning": "tuning.plugin",
}


def bridge() -> None:
    run(PLUGIN_MODULES["bridge"])


def host_local() -> None:
    run(PLUGIN_MODULES["host-local"])


def static() -> None:
    run(PLUGIN_MODULES["static"])


def loopback() -> None:
    run(PLUGIN_MODULES["loopback"])


def portmap() -> None:
    run(PLUGIN_MODULES["portmap"])


def firewall() -> None:
    run(PLUGIN_MODULES["firewall"])


def tuning() -> None:
    run(PLUGIN_MODULES["tuning"])
