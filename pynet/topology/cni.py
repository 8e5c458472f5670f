"""How a topology runs CNI chains for its containers: through pynet's runtime (``pynet.runner.Runner``,
libcni-compatible: result cache, ADD rolled back on failure) or through ``netns_fixtures.runner.CNI``.

Either way the plugin executables run inside the container's simulated host netns: the Runner is called
with this thread inside that netns, so every plugin process it forks starts there; the fixtures runner
enters it in each child. Which one ran ADD is kept in the state, so DEL uses the same.
"""

from __future__ import annotations

import os

from netns_fixtures.namespaces import Netns
from netns_fixtures.runner import CNI, PluginFailed

RUNTIMES = ("runner", "fixtures")


class CNIFailed(Exception):
    pass


def default_runtime() -> str:
    wanted = os.environ.get("PYNET_TOPOLOGY_CNI", "")
    return wanted if wanted in RUNTIMES else "runner"


def _runner(state: dict):
    from pynet.runner import Runner

    return Runner(config_dir=os.path.join(state["data_dir"], "net.d"), cni_path=state["cni_path"],
                  cache_dir=os.path.join(state["data_dir"], "cni-cache"))


def _cni_args(record: dict) -> dict:
    return {"IgnoreUnknown": "1", "IP": record["ip"]} if record.get("ip") else {}


def add(state: dict, host: Netns, container: Netns, record: dict) -> dict:
    caps = record.get("capability_args") or None
    if state.get("cni_runtime") == "runner":
        from cni_plugins.errors import CNIError

        try:
            with host.entered():
                return _runner(state).add(record["conflist"], record["container_id"], container.path,
                                          record["ifname"], caps, _cni_args(record))
        except CNIError as exc:
            raise CNIFailed(f"{exc.msg} (code {exc.code})" + (f": {exc.details}" if exc.details else "")) from None
    args = ";".join(f"{k}={v}" for k, v in _cni_args(record).items())
    try:
        return CNI(host, *state["cni_path"]).add_chain(record["conflist"], container, caps,
                                                       container_id=record["container_id"],
                                                       ifname=record["ifname"], args=args)
    except (PluginFailed, FileNotFoundError) as exc:
        raise CNIFailed(_plugin_error(exc)) from None


def delete(state: dict, host: Netns, container_path: str, record: dict) -> None:
    caps = record.get("capability_args") or None
    if state.get("cni_runtime") == "runner":
        from cni_plugins.errors import CNIError

        try:
            with host.entered():
                _runner(state).delete(record["conflist"], record["container_id"], record["ifname"],
                                      netns=container_path, capability_args=caps, cni_args=_cni_args(record))
        except CNIError as exc:
            raise CNIFailed(f"{exc.msg} (code {exc.code})") from None
        return
    args = ";".join(f"{k}={v}" for k, v in _cni_args(record).items())
    try:
        CNI(host, *state["cni_path"]).del_chain(record["conflist"], container_path, record.get("result"), caps,
                                                container_id=record["container_id"], ifname=record["ifname"],
                                                args=args)
    except (PluginFailed, FileNotFoundError) as exc:
        raise CNIFailed(_plugin_error(exc)) from None


def _plugin_error(exc: Exception) -> str:
    if isinstance(exc, PluginFailed):
        detail = exc.msg or (exc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"plugin {exc.plugin} {exc.command} failed (code {exc.code}): {detail}"
    return str(exc)
