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

    # Runtime services (each import-light: `pynet run` reads its options with them)
    from pynet.runner import capabilities, conflists, locations, ports
    locs = locations.resolve(config_dir=None, cache_dir=None, cni_path=None, netns_dir=None)
    #   flag, else PYNET_CONFIG_DIR/PYNET_CACHE_DIR/PYNET_CNI_PATH (or CNI_PATH)/PYNET_NETNS_DIR, else None
    runner, atts = locations.runner(locs), locations.attachments(locs)   # defaults filled in
    ports.parse_publish("127.0.0.1:8080:80/udp")   # -> ports.PortMapping(8080, 80, "udp", "127.0.0.1")
    ports.to_port_mappings(["8080:80"])            # -> [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    #   the one -p grammar: [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp|sctp]; ports.PortSpecError names the value
    caps = capabilities.capability_args(port_mappings=[...], ips=["10.1.0.5/24"], mac="..")  # checked values
    capabilities.require(runner.network("mynet"), caps)  # CapabilityError: no plugin declares one of them
    conflists.build_conflist(name, subnets, bridge, gateway, masq, port_map, data_dir, cni_version)
    #   the bridge + host-local (+ portmap) conflist of `pynet net create` and `pynet run`'s default network

Plugins of this installation run in the runner's process (cni_plugins.delegate.call: same code, same
answer, no interpreter start); any other executable on the CNI path is executed.
"""

__all__ = ["Runner", "ChainError", "default_cni_path", "CacheEntry", "ResultCache", "NetworkConfigList",
           "list_networks", "load_network", "Attachments", "Container"]

# Each name is imported from its module on first use, so importing one light submodule (ports, locations)
# does not load the chain runner, dataclasses and the cache (~20 ms of a `pynet run` start).
_HOME = {"Runner": "chain", "ChainError": "chain", "default_cni_path": "chain", "CacheEntry": "cache",
         "ResultCache": "cache", "NetworkConfigList": "netconf", "list_networks": "netconf",
         "load_network": "netconf", "Attachments": "attachments", "Container": "attachments"}


def __getattr__(name):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(name)
