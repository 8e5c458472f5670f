"""`pynet-oci events`: runc's event stream for one container, one JSON object a line:
``{"type": "stats", "id": ID, "data": {cpu, memory, pids, blkio, ...}}`` once (``--stats``) or every
``--interval``, and ``{"type": "oom", "id": ID}`` each time the kernel OOM-kills in the container's
memory cgroup. The stream ends when the container stops. Stats are read from v1 controllers or cgroup2,
whichever holds them, in runc's field names and units (nanoseconds, bytes)."""

from __future__ import annotations

import os
import re
import time

from pynet.launcher import cgroups

from . import jsonc as json
from .errors import OCIError

USER_HZ = 100   # cpuacct.stat counts clock ticks
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_interval(text: str) -> float:
    """A Go duration (5s, 100ms, 1m30s) in seconds; it must be above zero, as runc requires."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise OCIError(f'invalid value "{text}" for flag -interval: parse error')
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise OCIError("duration interval must be greater than 0")
    return seconds


def _read(path: str | None, name: str) -> str | None:
    return cgroups._read(os.path.join(path, name)) if path else None


def _num(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def _pairs(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _cpu(cg: cgroups.ContainerCgroups) -> dict:
    cpu, acct = cg.controller("cpu"), cg.paths.get("cpuacct")
    usage: dict = {"kernel": 0, "user": 0}
    if acct:
        usage["total"] = _num(_read(acct, "cpuacct.usage"))
        usage["percpu"] = [int(v) for v in (_read(acct, "cpuacct.usage_percpu") or "").split()]
        ticks = _pairs(_read(acct, "cpuacct.stat"))
        usage["user"] = ticks.get("user", 0) * (10**9 // USER_HZ)
        usage["kernel"] = ticks.get("system", 0) * (10**9 // USER_HZ)
    stat = _pairs(_read(cpu or cg.paths.get("unified"), "cpu.stat"))
    if "usage_usec" in stat:   # cgroup2
        usage.update(total=stat["usage_usec"] * 1000, user=stat.get("user_usec", 0) * 1000,
                     kernel=stat.get("system_usec", 0) * 1000)
    throttled = stat.get("throttled_time", stat.get("throttled_usec", 0) * 1000)
    return {"usage": usage, "throttling": {"periods": stat.get("nr_periods", 0),
                                           "throttledPeriods": stat.get("nr_throttled", 0),
                                           "throttledTime": throttled}}


def _entry(path: str, prefix: str) -> dict:
    limit = _read(path, f"{prefix}.limit_in_bytes")
    return {"limit": _num(limit), "usage": _num(_read(path, f"{prefix}.usage_in_bytes")),
            "max": _num(_read(path, f"{prefix}.max_usage_in_bytes")),
            "failcnt": _num(_read(path, f"{prefix}.failcnt"))}


def _memory(cg: cgroups.ContainerCgroups) -> dict:
    path = cg.controller("memory")
    if not path:
        return {}
    raw = _pairs(_read(path, "memory.stat"))
    if os.path.exists(os.path.join(path, "memory.current")):   # cgroup2
        unlimited = 2**64 - 1
        limit = _read(path, "memory.max")
        swap_limit = _read(path, "memory.swap.max")
        return {"cache": raw.get("file", 0),
                "usage": {"limit": _num(limit) if limit != "max" else unlimited,
                          "usage": _num(_read(path, "memory.current")), "max": _num(_read(path, "memory.peak")),
                          "failcnt": _pairs(_read(path, "memory.events")).get("max", 0)},
                "swap": {"limit": _num(swap_limit) if swap_limit not in (None, "max") else unlimited,
                         "usage": _num(_read(path, "memory.swap.current")), "failcnt": 0},
                "kernel": {"limit": 0, "failcnt": 0}, "kernelTCP": {"limit": 0, "failcnt": 0}, "raw": raw}
    return {"cache": raw.get("cache", 0), "usage": _entry(path, "memory"), "swap": _entry(path, "memory.memsw"),
            "kernel": _entry(path, "memory.kmem"), "kernelTCP": _entry(path, "memory.kmem.tcp"), "raw": raw}


def _pids(cg: cgroups.ContainerCgroups) -> dict:
    path = cg.controller("pids")
    return {"current": _num(_read(path, "pids.current")), "limit": _num(_read(path, "pids.max"))} if path else {}


def _blkio_entries(text: str | None) -> list[dict]:
    """Lines "MAJ:MIN Op value" (v1), the "Total" line skipped."""
    out = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) == 3 and ":" in fields[0]:
            major, _, minor = fields[0].partition(":")
            out.append({"major": int(major), "minor": int(minor), "op": fields[1], "value": int(fields[2])})
    return out


def _blkio(cg: cgroups.ContainerCgroups) -> dict:
    path = cg.paths.get("blkio")
    if path:
        out = {}
        for key, names in (("ioServiceBytesRecursive", ("blkio.io_service_bytes_recursive",
                                                        "blkio.throttle.io_service_bytes_recursive")),
                           ("ioServicedRecursive", ("blkio.io_serviced_recursive",
                                                    "blkio.throttle.io_serviced_recursive"))):
            text = next((t for t in (_read(path, n) for n in names) if t), None)
            if text:
                out[key] = _blkio_entries(text)
        return out
    stat = _read(cg.controller("io"), "io.stat")
    if not stat:
        return {}
    nbytes, ios = [], []   # cgroup2: "MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.."
    for line in stat.splitlines():
        dev, *fields = line.split()
        major, _, minor = dev.partition(":")
        values = dict(f.split("=", 1) for f in fields if "=" in f)
        for op, key, target in (("Read", "rbytes", nbytes), ("Write", "wbytes", nbytes),
                                ("Read", "rios", ios), ("Write", "wios", ios)):
            if values.get(key, "").isdigit():
                target.append({"major": int(major), "minor": int(minor), "op": op, "value": int(values[key])})
    return {"ioServiceBytesRecursive": nbytes, "ioServicedRecursive": ios}


def stats(cg: cgroups.ContainerCgroups) -> dict:
    """runc's types.Stats of the container's cgroups."""
    return {"cpu": _cpu(cg), "memory": _memory(cg), "pids": _pids(cg), "blkio": _blkio(cg), "hugetlb": {},
            "intel_rdt": {}, "network_interfaces": None}


def oom_kills(cg: cgroups.ContainerCgroups) -> int:
    path = cg.controller("memory")
    for name in ("memory.events", "memory.oom_control"):
        counts = _pairs(_read(path, name))
        if "oom_kill" in counts:
            return counts["oom_kill"]
    return 0


def _emit(out, event: dict) -> None:
    out.write(json.dumps(event, separators=(",", ":")) + "\n")
    out.flush()


def stream(root: str, cid: str, interval: float, once: bool, out) -> None:
    """Writes the events of container ``cid`` to ``out`` until it stops (``once``: one stats event)."""
    from .runtime import Container

    c = Container.load(root, cid)
    if c.status() == "stopped":
        raise OCIError(f"container with id {cid} is not running")
    cg = c.cgroups
    if once:
        _emit(out, {"type": "stats", "id": cid, "data": stats(cg)})
        return
    seen_ooms = oom_kills(cg)
    next_stats = time.monotonic() + interval
    # OOM kills are polled (a tenth of a second) on v1 and cgroup2 alike; stats come every interval.
    while True:
        alive = c.alive()   # read before the counter: an OOM kill of the init is still reported
        ooms = oom_kills(cg)
        for _ in range(ooms - seen_ooms):
            _emit(out, {"type": "oom", "id": cid})
        seen_ooms = max(seen_ooms, ooms)
        if not alive:
            return
        now = time.monotonic()
        if now >= next_stats:
            _emit(out, {"type": "stats", "id": cid, "data": stats(cg)})
            next_stats = now + interval
        time.sleep(min(0.1, max(next_stats - time.monotonic(), 0.001)))
