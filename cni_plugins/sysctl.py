"""sysctl reads and writes. With a namespace handle the file is opened inside that namespace (an open
/proc/sys/net file keeps referring to the namespace it was opened in); without one, in the calling
thread's namespace (test fixtures that have entered a namespace already)."""

from __future__ import annotations


def path(key: str) -> str:
    return "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))


def _open(key: str, mode: str, netns):
    return open(path(key), mode) if netns is None else netns.open_proc(path(key), mode)


def read(key: str, netns=None) -> str:
    with _open(key, "r", netns) as f:
        return f.read().strip()


def write(key: str, value, netns=None) -> None:
    """Writes only when the value differs: concurrent plugins then race on nothing."""
    with _open(key, "r+", netns) as f:
        if f.read().strip() == str(value):
            return
        f.seek(0)
        f.write(str(value))


def iface_key(family: int, ifname: str, name: str) -> str:
    """``net/ipv4/conf/<if>/<name>`` spelled with slashes, since interface names may hold dots."""
    return f"net/ipv{family}/conf/{ifname}/{name}"
