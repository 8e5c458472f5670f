"""What a CNI plugin is to the skeleton (the reference's ``skel.PluginMainFuncs``, netavark's driver trait).

A plugin module defines one ``PLUGIN = Plugin(...)``. The skeleton turns the environment and stdin into a
validated ``Request``, asks the plugin for its typed config (``load_config``: every message names the bad
key and value), opens the ``Handles`` and calls one verb with ``(request, config, handles)``. The verb returns
a ``Result`` (ADD) or None, and raises ``CNIError`` for failures; the skeleton renders both in the
requested cniVersion and closes the handles. The same function serves a standalone process and the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


# The loaders are (request) -> config, the verbs (request, config, handles) -> Result or None. (No typing
# import: it costs the skeleton's start-up ~3 ms.)
@dataclass(frozen=True)
class Plugin:
    """One plugin's loaders and verbs, by the name runtimes call it. (A docstring also spares dataclasses
    the inspect module it would import to write one.)"""
    name: str
    load_config: "Callable"
    add: "Callable"
    delete: "Callable"
    check: "Callable"
    status: "Callable | None" = None
    gc: "Callable | None" = None
    # DEL and GC must clean up even when the rest of the config went bad (or changed since ADD): a plugin
    # whose teardown needs less than the whole config says so with a loader of its own (host-local reads
    # only where its leases are, tuning only its data directory).
    load_teardown_config: "Callable | None" = None

    def config_for(self, req):
        if req.command in ("DEL", "GC") and self.load_teardown_config is not None:
            return self.load_teardown_config(req)
        return self.load_config(req)


def no_config(req) -> None:
    """For plugins whose config holds nothing beyond what the skeleton validates already."""
    return None
