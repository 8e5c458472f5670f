"""sysctl reads and writes for the netns the calling thread is in (/proc/sys/net follows the thread's netns)."""

from __future__ import annotations


def _path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key


def read(key: str) -> str:
    with open(_path(key)) as f:
        return f.read().strip()


def write(key: str, value: str) -> None:
    """Writes only when the value differs: concurrent plugins then race on nothing."""
    path = _path(key)
    with open(path, "r+") as f:
        if f.read().strip() == str(value):
            return
        f.seek(0)
        f.write(str(value))


def iface_key(family: int, ifname: str, name: str) -> str:
    """``net/ipv4/conf/<if>/<name>`` spelled with slashes, since interface names may hold dots."""
    return f"net/ipv{family}/conf/{ifname}/{name}"
