"""The plugin skeleton (the reference's pkg/skel): CNI environment + stdin in, result or error JSON out.

request → validated ``Request`` → the plugin's typed config → ``Handles`` → one verb of the registered
``Plugin`` (cni_plugins/plugin.py, found by name in cni_plugins/registry.py) → reply rendered in the
requested cniVersion. ``handle`` is pure (environment and bytes in, exit code and JSON out) so the
daemon serves requests with the same code as a standalone process (cni_plugins/main.py). The plugin is
imported only after VERSION has been answered, so VERSION never pays for netlink libraries.
"""

from __future__ import annotations

import json
import os
import re

from collections.abc import Mapping
from dataclasses import dataclass, field

from . import lean_imports, registry
from .config import IFNAME_FORBIDDEN, IFNAMSIZ, GoKeys  # noqa: F401  (IFNAMSIZ: re-exported)
from .handles import Handles, NetnsFds, NetnsHandle, own_netns
from . import version as cniversion
from .errors import (CNIError, DECODING_FAILURE, INTERNAL, INVALID_CONFIG, INVALID_ENVIRONMENT, INCOMPATIBLE_VERSION,
                     invalid_config)
from .nft.tags import network_owner_tag, network_suffix, owner_tag  # noqa: F401  (re-exported: the tag scheme)

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
VALID_ATTACHMENTS = "cni.dev/valid-attachments"

# Which environment variables each command needs (as the reference skeleton requires them).
_REQUIRED_ENV = {
    "CNI_CONTAINERID": ("ADD", "CHECK", "DEL"),
    "CNI_NETNS": ("ADD", "CHECK"),
    "CNI_IFNAME": ("ADD", "CHECK", "DEL"),
    "CNI_PATH": ("ADD", "CHECK", "DEL", "GC", "STATUS"),
}
# The first version of the spec that has each verb.
_MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

_CONTAINER_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def validate_container_id(container_id: str) -> None:
    if not container_id:
        raise CNIError(INVALID_ENVIRONMENT, "missing CNI_CONTAINERID")
    if not _CONTAINER_ID.match(container_id):
        raise CNIError(INVALID_ENVIRONMENT, f"invalid CNI_CONTAINERID {container_id!r}: "
                       "must start with an alphanumeric character and hold only alphanumerics, '_', '.' and '-'")


def validate_ifname(ifname: str) -> None:
    if not ifname:
        raise CNIError(INVALID_ENVIRONMENT, "missing CNI_IFNAME")
    why = ""
    if len(ifname) >= IFNAMSIZ:
        why = f"longer than {IFNAMSIZ - 1} characters"
    elif ifname in (".", ".."):
        why = "'.' and '..' are not interface names"
    elif IFNAME_FORBIDDEN.search(ifname):
        why = "must not contain '/', ':' or whitespace"
    if why:
        raise CNIError(INVALID_ENVIRONMENT, f"invalid CNI_IFNAME {ifname!r}: {why}")


def parse_cni_args(raw: str) -> dict[str, str]:
    """CNI_ARGS is ``K=V;K2=V2``; a pair without '=' is an error, as in the reference."""
    args: dict[str, str] = {}
    for pair in filter(None, (raw or "").split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CNIError(INVALID_ENVIRONMENT, f"invalid CNI_ARGS pair {pair!r}: expected KEY=VALUE")
        args[key] = value
    return args


@dataclass(frozen=True)
class Request:
    """Everything one invocation carries, validated once."""
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]
    path: tuple[str, ...]
    config: dict
    stdin: bytes
    environ: Mapping[str, str] = field(repr=False, default_factory=dict)
    # Work the reply does not depend on (see after_reply); run by handle() or by the daemon.
    deferred: list = field(repr=False, default_factory=list)

    def after_reply(self, fn) -> None:
        """Registers the last step of a verb when nothing the runtime waits for depends on it (the kernel's
        slow veth teardown on DEL). A resident daemon runs it after replying, still holding this
        container's lock, so a later request for the container sees it done; standalone runs it at once."""
        self.deferred.append(fn)

    @property
    def cni_version(self) -> str:
        return self.config["cniVersion"]

    @property
    def network_name(self) -> str:
        return self.config.get("name", "")

    @property
    def runtime_config(self) -> dict:
        rc = self.config.get("runtimeConfig")
        return rc if isinstance(rc, dict) else {}

    @property
    def config_args(self) -> dict:
        """The ``args`` key of the config (conventionally ``args.cni.*``)."""
        a = self.config.get("args")
        return a if isinstance(a, dict) else {}

    @property
    def prev_result(self):
        raw = self.config.get("prevResult")
        if raw is None:
            return None
        from .results import Result
        try:
            return Result.from_dict(raw)
        except CNIError as err:
            raise CNIError(INVALID_CONFIG, f"invalid prevResult: {err.msg.removeprefix('invalid result: ')}") from None

    def require_prev_result(self, plugin: str, why: str = ""):
        """prevResult, or code 7 naming ``plugin`` when it runs without one (not chained, or CHECK without
        the ADD's result); ``why`` says what it needs it for."""
        prev = self.prev_result
        if prev is None:
            why = why or f"it must be chained after a plugin that creates the interface {self.ifname!r}"
            raise CNIError(INVALID_CONFIG, f"{plugin} requires prevResult: {why}")
        return prev

    def cni_arg(self, key: str, known: tuple[str, ...] = ()) -> str | None:
        """One CNI_ARGS value. Keys the plugin does not know fail unless IgnoreUnknown is set."""
        if known:
            ignore = self.args.get("IgnoreUnknown", "").lower() in ("1", "true")
            unknown = [k for k in self.args if k not in known and k != "IgnoreUnknown"]
            if unknown and not ignore:
                raise CNIError(INVALID_ENVIRONMENT, f"unknown CNI_ARGS keys {unknown}: set IgnoreUnknown=1 to pass them")
        return self.args.get(key)

    def owner(self) -> str:
        return owner_tag(self.container_id, self.ifname)

    def network_owner(self) -> str:
        return network_owner_tag(self.container_id, self.ifname, self.network_name)

    def valid_attachments(self) -> set[tuple[str, str]]:
        """GC's ``cni.dev/valid-attachments`` as (containerID, ifname) pairs; absent means none."""
        value = self.config.get(VALID_ATTACHMENTS)
        if value is None:
            return set()
        if not isinstance(value, list):
            raise invalid_config(VALID_ATTACHMENTS, value, "expected a list of {containerID, ifname} objects")
        out = set()
        for item in value:
            if not (isinstance(item, dict) and isinstance(item.get("containerID"), str)
                    and isinstance(item.get("ifname"), str)):
                raise invalid_config(f"{VALID_ATTACHMENTS}[]", item, "expected {containerID, ifname} strings")
            out.add((item["containerID"], item["ifname"]))
        return out

    def valid_owners(self) -> set[str]:
        return {owner_tag(cid, ifname) for cid, ifname in self.valid_attachments()}

    def valid_network_owners(self) -> set[str]:
        return {network_owner_tag(cid, ifname, self.network_name) for cid, ifname in self.valid_attachments()}


def _version_reply(stdin: bytes) -> dict:
    return {"cniVersion": cniversion.CURRENT, "supportedVersions": list(cniversion.SUPPORTED_VERSIONS)}


def _decode_config(stdin: bytes) -> dict:
    try:
        config = json.loads(stdin or b"", object_hook=GoKeys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(DECODING_FAILURE, f"failed to decode network configuration: {exc}") from None
    except RecursionError:
        raise CNIError(DECODING_FAILURE, "failed to decode network configuration: nested too deeply") from None
    if not isinstance(config, dict):
        raise CNIError(DECODING_FAILURE, "failed to decode network configuration: expected a JSON object")
    return config


def build_request(environ: Mapping[str, str], stdin: bytes) -> Request:
    command = environ.get("CNI_COMMAND", "")
    if not command:
        raise CNIError(INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing")
    if command not in COMMANDS:
        raise CNIError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND {command!r}: expected one of {list(COMMANDS)}")
    missing = [name for name, cmds in _REQUIRED_ENV.items() if command in cmds and not environ.get(name)]
    if missing:
        raise CNIError(INVALID_ENVIRONMENT, f"required env variables {missing} missing")
    config = _decode_config(stdin)
    cniversion.require_supported(config.get("cniVersion"))
    minimum = _MIN_VERSION.get(command)
    if minimum and not cniversion.at_least(config["cniVersion"], minimum):
        raise CNIError(INCOMPATIBLE_VERSION, f"config version {config['cniVersion']} does not allow {command}"
                       f" (needs {minimum} or later)")
    if command in ("ADD", "CHECK", "DEL"):
        validate_container_id(environ["CNI_CONTAINERID"])
        validate_ifname(environ["CNI_IFNAME"])
    if not isinstance(config.get("type", ""), str) or (command != "STATUS" and "name" in config
                                                         and not isinstance(config["name"], str)):
        raise CNIError(INVALID_CONFIG, "invalid network configuration: 'name' and 'type' must be strings")
    return Request(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        path=tuple(p for p in environ.get("CNI_PATH", "").split(os.pathsep) if p),
        config=config,
        stdin=stdin,
        environ=dict(environ),
    )


def _error_version(stdin: bytes) -> str:
    try:
        v = json.loads(stdin).get("cniVersion")
    except Exception:
        return cniversion.CURRENT
    return v if v in cniversion.SUPPORTED_VERSIONS else cniversion.CURRENT


def dispatch(plugin, req: Request, handles):
    """Runs one verb of ``plugin`` (a cni_plugins.plugin.Plugin); returns the reply dict or None."""
    if req.command == "ADD":
        return plugin.add(req, plugin.config_for(req), handles).to_dict(req.cni_version)
    verb = {"DEL": plugin.delete, "CHECK": plugin.check, "STATUS": plugin.status, "GC": plugin.gc}[req.command]
    if verb is not None:
        verb(req, plugin.config_for(req), handles)
    return None


def _run_quietly(steps) -> None:
    for fn in steps:
        try:
            fn()
        except Exception:
            pass


def open_handles(req: Request, given: NetnsFds | None = None) -> Handles:
    """The request's handles: from the fds a daemon client passed, else from this process's own netns and
    CNI_NETNS opened here."""
    if given is None:
        return Handles(own_netns(), req.netns)
    return Handles(NetnsHandle(given.host, owns_fd=False), req.netns, given.container, given.container_errno,
                   owns_container_fd=False)


def handle(plugin_name: str, environ: Mapping[str, str], stdin: bytes, netns: NetnsFds | None = None,
           defer_to: list | None = None) -> tuple[int, dict | None]:
    """One invocation, without touching process state: returns (exit code, JSON reply or None).

    Work a plugin registered with ``Request.after_reply`` runs before returning, unless ``defer_to`` is
    given: then it is appended there for the caller to run once the reply is out (the handles are closed
    by the last of those steps)."""
    try:
        if environ.get("CNI_COMMAND") == "VERSION":
            return 0, _version_reply(stdin)
        req = build_request(environ, stdin)
        lean_imports.install()
        try:
            plugin = registry.get(plugin_name)
        except registry.UnknownPlugin:
            raise CNIError(INVALID_CONFIG, f"unknown plugin {plugin_name!r}") from None
        handles = open_handles(req, netns)
        steps = req.deferred
        try:
            reply = dispatch(plugin, req, handles)
        except BaseException:
            # The verb failed after registering its last step: that step still runs (a failed IPAM DEL
            # must not leave the container's link behind), and the original error is what is reported.
            steps.append(handles.close)
            if defer_to is not None:
                defer_to.extend(steps)
            else:
                _run_quietly(steps)
            raise
        steps.append(handles.close)
        if defer_to is not None:
            defer_to.extend(steps)
        else:
            for fn in steps:
                fn()
        return 0, reply
    except CNIError as err:
        return 1, err.to_dict(_error_version(stdin))
    except Exception as exc:  # a bug must still reach the runtime as CNI error JSON, not a traceback
        import traceback
        return 1, CNIError(INTERNAL, f"internal error: {exc.__class__.__name__}: {exc}",
                           traceback.format_exc(limit=8)).to_dict(_error_version(stdin))
