"""Seccomp profiles in Docker's / the OCI format, and the libseccomp filter one makes.

    load(path) -> profile           read and check a profile file (ProfileError names the file and the
                                    problem); load(None) is the default profile
    build(profile, caps) -> filter  a libseccomp SyscallFilter for a process keeping ``caps``

The default profile (profiles/default.json) is Docker's published default (moby/profiles
seccomp/default.json), kept as data: an allowlist with default action ERRNO(EPERM), argument filters
(clone without namespace flags unless CAP_SYS_ADMIN, a few personality values, socket families), and
entries included or excluded by capability, architecture and kernel version. The rules are read as
Docker's daemon (moby/profiles seccomp_linux.go) and runc read them: an entry whose ``includes`` are not
all met, or any of whose ``excludes`` is, is left out; the arguments of one entry are ANDed when their
indexes differ and give one rule each otherwise; syscall names unknown to this libseccomp are skipped.
"""

from __future__ import annotations

import errno
import os

DEFAULT_PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles", "default.json")

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
           "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
             "SCMP_CMP_MASKED_EQ")
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm", "ppc64le": "ppc64le",
           "s390x": "s390x", "riscv64": "riscv64"}
_default_cache: dict = {}


class ProfileError(ValueError):
    pass


def load(path: str | None = None) -> dict:
    """The profile in ``path`` (None: the default profile), checked."""
    if path is None and "profile" in _default_cache:
        return _default_cache["profile"]
    import json   # here: only a profile file needs it, and it costs an OCI container start ~4 ms

    source = path or DEFAULT_PROFILE
    try:
        with open(source) as fh:
            profile = json.load(fh)
    except OSError as exc:
        raise ProfileError(f"seccomp profile {source}: {exc.strerror}") from None
    except ValueError as exc:
        raise ProfileError(f"seccomp profile {source}: not valid JSON: {exc}") from None
    check(profile, source)
    if path is None:
        _default_cache["profile"] = profile
    return profile


def check(profile, source: str) -> None:
    """Raises ProfileError naming ``source`` and the first problem found."""
    def bad(what: str):
        raise ProfileError(f"seccomp profile {source}: {what}")

    if not isinstance(profile, dict):
        bad("expected a JSON object")
    if profile.get("defaultAction") not in ACTIONS:
        bad(f"defaultAction {profile.get('defaultAction')!r} is not one of {', '.join(ACTIONS)}")
    for key in ("architectures", "archMap", "syscalls"):
        if not isinstance(profile.get(key, []), list):
            bad(f"{key} must be a list")
    for arch in profile.get("architectures", []):
        if not isinstance(arch, str) or not arch.startswith("SCMP_ARCH_"):
            bad(f"architecture {arch!r} is not an SCMP_ARCH_* name")
    for n, entry in enumerate(profile.get("syscalls", [])):
        where = f"syscalls[{n}]"
        if not isinstance(entry, dict):
            bad(f"{where} must be an object")
        names = entry.get("names", [entry["name"]] if "name" in entry else None)
        if not isinstance(names, list) or not names or not all(isinstance(x, str) and x for x in names):
            bad(f"{where} needs names, a non-empty list of syscall names")
        if entry.get("action") not in ACTIONS:
            bad(f"{where}: action {entry.get('action')!r} is not one of {', '.join(ACTIONS)}")
        for m, arg in enumerate(entry.get("args") or []):
            if not isinstance(arg, dict):
                bad(f"{where}.args[{m}] must be an object")
            if not isinstance(arg.get("index"), int) or not 0 <= arg["index"] <= 5:
                bad(f"{where}.args[{m}]: index {arg.get('index')!r} is not 0..5")
            if arg.get("op") not in OPERATORS:
                bad(f"{where}.args[{m}]: op {arg.get('op')!r} is not one of {', '.join(OPERATORS)}")
            for key in ("value", "valueTwo"):
                if not isinstance(arg.get(key, 0), int) or arg.get(key, 0) < 0:
                    bad(f"{where}.args[{m}]: {key} {arg.get(key)!r} is not a non-negative integer")
        for key in ("includes", "excludes"):
            cond = entry.get(key) or {}
            if not isinstance(cond, dict) or not all(isinstance(cond.get(k, []), list) for k in ("caps", "arches")):
                bad(f"{where}.{key} must be an object with lists caps and arches")


def _kernel_at_least(version: str) -> bool:
    def numbers(text):
        out = []
        for part in text.split(".")[:2]:
            digits = "".join(c for c in part if c.isdigit()) if part else ""
            out.append(int(digits) if digits else 0)
        return tuple(out)

    return numbers(os.uname().release.split("-")[0]) >= numbers(version)


def _wanted(entry: dict, caps: set, arch: str) -> bool:
    inc, exc = entry.get("includes") or {}, entry.get("excludes") or {}
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if any(c not in caps for c in inc.get("caps") or ()):
        return False
    if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"]):
        return False
    if arch in (exc.get("arches") or ()) or any(c in caps for c in exc.get("caps") or ()):
        return False
    return True


def build(profile: dict, caps, seccomp):
    """The libseccomp filter of ``profile`` for a process keeping ``caps`` (names as security.CAPABILITIES
    lists them); ``seccomp`` is the python3-seccomp module."""
    def action(name: str, ret):
        if name == "SCMP_ACT_ERRNO":
            return seccomp.ERRNO(errno.EPERM if ret is None else ret)
        if name == "SCMP_ACT_TRACE":
            return seccomp.TRACE(errno.EPERM if ret is None else ret)
        return {"SCMP_ACT_KILL": seccomp.KILL, "SCMP_ACT_KILL_THREAD": seccomp.KILL,
                "SCMP_ACT_KILL_PROCESS": seccomp.KILL_PROCESS, "SCMP_ACT_TRAP": seccomp.TRAP,
                "SCMP_ACT_ALLOW": seccomp.ALLOW, "SCMP_ACT_LOG": seccomp.LOG}[name]

    default = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    filt = seccomp.SyscallFilter(defaction=default)
    machine = os.uname().machine
    arches = list(profile.get("architectures") or ())
    for entry in profile.get("archMap") or ():
        if getattr(seccomp.Arch, entry.get("architecture", "")[len("SCMP_ARCH_"):], None) == seccomp.system_arch():
            arches += [entry["architecture"], *(entry.get("subArchitectures") or ())]
    for name in arches:
        arch = getattr(seccomp.Arch, name[len("SCMP_ARCH_"):], None)
        if arch is None or arch == seccomp.system_arch():
            continue
        try:
            filt.add_arch(arch)
        except Exception:  # noqa: BLE001 - unknown to this libseccomp: as runc, left out
            pass
    caps = {f"CAP_{c}" for c in caps}
    ops = {op: getattr(seccomp, op[len("SCMP_CMP_"):]) for op in OPERATORS}
    goarch = _GOARCH.get(machine, machine)
    for entry in profile.get("syscalls") or ():
        if not _wanted(entry, caps, goarch):
            continue
        act = action(entry["action"], entry.get("errnoRet"))
        if act == default:
            continue   # libseccomp refuses a rule with the default action; it changes nothing anyway
        conds = [seccomp.Arg(a["index"], ops[a["op"]], a.get("value", 0), a.get("valueTwo", 0))
                 for a in entry.get("args") or ()]
        indexes = [a["index"] for a in entry.get("args") or ()]
        groups = [conds] if len(set(indexes)) == len(indexes) else [[c] for c in conds]
        for name in entry.get("names", [entry.get("name")]):
            for group in groups:
                try:
                    filt.add_rule(act, name, *group)
                except (RuntimeError, ValueError, OSError):
                    pass   # a syscall this libseccomp/arch does not know
    try:
        filt.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)   # a binary tree: ~9 checks per syscall, not ~350
    except Exception:  # noqa: BLE001 - libseccomp older than 2.5
        pass
    return filt
