"""Moving a host device into the container netns and back, and what ADD saved to put it back as it was.

A move is one RTM_NEWLINK request carrying the target netns, the new name and the alias. The kernel moves
the link under its current name when that is free in the target (else under the new name directly) and
renames it there, so the host never sees the link renamed. When the rename fails after the move (the name
was taken meanwhile), the link is found in the target under its old name and moved back.

The kernel drops a link's addresses when it leaves a netns (the MTU and MAC stay): they are saved before a
move and added again after it, in the container on ADD, on the host on DEL.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field

from cni_plugins import netlink
from cni_plugins.errors import CNIError, INTERNAL, IO_FAILURE
from cni_plugins.files import atomic_write

IFF_UP = 0x1


@dataclass
class Saved:
    """The host device as ADD found it."""
    name: str
    mac: str = ""
    mtu: int | None = None
    up: bool = False
    alias: str = ""
    addresses: list[str] = field(default_factory=list)
    network: str = ""

    @classmethod
    def of(cls, ipr, msg, network: str) -> "Saved":
        return cls(name=msg.get_attr("IFLA_IFNAME"), mac=netlink.mac_of(msg), mtu=msg.get_attr("IFLA_MTU"),
                   up=bool(msg["flags"] & IFF_UP), alias=msg.get_attr("IFLA_IFALIAS") or "",
                   addresses=[str(a) for a in netlink.addresses(ipr, msg["index"])], network=network)


# -- the saved state, one file per attachment ------------------------------------------------------------
def state_path(data_dir: str, container_id: str, ifname: str) -> str:
    return os.path.join(data_dir, f"{container_id}_{ifname}.json")


def save(path: str, saved: Saved) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, json.dumps(asdict(saved)))
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"cannot save the host device's state in dataDir {os.path.dirname(path)!r}: "
                       f"{exc.strerror}") from None


def _read(path: str) -> Saved | None:
    try:
        with open(path) as f:
            raw = json.load(f)
        return Saved(**{k: v for k, v in raw.items() if k in Saved.__dataclass_fields__})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def load(data_dir: str, container_id: str, ifname: str) -> Saved | None:
    return _read(state_path(data_dir, container_id, ifname))


def forget(path: str) -> None:
    """Removes a state file (``state_path``) if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:   # too long a name: no such file can exist
            raise CNIError(IO_FAILURE, f"cannot remove the saved state {path!r}: {exc.strerror}") from None


def saved_attachments(data_dir: str) -> list[tuple[str, Saved]]:
    """(file name, state) of every state file in ``data_dir`` (container IDs and interface names may hold
    '_', so an attachment is matched by its file name, never by splitting it)."""
    out = []
    try:
        names = os.listdir(data_dir)
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        saved = _read(os.path.join(data_dir, name))
        if saved is not None:
            out.append((name, saved))
    return out


# -- moves --------------------------------------------------------------------------------------------------
def _add_addresses(ipr, index: int, addresses: list[str]) -> None:
    for address in addresses:
        netlink.add_address(ipr, index, ipaddress.ip_interface(address), nodad=True)


def _recover(dst, old_name: str, mac: str, src_fd: int) -> None:
    """After a failed move request: a link that reached ``dst`` under ``old_name`` (the rename there failed)
    goes back to where it came from."""
    msg = netlink.link(dst.ipr, old_name)
    if msg is not None and netlink.mac_of(msg) == mac:
        dst.ipr.link("set", index=msg["index"], net_ns_fd=src_fd, ifname=old_name)


def _move(src, msg, dst, new_name: str, alias: str, what: str) -> int:
    """Moves link ``msg`` from ``src`` into ``dst`` (NetnsHandles) as ``new_name`` with alias ``alias``
    ("" clears it); returns its index there."""
    old_name = msg.get_attr("IFLA_IFNAME")
    try:
        src.ipr.link("set", index=msg["index"], net_ns_fd=dst.fd, ifname=new_name, ifalias=alias)
    except Exception as exc:
        try:
            _recover(dst, old_name, netlink.mac_of(msg), src.fd)
        except Exception:
            pass
        raise CNIError(INTERNAL, f"failed to move {old_name!r} {what} as {new_name!r}: {exc}") from None
    index = netlink.link_index(dst.ipr, new_name)
    if index is None:
        raise CNIError(INTERNAL, f"{new_name!r} not found {what} after moving it there")
    return index


def move_in(host, ns, msg, ifname: str, addresses: list[str]) -> int:
    """The host device into the container as ``ifname``, remembering its name as its alias, with the
    ``addresses`` it had on the host, up; returns its index in the container."""
    index = _move(host, msg, ns, ifname, msg.get_attr("IFLA_IFNAME"), "into the container")
    _add_addresses(ns.ipr, index, addresses)
    netlink.set_up(ns.ipr, index)
    return index


def original_name(msg, saved: Saved | None) -> str | None:
    """The host name of a container link host-device moved there: its alias (as the reference keeps it),
    else what ADD saved; None for a link host-device did not move."""
    return msg.get_attr("IFLA_IFALIAS") or (saved.name if saved is not None else None)


def move_out(ns, host, ifname: str, saved: Saved | None, restore_up: bool = False) -> bool:
    """The container's ``ifname`` back to the host under its original name, with the alias, MTU and
    addresses ADD saved. It stays down (the reference's DEL) unless ``restore_up`` (a failed ADD puts the
    device back as it found it). False when there is no such link of ours in the container."""
    msg = netlink.link(ns.ipr, ifname)
    if msg is None:
        return False
    name = original_name(msg, saved)
    if not name:
        return False
    if saved is not None and saved.name != name:
        saved = None  # the state file is not about this link
    index = _move(ns, msg, host, name, saved.alias if saved else "", "back to the host")
    if saved is not None:
        _restore(host.ipr, index, msg, saved, restore_up)
    return True


def _restore(ipr, index: int, msg, saved: Saved, up: bool) -> None:
    """MTU and addresses as ADD found them on the host (and up, when ``up`` and it was)."""
    if saved.mtu and saved.mtu != msg.get_attr("IFLA_MTU"):
        try:
            ipr.link("set", index=index, mtu=saved.mtu)
        except Exception as exc:
            if netlink.netlink_error_code(exc) != errno.EINVAL:
                raise
    _add_addresses(ipr, index, saved.addresses)
    if up and saved.up:
        netlink.set_up(ipr, index)


def reclaim(host, saved: Saved) -> bool:
    """After the container netns is gone: the kernel destroys a virtual device with it but returns a physical
    one to the initial netns, under its container name (or devN), alias kept. When that is this host's
    netns, the device gets its name, alias, MTU and addresses back. False when there is no such link."""
    if netlink.link(host.ipr, saved.name) is not None:
        return False
    for msg in netlink.dump(host.ipr.get_links):
        if msg.get_attr("IFLA_IFALIAS") == saved.name:
            old_name = msg.get_attr("IFLA_IFNAME")
            try:
                host.ipr.link("set", index=msg["index"], ifname=saved.name, ifalias=saved.alias)
            except Exception as exc:
                raise CNIError(INTERNAL, f"failed to rename {old_name!r}, returned to the host by the kernel, "
                               f"back to {saved.name!r}: {exc}") from None
            _restore(host.ipr, msg["index"], msg, saved, False)
            return True
    return False
