"""host-device's configuration (the reference's plugins/main/host-device NetConf), validated once.

The device is named exactly one way: ``device`` (a link name in the host netns), ``hwaddr`` (its MAC),
``kernelpath`` (its sysfs device, /sys/devices/...), ``pciBusID`` (its PCI address) or the ``deviceID``
capability (``runtimeConfig.deviceID``: a PCI or auxiliary-bus device id, which replaces ``pciBusID`` as in
the reference). Naming it two ways, or none, is code 7 naming the keys. A PCI device bound to a userspace
driver (vfio-pci, uio_pci_generic, igb_uio) is a DPDK device: it has no netdev, nothing is moved.

``dataDir`` (pynet's, default /var/lib/cni/host-device) keeps what ADD found on the host (name, addresses,
MTU, alias), so DEL can put it back; the original name is also kept on the link as its alias, as the
reference does, so DEL finds it without that file too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from cni_plugins.config import option_path, parse_dns, validate_link_name
from cni_plugins import delegate
from cni_plugins.errors import CNIError, INVALID_CONFIG, invalid_config
from cni_plugins.skel import Request
from cni_plugins.results import DNS

DEFAULT_DATA_DIR = "/var/lib/cni/host-device"
# Module attributes so unit tests can point them at a fake sysfs tree.
SYS_BUS_PCI = "/sys/bus/pci/devices"
SYS_BUS_AUXILIARY = "/sys/bus/auxiliary/devices"
SYS_DEVICES = "/sys/devices/"
USERSPACE_DRIVERS = ("vfio-pci", "uio_pci_generic", "igb_uio")

KEYS = ("device", "hwaddr", "kernelpath", "pciBusID")
DEVICE_ID = "runtimeConfig.deviceID"
_MAC = re.compile(r"^[0-9a-fA-F]{2}(?:([:-])[0-9a-fA-F]{2})(?:\1[0-9a-fA-F]{2})*$")
_PCI = re.compile(r"^(?:[0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_BUS_ID = re.compile(r"^[A-Za-z0-9_.:\-]+$")


@dataclass(frozen=True)
class HostDeviceConfig:
    """Which host device moves into the container, and how it was named."""
    key: str = ""          # which key named the device ("device", ..., "runtimeConfig.deviceID")
    value: str = ""        # as given (normalized: a lower-case MAC, a PCI address with its domain)
    by: str = ""           # "name", "mac", "kernelpath", "pci", "aux"
    dpdk: bool = False
    ipam: str | None = None
    dns: DNS = field(default_factory=DNS)
    data_dir: str = DEFAULT_DATA_DIR


def _mac(value: str) -> str:
    # net.ParseMAC's forms: 6, 8 or 20 octets (EUI-48, EUI-64, IPoIB), ':' or '-' separated
    if not _MAC.match(value) or len(value.replace("-", ":").split(":")) not in (6, 8, 20):
        raise invalid_config("hwaddr", value, "expected a MAC address like 02:42:ac:11:00:02")
    return value.lower().replace("-", ":")


def _kernelpath(value: str) -> str:
    if not value.startswith(SYS_DEVICES) or os.path.normpath(value) != value.rstrip("/") or "/../" in value + "/":
        raise invalid_config("kernelpath", value, f"must be an absolute path under {SYS_DEVICES} "
                             "(e.g. /sys/devices/pci0000:00/0000:00:1f.6)")
    return value.rstrip("/")


def _pci(value: str) -> str:
    if not _PCI.match(value):
        raise invalid_config("pciBusID", value, "expected a PCI address like 0000:00:1f.6")
    value = value.lower()
    return value if value.count(":") == 2 else "0000:" + value


def _device_id(value) -> tuple[str, str]:
    """runtimeConfig.deviceID: a PCI device, else an auxiliary-bus one, as the reference's handleDeviceID."""
    if not isinstance(value, str) or not _BUS_ID.match(value) or value in (".", ".."):
        raise invalid_config(DEVICE_ID, value, "expected a PCI address or an auxiliary device name")
    if os.path.exists(os.path.join(SYS_BUS_PCI, value)):
        return "pci", value
    if os.path.exists(os.path.join(SYS_BUS_AUXILIARY, value)):
        return "aux", value
    raise invalid_config(DEVICE_ID, value, f"no such device in {SYS_BUS_PCI} or {SYS_BUS_AUXILIARY}")


def is_dpdk(pci: str) -> bool:
    """A PCI device bound to a userspace driver (no netdev to move)."""
    driver = os.path.join(SYS_BUS_PCI, pci, "driver")
    try:
        return os.path.basename(os.path.realpath(driver, strict=True)) in USERSPACE_DRIVERS
    except OSError:
        return False


def data_dir(config: dict) -> str:
    """``dataDir``, validated as tuning's is (an absolute path), with host-device's default."""
    return option_path(config, "dataDir", absolute=True) or DEFAULT_DATA_DIR


def load(req: Request) -> HostDeviceConfig:
    if req.command == "STATUS":
        # STATUS carries no runtimeConfig: a config naming its device only by the deviceID capability is
        # still a good one
        return load_teardown(req)
    config = req.config
    named = []
    for key in KEYS:
        value = config.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise invalid_config(key, value, "expected a string")
        named.append((key, value))
    device_id = req.runtime_config.get("deviceID")
    if device_id not in (None, ""):
        id_bus, id_value = _device_id(device_id)
        # The capability replaces a static pciBusID (the reference's "override" of it).
        named = [(k, v) for k, v in named if k != "pciBusID"] + [(DEVICE_ID, id_value)]
    if not named:
        raise CNIError(INVALID_CONFIG, 'invalid config: name the host device with one of "device", "hwaddr", '
                       '"kernelpath" or "pciBusID" (or the deviceID capability)')
    if len(named) > 1:
        given = " and ".join(f"{k} {v!r}" for k, v in named)
        raise CNIError(INVALID_CONFIG, f"invalid {given}: name the host device one way only")
    key, value = named[0]
    if key == DEVICE_ID:
        by = id_bus
    elif key == "device":
        by, value = "name", validate_link_name("device", value)
    elif key == "hwaddr":
        by, value = "mac", _mac(value)
    elif key == "kernelpath":
        by, value = "kernelpath", _kernelpath(value)
    elif key == "pciBusID":
        by, value = "pci", _pci(value)
        if not os.path.exists(os.path.join(SYS_BUS_PCI, value)):
            raise invalid_config("pciBusID", config[key], f"no such PCI device in {SYS_BUS_PCI}")
    return HostDeviceConfig(key=key, value=value, by=by, dpdk=by == "pci" and is_dpdk(value),
                            ipam=delegate.ipam_type(req), dns=parse_dns(config.get("dns")),
                            data_dir=data_dir(config))


def load_teardown(req: Request) -> HostDeviceConfig:
    """DEL and GC need only where the saved state is and the IPAM type: the device that went into the
    container is found there by CNI_IFNAME, and a host device that has since gone from the host (or a
    deviceID no longer given) must not stop its return."""
    return HostDeviceConfig(ipam=delegate.ipam_type(req), data_dir=data_dir(req.config))
