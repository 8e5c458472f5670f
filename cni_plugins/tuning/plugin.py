"""tuning: sysctls in the container netns and link attributes (mac, mtu, promisc, allmulti, txQLen) of
CNI_IFNAME, chained after the plugin that made the interface.

The values found before ADD changed them are saved in ``<dataDir>/<containerID>_<ifname>.json`` (the
reference's file) and put back on DEL, so an interface handed in by host-device or a reused netns comes
back as it was. A failed ADD puts back what it already changed.
"""

from __future__ import annotations

import errno
import json
import os

from cni_plugins import netlink
from cni_plugins.files import atomic_write
from cni_plugins.errors import CNIError, INTERNAL, INVALID_CONFIG, IO_FAILURE
from cni_plugins.handles import Handles, NetnsHandle
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Result

from . import config as tconf
from .config import TuningConfig

IFF_PROMISC = 0x100
IFF_ALLMULTI = 0x200


def _backup_path(data_dir: str, req: Request) -> str:
    return os.path.join(data_dir, f"{req.container_id}_{req.ifname}.json")


# -- link attributes ----------------------------------------------------------------------------------

def _link(ns: NetnsHandle, ifname: str):
    msg = netlink.link(ns.ipr, ifname)
    if msg is None:
        raise CNIError(INTERNAL, f"interface {ifname!r} not found in the container network namespace")
    return msg


def _current(msg) -> dict:
    return {"mac": netlink.mac_of(msg), "mtu": msg.get_attr("IFLA_MTU"),
            "promisc": bool(msg["flags"] & IFF_PROMISC), "allmulti": bool(msg["flags"] & IFF_ALLMULTI),
            "txQLen": msg.get_attr("IFLA_TXQLEN")}


def _wanted(cfg: TuningConfig) -> dict:
    """The link attributes this config sets (promisc only when asked for, as in the reference)."""
    out: dict = {}
    if cfg.mac:
        out["mac"] = cfg.mac
    if cfg.mtu:
        out["mtu"] = cfg.mtu
    if cfg.promisc:
        out["promisc"] = True
    if cfg.allmulti is not None:
        out["allmulti"] = cfg.allmulti
    if cfg.tx_qlen is not None:
        out["txQLen"] = cfg.tx_qlen
    return out


def _apply_link(ns: NetnsHandle, ifname: str, attrs: dict) -> None:
    index = _link(ns, ifname)["index"]
    what = ", ".join(f"{k}={v}" for k, v in attrs.items())
    try:
        # MTU before MAC, as the reference restores them; each attribute is its own request so an error
        # names the one the kernel refused.
        for key in ("mtu", "mac", "txQLen"):
            if key in attrs:
                name = {"mtu": "mtu", "mac": "address", "txQLen": "txqlen"}[key]
                ns.ipr.link("set", index=index, **{name: attrs[key]})
        for key, flag in (("promisc", IFF_PROMISC), ("allmulti", IFF_ALLMULTI)):
            if key in attrs:
                ns.ipr.link("set", index=index, flags=flag if attrs[key] else 0, change=flag)
    except CNIError:
        raise
    except Exception as exc:
        raise CNIError(INTERNAL, f"failed to set {what} on {ifname!r}: {exc}") from None


# -- sysctls ------------------------------------------------------------------------------------------

def _write_sysctls(ns: NetnsHandle, values: dict[str, str]) -> None:
    """Writes path -> value inside the container netns."""
    for path, value in values.items():
        try:
            with ns.open_proc(path, "w") as f:
                f.write(value)
        except OSError as exc:
            code = IO_FAILURE if exc.errno not in (errno.ENOENT, errno.EINVAL) else INVALID_CONFIG
            raise CNIError(code, f"cannot set sysctl {path[len('/proc/sys/'):]} to {value!r}: "
                           f"{exc.strerror}") from None


def _read_sysctls(ns: NetnsHandle, paths) -> dict[str, str]:
    out = {}
    for path in paths:
        try:
            with ns.open_proc(path) as f:
                out[path] = f.read().strip()
        except FileNotFoundError:
            raise CNIError(INVALID_CONFIG, f"invalid sysctl {path[len('/proc/sys/'):]}: no such key in "
                           "the container network namespace") from None
    return out


# -- saved originals ----------------------------------------------------------------------------------

def _save(path: str, saved: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        atomic_write(path, json.dumps(saved))
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"cannot save the originals to {path!r}: {exc.strerror}") from None


def _load(path: str) -> dict | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None   # a container id too long for a file name: nothing can have been saved under it
        raise CNIError(IO_FAILURE, f"cannot read the saved originals {path!r}: {exc.strerror}") from None
    except ValueError:
        return {}  # a torn file restores nothing but must not make DEL fail forever
    return data if isinstance(data, dict) else {}


def _restore(ns: NetnsHandle, ifname: str, saved: dict) -> None:
    if saved.get("sysctl"):
        _write_sysctls(ns, saved["sysctl"])
    link_attrs = saved.get("link") or {}
    if link_attrs and netlink.link(ns.ipr, ifname) is not None:
        _apply_link(ns, ifname, link_attrs)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- verbs --------------------------------------------------------------------------------------------

def _load_config(req: Request) -> TuningConfig:
    cfg = tconf.parse(req)
    if req.command == "ADD":
        tconf.check_allowed(cfg.sysctl, tconf.load_allowlist(req.environ))
    return cfg


def add(req: Request, cfg: TuningConfig, handles: Handles) -> Result:
    prev = req.require_prev_result("tuning")
    sysctls = {tconf.sysctl_path(k, req.ifname): v for k, v in cfg.sysctl.items()}
    wanted = _wanted(cfg)
    backup = _backup_path(cfg.data_dir, req)
    ns = handles.container()
    current = _current(_link(ns, req.ifname)) if wanted else {}
    saved = {"sysctl": _read_sysctls(ns, sysctls), "link": {k: current[k] for k in wanted}}
    # A repeated ADD must not take the values it set last time for originals: earlier saves win.
    earlier = _load(backup)
    merged = {part: {**saved[part], **((earlier or {}).get(part) or {})} for part in ("sysctl", "link")}
    if merged["sysctl"] or merged["link"]:
        _save(backup, merged)
    try:
        _write_sysctls(ns, sysctls)
        if wanted:
            _apply_link(ns, req.ifname, wanted)
    except BaseException:
        try:
            _restore(ns, req.ifname, saved)
        finally:
            if earlier:
                _save(backup, earlier)
            else:
                _remove(backup)
        raise
    if cfg.mac:
        for iface in prev.interfaces:
            if iface.name == req.ifname:
                iface.mac = cfg.mac
    return prev


def delete(req: Request, data_dir: str, handles: Handles) -> None:
    backup = _backup_path(data_dir, req)
    saved = _load(backup)
    if saved is None:
        return
    ns = handles.container_if_present()
    if ns is not None:
        _restore(ns, req.ifname, saved)
    _remove(backup)


def check(req: Request, cfg: TuningConfig, handles: Handles) -> None:
    req.require_prev_result("tuning")
    sysctls = {tconf.sysctl_path(k, req.ifname): v for k, v in cfg.sysctl.items()}
    ns = handles.container()
    for path, value in _read_sysctls(ns, sysctls).items():
        if value != sysctls[path]:
            raise CNIError(INTERNAL, f"sysctl {path[len('/proc/sys/'):]} is {value!r}, configured {sysctls[path]!r}")
    current = _current(_link(ns, req.ifname))
    wanted = _wanted(cfg)
    wanted.setdefault("promisc", False)  # the reference also checks that promisc is off when not asked for
    for key, value in wanted.items():
        have = current[key].lower() if key == "mac" else current[key]
        if have != value:
            raise CNIError(INTERNAL, f"{key} of {req.ifname!r} is {current[key]!r}, configured {value!r}")


def status(req: Request, cfg: TuningConfig, handles: Handles) -> None:
    """The config was valid (the skeleton loaded it); tuning has nothing else to report."""


PLUGIN = Plugin(name="tuning", load_config=_load_config, add=add, delete=delete, check=check, status=status,
                # Only the data dir matters to DEL: it must clean up even when the rest of the config went bad.
                load_teardown_config=lambda req: tconf.parse_data_dir(req.config))
