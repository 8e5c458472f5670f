"""The bandwidth plugin's configuration: rates in bits per second, bursts in bits (the reference's units and
keys), from the config or from ``runtimeConfig.bandwidth`` (the ``bandwidth`` capability), and the token
bucket parameters the reference derives from them (its createTBF: rate, buffer, limit at 25 ms latency)."""

from __future__ import annotations

from dataclasses import dataclass

from cni_plugins.errors import invalid_config
from cni_plugins.skel import Request

KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")
LATENCY_MS = 25            # the reference's latencyInMillis
TIME_UNITS_PER_SEC = 1_000_000
UINT32_MAX = 2 ** 32 - 1


def _tick_in_usec() -> float:
    """Scheduler ticks per microsecond as tc (and the reference, through vishvananda/netlink) computes it."""
    try:
        with open("/proc/net/psched") as f:
            t2us, us2t, clock_res, _ = (int(v, 16) for v in f.read().split())
    except (OSError, ValueError):
        return 1.0
    clock_factor = clock_res / TIME_UNITS_PER_SEC if clock_res else 1.0
    return t2us / us2t * clock_factor


@dataclass(frozen=True)
class Tbf:
    """One token bucket as the kernel stores it: rate in bytes/s, buffer in scheduler ticks, limit in bytes."""
    rate: int
    burst: int     # bytes
    buffer: int
    limit: int


@dataclass(frozen=True)
class BandwidthConfig:
    """Shaping per direction (None: none that way)."""
    ingress: Tbf | None = None   # towards the container: tbf on the host veth
    egress: Tbf | None = None    # from the container: ifb + tbf

    @property
    def shapes(self) -> bool:
        return self.ingress is not None or self.egress is not None


def tbf_for(rate_bits: int, burst_bits: int, where: str, direction: str) -> Tbf:
    """The reference's createTBF parameters, computed in the same floating point order.

    A bucket longer than tbf's 32-bit buffer can hold (about 274 s of the rate) gets the longest one it can
    hold: containerd sends ``burst = 2^32 - 1`` bits for every Kubernetes bandwidth annotation, where the
    reference's uint32 conversion wraps around to an arbitrary bucket. The queue limit is capped likewise."""
    rate = rate_bits // 8
    burst = burst_bits // 8
    if rate < 1:
        raise invalid_config(f"{where}{direction}Rate", rate_bits, "must be at least 8 bits per second")
    if rate > UINT32_MAX:
        raise invalid_config(f"{where}{direction}Rate", rate_bits,
                             f"must be below {(UINT32_MAX + 1) * 8} bits per second (32-bit tbf rate)")
    if burst < 1:
        raise invalid_config(f"{where}{direction}Burst", burst_bits, "must be at least 8 bits")
    usec = min(int(float(burst) * float(TIME_UNITS_PER_SEC) / float(rate)), UINT32_MAX)
    buffer = min(int(float(usec) * _tick_in_usec()), UINT32_MAX)
    latency = float(TIME_UNITS_PER_SEC) * (LATENCY_MS / 1000.0)
    limit = min(int(float(rate) * latency / float(TIME_UNITS_PER_SEC)) + burst, UINT32_MAX)
    return Tbf(rate, burst, buffer, limit)


def _entry(entry: dict, where: str) -> BandwidthConfig:
    values = {}
    for key in KEYS:
        value = entry.get(key)
        if value is None:
            value = 0
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise invalid_config(where + key, value, "expected a non-negative integer")
        values[key] = value
    tbfs = {}
    for direction in ("ingress", "egress"):
        rate, burst = values[direction + "Rate"], values[direction + "Burst"]
        if rate and not burst:
            raise invalid_config(f"{where}{direction}Rate", rate, f"{where}{direction}Burst must be set too")
        if burst and not rate:
            raise invalid_config(f"{where}{direction}Burst", burst, f"{where}{direction}Rate must be set too")
        if burst // 8 >= UINT32_MAX:
            raise invalid_config(f"{where}{direction}Burst", burst, "burst cannot be more than 4GB")
        tbfs[direction] = tbf_for(rate, burst, where, direction) if rate else None
    return BandwidthConfig(tbfs["ingress"], tbfs["egress"])


def parse(req: Request) -> BandwidthConfig:
    """``runtimeConfig.bandwidth``, when the runtime sends one, replaces the config's keys as a whole (a
    rate and its burst always come from the same place)."""
    runtime = req.runtime_config.get("bandwidth")
    if runtime is not None:
        if not isinstance(runtime, dict):
            raise invalid_config("runtimeConfig.bandwidth", runtime, f"expected an object with {', '.join(KEYS)}")
        return _entry(runtime, "runtimeConfig.bandwidth.")
    return _entry(req.config, "")
