"""`pynet run`'s container as an OCI spec (pynet/launcher/spec.py): the security defaults are the default
spec, options change it, and pynet-oci's reader (pynet/oci/config.py) accepts it as any config.json."""

from __future__ import annotations

import os

import pytest

from cni_plugins import syscalls as L
from pynet.launcher import devices, rootfs, security, spec
from pynet.oci import config
from pynet.oci.init import mount_options

def _build(seccomp="default", **kw):
    args = dict(argv=["sh", "-c", "true"], env={"PATH": "/bin", "HOME": "/root"}, cwd="/", hostname="c1",
                caps=security.resolve_caps(), user=security.User(), rlimits=security.resolve_rlimits(),
                nnp=True, etc_dir="/state/c1")
    args.update(kw)
    oci = spec.with_seccomp(spec.build(**args), seccomp)
    config.check(oci)
    spec.check(oci)
    return oci


def _mount(oci, dest):
    return [m for m in oci["mounts"] if m["destination"] == dest]


def test_default_spec_holds_the_launchers_security_defaults():
    if not security.seccomp_available():
        pytest.skip("python3-seccomp not installed")
    oci = _build()
    caps = oci["process"]["capabilities"]
    kept = sorted("CAP_" + c for c in security.DEFAULT_CAPS)
    assert all(sorted(caps[k]) == kept for k in ("bounding", "effective", "permitted"))
    assert caps["inheritable"] == caps["ambient"] == []
    assert oci["process"]["noNewPrivileges"] is True
    assert {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024} in oci["process"]["rlimits"]
    assert oci["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert oci["linux"]["maskedPaths"] == list(rootfs.MASKED_PATHS)
    assert oci["linux"]["readonlyPaths"] == list(rootfs.READONLY_PATHS)
    assert {n["type"] for n in oci["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "cgroup", "network"}
    assert oci["hostname"] == "c1" and oci["root"]["readonly"] is False
    assert [m["source"] for m in oci["mounts"] if m["type"] == "bind"] == \
        ["/state/c1/hostname", "/state/c1/hosts", "/state/c1/resolv.conf"]
    assert {m["type"] for m in oci["mounts"]} >= {"proc", "sysfs", "cgroup", "tmpfs", "devpts", "mqueue"}
    assert not [key for key in oci if key.startswith("_")]   # nothing beyond the OCI spec
    assert oci["process"]["env"] == ["PATH=/bin", "HOME=/root"]


def test_options_change_the_default_spec():
    oci = _build(seccomp="unconfined", new_net=False, userns=(100000, 65536), readonly=True, terminal=True,
                 volumes=[("/srv/data", "/data", True)], tmpfs=[rootfs.parse_tmpfs("/scratch:size=1m,exec")],
                 user=security.User(uid=1000, gid=100, groups=[5]), nnp=False,
                 devices=[devices.Device(host="/dev/null", path="/dev/mine", kind="c", major=1, minor=3)])
    assert "seccomp" not in oci["linux"]
    kinds = {n["type"] for n in oci["linux"]["namespaces"]}
    assert "network" not in kinds and "user" in kinds
    assert oci["linux"]["uidMappings"] == oci["linux"]["gidMappings"] == \
        [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert oci["root"]["readonly"] is True and oci["process"]["terminal"] is True
    assert oci["process"]["noNewPrivileges"] is False
    assert oci["process"]["user"] == {"uid": 1000, "gid": 100, "additionalGids": [5]}
    assert _mount(oci, "/data") == [{"destination": "/data", "type": "bind", "source": "/srv/data",
                                     "options": ["rbind", "ro"]}]
    scratch = _mount(oci, "/scratch")[0]
    assert scratch["type"] == "tmpfs" and set(scratch["options"]) == {"nosuid", "nodev", "size=1m"}
    flags, _prop, data = mount_options(scratch["options"])
    assert flags == L.MS_NOSUID | L.MS_NODEV and data == "size=1m"
    assert oci["linux"]["devices"] == [{"path": "/dev/mine", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666,
                                        "uid": 0, "gid": 0}]


def test_a_cap_drop_reaches_every_set_of_the_spec():
    oci = _build(caps=security.resolve_caps(cap_drop=["ALL"], cap_add=["KILL"]), seccomp="unconfined")
    assert {k: v for k, v in oci["process"]["capabilities"].items() if v} == \
        {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}


def test_the_spec_of_a_run_is_read_as_any_config_json():
    oci = _build(seccomp="unconfined")
    oci["process"]["cwd"] = "relative"
    with pytest.raises(config.OCIError, match="process.cwd"):
        config.check(oci)
    with pytest.raises(spec.SpecError, match="process.cwd"):
        spec.check(oci)


def test_spec_save_and_read_round_trip(tmp_path):
    oci = _build(seccomp="unconfined")
    path = os.path.join(tmp_path, "config.json")
    spec.save(oci, path)
    assert spec.read(path) == oci
    assert spec.read(os.path.join(tmp_path, "missing.json")) is None
