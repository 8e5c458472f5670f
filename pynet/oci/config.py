"""config.json (OCI runtime spec 1.0.x): read, checked, and turned into the values the launcher's
modules take. Every error names the key and the value (OCIError); nothing is created here."""

from __future__ import annotations

import os

from cni_plugins import syscalls as L
from cni_plugins.syscalls import (MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME,
                                  MS_SYNCHRONOUS, MS_UNBINDABLE)
from . import jsonc as json
from .errors import OCIError  # noqa: F401 - raised here, and config.OCIError to its readers

OCI_VERSION = "1.0.2"

# OCI namespace type -> (/proc/PID/ns name, clone flag)
NAMESPACES = {"pid": ("pid", L.CLONE_NEWPID), "network": ("net", L.CLONE_NEWNET), "ipc": ("ipc", L.CLONE_NEWIPC),
              "uts": ("uts", L.CLONE_NEWUTS), "mount": ("mnt", L.CLONE_NEWNS), "user": ("user", L.CLONE_NEWUSER),
              "cgroup": ("cgroup", L.CLONE_NEWCGROUP)}

# option -> (flag, set?)
MOUNT_FLAGS = {
    "ro": (L.MS_RDONLY, True), "rw": (L.MS_RDONLY, False), "nosuid": (L.MS_NOSUID, True),
    "suid": (L.MS_NOSUID, False), "nodev": (L.MS_NODEV, True), "dev": (L.MS_NODEV, False),
    "noexec": (L.MS_NOEXEC, True), "exec": (L.MS_NOEXEC, False), "bind": (L.MS_BIND, True),
    "rbind": (L.MS_BIND | L.MS_REC, True), "strictatime": (MS_STRICTATIME, True), "relatime": (MS_RELATIME, True),
    "norelatime": (MS_RELATIME, False), "noatime": (MS_NOATIME, True), "atime": (MS_NOATIME, False),
    "nodiratime": (MS_NODIRATIME, True), "diratime": (MS_NODIRATIME, False), "sync": (MS_SYNCHRONOUS, True),
    "async": (MS_SYNCHRONOUS, False), "dirsync": (MS_DIRSYNC, True), "defaults": (0, True),
}
PROPAGATION = {"private": L.MS_PRIVATE, "rprivate": L.MS_PRIVATE | L.MS_REC, "shared": L.MS_SHARED,
               "rshared": L.MS_SHARED | L.MS_REC, "slave": L.MS_SLAVE, "rslave": L.MS_SLAVE | L.MS_REC,
               "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | L.MS_REC}
MOUNT_TYPES = ("bind", "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "none", "")
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


# SemVer 2.0.0's grammar (semver.org), without `re` (with `enum`, ~6 ms of every create): the spec
# requires ociVersion in it; only major 1 exists.
_IDENTIFIER = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")


def _number(part: str) -> bool:
    return part.isascii() and part.isdigit() and (part == "0" or part[0] != "0")


def semver_major(version: str) -> str | None:
    """The major number of a SemVer 2.0.0 ``version``; None when it is not one."""
    rest, plus, build = version.partition("+")
    if plus and not all(p and set(p) <= _IDENTIFIER for p in build.split(".")):
        return None
    core, dash, pre = rest.partition("-")
    if dash and not all(p and set(p) <= _IDENTIFIER and (_number(p) or not p.isdigit()) for p in pre.split(".")):
        return None
    numbers = core.split(".")
    return numbers[0] if len(numbers) == 3 and all(_number(n) for n in numbers) else None


def _bad(key: str, value, why: str):
    raise OCIError(f"config.json: {key} {json.dumps(value)[:200]}: {why}")


def _typed(obj: dict, key: str, kind, where: str, default=None):
    value = obj.get(key, default)
    if value is None:
        return default
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        name = {list: "a list", dict: "an object", str: "a string", int: "an integer", bool: "true or false"}
        _bad(f"{where}{key}", value, f"must be {name.get(kind, kind)}")
    return value


def _strings(obj: dict, key: str, where: str) -> list:
    items = _typed(obj, key, list, where, [])
    for n, item in enumerate(items):
        if not isinstance(item, str):
            _bad(f"{where}{key}[{n}]", item, "must be a string")
    return items


def load(bundle: str) -> dict:
    """The bundle's config.json, checked; adds "_rootfs" (absolute path) and "_bundle"."""
    if not os.path.isdir(bundle):
        raise OCIError(f"bundle {bundle}: not a directory")
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as fh:
            conf = json.load(fh)
    except FileNotFoundError:
        raise OCIError(f"bundle {bundle}: no config.json (create one with `pynet-oci spec`)") from None
    except OSError as exc:
        raise OCIError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise OCIError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise OCIError(f"{path}: expected a JSON object")
    check(conf)
    root = conf["root"]["path"]
    conf["_rootfs"] = os.path.realpath(root if os.path.isabs(root) else os.path.join(bundle, root))
    if not os.path.isdir(conf["_rootfs"]):
        _bad("root.path", root, f"{conf['_rootfs']} is not a directory")
    conf["_bundle"] = os.path.realpath(bundle)
    for n, m in enumerate(conf.get("mounts") or ()):
        if {"bind", "rbind"} & set(m.get("options") or ()) or m.get("type") == "bind":
            src = m.get("source") or ""
            if not os.path.exists(os.path.join(conf["_bundle"], src)):   # an absolute source stays as it is
                _bad(f"mounts[{n}].source", src, "does not exist")
    return conf


def check(conf: dict) -> None:
    version = _typed(conf, "ociVersion", str, "")
    if not version:
        _bad("ociVersion", version, "missing (expected e.g. 1.0.2)")
    major = semver_major(version)
    if major is None:
        _bad("ociVersion", version, "is not a SemVer 2.0.0 version (e.g. 1.0.2, 1.0.2-dev)")
    if major != "1":
        _bad("ociVersion", version, f"is not supported (this runtime implements runtime-spec 1.x, up to {OCI_VERSION})")
    root = _typed(conf, "root", dict, "")
    if not root or not _typed(root, "path", str, "root."):
        _bad("root.path", (root or {}).get("path"), "missing: the rootfs directory is required")
    _typed(root, "readonly", bool, "root.")
    _typed(conf, "hostname", str, "")
    _typed(conf, "annotations", dict, "", {})
    for n, m in enumerate(_typed(conf, "mounts", list, "", [])):
        where = f"mounts[{n}]."
        if not isinstance(m, dict):
            _bad(f"mounts[{n}]", m, "must be an object")
        dest = _typed(m, "destination", str, where)
        if not dest or not dest.startswith("/"):
            _bad(f"{where}destination", dest, "must be an absolute path")
        kind = _typed(m, "type", str, where, "")
        options = _strings(m, "options", where)
        if kind not in MOUNT_TYPES:
            _bad(f"{where}type", kind, f"is not supported (supported: {', '.join(t for t in MOUNT_TYPES if t)})")
        if kind in ("bind", "none", "") and not ({"bind", "rbind"} & set(options)) and kind != "bind":
            _bad(f"{where}type", kind, "needs options bind or rbind")
        _typed(m, "source", str, where)
    process = _typed(conf, "process", dict, "")
    if process is not None:
        check_process(process, "process.")
    linux = _typed(conf, "linux", dict, "", {})
    seen = set()
    for n, ns in enumerate(_typed(linux, "namespaces", list, "linux.", [])):
        where = f"linux.namespaces[{n}]."
        if not isinstance(ns, dict):
            _bad(f"linux.namespaces[{n}]", ns, "must be an object")
        kind = ns.get("type")
        if kind not in NAMESPACES:
            _bad(f"{where}type", kind, f"is not one of {', '.join(NAMESPACES)}")
        if kind in seen:
            _bad(f"{where}type", kind, "is given twice")
        seen.add(kind)
        path = _typed(ns, "path", str, where)
        if path and not os.path.exists(path):
            _bad(f"{where}path", path, "does not exist")
    for key in ("uidMappings", "gidMappings"):
        for n, mp in enumerate(_typed(linux, key, list, "linux.", [])):
            for field in ("containerID", "hostID", "size"):
                v = mp.get(field) if isinstance(mp, dict) else None
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    _bad(f"linux.{key}[{n}].{field}", v, "must be a non-negative integer")
    if "user" in seen and not any(ns.get("path") for ns in linux["namespaces"] if ns.get("type") == "user") \
            and not linux.get("uidMappings"):
        _bad("linux.uidMappings", linux.get("uidMappings"), "a new user namespace needs uid/gid mappings")
    if conf.get("hostname") and "uts" not in seen:
        _bad("hostname", conf["hostname"], "needs its own uts namespace (linux.namespaces)")
    _typed(linux, "cgroupsPath", str, "linux.")
    prop = _typed(linux, "rootfsPropagation", str, "linux.")
    if prop is not None and prop not in PROPAGATION:
        _bad("linux.rootfsPropagation", prop, f"is not one of {', '.join(PROPAGATION)}")
    sysctl = _typed(linux, "sysctl", dict, "linux.", {})
    for key, value in sysctl.items():
        if not isinstance(value, str) or "/" in key or ".." in key:
            _bad(f"linux.sysctl.{key}", value, "must be a string value of a dotted key")
    for key in ("maskedPaths", "readonlyPaths"):
        for n, p in enumerate(_strings(linux, key, "linux.")):
            if not p.startswith("/"):
                _bad(f"linux.{key}[{n}]", p, "must be an absolute path")
    for n, dev in enumerate(_typed(linux, "devices", list, "linux.", [])):
        where = f"linux.devices[{n}]."
        if not isinstance(dev, dict) or not str(dev.get("path", "")).startswith("/dev/"):
            _bad(f"{where}path", dev.get("path") if isinstance(dev, dict) else dev, "must be a path under /dev")
        if dev.get("type") not in ("c", "b", "u", "p"):
            _bad(f"{where}type", dev.get("type"), "must be c, b, u or p")
    check_resources(_typed(linux, "resources", dict, "linux.", {}))
    seccomp = _typed(linux, "seccomp", dict, "linux.")
    if seccomp is not None:
        from pynet.launcher import seccomp_profile
        try:
            seccomp_profile.check(seccomp, "linux.seccomp")
        except seccomp_profile.ProfileError as exc:
            raise OCIError(f"config.json: {exc}") from None
        if "SCMP_ACT_NOTIFY" in json.dumps(seccomp):
            _bad("linux.seccomp", "SCMP_ACT_NOTIFY", "not supported yet")
    hooks = _typed(conf, "hooks", dict, "", {})
    for kind, items in hooks.items():
        if kind not in HOOK_KINDS:
            _bad(f"hooks.{kind}", items, f"unknown hook kind (known: {', '.join(HOOK_KINDS)})")
        if not isinstance(items, list):
            _bad(f"hooks.{kind}", items, "must be a list")
        for n, hook in enumerate(items):
            where = f"hooks.{kind}[{n}]."
            if not isinstance(hook, dict) or not isinstance(hook.get("path"), str) or not hook["path"].startswith("/"):
                _bad(f"{where}path", hook.get("path") if isinstance(hook, dict) else hook, "must be an absolute path")
            _strings(hook, "args", where)
            _strings(hook, "env", where)
            timeout = _typed(hook, "timeout", int, where)
            if timeout is not None and timeout <= 0:
                _bad(f"{where}timeout", timeout, "must be positive")


def check_process(process: dict, where: str = "process.") -> None:
    from pynet.launcher import security   # here: `start`, `state`, `delete` do without it (~2 ms)

    args = _strings(process, "args", where)
    if not args:
        _bad(f"{where}args", process.get("args"), "must name the command to run")
    _strings(process, "env", where)
    cwd = _typed(process, "cwd", str, where, "/")
    if not cwd.startswith("/"):
        _bad(f"{where}cwd", cwd, "must be an absolute path")
    user = _typed(process, "user", dict, where, {})
    for key in ("uid", "gid"):
        v = user.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            _bad(f"{where}user.{key}", v, "must be a non-negative integer")
    umask = _typed(user, "umask", int, f"{where}user.")
    if umask is not None and not 0 <= umask <= 0o777:
        _bad(f"{where}user.umask", umask, "must be 0..511 (0o777)")
    for n, g in enumerate(_typed(user, "additionalGids", list, f"{where}user.", [])):
        if not isinstance(g, int) or g < 0:
            _bad(f"{where}user.additionalGids[{n}]", g, "must be a non-negative integer")
    caps = _typed(process, "capabilities", dict, where, {})
    for key, names in caps.items():
        if key not in security.CAP_SETS:
            _bad(f"{where}capabilities.{key}", names, f"unknown set (known: {', '.join(security.CAP_SETS)})")
        for n, name in enumerate(_strings(caps, key, f"{where}capabilities.")):
            try:
                security._cap_name(name)
            except security.SecurityError:
                _bad(f"{where}capabilities.{key}[{n}]", name, "is not a capability")
    for n, rl in enumerate(_typed(process, "rlimits", list, where, [])):
        kind = rl.get("type") if isinstance(rl, dict) else None
        if not isinstance(kind, str) or kind.upper().removeprefix("RLIMIT_").lower() not in security.RLIMITS:
            _bad(f"{where}rlimits[{n}].type", kind, "is not an RLIMIT_* name")
        for key in ("soft", "hard"):
            if not isinstance(rl.get(key), int) or rl[key] < 0:
                _bad(f"{where}rlimits[{n}].{key}", rl.get(key), "must be a non-negative integer")
        if rl["soft"] > rl["hard"]:
            _bad(f"{where}rlimits[{n}].soft", rl["soft"], f"is above the hard limit {rl['hard']}")
    _typed(process, "noNewPrivileges", bool, where)
    _typed(process, "oomScoreAdj", int, where)
    _typed(process, "terminal", bool, where)
    size = _typed(process, "consoleSize", dict, where, {})
    for key in ("height", "width"):
        if key in size and (not isinstance(size[key], int) or not 0 <= size[key] < 65536):
            _bad(f"{where}consoleSize.{key}", size[key], "must be an integer 0..65535")


def check_resources(res: dict) -> None:
    where = "linux.resources."
    # Limits pynet-oci has no writer for: refused rather than silently left out (runc refuses them when
    # their controller is missing, as net_cls, net_prio and hugetlb are on this kind of host).
    network = _typed(res, "network", dict, where, {})
    for key in ("classID", "priorities"):
        if network.get(key):
            _bad(f"{where}network.{key}", network[key], "is not supported yet (net_cls/net_prio limits)")
    if _typed(res, "hugepageLimits", list, where, []):
        _bad(f"{where}hugepageLimits", res["hugepageLimits"], "is not supported yet (hugetlb limits)")
    mem = _typed(res, "memory", dict, where, {})
    limit = _typed(mem, "limit", int, f"{where}memory.")
    if limit is not None and limit != -1 and limit < (6 << 20):
        _bad(f"{where}memory.limit", limit, "is below the minimum 6291456 (6 MiB)")
    cpu = _typed(res, "cpu", dict, where, {})
    for key in ("shares", "quota", "period"):
        v = _typed(cpu, key, int, f"{where}cpu.")
        if v is not None and v < (-1 if key == "quota" else 1):
            _bad(f"{where}cpu.{key}", v, "is out of range")
    cpus = _typed(cpu, "cpus", str, f"{where}cpu.")
    if cpus:
        from pynet.launcher import cgroups
        try:
            cgroups.check_cpuset(cpus)
        except cgroups.LimitError:
            _bad(f"{where}cpu.cpus", cpus, f"is not a CPU list of this machine ({cgroups.online_cpus()})")
    pids = _typed(res, "pids", dict, where, {})
    _typed(pids, "limit", int, f"{where}pids.")
    for n, dev in enumerate(_typed(res, "devices", list, where, [])):
        w = f"{where}devices[{n}]."
        if not isinstance(dev, dict) or not isinstance(dev.get("allow"), bool):
            _bad(f"{w}allow", dev.get("allow") if isinstance(dev, dict) else dev, "must be true or false")
        if dev.get("type", "a") not in ("a", "c", "b"):
            _bad(f"{w}type", dev.get("type"), "must be a, c or b")
        access = dev.get("access", "rwm")
        if not isinstance(access, str) or not set(access) <= set("rwm"):
            _bad(f"{w}access", access, "must be a combination of r, w, m")


def cap_names(process: dict, key: str) -> list:
    from pynet.launcher import security

    return [security._cap_name(c) for c in (process.get("capabilities") or {}).get(key) or ()]


def rlimits(process: dict) -> dict:
    return {rl["type"].upper().removeprefix("RLIMIT_").lower(): (rl["soft"], rl["hard"])
            for rl in process.get("rlimits") or ()}


def host_id(linux: dict, key: str) -> int:
    """The host id of container root in ``linux[key]`` (uidMappings/gidMappings; 0 without a mapping for it)."""
    for m in linux.get(key) or ():
        if m["containerID"] <= 0 < m["containerID"] + m["size"]:
            return m["hostID"] - m["containerID"]
    return 0


def namespaces(conf: dict) -> dict:
    """{OCI type: path or None (new)}."""
    return {ns["type"]: ns.get("path") or None for ns in (conf.get("linux") or {}).get("namespaces") or ()}


def default_spec(args=("sh",), rootless: bool = False) -> dict:
    """What `runc spec` writes (runc 1.1)."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": list(args),
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                            "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
