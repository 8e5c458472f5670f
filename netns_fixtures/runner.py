"""Runs CNI plugin executables the way a runtime does, but inside a sandbox "host" netns.

The environment is minimal (no venv, no PYTHONPATH), like podman's cleanup path, so a plugin that only
works from an activated venv fails here too.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from .namespaces import Netns

OUR_PLUGINS = os.path.dirname(os.path.abspath(sys.executable))  # the venv bin, also under python -S
REFERENCE_PLUGINS = "/usr/lib/cni"
MINIMAL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def reference_available() -> bool:
    return os.access(os.path.join(REFERENCE_PLUGINS, "bridge"), os.X_OK)


class PluginFailed(Exception):
    def __init__(self, plugin: str, command: str, rc: int, reply, stderr: str):
        self.plugin, self.command, self.rc, self.reply, self.stderr = plugin, command, rc, reply, stderr
        self.code = reply.get("code") if isinstance(reply, dict) else None
        self.msg = reply.get("msg", "") if isinstance(reply, dict) else ""
        super().__init__(f"{plugin} {command} failed (exit {rc}): {reply!r} {stderr[-2000:]}")


@dataclass
class Invocation:
    rc: int
    reply: dict | None
    stdout: bytes
    stderr: str


def conf_for(conflist: dict, plugin: dict, prev_result: dict | None, capability_args: dict | None) -> dict:
    """One plugin's config out of a conflist, as libcni builds it."""
    conf = dict(plugin)
    conf["name"] = conflist["name"]
    conf["cniVersion"] = conflist["cniVersion"]
    if prev_result is not None:
        conf["prevResult"] = prev_result
    caps = {k: v for k, v in (capability_args or {}).items() if (plugin.get("capabilities") or {}).get(k)}
    if caps:
        conf["runtimeConfig"] = caps
    return conf


class CNI:
    """Plugin runner bound to a sandbox host netns and a CNI_PATH."""

    def __init__(self, host: Netns, *plugin_dirs: str, extra_env: dict | None = None):
        self.host = host
        self.path = list(plugin_dirs) or [OUR_PLUGINS]
        # e.g. {"PYNET_SOCKET": ...} to route our plugins through a test's daemon
        self.extra_env = dict(extra_env or {})

    def env(self, command: str, container, ifname: str, container_id: str, args: str) -> dict:
        env = {"PATH": MINIMAL_PATH, "CNI_COMMAND": command, "CNI_PATH": os.pathsep.join(self.path)}
        env.update(self.extra_env)
        if container_id:
            env["CNI_CONTAINERID"] = container_id
        netns_path = container.path if isinstance(container, Netns) else container
        if netns_path:
            env["CNI_NETNS"] = netns_path
        if ifname:
            env["CNI_IFNAME"] = ifname
        if args:
            env["CNI_ARGS"] = args
        return env

    def find(self, plugin: str) -> str:
        for directory in self.path:
            candidate = os.path.join(directory, plugin)
            if os.access(candidate, os.X_OK):
                return candidate
        raise FileNotFoundError(f"plugin {plugin!r} not in {self.path}")

    def invoke(self, plugin: str, command: str, conf: dict | bytes | None, container=None, ifname: str = "eth0",
               container_id: str = "ctr1", args: str = "", env: dict | None = None) -> Invocation:
        """One raw invocation; ``env`` replaces the computed environment entirely when given."""
        stdin = conf if isinstance(conf, (bytes, type(None))) else json.dumps(conf).encode()
        full_env = env if env is not None else self.env(command, container, ifname, container_id, args)
        proc = self.host.run([self.find(plugin)], input=stdin or b"", env=full_env)
        reply = None
        if proc.stdout.strip():
            try:
                reply = json.loads(proc.stdout)
            except ValueError:
                reply = None
        return Invocation(proc.returncode, reply, proc.stdout, proc.stderr.decode(errors="replace"))

    def _call(self, plugin, command, conf, **kw):
        inv = self.invoke(plugin, command, conf, **kw)
        if inv.rc != 0:
            raise PluginFailed(plugin, command, inv.rc, inv.reply, inv.stderr)
        return inv.reply

    def add(self, plugin: str, conf: dict, container, **kw) -> dict:
        return self._call(plugin, "ADD", conf, container=container, **kw)

    def delete(self, plugin: str, conf: dict, container, **kw) -> None:
        self._call(plugin, "DEL", conf, container=container, **kw)

    def check(self, plugin: str, conf: dict, container, **kw) -> None:
        self._call(plugin, "CHECK", conf, container=container, **kw)

    def status(self, plugin: str, conf: dict) -> None:
        self._call(plugin, "STATUS", conf, container=None, ifname="", container_id="")

    def gc(self, plugin: str, conf: dict, valid_attachments: list[dict]) -> None:
        conf = dict(conf, **{"cni.dev/valid-attachments": valid_attachments})
        self._call(plugin, "GC", conf, container=None, ifname="", container_id="")

    def version(self, plugin: str, cni_version: str = "1.0.0") -> dict:
        env = {"PATH": MINIMAL_PATH, "CNI_COMMAND": "VERSION", "CNI_CONTAINERID": "dummy",
               "CNI_NETNS": "dummy", "CNI_IFNAME": "dummy", "CNI_PATH": "dummy"}
        return self._call(plugin, "VERSION", {"cniVersion": cni_version}, env=env)

    # -- conflists (ADD in order, DEL in reverse with the cached result, as libcni) ---------------
    def add_chain(self, conflist: dict, container, capability_args: dict | None = None, **kw) -> dict:
        result = None
        for plugin in conflist["plugins"]:
            result = self.add(plugin["type"], conf_for(conflist, plugin, result, capability_args), container, **kw)
        return result

    def del_chain(self, conflist: dict, container, prev_result: dict | None,
                  capability_args: dict | None = None, **kw) -> None:
        for plugin in reversed(conflist["plugins"]):
            self.delete(plugin["type"], conf_for(conflist, plugin, prev_result, capability_args), container, **kw)

    def check_chain(self, conflist: dict, container, prev_result: dict,
                    capability_args: dict | None = None, **kw) -> None:
        for plugin in conflist["plugins"]:
            self.check(plugin["type"], conf_for(conflist, plugin, prev_result, capability_args), container, **kw)
