"""A libcni-compatible runtime side of CNI: load network definitions, run plugin chains, keep the
libcni result cache, and pin container network namespaces for attach/detach.

Python API (what ``pynet run``, topologies and the CLI use)::

    from pynet.runner import Runner, Attachments

    runner = Runner(config_dir="/etc/cni/net.d",        # *.conflist, *.conf, *.json, as libcni reads them
                    cni_path=None,                      # list of dirs; None: our venv bin dir, then /opt/cni/bin
                    cache_dir="/var/lib/cni")           # results/<net>-<containerID>-<ifname>, libcni format
    result = runner.add("mynet", container_id, "/run/netns/x", "eth0",
                        capability_args={"portMappings": [...], "ips": [...], "mac": "..."},
                        cni_args={"IgnoreUnknown": "1"})  # -> CNI result dict (conflist's cniVersion)
    runner.check("mynet", container_id, "eth0")         # netns/args/capabilities default to the cached ones
    runner.delete("mynet", container_id, "eth0")        # DEL in reverse with the cached result; idempotent
    runner.status("mynet")                              # STATUS (1.1.0+ networks; older: no-op)
    runner.gc("mynet", [{"containerID": ..., "ifname": ...}])  # DEL stale cached attachments, then GC verb
    runner.cached("mynet", container_id, "eth0")        # -> cache.CacheEntry | None
    runner.network("mynet")                             # -> netconf.NetworkConfigList (also accepted by add/...)

    # `network` arguments may be a name, a NetworkConfigList, or a conflist dict.
    # Failures raise cni_plugins.errors.CNIError (ChainError names the plugin and verb).
    # A failed ADD runs DEL of the whole chain before raising, and caches nothing.

    atts = Attachments(runner, netns_dir="/run/netns")  # pins under netns_dir/pynet-<id>
    container, entry = atts.attach(pid, "mynet", ifname=None, capability_args=None)  # pins /proc/PID/ns/net,
    #   container.id/.pid/.netns (the pin)/.alive; entry: the CacheEntry (.result, .ifname, .network)
    atts.detach("<pid or container id>", network=None, ifname=None)  # DEL via the pinned netns, unpins when
    #   the container has no attachment left; works after the process died; refuses a reused PID
    atts.containers()   # -> list[Container] (.entries: CacheEntry list), incl. other runtimes' cache entries
    atts.gc(["mynet", ...])  # DEL of dead containers' attachments + GC verb per network; drops dead pins
    # A pynet container is alive while its attached process (PID + start time) is; another runtime's
    # cache entry is alive while its netns path still is a namespace.
"""

from .cache import CacheEntry, ResultCache
from .chain import ChainError, Runner, default_cni_path
from .netconf import NetworkConfigList, list_networks, load_network

__all__ = ["Runner", "ChainError", "default_cni_path", "CacheEntry", "ResultCache", "NetworkConfigList",
           "list_networks", "load_network", "Attachments", "Container"]


def __getattr__(name):
    # attachments imports ctypes mount helpers; only the attach/detach path needs them.
    if name in ("Attachments", "Container"):
        from . import attachments
        return getattr(attachments, name)
    raise AttributeError(name)
