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


class NetOptions(Fields):
    FIELDS = {"mode": "default",     # "none" | "host" | "default" (the network "pynet") | a network name
              "publish": list,       # ports.PortMapping
              "ip": None, "ifname": "eth0",
              "aliases": list,       # --network-alias: more DNS names on the network

              "config_dir": None, "cache_dir": None, "cni_path": None, "netns_dir": None}

    @classmethod
    def from_flags(cls, mode: str = "default", publish=(), ip: str | None = None, aliases=(),
                   **locations_) -> "NetOptions":
        """From `pynet run`'s --net, -p values, --ip, --network-alias and location flags; ValueError
        (ports.PortSpecError, capabilities.CapabilityError) names a bad value. A -p without host port gets
        a free one here; a host IP that is not an address of this netns is refused."""
        mappings = []
        if publish:   # imported only then: this runs on every `pynet run`'s start-up path
            from pynet.runner.ports import assign_host_ports, check_host_ips, parse_publish

            mappings = [parse_publish(spec) for spec in publish]
            check_host_ips(mappings)
            assign_host_ports(mappings)
        if ip:
            from pynet.runner.capabilities import check_ip

            ip = check_ip(ip)
        return cls(mode=mode, publish=mappings, ip=ip, aliases=list(aliases or ()), **locations_)

    def to_record(self) -> dict:
        """What the container's record keeps: the flags, with the runner's locations resolved now."""
        return {"mode": self.mode, "publish": [p.to_cni() for p in self.publish], "ip": self.ip,
                "ifname": self.ifname, "aliases": list(self.aliases),
                "runner": locations.resolve(self.config_dir, self.cache_dir, self.cni_path, self.netns_dir)}


def preload() -> None:
    """Imports the runner (~20 ms) and what our plugins need when the runner runs them in this process
    (their modules, pyroute2's netlink code, libnftables' binding: ~40 ms; the detach's netns helpers), for
    a caller with time to spare before attach/detach: the daemon's zygote once, a local launcher while its
    container is built."""
    import importlib

    import pynet.runner.attachments  # noqa: F401
    import pynet.runner.chain  # noqa: F401
    from cni_plugins import lean_imports, registry

    lean_imports.install()   # as the plugins' skeleton does first: only the parts of pyroute2 they use
    for module in (*registry.MODULES.values(), "pyroute2.iproute.linux", "nftables", "cni_plugins.netns"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass   # a plugin whose dependency is missing reports that itself when it runs
    _load_libnftables()


def _load_libnftables() -> None:
    """Maps libnftables (and the libraries under it) into this process: each libnftables context loads it
    by name, and its first load (1-2 ms here, 10 ms under load) would otherwise fall on the first attach
    of every launcher forked from here. No context is made: one stays bound to the namespace it was made in."""
    import ctypes

    try:
        _LOADED.append(ctypes.CDLL(NFTABLES_SONAME))
    except OSError:
        pass   # no libnftables: the plugins that need it say so when they run


NFTABLES_SONAME = "libnftables.so.1"   # what python3-nftables' Nftables() loads by default
_LOADED: list = []


def default_conflist(cni_version: str | None = None, data_dir: str | None = None, dns_dir: str | None = None,
                     networks=()) -> dict:
    """The default bridge network, like Docker's docker0 / podman's "podman": a gateway bridge with
    masquerade, port mapping and DNS, over a free /24 of pynet's pool (conflists.free_subnet: clear of
    podman's and Docker's defaults and of what is routed here). Leases go to ``data_dir``
    (locations.lease_dir), else host-local's default dir unless PYNET_DEFAULT_DATA_DIR; DNS records to
    ``dns_dir`` (None: the dnsname plugin's default); ``networks``: those defined already (their subnets
    are avoided)."""
    from cni_plugins import version as cniversion
    from pynet.dns import plugin_config
    from pynet.runner.conflists import build_conflist, free_subnet, routed_here, subnets_in_use

    return build_conflist(DEFAULT_NETWORK, [free_subnet(subnets_in_use(networks) + [r for r, _ in routed_here()])],
                          DEFAULT_BRIDGE, True, True, True, data_dir or os.environ.get("PYNET_DEFAULT_DATA_DIR"),
                          cni_version or cniversion.CURRENT, dns=plugin_config(data_dir=dns_dir))


def ensure_default_network(config_dir: str, data_dir: str | None = None, dns_dir: str | None = None) -> str:
    """Writes the default network's conflist when no network of that name exists (first use); its leases
    go to ``data_dir``."""
    import json

    from pynet.runner.netconf import list_networks

    networks = list_networks(config_dir)[0]
    if DEFAULT_NETWORK in {n.name for n in networks}:
        return DEFAULT_NETWORK
    os.makedirs(config_dir, exist_ok=True)
    try:
        with open(os.path.join(config_dir, f"{DEFAULT_NETWORK}.conflist"), "x") as fh:
            json.dump(default_conflist(data_dir=data_dir, dns_dir=dns_dir, networks=networks), fh, indent=2)
            fh.write("\n")
    except FileExistsError:
        pass   # another launcher wrote it first
    return DEFAULT_NETWORK


def _network_name(atts, mode: str, runner_locations: dict) -> str:
    if mode != "default":
        return mode
    from pynet.runner.conflists import dns_data_dir

    return ensure_default_network(atts.runner.config_dir, locations.lease_dir(runner_locations),
                                  dns_data_dir(runner_locations))


def on_default_network(mode: str | None) -> bool:
    """Whether a run's network mode is the default network (by the word or by its name)."""
    return mode in ("default", DEFAULT_NETWORK)


def needs_attach(rec) -> bool:
    return (rec.get("network") or {}).get("mode") not in ("none", "host", None)


def attach(rec, pid: int, warm=None) -> dict | None:
    """Runs the network's CNI chain ADD for the container's netns; returns the updated network record.
    ``warm``: a warm.WarmAttachment that fits the run, whose namespace ``pid`` is in."""
    net = dict(rec.get("network") or {})
    if net.get("mode") in ("none", "host", None):
        return None
    return attach_cni(net, pid, rec.get("name"), rec.id, warm)


def attach_cni(net: dict, pid: int, container_name: str | None = None, container_id: str | None = None,
               warm=None) -> dict:
    """ADD of the network for process ``pid``, known to the runner as ``container_id`` (the launcher's id:
    one identity in `pynet ps`, `ls`, `inspect`) and ``container_name``, which the chain gets as CNI_ARGS
    ``K8S_POD_NAME`` (as podman passes it; dnsname records it), with the --network-alias names as the
    ``aliases`` capability. With ``warm`` (see warm.py) only the rest of the chain runs."""
    from pynet.runner import capabilities

    atts = locations.attachments(net.get("runner") or {})
    if warm is not None:
        conf = warm.conf or atts.runner.network(warm.entry.network)
        name = conf.name
    else:
        name = _network_name(atts, net["mode"], net.get("runner") or {})
        conf = atts.runner.network(name)
    caps = capabilities.capability_args(net.get("publish"), [net["ip"]] if net.get("ip") else None)
    capabilities.require(conf, caps)
    if net.get("aliases"):
        if "aliases" not in conf.capabilities():
            raise capabilities.CapabilityError(f"network {name!r} resolves no names (no dnsname plugin): "
                                               "--network-alias needs one")
        caps["aliases"] = {name: list(net["aliases"])}
    if net.get("dns") and "dns" in conf.capabilities():
        caps["dns"] = {"servers": list(net["dns"])}   # (dnsname forwards this container's questions there)
    cni_args = [("IgnoreUnknown", "1"), ("K8S_POD_NAME", container_name)] if container_name else None
    cache_dir = (net.get("runner") or {}).get("cache_dir")
    if net.get("ip"):
        wait_pending_detaches(cache_dir)   # before the attachments lock: the late DELs take it again
    before_step = _ports_freed(cache_dir) if net.get("publish") else None
    try:
        if warm is not None:
            container, entry = atts.adopt(warm.entry, pid, warm.steps, conf, capability_args=caps or None,
                                          cni_args=cni_args, name=container_name, before_step=before_step)
            warm.taken = True
        else:
            container, entry = atts.attach(pid, conf, ifname=net.get("ifname") or "eth0",
                                           capability_args=caps or None, cni_args=cni_args, name=container_name,
                                           container_id=container_id, before_step=before_step)
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
    net.update(network=name, attachment_id=container.id, netns=container.netns, result=entry.result,
               dns_forwarded="dns" in caps)
    return net


def _ports_freed(cache_dir: str | None):
    """A before_step for Runner.add: waits, just before the chain's first port-mapping plugin, until the
    late DELs have unmapped their ports (the steps before it, the bridge's, run meanwhile). It waits under
    the attachments lock: a LateDetach takes that lock only after releasing PENDING_PORTS."""
    waited = []

    def before_step(plugin: dict) -> None:
        if not waited and maps_ports(plugin):
            waited.append(True)
            wait_pending_detaches(cache_dir, PENDING_PORTS)
    return before_step


def maps_ports(plugin: dict) -> bool:
    """Whether a chain's plugin takes the portMappings capability (holds host ports)."""
    declared = plugin.get("capabilities")
    return isinstance(declared, dict) and declared.get("portMappings") is True


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
    try:   # networks `pynet network connect` added later go too
        atts.detach(net["attachment_id"])
    except CNIError:
        pass   # none left (code 3), or one that would not go: `pynet gc` collects it
    _mark_detached(rec)


def _mark_detached(rec) -> None:
    net = rec.get("network") or {}
    rec.data["network"] = dict(net, attachment_id=None, detached=True)
    if os.path.exists(rec.path):
        rec.save()


class LateDetach:
    """detach(rec) run after the launcher's reply, in two parts. Made before the reply: finds the container's
    attachments (every network of it) under the runner's attachments lock, then takes the pending-DEL locks
    (PendingDetach). Called after the reply: the DELs, which let PENDING_PORTS go once the port mappings are
    gone (after the port-mapping plugin's DEL, at the latest when the DELs are over) and only then take the
    attachments lock again; so a run publishing ports may wait for PENDING_PORTS under that lock
    (attach_cni). Returns False when the DEL failed (gc redoes it from the set-aside record)."""

    def __init__(self, rec):
        self.rec, self.plan, self.atts = rec, None, None
        net = rec.get("network") or {}
        if net.get("attachment_id"):
            try:
                self.atts = locations.attachments(net.get("runner") or {})
                self.plan = self.atts.prepare_detach(net["attachment_id"])
            except Exception:  # noqa: BLE001 - nothing attached (code 3), or the plain detach() retries it
                self.plan = None
        self.pending = PendingDetach(rec)   # after the lock above: a run waiting for these may hold it
        mapped = [e for e, _netns, _why in (self.plan.reached if self.plan else ())
                  if e.capability_args.get("portMappings")]
        if not mapped:
            self.pending.ports_released()   # nobody needs to wait for this DEL's ports
        self.early = len(mapped) == 1       # the one port-mapping DEL frees them all

    def __call__(self) -> bool:
        try:
            if self.plan is None:
                self.pending.ports_released()   # before detach() takes the attachments lock
                detach(self.rec)
            else:
                def after_step(plugin: dict) -> None:
                    if self.early and maps_ports(plugin):
                        self.pending.ports_released()
                self.atts.run_detach(self.plan, after_step, before_relock=self.pending.ports_released)
                _mark_detached(self.rec)
            return True
        except Exception:  # noqa: BLE001 - the client is gone; gc redoes it from the set-aside record
            return False
        finally:
            self.pending.done()


# -- DELs run after the reply (container.cleanup with a deferred list) ------------------------------
PENDING_ALL = ".pending-detach.lock"     # held until the late DEL is done: addresses, attachments
PENDING_PORTS = ".pending-ports.lock"    # held until its port mappings are gone (before the veth goes)


def _pending_lock(cache_dir: str | None, name: str = PENDING_ALL) -> str:
    from pynet.runner.cache import DEFAULT_CACHE_DIR

    return os.path.join(cache_dir or DEFAULT_CACHE_DIR, name)


class PendingDetach:
    """Shared locks on the runner's cache dir, held from before a launcher's reply until its late DEL is
    done (PENDING_ALL) or has unmapped its ports (PENDING_PORTS, released by ports_released); what needs
    those ports, addresses or attachments gone takes the lock exclusively first (wait_pending_detaches).
    The kernel drops them if the launcher dies."""

    def __init__(self, rec):
        cache_dir = ((rec.get("network") or {}).get("runner") or {}).get("cache_dir")
        self.fds = {name: _lock_shared(_pending_lock(cache_dir, name)) for name in (PENDING_ALL, PENDING_PORTS)}

    def ports_released(self) -> None:
        self._release(PENDING_PORTS)

    def done(self) -> None:
        for name in list(self.fds):
            self._release(name)

    def _release(self, name: str) -> None:
        fd = self.fds.pop(name, -1)
        if fd >= 0:
            os.close(fd)


def _lock_shared(path: str) -> int:
    import fcntl

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return -1
    return fd


def wait_pending_detaches(cache_dir: str | None, name: str = PENDING_ALL) -> None:
    """Waits until the DELs launchers deferred over this cache dir are done (``name`` PENDING_ALL: a run
    asking for an address, `pynet net rm`: their addresses and attachments are gone then), or have
    unmapped their ports (PENDING_PORTS: a run publishing ports)."""
    import fcntl

    try:
        fd = os.open(_pending_lock(cache_dir, name), os.O_RDWR | os.O_CLOEXEC)
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
