"""Network definitions read the way libcni reads them.

``*.conflist`` files in name order, first matching ``name`` wins; plugins from ``<dir>/<name>/*.conf`` are
appended unless ``loadOnlyInlinedPlugins``; if no conflist matches, single-plugin ``*.conf``/``*.json`` files
are up-converted to a one-plugin list. ``cniVersions`` picks the highest version we implement.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from cni_plugins import version as cniversion
from cni_plugins.errors import CNIError, DECODING_FAILURE, INVALID_CONFIG

DEFAULT_CONFIG_DIR = "/etc/cni/net.d"
CONFLIST_EXT = (".conflist",)
SINGLE_EXT = (".conf", ".json")


class NetworkNotFound(CNIError):
    def __init__(self, config_dir: str, name: str):
        super().__init__(INVALID_CONFIG, f'no net configuration with name "{name}" in {config_dir}')
        self.name = name


@dataclass
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: list[dict]
    bytes: bytes
    disable_check: bool = False
    disable_gc: bool = False
    load_only_inlined: bool = False
    path: str = ""  # the file it came from ("" when built in memory)
    raw: dict = field(default_factory=dict, repr=False)

    def plugin_config(self, plugin: dict, prev_result: dict | None = None,
                      capability_args: dict | None = None, extra: dict | None = None) -> dict:
        """One plugin's stdin as libcni builds it: name and cniVersion injected, prevResult, runtimeConfig
        holding only the capability args that this plugin declares."""
        conf = dict(plugin)
        conf["name"] = self.name
        conf["cniVersion"] = self.cni_version
        if prev_result is not None:
            conf["prevResult"] = prev_result
        declared = plugin.get("capabilities") if isinstance(plugin.get("capabilities"), dict) else {}
        runtime = {k: v for k, v in (capability_args or {}).items() if declared.get(k) is True}
        if runtime:
            conf["runtimeConfig"] = runtime
        if extra:
            conf.update(extra)
        return conf

    def capabilities(self) -> set[str]:
        caps: set[str] = set()
        for plugin in self.plugins:
            declared = plugin.get("capabilities")
            if isinstance(declared, dict):
                caps.update(k for k, v in declared.items() if v is True)
        return caps


def _read_bool(raw: dict, key: str) -> bool:
    value = raw.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CNIError(INVALID_CONFIG, f"invalid {key} {value!r}: expected a boolean")


def _pick_version(raw: dict) -> str:
    version = raw.get("cniVersion", "")
    if not isinstance(version, str):
        raise CNIError(INVALID_CONFIG, f"invalid cniVersion {version!r}: expected a string")
    versions = raw.get("cniVersions")
    if versions is None:
        return version
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise CNIError(INVALID_CONFIG, f"invalid cniVersions {versions!r}: expected a list of strings")
    current = cniversion.parse(cniversion.CURRENT)
    # Versions newer than the spec we implement are skipped, as libcni does.
    usable = [v for v in versions + ([version] if version else []) if cniversion.parse(v) <= current]
    return max(usable, key=cniversion.parse) if usable else version


def _plugin_from(obj, where: str) -> dict:
    if not isinstance(obj, dict):
        raise CNIError(INVALID_CONFIG, f"invalid plugin config {where}: expected an object")
    if not isinstance(obj.get("type"), str) or not obj["type"]:
        raise CNIError(INVALID_CONFIG, f"invalid plugin config {where}: missing 'type'")
    return obj


def _decode(data: bytes, path: str) -> dict:
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(DECODING_FAILURE, f"error parsing configuration {path or '<bytes>'}: {exc}") from None
    if not isinstance(raw, dict):
        raise CNIError(DECODING_FAILURE, f"error parsing configuration {path or '<bytes>'}: expected an object")
    return raw


def conflist_from_bytes(data: bytes, path: str = "") -> NetworkConfigList:
    raw = _decode(data, path)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise CNIError(INVALID_CONFIG, f"error parsing configuration list {path or '<bytes>'}: no name")
    load_only = _read_bool(raw, "loadOnlyInlinedPlugins")
    plugins = raw.get("plugins")
    if plugins is None:
        if load_only:
            raise CNIError(INVALID_CONFIG, f"network {name!r}: loadOnlyInlinedPlugins is true and no 'plugins' key")
        plugins = []
    if not isinstance(plugins, list):
        raise CNIError(INVALID_CONFIG, f"network {name!r}: invalid 'plugins' {plugins!r}: expected a list")
    if raw.get("plugins") is not None and not plugins:
        raise CNIError(INVALID_CONFIG, f"network {name!r}: no plugins in list")
    return NetworkConfigList(
        name=name, cni_version=_pick_version(raw),
        plugins=[_plugin_from(p, f"{i} of network {name!r}") for i, p in enumerate(plugins)],
        bytes=data, disable_check=_read_bool(raw, "disableCheck"), disable_gc=_read_bool(raw, "disableGC"),
        load_only_inlined=load_only, path=path, raw=raw)


def conflist_from_dict(conflist: dict) -> NetworkConfigList:
    return conflist_from_bytes(json.dumps(conflist).encode())


def conflist_from_single(data: bytes, path: str = "") -> NetworkConfigList:
    """Up-converts a single-plugin ``.conf`` the way libcni's ConfListFromConf does."""
    plugin = _plugin_from(_decode(data, path), path or "<bytes>")
    wrapped = {"name": plugin.get("name", ""), "cniVersion": plugin.get("cniVersion", ""), "plugins": [plugin]}
    conf = conflist_from_bytes(json.dumps(wrapped).encode(), path)
    return conf


def _files(directory: str, extensions: tuple[str, ...]) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names
                  if os.path.splitext(n)[1] in extensions and os.path.isfile(os.path.join(directory, n)))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _from_conflist_file(path: str) -> NetworkConfigList:
    conf = conflist_from_bytes(_read(path), path)
    if not conf.load_only_inlined:
        for extra in _files(os.path.join(os.path.dirname(path), conf.name), (".conf",)):
            conf.plugins.append(_plugin_from(_decode(_read(extra), extra), extra))
    if not conf.plugins:
        raise CNIError(INVALID_CONFIG, f"network {conf.name!r} in {path}: no plugin configs found")
    return conf


def load_network(config_dir: str, name: str) -> NetworkConfigList:
    for path in _files(config_dir, CONFLIST_EXT):
        conf = _from_conflist_file(path)
        if conf.name == name:
            return conf
    for path in _files(config_dir, SINGLE_EXT):
        conf = conflist_from_single(_read(path), path)
        if conf.name == name:
            return conf
    raise NetworkNotFound(config_dir, name)


def list_networks(config_dir: str) -> tuple[list[NetworkConfigList], list[tuple[str, str]]]:
    """Every network the directory defines (the first file per name, as lookup would pick it), and the
    files that failed to parse as (path, error)."""
    seen: dict[str, NetworkConfigList] = {}
    broken: list[tuple[str, str]] = []
    for loader, ext in ((_from_conflist_file, CONFLIST_EXT),
                        (lambda p: conflist_from_single(_read(p), p), SINGLE_EXT)):
        for path in _files(config_dir, ext):
            try:
                conf = loader(path)
            except (CNIError, OSError) as exc:
                broken.append((path, str(exc)))
                continue
            seen.setdefault(conf.name, conf)
    return list(seen.values()), broken
