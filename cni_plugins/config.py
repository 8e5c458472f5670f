"""Typed readers for plugin options: an absent or null key gives the default, a value of the wrong type
fails with code 7 naming the key (``prefix`` + key, e.g. ``args.cni.mtu``) and the value."""

from __future__ import annotations

import os
import re

from .errors import invalid_config

_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
IFNAME_FORBIDDEN = re.compile(r"[/:\s]")
IFNAMSIZ = 16


def _option(conf: dict, key: str, default, prefix: str, valid, why: str):
    value = conf.get(key)
    if value is None:
        return default
    if not valid(value):
        raise invalid_config(prefix + key, value, why)
    return value


def option_bool(conf: dict, key: str, default=False, prefix: str = ""):
    return _option(conf, key, default, prefix, lambda v: isinstance(v, bool), "expected true or false")


def option_str(conf: dict, key: str, default="", prefix: str = ""):
    return _option(conf, key, default, prefix, lambda v: isinstance(v, str), "expected a string")


def option_path(conf: dict, key: str, default="", prefix: str = "", absolute: bool = False):
    """A file system path: a string without NUL bytes (the kernel's end of a path), absolute if asked."""
    def valid(v) -> bool:
        return isinstance(v, str) and "\0" not in v and (not absolute or not v or v.startswith("/"))

    return _option(conf, key, default, prefix, valid, "expected an absolute path" if absolute else "expected a path")


def option_int(conf: dict, key: str, default=0, minimum: int | None = None, maximum: int | None = None,
               prefix: str = ""):
    if minimum is not None and maximum is not None:
        why = f"expected an integer from {minimum} to {maximum}"
    elif minimum is not None:
        why = f"expected an integer >= {minimum}"
    elif maximum is not None:
        why = f"expected an integer <= {maximum}"
    else:
        why = "expected an integer"

    def valid(v) -> bool:
        # bool is an int subclass in Python, never a number in JSON
        return (isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)
                and (maximum is None or v <= maximum))

    return _option(conf, key, default, prefix, valid, why)


def option_abs_path(conf: dict, key: str, default: str, prefix: str = "") -> str:
    """A directory or file option that must be an absolute path (an empty string gives the default)."""
    if conf.get(key) == "":
        return default
    return _option(conf, key, default, prefix, lambda v: isinstance(v, str) and os.path.isabs(v),
                   "must be an absolute path")


def validate_link_name(key: str, name) -> str:
    if not isinstance(name, str) or not name:
        raise invalid_config(key, name, "expected a non-empty interface name")
    if len(name) >= IFNAMSIZ:
        raise invalid_config(key, name, f"longer than {IFNAMSIZ - 1} characters")
    if name in (".", "..") or IFNAME_FORBIDDEN.search(name):
        raise invalid_config(key, name, "not a valid interface name")
    return name


def normalize_mac(key: str, value) -> str:
    if not isinstance(value, str) or not _MAC.match(value):
        raise invalid_config(key, value, "expected a MAC address like 02:42:ac:11:00:02")
    mac = value.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise invalid_config(key, value, "a multicast MAC address cannot be an interface address")
    if mac == "00:00:00:00:00:00":
        raise invalid_config(key, value, "the all-zero MAC address cannot be an interface address")
    return mac


def requested_mac(req, config_key: bool = False, args_cni: bool = False) -> str | None:
    """The container MAC a request asks for; later sources win, as in the reference plugins: the config's
    ``mac`` (where the plugin has one), CNI_ARGS ``MAC``, ``args.cni.mac`` (where the plugin reads it),
    ``runtimeConfig.mac``."""
    mac = None
    if config_key and req.config.get("mac") not in (None, ""):
        mac = normalize_mac("mac", req.config["mac"])
    env_mac = req.cni_arg("MAC", known=("MAC",))
    if env_mac:
        mac = normalize_mac("CNI_ARGS MAC", env_mac)
    cni_args = req.config_args.get("cni") if args_cni else None
    if isinstance(cni_args, dict) and cni_args.get("mac"):
        mac = normalize_mac("args.cni.mac", cni_args["mac"])
    if req.runtime_config.get("mac"):
        mac = normalize_mac("runtimeConfig.mac", req.runtime_config["mac"])
    return mac

def string_value(value, key: str) -> str:
    """A value that must be a string (code 7 naming the key otherwise)."""
    if not isinstance(value, str):
        raise invalid_config(key, value, "expected a string")
    return value


def list_value(value, key: str) -> list:
    """A JSON array; absent or null reads as empty (code 7 naming the key otherwise)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_config(key, value, "expected a list")
    return value


def parse_dns(value, key: str = "dns"):
    """A config's DNS settings ({nameservers, domain, search, options}); code 7 naming the key when malformed."""
    from .results import DNS

    if value in (None, {}):
        return DNS()
    if not isinstance(value, dict):
        raise invalid_config(key, value, "expected an object with nameservers/domain/search/options")

    def strings(name):
        items = list_value(value.get(name), f"{key}.{name}")
        for item in items:
            string_value(item, f"{key}.{name}[]")
        return list(items)

    domain = "" if value.get("domain") is None else value.get("domain")
    return DNS(strings("nameservers"), string_value(domain, f"{key}.domain"), strings("search"), strings("options"))


_ABSENT = object()


class GoKeys(dict):
    """A JSON object read the way the reference plugins' Go decoding reads it: a key names a field exactly
    or, failing that, in any case (``HostPort`` for ``hostPort``, as containerd's CRI plugin sends port
    mappings). Every object of a request's config is one of these (skel decodes with it as object_hook),
    so config, runtimeConfig, args and prevResult all match keys this way in this one place."""

    __slots__ = ()

    def _other_case(self, key):
        if isinstance(key, str):
            folded = key.lower()
            # An ASCII key can only match a key of its own length (no ASCII letter folds to two
            # characters); the length test spares lowering every key of the object per absent key.
            size = len(key) if key.isascii() else -1
            for k in self:
                if isinstance(k, str) and (size < 0 or len(k) == size) and k.lower() == folded:
                    return k
        return None

    def __getitem__(self, key):
        value = dict.get(self, key, _ABSENT)
        if value is not _ABSENT:
            return value
        other = self._other_case(key)
        if other is None:
            raise KeyError(key)
        return dict.__getitem__(self, other)

    def get(self, key, default=None):
        value = dict.get(self, key, _ABSENT)
        if value is not _ABSENT:
            return value
        other = self._other_case(key)
        return default if other is None else dict.__getitem__(self, other)

    def __contains__(self, key):
        return dict.__contains__(self, key) or self._other_case(key) is not None
