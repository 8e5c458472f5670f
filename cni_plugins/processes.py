"""A process's identity from /proc without ctypes (the `pynet-oci state|start|kill|delete` path loads
no more than this): its start time tells a live PID from a recycled one."""

from __future__ import annotations


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state first: field 3), or None when the
    process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return data.rsplit(b")", 1)[1].split()


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a live PID from a recycled one."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def is_alive(pid: int | None, start_time: int | None) -> bool:
    if not pid:
        return False
    fields = stat_fields(pid)
    if fields is None or start_time is not None and int(fields[19]) != start_time:
        return False
    return fields[0] != b"Z"
