"""The tuning plugin's configuration: config keys, ``args.cni`` overrides, runtimeConfig.mac and CNI_ARGS MAC
merged into one validated TuningConfig (later sources win, in the reference's order)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from cni_plugins.config import option_bool, option_int, option_path
from cni_plugins.errors import CNIError, INVALID_CONFIG, invalid_config
from cni_plugins.skel import Request

DEFAULT_DATA_DIR = "/run/cni/tuning"  # the reference's default: the saved originals die with the host's netns
DEFAULT_ALLOWLIST = "/etc/cni/tuning/allowlist.conf"
# Where an administrator (or a test) points the plugin at another allowlist. An environment variable, not a
# config key: the allowlist restricts what configs may ask for, so a config must not be able to replace it.
ALLOWLIST_ENV = "PYNET_TUNING_ALLOWLIST"

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass(frozen=True)
class TuningConfig:
    """The tuning plugin's validated config: sysctls, link settings, and the owner of what it changed."""
    sysctl: dict[str, str] = field(default_factory=dict)
    mac: str = ""
    mtu: int = 0
    promisc: bool = False
    allmulti: bool | None = None
    tx_qlen: int | None = None
    data_dir: str = DEFAULT_DATA_DIR

    @property
    def touches_link(self) -> bool:
        return bool(self.mac or self.mtu or self.promisc or self.allmulti is not None or self.tx_qlen is not None)


def _sysctls(value, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_config(where, value, "must be an object of sysctl name -> value")
    out = {}
    for key, val in value.items():
        if not isinstance(val, (str, int)) or isinstance(val, bool):
            raise invalid_config(f"{where}[{key!r}]", val, "sysctl values must be strings")
        out[key] = str(val)
    return out


def _mac(value, key: str) -> str:
    if not isinstance(value, str) or not _MAC.match(value):
        raise invalid_config(key, value, "must be a MAC address like 0a:58:0a:f4:00:02")
    if int(value[:2], 16) & 1:
        raise invalid_config(key, value, "is a multicast address, not usable on an interface")
    return value.lower()


def parse_data_dir(config: dict) -> str:
    return option_path(config, "dataDir", absolute=True) or DEFAULT_DATA_DIR


def parse(req: Request) -> TuningConfig:
    c = req.config
    sysctl = _sysctls(c.get("sysctl"), "sysctl")
    mac = _mac(c["mac"], "mac") if c.get("mac") else ""
    mtu = option_int(c, "mtu", minimum=68) if c.get("mtu") else 0  # 0 (or false) leaves the MTU alone
    promisc = option_bool(c, "promisc", False)
    allmulti = option_bool(c, "allmulti", None)
    tx_qlen = option_int(c, "txQLen", None, minimum=0)
    data_dir = parse_data_dir(c)

    env_mac = req.cni_arg("MAC")
    if env_mac:
        mac = _mac(env_mac, "CNI_ARGS MAC")
    if req.runtime_config.get("mac"):
        mac = _mac(req.runtime_config["mac"], "runtimeConfig.mac")
    cni_args = req.config_args.get("cni")
    if cni_args is not None:
        if not isinstance(cni_args, dict):
            raise invalid_config("args.cni", cni_args, "must be an object")
        sysctl.update(_sysctls(cni_args.get("sysctl"), "args.cni.sysctl"))
        if cni_args.get("mac") is not None:
            mac = _mac(cni_args["mac"], "args.cni.mac")
        promisc = option_bool(cni_args, "promisc", promisc, prefix="args.cni.")
        mtu = option_int(cni_args, "mtu", mtu, minimum=68, prefix="args.cni.")
        allmulti = option_bool(cni_args, "allmulti", allmulti, prefix="args.cni.")
        tx_qlen = option_int(cni_args, "txQLen", tx_qlen, minimum=0, prefix="args.cni.")
    return TuningConfig(sysctl, mac, mtu, promisc, allmulti, tx_qlen, data_dir)


def sysctl_path(key: str, ifname: str) -> str:
    """The /proc/sys file of a sysctl key, refusing anything outside /proc/sys/net.

    Keys use dots (``net.ipv4.conf.IFNAME.forwarding``) or slashes (needed when an interface name holds a
    dot); ``IFNAME`` stands for CNI_IFNAME, as in the reference.
    """
    path = key if "/" in key else key.replace(".", "/")
    path = path.replace("IFNAME", ifname, 1)
    full = os.path.normpath(os.path.join("/proc/sys", path.lstrip("/")))
    if not full.startswith("/proc/sys/net/"):
        raise invalid_config("sysctl", key, "only net.* sysctls can be set in a container network namespace")
    return full


def load_allowlist(environ) -> list[str] | None:
    """The allowlist's regexes, or None when there is no allowlist file (then every net.* sysctl is allowed)."""
    path = environ.get(ALLOWLIST_ENV) or DEFAULT_ALLOWLIST
    try:
        with open(path) as f:
            lines = [line.strip() for line in f]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CNIError(INVALID_CONFIG, f"cannot read sysctl allowlist {path}: {exc.strerror}") from None
    return [line for line in lines if line and not line.startswith("#")]


def check_allowed(sysctl: dict[str, str], allowlist: list[str] | None) -> None:
    if allowlist is None:
        return
    for key in sysctl:
        for pattern in allowlist:
            try:
                if re.search(pattern, key):
                    break
            except re.error as exc:
                raise CNIError(INVALID_CONFIG, f"invalid regex {pattern!r} in sysctl allowlist: {exc}") from None
        else:
            raise invalid_config("sysctl", key, f"is not allowed; the allowlist permits only {allowlist}")
