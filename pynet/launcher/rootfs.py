"""The launcher's filesystem helpers for the container side of pynet/oci/init.py (which builds every
container's view, `pynet run`'s from the spec of launcher/spec.py): symlink-safe joins under the rootfs,
the staging point of an image overlay, /dev's standard nodes bound from the host, /sys and
/sys/fs/cgroup as Docker shows them, runc's masked and read-only paths; --tmpfs parsing; the mount table
of a running container for `inspect`.
"""

from __future__ import annotations

import os
from cni_plugins import syscalls as L

STAGING_CANDIDATES = ("/mnt", "/media", "/srv", "/tmp")
ETC_FILES = ("hostname", "hosts", "resolv.conf")

MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


class TmpfsError(ValueError):
    pass


_TMPFS_FLAGS = {"ro": (L.MS_RDONLY, True), "rw": (L.MS_RDONLY, False), "noexec": (L.MS_NOEXEC, True),
                "exec": (L.MS_NOEXEC, False), "nosuid": (L.MS_NOSUID, True), "suid": (L.MS_NOSUID, False),
                "nodev": (L.MS_NODEV, True), "dev": (L.MS_NODEV, False)}
_TMPFS_KEYS = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "huge", "mpol")


def parse_tmpfs(spec: str) -> tuple:
    """--tmpfs PATH[:OPTS] -> (path, mount flags, tmpfs options). OPTS as Docker's: ro/rw, exec/noexec,
    suid/nosuid, dev/nodev and size=, mode=, uid=, gid=, nr_inodes=...; default noexec,nosuid,nodev."""
    path, _, opts = spec.partition(":")
    if not path.startswith("/") or path.rstrip("/") == "":
        raise TmpfsError(f"invalid --tmpfs {spec!r}: expected an absolute container path other than /")
    flags, data = L.MS_NOEXEC | L.MS_NOSUID | L.MS_NODEV, []
    for opt in filter(None, opts.split(",")):
        key, eq, value = opt.partition("=")
        if not eq and key in _TMPFS_FLAGS:
            bit, on = _TMPFS_FLAGS[key]
            flags = flags | bit if on else flags & ~bit
        elif eq and key in _TMPFS_KEYS and value:
            data.append(opt)
        else:
            raise TmpfsError(f"invalid --tmpfs {spec!r}: unknown option {opt!r} (known: "
                             f"{', '.join(_TMPFS_FLAGS)}, {'=, '.join(_TMPFS_KEYS)}=)")
    return path, flags, ",".join(data)


def secure_join(root: str, path: str) -> str:
    """``root``/``path`` with symlinks resolved as if ``root`` were ``/`` (the image controls those links;
    followed naively, before pivot_root, they would point the launcher at host paths)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            link = os.readlink(candidate)
        except OSError:   # not a symlink, or not there yet
            resolved.append(part)
            continue
        hops += 1
        if hops > 40:
            raise OSError(f"too many symlinks resolving {path!r} in the container rootfs")
        if link.startswith("/"):
            resolved = []
        parts = [p for p in link.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *resolved)


def _staging_point() -> str:
    for cand in STAGING_CANDIDATES:
        if os.path.isdir(cand) and not os.path.islink(cand):
            return cand
    raise OSError("no directory to stage the container rootfs on")


def _ensure_file(path: str, owner: int) -> None:
    if not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w"):
            pass
        if owner:
            os.chown(path, owner, owner)


def _mkdir(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind_node(host: str, target: str) -> None:
    """A host device node at ``target``: bound, not mknod'ed (works in a user namespace, and the node is
    the host's own); whether it may be opened is the device cgroup's business (devices.py)."""
    _mkdir(os.path.dirname(target))
    open(target, "w").close()
    L.mount(host, target, None, L.MS_BIND)


def populate_dev(dev: str) -> None:
    """The standard nodes (bound from the host) and links in a fresh /dev tmpfs at ``dev``."""
    for name in DEVICES:
        _bind_node(f"/dev/{name}", os.path.join(dev, name))
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore")):
        if not os.path.lexists(os.path.join(dev, link)):
            os.symlink(target, os.path.join(dev, link))


def _setup_sys(rootfs: str, new_netns: bool) -> None:
    target = secure_join(rootfs, "/sys")
    _mkdir(target)
    flags = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | L.MS_RDONLY
    try:
        L.mount("sysfs", target, "sysfs", flags)
    except PermissionError:
        if new_netns:
            raise
        # --net host inside a user namespace: sysfs may not be mounted fresh; bind the host's read-only.
        L.mount("/sys", target, None, L.MS_BIND | L.MS_REC)
        L.mount(None, target, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)


def _setup_cgroupfs(rootfs: str, mounts: list) -> None:
    """/sys/fs/cgroup as Docker shows it: read-only, each hierarchy mounted fresh inside the container's
    cgroup namespace, so its root is the container's own cgroup. A hierarchy the kernel refuses to mount
    here (v1 in a user namespace) is left out."""
    base = secure_join(rootfs, "/sys/fs/cgroup")   # inside the fresh sysfs: no image symlinks here
    if not mounts or not os.path.isdir(base):
        return
    flags = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | L.MS_RDONLY
    if len(mounts) == 1 and mounts[0][0] == "":
        try:
            L.mount("cgroup2", base, "cgroup2", flags)
        except OSError:
            pass
        return
    L.mount("cgroup", base, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=755,size=64k")
    for name, fstype, options in mounts:
        target = os.path.join(base, name)
        os.mkdir(target)
        try:
            L.mount("cgroup", target, fstype, flags, options or None)
        except OSError:
            os.rmdir(target)
    L.mount(None, base, None, L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC,
            "mode=755,size=64k")


def _mask(path: str) -> None:
    try:
        is_dir = os.path.isdir(path)
    except OSError:
        return
    if not os.path.lexists(path):
        return
    if is_dir:
        L.mount("tmpfs", path, "tmpfs", L.MS_RDONLY, "size=0")
    else:
        L.mount("/dev/null", path, None, L.MS_BIND)


def _readonly(path: str) -> None:
    if not os.path.lexists(path):
        return
    L.mount(path, path, None, L.MS_BIND | L.MS_REC)
    L.mount(None, path, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)


def mounts_of(pid: int) -> list[dict]:
    """The mount table seen by a container process (for ``container inspect``)."""
    out = []
    try:
        with open(f"/proc/{pid}/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                f, r = left.split(), right.split()
                out.append({"target": f[4], "type": r[0], "source": r[1], "options": f[5]})
    except OSError:
        pass
    return out
