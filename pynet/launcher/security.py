"""Privilege reduction applied last, right before the container's command is executed: the capability
bounding set and process sets, no_new_privs and a seccomp deny-list comparable to Docker's default.

SELinux and AppArmor are not active on this kernel (LSMs: lockdown, capability, landlock, bpf), so no
label or profile is applied; ``lsm_status()`` records that for ``container inspect``.
"""

from __future__ import annotations

import errno

from cni_plugins import syscalls

try:
    # Imported here, in the launcher: the filter is built after pivot_root, when host modules are out of reach.
    import seccomp
except ImportError:  # pragma: no cover - Debian's python3-seccomp missing
    seccomp = None

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

# Denied with EPERM whatever the capabilities: kernel-wide state, module loading, new mount API, keyring,
# namespace escapes, raw I/O. Names unknown to this libseccomp/arch are skipped.
BLOCKED_SYSCALLS = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy",
    "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mbind", "mount", "mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root", "query_module", "quotactl",
    "quotactl_fd", "reboot", "request_key", "set_mempolicy", "setns", "settimeofday", "stime", "swapoff",
    "swapon", "syslog", "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
    "vm86", "vm86old",
)
_NS_FLAGS = (syscalls.CLONE_NEWNS, syscalls.CLONE_NEWUTS, syscalls.CLONE_NEWIPC, syscalls.CLONE_NEWUSER,
             syscalls.CLONE_NEWPID, syscalls.CLONE_NEWNET, syscalls.CLONE_NEWCGROUP)


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


def drop_capabilities(keep: list[str]) -> None:
    """Bounding set first (needs CAP_SETPCAP, so before capset), then the process sets. The container
    runs as uid 0, so after execve its permitted set is exactly the bounding set."""
    keep_mask = cap_mask(keep)
    for cap in range(last_cap() + 1):
        if not keep_mask & (1 << cap):
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    syscalls.capset(keep_mask, keep_mask, keep_mask)


def no_new_privs() -> None:
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)


def build_seccomp_filter():
    """A libseccomp filter: allow by default, EPERM for BLOCKED_SYSCALLS and namespace-creating clone(),
    ENOSYS for clone3 (its flags live in memory, unfilterable; libc then falls back to clone)."""
    if seccomp is None:
        raise SecurityError("seccomp profile requested but python3-seccomp is not installed "
                            "(apt-get install python3-seccomp, or --security-opt seccomp=unconfined)")
    filt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    native = seccomp.system_arch()
    # 32-bit entry points would bypass a native-only filter.
    for arch in (seccomp.Arch.X86, seccomp.Arch.X32) if native == seccomp.Arch.X86_64 else ():
        try:
            filt.add_arch(arch)
        except Exception:
            pass
    eperm = seccomp.ERRNO(errno.EPERM)
    for name in BLOCKED_SYSCALLS:
        try:
            filt.add_rule(eperm, name)
        except (RuntimeError, ValueError, OSError):
            pass
    for flag in _NS_FLAGS:
        try:
            filt.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        except (RuntimeError, ValueError, OSError):
            pass
    try:
        filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    except (RuntimeError, ValueError, OSError):
        pass
    return filt


def apply(caps: list[str], seccomp_profile: str = "default", nnp: bool = True, prebuilt=None) -> None:
    """Everything privileged is done by now; this is the last step before execve. ``prebuilt``: the
    filter build_seccomp_filter() made earlier, off the critical path."""
    filt = None
    if seccomp_profile == "default":
        filt = prebuilt if prebuilt is not None else build_seccomp_filter()
    if filt is not None and not nnp:
        # Without no_new_privs the kernel wants CAP_SYS_ADMIN to load a filter: load it before the drop.
        filt.set_attr(seccomp.Attr.CTL_NNP, 0)
        filt.load()
        filt = None
    drop_capabilities(caps)
    if nnp:
        no_new_privs()
    if filt is not None:
        filt.load()


def lsm_status() -> dict:
    try:
        with open("/sys/kernel/security/lsm") as fh:
            active = fh.read().strip().split(",")
    except OSError:
        active = []
    return {"lsm": active, "selinux": "selinux" in active, "apparmor": "apparmor" in active,
            "applied": "none (SELinux and AppArmor not active on this kernel)"
            if not {"selinux", "apparmor"} & set(active) else "none (labels/profiles not implemented)"}


def seccomp_available() -> bool:
    return seccomp is not None
