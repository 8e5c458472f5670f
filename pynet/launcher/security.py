"""Privilege reduction applied last, right before the container's command is executed, as runc does it:
resource limits, the capability bounding set, the user and groups (keeping capabilities across the
change), the process capability sets (inheritable and ambient empty), no_new_privs, and the seccomp filter
(Docker's default allowlist, seccomp_profile.py, or a profile given with --security-opt).

SELinux and AppArmor are not active on this kernel (LSMs: lockdown, capability, landlock, bpf), so no
label or profile is applied; ``lsm_status()`` records that for ``container inspect``.
"""

from __future__ import annotations

import os
import resource   # here: set_rlimits runs after pivot_root, when the host's modules are out of reach

from cni_plugins import syscalls

from .value_objects import Fields

CAPABILITIES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
]

# The default set of Docker/containerd (the OCI runtime spec's example keeps only three; this is the set
# images are written for).
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")


class SecurityError(ValueError):
    pass


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read())
    except OSError:
        return len(CAPABILITIES) - 1


def _cap_name(name: str) -> str:
    name = name.upper()
    if name.startswith("CAP_"):
        name = name[4:]
    if name != "ALL" and name not in CAPABILITIES:
        raise SecurityError(f"unknown capability {name!r}")
    return name


def resolve_caps(cap_add=(), cap_drop=()) -> list[str]:
    """The capability names kept, Docker's rules: start from the default, drop, then add (ALL allowed)."""
    add = [_cap_name(c) for c in cap_add]
    drop = [_cap_name(c) for c in cap_drop]
    every = CAPABILITIES[: last_cap() + 1]
    kept = set() if "ALL" in drop else set(DEFAULT_CAPS) - set(drop)
    kept |= set(every) if "ALL" in add else set(add)
    return [c for c in every if c in kept]


def cap_mask(names) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES.index(name)
    return mask


def no_new_privs() -> None:
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)


def build_seccomp_filter(profile="default", caps=None):
    """The seccomp filter (a CompiledFilter) of ``profile`` ("default", "unconfined": None, or a checked
    profile dict from seccomp_profile.load) for a process keeping ``caps`` (default: the default set)."""
    if profile == "unconfined":
        return None
    from . import seccomp_profile

    seccomp = _seccomp()
    if seccomp is None:
        raise SecurityError("seccomp profile requested but python3-seccomp is not installed "
                            "(apt-get install python3-seccomp, or --security-opt seccomp=unconfined)")
    if profile == "default":
        profile = seccomp_profile.load()
    return CompiledFilter(seccomp_profile.build(profile, resolve_caps() if caps is None else caps, seccomp))


class CompiledFilter:
    """A libseccomp filter compiled to its BPF program when made: libseccomp compiles on every load()
    (~2 ms for Docker's ~370 rules), so stage 1 and the daemon's spare do that ahead, and the container's
    last step before execve only installs the program (syscalls.seccomp_set_filter)."""

    def __init__(self, filt):
        fd = os.memfd_create("pynet-seccomp", os.MFD_CLOEXEC)
        try:
            filt.export_bpf(_FileNo(fd))
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(fd)
        self.program = b"".join(chunks)

    def load(self) -> None:
        syscalls.seccomp_set_filter(self.program)


class _FileNo:
    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


# RLIMIT_* numbers of Docker's --ulimit names (Linux, every architecture pynet runs on).
RLIMITS = {"cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7,
           "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13, "rtprio": 14,
           "rttime": 15}
DEFAULT_RLIMITS = {"nofile": (1024, 1024)}   # `runc spec`'s (Docker passes its daemon's on instead)
RLIM_INFINITY = (1 << 64) - 1


def parse_ulimit(spec: str) -> tuple[str, int, int]:
    """--ulimit NAME=SOFT[:HARD] (Docker's names; -1 or "unlimited" for no limit) -> (name, soft, hard)."""
    name, eq, values = spec.partition("=")
    if not eq or name not in RLIMITS or name == "as":   # "as": left out by Docker too
        known = ", ".join(n for n in RLIMITS if n != "as")
        raise SecurityError(f"invalid --ulimit {spec!r}: expected NAME=SOFT[:HARD] with NAME one of {known}")
    soft_text, _, hard_text = values.partition(":")

    def number(text):
        if text in ("-1", "unlimited"):
            return RLIM_INFINITY
        if not text.isdigit():
            raise SecurityError(f"invalid --ulimit {spec!r}: {text!r} is not a number")
        return int(text)

    soft, hard = number(soft_text), number(hard_text or soft_text)
    if soft > hard:
        raise SecurityError(f"invalid --ulimit {spec!r}: soft limit {soft_text} is above hard limit {hard_text}")
    return name, soft, hard


def resolve_rlimits(ulimits=()) -> dict:
    """{name: (soft, hard)}: the defaults, overridden by --ulimit values; a hard limit above what this
    process has cannot be given (raising one needs CAP_SYS_RESOURCE, which root here does not have)."""
    out = {}
    for name, (soft, hard) in DEFAULT_RLIMITS.items():
        cur_hard = resource.getrlimit(RLIMITS[name])[1]
        if cur_hard != resource.RLIM_INFINITY:   # a default is never a raise
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        out[name] = (soft, hard)
    for spec in ulimits:
        name, soft, hard = parse_ulimit(spec)
        _cur_soft, cur_hard = resource.getrlimit(RLIMITS[name])
        if cur_hard != resource.RLIM_INFINITY and hard > cur_hard:
            raise SecurityError(f"--ulimit {spec!r}: hard limit above this launcher's hard limit {cur_hard} "
                                "(it can only be lowered here)")
        out[name] = (soft, hard)
    return out


def set_rlimits(rlimits: dict) -> None:
    for name, (soft, hard) in rlimits.items():
        as_rlim = lambda v: resource.RLIM_INFINITY if v >= RLIM_INFINITY else v   # noqa: E731
        try:
            resource.setrlimit(RLIMITS[name], (as_rlim(soft), as_rlim(hard)))
        except (OSError, ValueError) as exc:
            raise SecurityError(f"setrlimit {name}={soft}:{hard}: {exc}") from None


class User(Fields):
    """Who the command runs as: uid, gid, supplementary gids, and the passwd home (for HOME)."""
    FIELDS = {"uid": 0, "gid": 0, "groups": list, "home": "/root"}


def set_user(user: "User") -> None:
    """setgroups, then gid, then uid (runc's order); capabilities are kept across the change (KEEPCAPS)
    and set again by drop_capabilities."""
    try:
        os.setgroups(list(user.groups))
    except PermissionError:
        if user.groups:
            raise SecurityError(f"cannot set supplementary groups {user.groups}: setgroups is denied "
                                "in this user namespace (--userns)") from None
        # In a user namespace with setgroups denied (--userns): there are none to drop.
    os.setresgid(user.gid, user.gid, user.gid)
    if user.uid != 0:
        syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)
        os.setresuid(user.uid, user.uid, user.uid)
        syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 0)


CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")   # the OCI spec's five


def docker_cap_sets(caps) -> dict:
    """The five sets as runc and Docker leave them for a kept set ``caps``: bounding = effective =
    permitted = ``caps``, inheritable and ambient empty (so after execve a non-root user has none, and
    root has the bounding set)."""
    return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps), "inheritable": [],
            "ambient": []}


def drop_privileges(cap_sets: dict, user: "User | None", rlimits: dict | None, nnp: bool, filt=None):
    """The privilege drop before execve, the one implementation behind `pynet run`, `pynet exec` and
    pynet-oci (runc's order): rlimits, the capability bounding set, the user and groups (capabilities
    kept across the change), the other four sets (``cap_sets``: names per set), no_new_privs. The
    seccomp filter ``filt`` is loaded here when it must be (without no_new_privs the kernel wants
    CAP_SYS_ADMIN for it: before the drop); otherwise it is returned, for the caller to load as its very
    last step before execve (None: nothing left to load)."""
    if rlimits:
        set_rlimits(rlimits)
    if filt is not None and not nnp:
        filt.load()
        filt = None
    bounding = cap_mask(cap_sets.get("bounding") or ())
    for cap in range(last_cap() + 1):
        if not bounding & (1 << cap):
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
    if user is not None:
        set_user(user)
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    syscalls.capset(cap_mask(cap_sets.get("effective") or ()), cap_mask(cap_sets.get("permitted") or ()),
                    cap_mask(cap_sets.get("inheritable") or ()))
    for name in cap_sets.get("ambient") or ():
        try:   # the kernel wants it permitted and inheritable; runc only warns too
            syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, CAPABILITIES.index(name))
        except OSError:
            pass
    if nnp:
        no_new_privs()
    return filt


def lsm_status() -> dict:
    try:
        with open("/sys/kernel/security/lsm") as fh:
            active = fh.read().strip().split(",")
    except OSError:
        active = []
    return {"lsm": active, "selinux": "selinux" in active, "apparmor": "apparmor" in active,
            "applied": "none (SELinux and AppArmor not active on this kernel)"
            if not {"selinux", "apparmor"} & set(active) else "none (labels/profiles not implemented)"}


def _seccomp():
    """Debian's python3-seccomp (libseccomp), or None. Imported when a filter is built (always before
    pivot_root, on the host's side), not with this module: pynet-oci's containers load a program kept
    compiled (~0.6 ms of every start)."""
    try:
        import seccomp
    except ImportError:  # pragma: no cover - Debian's python3-seccomp missing
        return None
    return seccomp


def seccomp_available() -> bool:
    return _seccomp() is not None
