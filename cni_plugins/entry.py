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


def _entry(executable: str):
    module = PLUGIN_MODULES[executable]

    def main() -> None:
        run(module)

    main.__name__ = main.__qualname__ = executable.replace("-", "_")
    return main


# The names pyproject's [project.scripts] and `pynet cni install` scripts import.
bridge = _entry("bridge")
host_local = _entry("host-local")
static = _entry("static")
loopback = _entry("loopback")
portmap = _entry("portmap")
firewall = _entry("firewall")
tuning = _entry("tuning")
