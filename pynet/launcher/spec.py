"""A `pynet run` container as an OCI runtime spec (config.json's shape): the launcher's security defaults
(Docker's capability set, the default seccomp profile, runc's masked and read-only paths,
no_new_privs, `runc spec`'s rlimits) are this default spec, and the run's options change it. The spec is
checked by pynet/oci/config.py like any config.json, and its container side (mounts, devices, masked
paths, pivot_root, privilege drop) is pynet/oci/init.py's, the same code pynet-oci runs.

What is not in the spec goes to init.Plan beside it (launcher/namespaces.py plan_of): the image's layers,
an overlay the container side mounts as its root inside the container's own mount namespace (so a crash
leaves no mount behind on the host; ``root.path`` names nothing then), and the host node of each
--device, bound rather than made. The seccomp profile joins the spec in with_seccomp (the spec kept for
`inspect`); the stages get it apart, as a filter compiled ahead (launcher/namespaces.py).
"""

from __future__ import annotations

from cni_plugins import syscalls as L
from pynet.oci.config import OCI_VERSION   # (loaded with pynet/oci/init.py, which every run uses)

from . import rootfs, security


class SpecError(ValueError):
    """A run whose spec pynet-oci would refuse (the message names the key and value)."""

# The flags a tmpfs (--tmpfs) may carry, as OCI mount options.
_TMPFS_OPTIONS = ((L.MS_RDONLY, "ro"), (L.MS_NOSUID, "nosuid"), (L.MS_NODEV, "nodev"), (L.MS_NOEXEC, "noexec"))


def _standard_mounts() -> list:
    """What the launcher mounts in every container, as runc's default spec has it (with Docker's /dev
    sizes): the nodes of /dev come from the host (rootfs.populate_dev)."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "nodev", "noexec"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    ]


def tmpfs_mount(path: str, flags: int, data: str) -> dict:
    """A --tmpfs (rootfs.parse_tmpfs's tuple) as an OCI mount."""
    options = [name for bit, name in _TMPFS_OPTIONS if flags & bit] + [d for d in data.split(",") if d]
    return {"destination": path, "type": "tmpfs", "source": "tmpfs", "options": options}


def bind_mount(source: str, destination: str, readonly: bool = False) -> dict:
    return {"destination": destination, "type": "bind", "source": source,
            "options": ["rbind"] + (["ro"] if readonly else [])}


def process_of(argv: list, env: dict, cwd: str, caps: list, user: "security.User | None", rlimits: dict | None,
               nnp: bool, terminal: bool = False) -> dict:
    """The spec's process (also what `pynet exec` runs in a container): Docker's capability sets of
    ``caps``; ``user`` None: root."""
    user = user or security.User()
    return {
        "terminal": terminal, "args": list(argv), "env": [f"{k}={v}" for k, v in env.items()], "cwd": cwd or "/",
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.groups)},
        "capabilities": {key: ["CAP_" + c for c in names] for key, names in security.docker_cap_sets(caps).items()},
        "rlimits": [{"type": "RLIMIT_" + name.upper(), "soft": soft, "hard": hard}
                    for name, (soft, hard) in (rlimits or {}).items()],
        "noNewPrivileges": nnp,
    }


def build(*, argv: list, env: dict, cwd: str, hostname: str, caps: list, user: security.User,
          rlimits: dict, nnp: bool, etc_dir: str, readonly: bool = False,
          new_net: bool = True, userns: tuple | None = None, volumes=(), tmpfs=(), devices=(),
          terminal: bool = False) -> dict:
    """The spec of one run but for its seccomp profile (with_seccomp): the launcher hands its stages the
    filter's profile apart, compiled ahead. ``userns``: (host base, size) mapped to container
    0..size-1; ``volumes``: (host, container, readonly); ``tmpfs``: parse_tmpfs tuples; ``devices``:
    devices.Device."""
    process = process_of(argv, env, cwd, caps, user, rlimits, nnp, terminal)
    # Bound first, as the launcher always did: the host paths are reached before any user namespace.
    mounts = [bind_mount(f"{etc_dir}/{name}", f"/etc/{name}") for name in rootfs.ETC_FILES]
    mounts += [bind_mount(src, dst, ro) for src, dst, ro in volumes]
    mounts += _standard_mounts()
    mounts += [tmpfs_mount(*t) for t in tmpfs]
    kinds = ["pid", "ipc", "uts", "mount", "cgroup"] + (["network"] if new_net else []) + (["user"] if userns else [])
    linux = {
        "namespaces": [{"type": k} for k in kinds],
        "maskedPaths": list(rootfs.MASKED_PATHS),
        "readonlyPaths": list(rootfs.READONLY_PATHS),
        "devices": [{"path": d.path, "type": d.kind, "major": d.major, "minor": d.minor, "fileMode": 0o666,
                     "uid": 0, "gid": 0} for d in devices],
    }
    if userns:
        linux["uidMappings"] = linux["gidMappings"] = [{"containerID": 0, "hostID": userns[0], "size": userns[1]}]
    return {"ociVersion": OCI_VERSION, "process": process, "root": {"path": "rootfs", "readonly": readonly},
            "hostname": hostname, "mounts": mounts, "linux": linux}


def with_seccomp(oci: dict, seccomp) -> dict:
    """The whole spec: ``oci`` with linux.seccomp, the profile of ``seccomp`` ("default", "unconfined"
    or a loaded profile)."""
    if seccomp == "unconfined":
        return oci
    from . import seccomp_profile

    profile = seccomp_profile.load() if seccomp == "default" else seccomp
    return dict(oci, linux=dict(oci["linux"], seccomp=profile))


def check(oci: dict) -> None:
    """pynet-oci's check of a config.json (config.OCIError names the key and value), but for the seccomp
    profile, which seccomp_profile.load checked already."""
    from pynet.oci import config

    try:
        config.check(dict(oci, linux={k: v for k, v in oci["linux"].items() if k != "seccomp"}))
    except config.OCIError as exc:
        raise SpecError(str(exc)) from None


def save(oci: dict, path: str) -> None:
    """Written whole or not at all: `pynet inspect` may read it meanwhile (json.dumps: the C encoder)."""
    import json

    from cni_plugins.files import atomic_write

    atomic_write(path, json.dumps(oci))


def read(path: str) -> dict | None:
    """A saved spec (None: a container made before specs were kept)."""
    import json

    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
