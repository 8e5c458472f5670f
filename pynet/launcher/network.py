"""Container networking: ``--net none`` (own netns, loopback only), ``--net host`` (the launcher's netns),
or a CNI network attached through pynet's runner, the same code path as ``pynet attach`` (the netns is
pinned by the runner, so the DEL at exit reaches it even after PID 1 is gone).

Runner locations come from the same flags/environment as the other commands (pynet.runner.locations:
PYNET_CONFIG_DIR, PYNET_CACHE_DIR, PYNET_CNI_PATH, PYNET_NETNS_DIR); -p and --ip are read by the
runner's ports and capabilities modules, as for `pynet attach`.
"""

from __future__ import annotations

import os

from pynet.runner import locations

from .value_objects import Fields

DEFAULT_NETWORK = "pynet"
DEFAULT_BRIDGE = "pynet0"
DEFAULT_SUBNET = "10.88.0.0/16"


class NetOptions(Fields):
    FIELDS = {"mode": "default",     # "none" | "host" | "default" (the network "pynet") | a network name
              "publish": list,       # ports.PortMapping
              "ip": None, "ifname": "eth0",
              "config_dir": None, "cache_dir": None, "cni_path": None, "netns_dir": None}

    @classmethod
    def from_flags(cls, mode: str = "default", publish=(), ip: str | None = None, **locations_) -> "NetOptions":
        """From `pynet run`'s --net, -p values, --ip and location flags; ValueError (ports.PortSpecError,
        capabilities.CapabilityError) names a bad value."""
        mappings = []
        if publish:   # imported only then: this runs on every `pynet run`'s start-up path
            from pynet.runner.ports import parse_publish

            mappings = [parse_publish(spec) for spec in publish]
        if ip:
            from pynet.runner.capabilities import check_ip

            ip = check_ip(ip)
        return cls(mode=mode, publish=mappings, ip=ip, **locations_)

    def to_record(self) -> dict:
        """What the container's record keeps: the flags, with the runner's locations resolved now."""
        return {"mode": self.mode, "publish": [p.to_cni() for p in self.publish], "ip": self.ip,
                "ifname": self.ifname,
                "runner": locations.resolve(self.config_dir, self.cache_dir, self.cni_path, self.netns_dir)}


def preload() -> None:
    """Imports the runner (~20 ms) and what our plugins need when the runner runs them in this process
    (their modules, pyroute2's netlink code, libnftables' binding: ~40 ms), for a caller with time to
    spare before attach/detach: the daemon's zygote once, a local launcher while its container is built."""
    import importlib

    import pynet.runner.attachments  # noqa: F401
    import pynet.runner.chain  # noqa: F401
    from cni_plugins import lean_imports, registry

    lean_imports.install()   # as the plugins' skeleton does first: only the parts of pyroute2 they use
    for module in (*registry.MODULES.values(), "pyroute2.iproute.linux", "nftables"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass   # a plugin whose dependency is missing reports that itself when it runs


def default_conflist(cni_version: str | None = None, data_dir: str | None = None) -> dict:
    """The default bridge network, like Docker's docker0 / podman's "podman": a gateway bridge with
    masquerade and port mapping. Leases go to ``data_dir`` (locations.lease_dir), else host-local's
    default dir unless PYNET_DEFAULT_DATA_DIR."""
    import ipaddress

    from cni_plugins import version as cniversion
    from pynet.runner.conflists import build_conflist

    return build_conflist(DEFAULT_NETWORK, [ipaddress.ip_network(DEFAULT_SUBNET)], DEFAULT_BRIDGE, True, True, True,
                          data_dir or os.environ.get("PYNET_DEFAULT_DATA_DIR"), cni_version or cniversion.CURRENT)


def ensure_default_network(config_dir: str, data_dir: str | None = None) -> str:
    """Writes the default network's conflist when no network of that name exists (first use); its leases
    go to ``data_dir``."""
    import json

    from pynet.runner.netconf import list_networks

    if DEFAULT_NETWORK in {n.name for n in list_networks(config_dir)[0]}:
        return DEFAULT_NETWORK
    os.makedirs(config_dir, exist_ok=True)
    try:
        with open(os.path.join(config_dir, f"{DEFAULT_NETWORK}.conflist"), "x") as fh:
            json.dump(default_conflist(data_dir=data_dir), fh, indent=2)
            fh.write("\n")
    except FileExistsError:
        pass   # another launcher wrote it first
    return DEFAULT_NETWORK


def _network_name(atts, mode: str, runner_locations: dict) -> str:
    if mode != "default":
        return mode
    return ensure_default_network(atts.runner.config_dir, locations.lease_dir(runner_locations))


def needs_attach(rec) -> bool:
    return (rec.get("network") or {}).get("mode") not in ("none", "host", None)


def attach(rec, pid: int) -> dict | None:
    """Runs the network's CNI chain ADD for the container's netns; returns the updated network record."""
    net = dict(rec.get("network") or {})
    if net.get("mode") in ("none", "host", None):
        return None
    return attach_cni(net, pid)


def attach_cni(net: dict, pid: int) -> dict:
    from pynet.runner import capabilities

    atts = locations.attachments(net.get("runner") or {})
    name = _network_name(atts, net["mode"], net.get("runner") or {})
    conf = atts.runner.network(name)
    caps = capabilities.capability_args(net.get("publish"), [net["ip"]] if net.get("ip") else None)
    capabilities.require(conf, caps)
    try:
        container, entry = atts.attach(pid, conf, ifname=net.get("ifname") or "eth0", capability_args=caps or None)
    except Exception:
        # The chain undid its own steps; a bridge the network's first ADD made, and its lease folder, go
        # too when nothing else uses the network.
        if not atts.runner.cache.entries(network=conf.name):
            from pynet.runner.conflists import remove_host_side

            try:
                remove_host_side(conf)
            except Exception:  # noqa: BLE001 - the attach's own error is the one to report
                pass
        raise
    net.update(network=name, attachment_id=container.id, netns=container.netns, result=entry.result)
    return net


def detach(rec) -> None:
    """DEL of the chain (idempotent; works after the container died: the runner pinned its netns)."""
    net = rec.get("network") or {}
    if not net.get("attachment_id"):
        return
    from cni_plugins.errors import CNIError

    atts = locations.attachments(net.get("runner") or {})
    try:
        atts.detach(net["attachment_id"], network=net.get("network"), ifname=net.get("ifname"))
    except CNIError as err:
        if err.code != 3:   # unknown container: already detached
            raise
    rec.data["network"] = dict(net, attachment_id=None, detached=True)
    if os.path.exists(rec.path):
        rec.save()


# -- DELs run after the reply (container.cleanup with a deferred list) ------------------------------
def _pending_lock(cache_dir: str | None) -> str:
    from pynet.runner.cache import DEFAULT_CACHE_DIR

    return os.path.join(cache_dir or DEFAULT_CACHE_DIR, ".pending-detach.lock")


class PendingDetach:
    """A shared lock on the runner's cache dir, held from before a launcher's reply until its late DEL is
    done; what needs those ports, addresses or attachments gone takes it exclusively first
    (wait_pending_detaches). The kernel drops it if the launcher dies."""

    def __init__(self, rec):
        import fcntl

        self.fd = -1
        try:
            path = _pending_lock(((rec.get("network") or {}).get("runner") or {}).get("cache_dir"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_SH)
        except OSError:
            pass

    def done(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def wait_pending_detaches(cache_dir: str | None) -> None:
    """Waits until the DELs launchers deferred over this cache dir are done (a run publishing ports or
    asking for an address, `pynet net rm`): their ports, addresses and attachments are gone then."""
    import fcntl

    try:
        fd = os.open(_pending_lock(cache_dir), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return   # no launcher ever deferred a DEL here
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass
    finally:
        os.close(fd)


def addresses(net: dict) -> list[str]:
    result = net.get("result") or {}
    return [ip["address"].split("/")[0] for ip in result.get("ips", [])]


def dns_servers(net: dict) -> list[str]:
    return list(((net.get("result") or {}).get("dns") or {}).get("nameservers") or [])


def dns_search(net: dict) -> list[str]:
    return list(((net.get("result") or {}).get("dns") or {}).get("search") or [])
