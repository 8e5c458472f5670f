"""Running a network's plugin chain as libcni does: ADD in order with prevResult threaded through, DEL in
reverse with the cached result, CHECK, STATUS and GC; each step's plugin found on CNI_PATH.

A plugin executable of this very installation runs in this process (cni_plugins.delegate.call: the same
code with the same environment and stdin, so the same answer and the same error, minus an interpreter
start per step); any other executable, another pynet installation's included, is executed. What the
plugin modules cache stays in this process: notably cni_plugins.nft's libnftables contexts, one pool per
network namespace the plugins wrote rules in (at most 8, least recently used dropped first), each keeping
its namespace alive. `pynet run` and `pynet attach` exit soon after; a long-lived process that runs chains
in many short-lived "host" namespaces (a topology in a test process) keeps up to 8 of them until then."""

from __future__ import annotations

import json
import os
import sys
from typing import Iterable

from cni_plugins import version as cniversion
from cni_plugins.delegate import call, find_plugin
from cni_plugins.errors import CNIError, DECODING_FAILURE, INCOMPATIBLE_VERSION, INVALID_CONFIG, IO_FAILURE
from cni_plugins.skel import validate_container_id, validate_ifname
from cni_plugins.results import Result

from .cache import DEFAULT_CACHE_DIR, CacheEntry, ResultCache
from .netconf import (DEFAULT_CONFIG_DIR, NetworkConfigList, NetworkNotFound, conflist_from_bytes,
                      conflist_from_dict, load_network)

SYSTEM_PLUGIN_DIR = "/opt/cni/bin"
PLUGIN_TIMEOUT = 300  # seconds; a hung plugin must not hang the runtime forever


def default_cni_path() -> list[str]:
    """Our own plugins (the bin dir of the interpreter's environment) first, then the system's.
    From the interpreter's path, not sys.prefix, which names the base Python when site is not run (-S)."""
    return [os.path.dirname(os.path.abspath(sys.executable)), SYSTEM_PLUGIN_DIR]


class ChainError(CNIError):
    """A plugin of a chain failed; names the plugin and the verb like libcni's errors do."""

    def __init__(self, plugin_type: str, command: str, err: CNIError):
        super().__init__(err.code, f'plugin type="{plugin_type}" failed ({command.lower()}): {err.msg}',
                         err.details)
        self.plugin_type = plugin_type
        self.command = command
        self.cause = err


def _pairs(cni_args) -> list[list[str]]:
    if not cni_args:
        return []
    if isinstance(cni_args, dict):
        return [[str(k), str(v)] for k, v in cni_args.items()]
    return [[str(k), str(v)] for k, v in cni_args]


class Runner:
    def __init__(self, config_dir: str = DEFAULT_CONFIG_DIR, cni_path: Iterable[str] | None = None,
                 cache_dir: str = DEFAULT_CACHE_DIR, environ: dict | None = None):
        self.config_dir = config_dir
        self.cni_path = [p for p in (cni_path if cni_path is not None else default_cni_path()) if p]
        self.cache = ResultCache(cache_dir)
        # Plugins inherit our environment (as libcni's exec does) minus any CNI_* of our own.
        base = dict(os.environ if environ is None else environ)
        self._environ = {k: v for k, v in base.items() if not k.startswith("CNI_")}

    @property
    def cache_dir(self) -> str:
        return self.cache.cache_dir

    # -- networks --------------------------------------------------------------------------------
    def network(self, network) -> NetworkConfigList:
        if isinstance(network, NetworkConfigList):
            return network
        if isinstance(network, dict):
            return conflist_from_dict(network)
        return load_network(self.config_dir, network)

    def _network_for_teardown(self, network, container_id: str, ifname: str) -> NetworkConfigList:
        """The network's current definition, or the one cached at ADD time once it is gone from disk."""
        try:
            return self.network(network)
        except NetworkNotFound:
            entry = self.cache.read(network, container_id, ifname)
            if entry is None or not entry.config:
                raise
            return conflist_from_bytes(entry.config)

    # -- one plugin ------------------------------------------------------------------------------
    def _env(self, command: str, container_id: str = "", netns: str = "", ifname: str = "",
             cni_args: list[list[str]] | None = None) -> dict:
        env = dict(self._environ)
        env.update(CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_NETNS=netns, CNI_IFNAME=ifname,
                   CNI_ARGS=";".join(f"{k}={v}" for k, v in cni_args or []), CNI_PATH=os.pathsep.join(self.cni_path))
        return env

    def call_plugin(self, plugin_type: str, command: str, conf: dict, env: dict) -> dict | None:
        """Runs the plugin ``plugin_type`` (in-process when it is ours, else executed); its decoded reply.
        ``command`` is already in ``env`` (CNI_COMMAND); the plugin's own error is raised as CNIError."""
        exe = find_plugin(plugin_type, tuple(self.cni_path))
        return call(exe, env, json.dumps(conf).encode(), timeout=PLUGIN_TIMEOUT)

    def _step(self, conf: NetworkConfigList, plugin: dict, command: str, env: dict, **build) -> dict | None:
        try:
            return self.call_plugin(plugin["type"], command, conf.plugin_config(plugin, **build), env)
        except CNIError as err:
            raise ChainError(plugin["type"], command, err) from None

    # -- verbs -----------------------------------------------------------------------------------
    def add(self, network, container_id: str, netns: str, ifname: str, capability_args: dict | None = None,
            cni_args=None, before_step=None, steps: slice = slice(None), prev_result: dict | None = None) -> dict:
        """``before_step(plugin)``: called before each plugin's ADD (a caller that must wait for something
        only one plugin needs waits there, while the steps before it run). ``steps``: the part of the chain
        to run (a warm attachment runs its first plugins ahead, then the rest from their ``prev_result``);
        the cache record holds the result so far either way, so DEL and GC undo a part as they undo all.
        A failure undoes the whole chain's ADD up to there, the part given by ``prev_result`` included."""
        conf = self.network(network)
        validate_container_id(container_id)
        validate_ifname(ifname)
        cniversion.require_supported(conf.cni_version)
        args = _pairs(cni_args)
        caps = dict(capability_args or {})
        env = self._env("ADD", container_id, netns, ifname, args)
        result = prev_result
        try:
            for plugin in conf.plugins[steps]:
                if before_step is not None:
                    before_step(plugin)
                result = self._step(conf, plugin, "ADD", env, prev_result=result, capability_args=caps)
            if not isinstance(result, dict):
                raise CNIError(DECODING_FAILURE, f"network {conf.name!r}: the chain returned no result")
            self.cache.write(CacheEntry(container_id=container_id, network=conf.name, ifname=ifname,
                                        config=conf.bytes, netns=netns, cni_args=args, capability_args=caps,
                                        result=result))
        except BaseException:
            # Whatever part of the chain ran is undone, so a failed ADD leaves nothing behind.
            ran = conf.plugins[:steps.indices(len(conf.plugins))[1]]
            self._del_chain(conf, self._env("DEL", container_id, netns, ifname, args), result, caps,
                            ignore_errors=True, plugins=ran)
            self.cache.delete(conf.name, container_id, ifname)
            raise
        return result

    def _cached_prev(self, conf: NetworkConfigList, container_id: str, ifname: str, entry=None) -> dict | None:
        """``entry``: the cache entry when the caller has read it already (a legacy bare result has none)."""
        raw = entry.result if entry is not None else self.cache.read_raw_result(conf.name, container_id, ifname)
        if raw is None:
            return None
        if raw.get("cniVersion") == conf.cni_version:
            return raw
        try:  # plugins get prevResult in the config's version, as libcni converts it
            return Result.from_dict(raw).to_dict(conf.cni_version)
        except CNIError:
            return None

    def _runtime(self, conf, container_id, ifname, netns, capability_args, cni_args, entry):
        """DEL/CHECK default to what was used at ADD time (libcni's GetNetworkListCachedConfig): ``entry``."""
        if netns is None:
            netns = entry.netns if entry else ""
        if capability_args is None:
            capability_args = entry.capability_args if entry else {}
        args = _pairs(cni_args) if cni_args is not None else (entry.cni_args if entry else [])
        return netns, capability_args, args

    def delete(self, network, container_id: str, ifname: str, netns: str | None = None,
               capability_args: dict | None = None, cni_args=None, after_step=None) -> None:
        """``after_step(plugin)``: called after each plugin's DEL succeeded (a caller can let others have
        what that plugin held before the slower steps after it are done)."""
        conf = self._network_for_teardown(network, container_id, ifname)
        entry = self.cache.read(conf.name, container_id, ifname)   # read once: runtime defaults and prevResult
        netns, caps, args = self._runtime(conf, container_id, ifname, netns, capability_args, cni_args, entry)
        prev = self._cached_prev(conf, container_id, ifname, entry) \
            if cniversion.at_least(conf.cni_version, "0.4.0") else None
        self._del_chain(conf, self._env("DEL", container_id, netns, ifname, args), prev, caps,
                        after_step=after_step)
        self.cache.delete(conf.name, container_id, ifname)

    def _del_chain(self, conf, env, prev_result, caps, ignore_errors: bool = False, after_step=None,
                   plugins=None) -> None:
        for plugin in reversed(conf.plugins if plugins is None else plugins):
            try:
                self._step(conf, plugin, "DEL", env, prev_result=prev_result, capability_args=caps)
            except CNIError:
                if not ignore_errors:
                    raise
                continue
            if after_step is not None:
                after_step(plugin)

    def check(self, network, container_id: str, ifname: str, netns: str | None = None,
              capability_args: dict | None = None, cni_args=None) -> None:
        conf = self.network(network)
        if not cniversion.at_least(conf.cni_version, "0.4.0"):
            raise CNIError(INCOMPATIBLE_VERSION, f"configuration version {conf.cni_version!r} "
                           "does not support the CHECK command")
        if conf.disable_check:
            return
        entry = self.cache.read(conf.name, container_id, ifname)
        netns, caps, args = self._runtime(conf, container_id, ifname, netns, capability_args, cni_args, entry)
        prev = self._cached_prev(conf, container_id, ifname, entry)
        env = self._env("CHECK", container_id, netns, ifname, args)
        for plugin in conf.plugins:
            self._step(conf, plugin, "CHECK", env, prev_result=prev, capability_args=caps)

    def status(self, network) -> bool:
        """Raises the first plugin's STATUS error; returns False when the network's version predates STATUS."""
        conf = self.network(network)
        if not cniversion.at_least(conf.cni_version, "1.1.0"):
            return False
        env = self._env("STATUS")
        for plugin in conf.plugins:
            self._step(conf, plugin, "STATUS", env)
        return True

    def gc(self, network, valid_attachments: list[dict]) -> list[CacheEntry]:
        """DEL for every cached attachment of the network not in ``valid_attachments``, then the GC verb
        (1.1.0+). Returns the entries that were deleted; errors are collected and raised at the end."""
        conf = self.network(network)
        if conf.disable_gc:
            return []
        valid = {(a.get("containerID"), a.get("ifname")) for a in valid_attachments}
        errors: list[str] = []
        removed = []
        for entry in self.cache.entries(network=conf.name):
            if (entry.container_id, entry.ifname) in valid:
                continue
            try:
                self.delete(conf, entry.container_id, entry.ifname)
                removed.append(entry)
            except CNIError as err:
                errors.append(f"failed to delete stale attachment {entry.container_id} {entry.ifname}: {err}")
        if cniversion.at_least(conf.cni_version, "1.1.0"):
            env = self._env("GC")
            extra = {"cni.dev/valid-attachments": [{"containerID": c, "ifname": i} for c, i in sorted(valid)]}
            for plugin in conf.plugins:
                try:
                    self._step(conf, plugin, "GC", env, extra=extra)
                except CNIError as err:
                    errors.append(str(err))
        if errors:
            raise CNIError(IO_FAILURE, f"GC of network {conf.name!r} failed: " + "; ".join(errors))
        return removed

    def cached(self, network, container_id: str, ifname: str) -> CacheEntry | None:
        name = network if isinstance(network, str) else self.network(network).name
        return self.cache.read(name, container_id, ifname)

    def version(self, plugin_type: str) -> dict:
        env = self._env("VERSION", "dummy", "dummy", "dummy")
        reply = self.call_plugin(plugin_type, "VERSION", {"cniVersion": cniversion.CURRENT}, env)
        if not isinstance(reply, dict):
            raise CNIError(INVALID_CONFIG, f"plugin {plugin_type!r} gave no VERSION reply")
        return reply
