"""`pynet-oci update`: new resource limits (an OCI LinuxResources object, or runc's flags) written to a
live container's cgroups, with the rules of runc 1.1's cgroupfs driver: 0 or absent leaves a value as it
is, -1 lifts a limit, memory and swap are written in the order the kernel accepts, kernel memory is
ignored with a warning. Works on v1 controllers (this hybrid) and on cgroup2 ones alike."""

from __future__ import annotations

import errno
import os
import re

from pynet.launcher import cgroups

from . import jsonc as json
from .errors import OCIError

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$", re.I)


def parse_ram(flag: str, text: str) -> int:
    """docker/go-units' RAMInBytes (binary units, b/ib suffixes), and -1 for unlimited."""
    if text == "-1":
        return -1
    m = _SIZE.match(text.strip())
    if not m:
        raise OCIError(f"invalid value for {flag}: invalid size: {text!r}")
    return int(float(m.group(1)) * (1 << (10 * "kmgtp".find(m.group(2).lower()) + 10) if m.group(2) else 1))


def _int(flag: str, text: str, unsigned: bool) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
        if not unsigned:
            raise OCIError(f"invalid value for {flag}: strconv.ParseInt: parsing {text!r}: invalid syntax") from None
    if unsigned and value < 0:
        raise OCIError(f"invalid value for {flag}: strconv.ParseUint: parsing {text!r}: invalid syntax")
    return value


def from_flags(args) -> tuple[dict, list[str]]:
    """(LinuxResources, warnings) from runc's update flags."""
    res: dict = {"memory": {}, "cpu": {}, "blockIO": {}, "pids": {}}
    warnings = []
    if args.blkio_weight:
        res["blockIO"]["weight"] = args.blkio_weight
    for flag, key in (("cpuset-cpus", "cpus"), ("cpuset-mems", "mems")):
        if getattr(args, flag.replace("-", "_")):
            res["cpu"][key] = getattr(args, flag.replace("-", "_"))
    for flag, key, unsigned in (("cpu-period", "period", True), ("cpu-rt-period", "realtimePeriod", True),
                                ("cpu-share", "shares", True), ("cpu-quota", "quota", False),
                                ("cpu-rt-runtime", "realtimeRuntime", False)):
        text = getattr(args, flag.replace("-", "_"))
        if text:
            res["cpu"][key] = _int(flag, text, unsigned)
    for flag, key in (("memory", "limit"), ("memory-swap", "swap"), ("memory-reservation", "reservation")):
        text = getattr(args, flag.replace("-", "_"))
        if text:
            res["memory"][key] = parse_ram(flag, text)
    for flag in ("kernel-memory", "kernel-memory-tcp"):
        if getattr(args, flag.replace("-", "_")):
            warnings.append(f"Setting --{flag} is ignored and will be removed")
    if args.pids_limit:
        res["pids"]["limit"] = args.pids_limit
    if args.l3_cache_schema:
        raise OCIError("Intel RDT/CAT: l3 cache schema is not enabled")
    if args.mem_bw_schema:
        raise OCIError("Intel RDT/MBA: memory bandwidth schema is not enabled")
    return res, warnings


def check_resources(res: dict, path: str) -> dict:
    """A LinuxResources object (from --resources ``path``) with its types checked, naming key and value."""
    for section, keys in _TYPES.items():
        part = res.get(section)
        if part is None:
            continue
        if not isinstance(part, dict):
            raise OCIError(f"--resources {path}: {section} {json.dumps(part)}: must be an object")
        for key, kind in keys.items():
            value = part.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise OCIError(f"--resources {path}: {section}.{key} {json.dumps(value)}: must be "
                               f"{'a string' if kind is str else 'an integer'}")
    return res


_TYPES = {"memory": {"limit": int, "reservation": int, "swap": int, "kernel": int, "kernelTCP": int},
          "cpu": {"shares": int, "quota": int, "period": int, "realtimeRuntime": int, "realtimePeriod": int,
                  "cpus": str, "mems": str},
          "blockIO": {"weight": int}, "pids": {"limit": int}}


class _Writer:
    """Writes cgroup files, turning a refusal into runc's wording (the file, the value, the reason)."""

    def __init__(self, cg: cgroups.ContainerCgroups):
        self.cg = cg

    def dir(self, controller: str) -> str:
        path = self.cg.controller(controller)
        if not path:
            raise OCIError(f"no {controller} cgroup controller for this container")
        return path

    def write(self, path: str, value) -> None:
        try:
            cgroups._write(path, value)
        except OSError as exc:
            raise self.error(path, value, exc) from None

    @staticmethod
    def error(path: str, value, exc: OSError) -> OCIError:
        reason = os.strerror(exc.errno).lower()
        if exc.errno == errno.ENOENT:
            return OCIError(f"failed to write {str(value)!r}: open {path}: {reason}")
        return OCIError(f"failed to write {str(value)!r} to {path}: {reason}")

    def read_int(self, path: str) -> int | None:
        text = cgroups._read(path)
        return int(text) if text and text.lstrip("-").isdigit() else None


def apply(cg: cgroups.ContainerCgroups, res: dict) -> list[str]:
    """Writes ``res`` (LinuxResources) to the container's cgroups; returns warnings."""
    w = _Writer(cg)
    warnings = []
    mem, cpu = res.get("memory") or {}, res.get("cpu") or {}
    if mem.get("kernel") or mem.get("kernelTCP"):
        warnings.append("Kernel memory settings are ignored and will be removed")
    if any(mem.get(k) for k in ("limit", "swap", "reservation")):
        _memory(w, mem)
    if any(cpu.get(k) for k in ("shares", "quota", "period", "realtimeRuntime", "realtimePeriod")):
        _cpu(w, cpu)
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        if cpu.get(key):
            w.write(os.path.join(w.dir("cpuset"), name), cpu[key])
    limit = (res.get("pids") or {}).get("limit")
    if limit:
        w.write(os.path.join(w.dir("pids"), "pids.max"), limit if limit > 0 else "max")
    weight = (res.get("blockIO") or {}).get("weight")
    if weight:
        _blkio_weight(w, weight)
    return warnings


def _memory(w: _Writer, mem: dict) -> None:
    path = w.dir("memory")
    limit, swap, reservation = mem.get("limit") or 0, mem.get("swap") or 0, mem.get("reservation") or 0
    if os.path.exists(os.path.join(path, "memory.max")):   # cgroup2: swap is counted apart from memory
        if limit:
            w.write(os.path.join(path, "memory.max"), "max" if limit == -1 else limit)
        if swap and os.path.exists(os.path.join(path, "memory.swap.max")):
            if swap == -1:
                w.write(os.path.join(path, "memory.swap.max"), "max")
            elif limit > 0:
                w.write(os.path.join(path, "memory.swap.max"), max(swap - limit, 0))
        if reservation:
            w.write(os.path.join(path, "memory.low"), "max" if reservation == -1 else reservation)
        return
    limit_file = os.path.join(path, "memory.limit_in_bytes")
    swap_file = os.path.join(path, "memory.memsw.limit_in_bytes")
    has_swap = os.path.exists(swap_file)
    if limit == -1 and not swap and has_swap:
        swap = -1   # runc: memory unlimited means memory and swap unlimited
    if limit > 0 and not swap and has_swap:
        # Keep the swap allowance the container has (runc would fail with EINVAL when the new limit is
        # above the current memory+swap limit; engines then must send both).
        cur_limit, cur_swap = w.read_int(limit_file), w.read_int(swap_file)
        if cur_limit is not None and cur_swap is not None and cur_swap < 1 << 62 and limit > cur_swap:
            swap = limit + (cur_swap - cur_limit)
    if swap and not has_swap:
        raise OCIError(f"memory.swap {swap}: this kernel has no swap accounting (memory.memsw.limit_in_bytes)")

    def set_limit():
        if limit:
            try:
                cgroups._write(limit_file, limit)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise w.error(limit_file, limit, exc) from None
                raise OCIError(f"unable to set memory limit to {limit} (current usage: "
                               f"{w.read_int(os.path.join(path, 'memory.usage_in_bytes'))}, peak usage: "
                               f"{w.read_int(os.path.join(path, 'memory.max_usage_in_bytes'))})") from None

    def set_swap():
        if swap:
            w.write(swap_file, swap)

    # memsw must stay >= memory at every step: raise swap first when it grows (or goes unlimited).
    if limit and swap and (swap == -1 or (w.read_int(limit_file) or 0) < swap):
        set_swap()
        set_limit()
    else:
        set_limit()
        set_swap()
    if reservation:
        w.write(os.path.join(path, "memory.soft_limit_in_bytes"), reservation)


def _cpu(w: _Writer, cpu: dict) -> None:
    path = w.dir("cpu")
    shares, quota, period = cpu.get("shares") or 0, cpu.get("quota") or 0, cpu.get("period") or 0
    if os.path.exists(os.path.join(path, "cpu.max")):   # cgroup2
        if shares:
            w.write(os.path.join(path, "cpu.weight"), 1 + ((shares - 2) * 9999) // 262142)
        if quota or period:
            cur_quota, _, cur_period = (cgroups._read(os.path.join(path, "cpu.max")) or "max 100000").partition(" ")
            q = ("max" if quota == -1 else quota) if quota else cur_quota
            w.write(os.path.join(path, "cpu.max"), f"{q} {period or cur_period}")
        return
    if shares:
        w.write(os.path.join(path, "cpu.shares"), shares)
        got = w.read_int(os.path.join(path, "cpu.shares"))
        if got is not None and got != shares:
            raise OCIError(f"the {'maximum' if shares > got else 'minimum'} allowed cpu-shares is {got}")
    retry_period = False
    if period:
        try:
            cgroups._write(os.path.join(path, "cpu.cfs_period_us"), period)
        except OSError as exc:
            # A shorter period may exceed the old quota's ratio: retried after the quota is written.
            if exc.errno != errno.EINVAL or not quota:
                raise w.error(os.path.join(path, "cpu.cfs_period_us"), period, exc) from None
            retry_period = True
    if quota:
        w.write(os.path.join(path, "cpu.cfs_quota_us"), quota)
        if retry_period:
            w.write(os.path.join(path, "cpu.cfs_period_us"), period)
    for key, name in (("realtimePeriod", "cpu.rt_period_us"), ("realtimeRuntime", "cpu.rt_runtime_us")):
        if cpu.get(key):
            w.write(os.path.join(path, name), cpu[key])


def _blkio_weight(w: _Writer, weight: int) -> None:
    path = w.dir("blkio") if w.cg.paths.get("blkio") else w.dir("io")
    names = ("blkio.bfq.weight", "blkio.weight") if w.cg.paths.get("blkio") else ("io.bfq.weight", "io.weight")
    target = next((os.path.join(path, n) for n in names if os.path.exists(os.path.join(path, n))),
                  os.path.join(path, names[-1]))
    w.write(target, weight)


def update(root: str, cid: str, res: dict) -> list[str]:
    """Applies ``res`` to the container ``cid``; runc refuses a stopped container."""
    from .runtime import Container

    c = Container.load(root, cid)
    if c.status() == "stopped":
        raise OCIError("container not running")
    return apply(c.cgroups, res)
