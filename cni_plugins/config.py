"""Typed readers for plugin options: an absent or null key gives the default, a value of the wrong type
fails with code 7 naming the key (``prefix`` + key, e.g. ``args.cni.mtu``) and the value."""

from __future__ import annotations

from .errors import invalid_config


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


class GoKeys(dict):
    """A JSON object read the way the reference plugins' Go decoding reads it: a key names a field exactly
    or, failing that, in any case (``HostPort`` for ``hostPort``, as containerd's CRI plugin sends port
    mappings). Every object of a request's config is one of these (skel decodes with it as object_hook),
    so config, runtimeConfig, args and prevResult all match keys this way in this one place."""

    __slots__ = ()

    def _other_case(self, key):
        if isinstance(key, str):
            folded = key.lower()
            for k in self:
                if isinstance(k, str) and k.lower() == folded:
                    return k
        return None

    def __getitem__(self, key):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        other = self._other_case(key)
        if other is None:
            raise KeyError(key)
        return dict.__getitem__(self, other)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key):
        return dict.__contains__(self, key) or self._other_case(key) is not None
