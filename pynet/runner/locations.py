"""Where a runner works, from a command's flags, else the environment, else the defaults; and the Runner
and Attachments built from that. Every command that runs chains (net, attach, detach, ls, inspect,
status, gc, run) builds them here.

    flag            environment                  default
    --config-dir    PYNET_CONFIG_DIR             /etc/cni/net.d (netconf.DEFAULT_CONFIG_DIR)
    --cache-dir     PYNET_CACHE_DIR              /var/lib/cni (cache.DEFAULT_CACHE_DIR)
    --cni-path      PYNET_CNI_PATH, CNI_PATH     our interpreter's bin dir, then /opt/cni/bin (':'-separated)
    --netns-dir     PYNET_NETNS_DIR              /run/netns (attachments.DEFAULT_NETNS_DIR)
    --data-dir      PYNET_DEFAULT_DATA_DIR       <cache dir>/networks: host-local's leases of the networks
                                                 pynet writes (with the default cache dir that is
                                                 host-local's own default, /var/lib/cni/networks)

Import-light: `pynet run` records the locations at start; the runner itself is imported when built.
"""

from __future__ import annotations

import os

ENVIRONMENT = {"config_dir": ("PYNET_CONFIG_DIR",), "cache_dir": ("PYNET_CACHE_DIR",),
               "cni_path": ("PYNET_CNI_PATH", "CNI_PATH"), "netns_dir": ("PYNET_NETNS_DIR",)}


def resolve(config_dir: str | None = None, cache_dir: str | None = None, cni_path: str | None = None,
            netns_dir: str | None = None, environ=None) -> dict:
    """{config_dir, cache_dir, cni_path, netns_dir}: each flag value, else its environment variable, else
    None (the default, filled in by runner()/attachments())."""
    env = os.environ if environ is None else environ
    given = {"config_dir": config_dir, "cache_dir": cache_dir, "cni_path": cni_path, "netns_dir": netns_dir}
    return {key: value or next((env[v] for v in ENVIRONMENT[key] if env.get(v)), None)
            for key, value in given.items()}


def runner(locations: dict):
    """A Runner over resolve()'s locations."""
    from .cache import DEFAULT_CACHE_DIR
    from .chain import Runner
    from .netconf import DEFAULT_CONFIG_DIR

    path = locations.get("cni_path")
    return Runner(config_dir=locations.get("config_dir") or DEFAULT_CONFIG_DIR,
                  cni_path=path.split(":") if path else None,
                  cache_dir=locations.get("cache_dir") or DEFAULT_CACHE_DIR)


def attachments(locations: dict):
    """Attachments (pins under the netns dir) over a runner() of the same locations."""
    from .attachments import DEFAULT_NETNS_DIR, Attachments

    return Attachments(runner(locations), locations.get("netns_dir") or DEFAULT_NETNS_DIR)


def lease_dir(locations: dict, environ=None) -> str:
    """Where host-local keeps the leases of a network pynet writes (`net create` without --data-dir, the
    default network): PYNET_DEFAULT_DATA_DIR, else ``networks`` in the cache dir, so a pynet whose
    PYNET_* dirs are set leaves nothing in /var/lib/cni."""
    from .cache import DEFAULT_CACHE_DIR

    env = os.environ if environ is None else environ
    return env.get("PYNET_DEFAULT_DATA_DIR") or os.path.join(locations.get("cache_dir") or DEFAULT_CACHE_DIR,
                                                             "networks")
