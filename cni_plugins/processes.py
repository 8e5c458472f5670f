"""A process's identity from /proc without ctypes (the `pynet-oci state|start|kill|delete` path loads
no more than this): its start time tells a live PID from a recycled one."""

from __future__ import annotations


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a live PID from a recycled one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return int(data.rsplit(b")", 1)[1].split()[19])


def is_alive(pid: int | None, start_time: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    if start_time is not None and int(fields[19]) != start_time:
        return False
    return fields[0] != b"Z"
