"""Finding the host device a config names, in the host netns (``handles.host``).

By name and by MAC over netlink. By sysfs (kernelpath, pciBusID, deviceID): the device's ``net/`` directory
lists its netdev names, as in the reference (the first one is taken). Sysfs shows the netdevs of the network
namespace it was mounted in, which need not be the plugin's: a name read there is used only when the link of
that name in the host netns has the same ifindex and MAC as sysfs says, so a same-named link of another
namespace is never moved. A kernelpath may also be a netdev's own directory (``.../net/<name>``), which
is how virtual devices (veth, macvlan) appear in sysfs.
"""

from __future__ import annotations

import glob
import os

from cni_plugins import netlink
from cni_plugins.errors import invalid_config

from . import config as hconf
from .config import HostDeviceConfig


def _unknown(conf: HostDeviceConfig, why: str):
    return invalid_config(conf.key, conf.value, why)


def _by_mac(ipr, mac: str):
    for msg in netlink.dump(ipr.get_links):
        if netlink.mac_of(msg).lower() == mac:
            return msg
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _net_dir(conf: HostDeviceConfig) -> tuple[str, list[str]]:
    """The sysfs directory holding the device's netdev entries, and their names (sorted)."""
    if conf.by == "kernelpath":
        candidates = [os.path.join(conf.value, "net")]
    elif conf.by == "pci":
        base = os.path.join(hconf.SYS_BUS_PCI, conf.value)
        candidates = [os.path.join(base, "net")] + sorted(glob.glob(os.path.join(base, "virtio*", "net")))
    else:
        candidates = [os.path.join(hconf.SYS_BUS_AUXILIARY, conf.value, "net")]
    for directory in candidates:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        if names:
            return directory, names
    if conf.by == "kernelpath" and os.path.basename(os.path.dirname(conf.value)) == "net" \
            and os.path.exists(os.path.join(conf.value, "ifindex")):
        return os.path.dirname(conf.value), [os.path.basename(conf.value)]
    raise _unknown(conf, f"no network device under {candidates[0]}")


def _by_sysfs(ipr, conf: HostDeviceConfig):
    directory, names = _net_dir(conf)
    name = names[0]
    msg = netlink.link(ipr, name)
    entry = os.path.join(directory, name)
    if msg is None:
        raise _unknown(conf, f"its network device {name!r} ({entry}) is not in the host network namespace")
    index, mac = _read(os.path.join(entry, "ifindex")), _read(os.path.join(entry, "address"))
    if index != str(msg["index"]) or (mac or "").lower() != netlink.mac_of(msg).lower():
        raise _unknown(conf, f"{entry} is not the link {name!r} of the host network namespace (sysfs shows "
                       "another network namespace's devices)")
    return msg


def find(ipr, conf: HostDeviceConfig):
    """The link message of the configured device; code 7 naming the key and value when there is none."""
    if conf.by == "name":
        msg = netlink.link(ipr, conf.value)
    elif conf.by == "mac":
        msg = _by_mac(ipr, conf.value)
    else:
        return _by_sysfs(ipr, conf)
    if msg is None:
        raise _unknown(conf, "no such network device in the host network namespace")
    return msg
