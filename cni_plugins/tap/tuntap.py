"""Creating a persistent tap device inside a network namespace, over /dev/net/tun.

A tun/tap device is created by TUNSETIFF on an open /dev/net/tun, in the network namespace that file was
opened in (the kernel keeps the opener's netns with the file), so the file is opened through the
container's handle and the device is born there. rtnetlink cannot create tun devices, and pyroute2's
``kind="tuntap"`` opens /dev/net/tun in the calling thread's namespace, whatever socket it was asked on.
TUNSETPERSIST keeps the device when the file is closed, as `ip tuntap add` does; a failure before that
leaves nothing (closing the file destroys the device).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import struct

from cni_plugins import netlink
from cni_plugins.errors import CNIError, INTERNAL

TUN_DEVICE = "/dev/net/tun"
IFF_TAP = 0x0002
IFF_MULTI_QUEUE = 0x0100
IFF_NO_PI = 0x1000

# _IOW('T', nr, int): the direction bits sit elsewhere on powerpc and mips.
_IOC_WRITE = 0x80000000 if platform.machine().startswith(("ppc", "mips")) else 0x40000000


def _iow(nr: int) -> int:
    return _IOC_WRITE | (4 << 16) | (ord("T") << 8) | nr


TUNSETIFF, TUNSETPERSIST, TUNSETOWNER, TUNSETGROUP = _iow(202), _iow(203), _iow(204), _iow(206)


def create_tap(ns, name: str, multi_queue: bool = False, owner: int | None = None,
               group: int | None = None) -> int:
    """A persistent tap named ``name`` in the netns of ``ns`` (a NetnsHandle); its ifindex there."""
    flags = IFF_TAP | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
    fd = ns.make(os.open, TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    step = "TUNSETIFF"
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        # ioctl's integer argument is a C int; the kernel reads the low 32 bits as the uid_t/gid_t
        if owner is not None:
            step = f"owner {owner} (TUNSETOWNER)"
            fcntl.ioctl(fd, TUNSETOWNER, ctypes.c_int32(owner).value)
        if group is not None:
            step = f"group {group} (TUNSETGROUP)"
            fcntl.ioctl(fd, TUNSETGROUP, ctypes.c_int32(group).value)
        step = "TUNSETPERSIST"
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except OSError as exc:
        raise CNIError(INTERNAL, f"failed to create tap {name!r}: {step}: {exc.strerror}") from None
    finally:
        os.close(fd)
    index = netlink.link_index(ns.ipr, name)
    if index is None:
        raise CNIError(INTERNAL, f"tap {name!r} not found after it was created")
    return index
