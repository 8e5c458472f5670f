"""What the daemon writes down about each lease, so a restarted daemon takes the leases over: renews them at
their times and releases them on DEL (the reference's daemon forgets them).

One JSON file per lease in ``<socket directory>/dhcp-leases/`` (so under /run: gone with a reboot, like
the namespaces): the plugin's request (client ID, network, interface, CNI_NETNS, options), the network
namespace's identity (device and inode of its nsfs file), the last DHCPACK and the server's MAC, and the
lease's timers as wall-clock times. A lease is taken over only when CNI_NETNS still opens (with the
``-hostprefix``) to the same namespace and the interface is still there.
"""

from __future__ import annotations

import hashlib
import json
import os

from cni_plugins.files import atomic_write

DIRECTORY = "dhcp-leases"


def directory_for(socket_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(socket_path)), DIRECTORY)


def _file(directory: str, client_id: str) -> str:
    return os.path.join(directory, hashlib.sha256(client_id.encode()).hexdigest()[:32] + ".json")


def netns_identity(fd: int) -> list[int]:
    st = os.fstat(fd)
    return [st.st_dev, st.st_ino]


def save(directory: str, client_id: str, record: dict) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    atomic_write(_file(directory, client_id), json.dumps(record, sort_keys=True), mode=0o600)


def remove(directory: str, client_id: str) -> None:
    try:
        os.unlink(_file(directory, client_id))
    except FileNotFoundError:
        pass


def load_all(directory: str) -> list[tuple[str, dict | None]]:
    """(path, record) for every file; record None when it cannot be read (the caller removes it)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                record = json.load(f)
            if not isinstance(record, dict) or not isinstance(record.get("args"), dict):
                record = None
        except (OSError, ValueError):
            record = None
        out.append((path, record))
    return out
