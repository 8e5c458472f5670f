"""Every plugin pynet ships, by the name runtimes call it (the executable's name, a conflist's ``type``).

Each entry is the module that defines the plugin's ``PLUGIN`` (cni_plugins/plugin.py). Modules are
imported on first use: VERSION and the thin client never load plugin code, and a standalone host-local
never loads netlink. Whether an executable on CNI_PATH is one of ours is decided here too, by where it
lives, never by reading it.
"""

from __future__ import annotations

import os
import sys

MODULES = {
    "bridge": "cni_plugins.bridge.plugin",
    "host-local": "cni_plugins.ipam.host_local",
    "static": "cni_plugins.ipam.static",
    "loopback": "cni_plugins.loopback.plugin",
    "portmap": "cni_plugins.portmap.plugin",
    "firewall": "cni_plugins.firewall.plugin",
    "tuning": "cni_plugins.tuning.plugin",
    "macvlan": "cni_plugins.macvlan.plugin",
    "ipvlan": "cni_plugins.ipvlan.plugin",
    "vlan": "cni_plugins.vlan.plugin",
    "dummy": "cni_plugins.dummy.plugin",
    "vrf": "cni_plugins.vrf.plugin",
    "host-device": "cni_plugins.host_device.plugin",
    "tap": "cni_plugins.tap.plugin",
    "bandwidth": "cni_plugins.bandwidth.plugin",
    "sbr": "cni_plugins.sbr.plugin",
    "ptp": "cni_plugins.ptp.plugin",
    "dnsname": "cni_plugins.dnsname.plugin",
    "dhcp": "cni_plugins.dhcp.plugin",
}
NAMES = tuple(MODULES)
# Plugin scripts written by earlier versions of `pynet cni install` name the module instead (the plugin
# packages were top-level then).
_BY_MODULE = {module.removeprefix("cni_plugins."): name for name, module in MODULES.items()}
# Written next to the interpreter by `pynet cni install`: the directories holding this installation's
# plugin executables besides its own bin directory.
INSTALLED_DIRS_FILE = "pynet-cni-dirs"


class UnknownPlugin(LookupError):
    pass


def canonical(name: str) -> str:
    if name in MODULES:
        return name
    if name in _BY_MODULE:
        return _BY_MODULE[name]
    raise UnknownPlugin(name)


def get(name: str):
    """The ``Plugin`` registered as ``name``."""
    module = MODULES[canonical(name)]
    __import__(module)   # not importlib.import_module: a plugin process does not load the importlib package
    return sys.modules[module].PLUGIN


def bin_dir() -> str:
    """Where this installation's interpreter and plugin executables live (not resolved through links: the
    venv's own bin/python is what makes its site-packages visible)."""
    return os.path.dirname(os.path.abspath(sys.executable))


# (the record file's identity, its resolved dirs): a resident daemon asks ``ours`` for every plugin step,
# and reading and resolving the record each time was ~0.1 ms of every in-process chain step.
_installed: tuple = (None, frozenset())


def installed_dirs() -> set[str]:
    global _installed
    record = os.path.join(bin_dir(), INSTALLED_DIRS_FILE)
    try:
        st = os.stat(record)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        key = ()
    if key != _installed[0]:
        dirs = {bin_dir()}
        try:
            with open(record) as f:
                dirs.update(line.strip() for line in f if line.strip())
        except OSError:
            pass
        _installed = (key, frozenset(os.path.realpath(d) for d in dirs))
    return set(_installed[1])


def ours(exe: str) -> str | None:
    """The plugin name when ``exe`` is one of this installation's plugin executables, else None. Those can
    be served in-process with the same code; a plugin of another installation (another version) cannot."""
    name = os.path.basename(exe)
    if name not in MODULES:
        return None
    return name if os.path.realpath(os.path.dirname(exe)) in installed_dirs() else None


def record_installed_dir(directory: str) -> None:
    """Called by `pynet cni install DIR` so that ``ours`` recognises the executables it wrote there."""
    from .files import atomic_write

    dirs = sorted(d for d in installed_dirs() | {os.path.realpath(directory)}
                  if d != os.path.realpath(bin_dir()) and os.path.isdir(d))
    atomic_write(os.path.join(bin_dir(), INSTALLED_DIRS_FILE), "".join(d + "\n" for d in dirs))
