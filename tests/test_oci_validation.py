"""What the opencontainers/runtime-tools validation suite (scripts/oci-validation.sh) found in `pynet-oci`,
each behaviour checked directly on a busybox bundle, without the Go suite: same sandbox and bundles as
tests/test_oci.py."""

from __future__ import annotations

import os

import pytest

from tests.test_oci import _args, busybox_rootfs, oci  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="an OCI runtime needs root")


def _umask(mask: int):
    """The umask the runtime is started with (it inherits this process's)."""
    class Umask:
        def __enter__(self):
            self.old = os.umask(mask)

        def __exit__(self, *exc):
            os.umask(self.old)
    return Umask()


# killsig: a signal sent right after `start` must reach the process, not the runtime's init before execve.
def test_start_returns_once_the_process_runs(oci):
    def edit(c):
        c["process"]["args"] = ["sleep", "60"]
        # A slow startContainer hook: `start` used to return while it (and the init's Python) still ran.
        c["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "sleep 0.3"]}]}
    oci.config(edit)
    assert oci.create("started").returncode == 0
    pid = oci.state("started")["pid"]
    res = oci("start", "started")
    assert res.returncode == 0, res.err
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        assert fh.read().split(b"\0")[:2] == [b"sleep", b"60"]
    assert oci("delete", "--force", "started").returncode == 0


def test_start_of_a_process_that_cannot_exec_returns_and_the_container_stops(oci):
    oci.config(_args("no-such-command"))
    assert oci.create("noexec").returncode == 0
    res = oci("start", "noexec", timeout=20)
    assert res.returncode == 0, res.err
    assert oci.wait_status("noexec", "stopped")["status"] == "stopped"
    assert "no-such-command" in open(os.path.join(os.path.dirname(oci.bundle), "noexec.err")).read()
    assert oci("delete", "noexec").returncode == 0


# linux_devices: mknod's mode goes through the umask; the node must have linux.devices[].fileMode.
def test_device_nodes_have_their_file_mode_whatever_the_umask(oci):
    def edit(c):
        c["linux"]["devices"] = [{"path": "/dev/xnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
                                 {"path": "/dev/xzero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o660,
                                  "uid": 7, "gid": 8}]
        c["process"]["args"] = ["stat", "-c", "%n %a %u:%g", "/dev/xnull", "/dev/xzero"]
    oci.config(edit)
    with _umask(0o027):
        res = oci.run("modes")
    assert res.returncode == 0, res.err
    assert res.out.splitlines() == ["/dev/xnull 666 0:0", "/dev/xzero 660 7:8"]


# misc_props: "MUST generate an error when invalid or unsupported values are encountered" (runc takes any).
@pytest.mark.parametrize("version, why", [("invalid", "is not a SemVer 2.0.0 version"),
                                          ("1.0", "is not a SemVer 2.0.0 version"),
                                          ("2.0.0", "is not supported")])
def test_create_refuses_an_oci_version_it_does_not_implement(oci, version, why):
    oci.config(lambda c: c.update(ociVersion=version))
    res = oci.create("badversion")
    assert res.returncode == 1
    assert f'config.json: ociVersion "{version}": {why}' in res.err and "Traceback" not in res.err
    assert not os.path.exists(os.path.join(oci.root, "badversion"))


def test_prerelease_and_build_versions_are_accepted(oci):
    oci.config(lambda c: (c.update(ociVersion="1.0.2-dev+engine.7"), c["process"].update(args=["true"])))
    res = oci.run("devversion")
    assert res.returncode == 0, res.err


# linux_cgroups_network, linux_cgroups_hugetlb: limits pynet-oci cannot set must fail create, not vanish.
@pytest.mark.parametrize("key, value", [("network", {"classID": 255}),
                                        ("network", {"priorities": [{"name": "lo", "priority": 10}]}),
                                        ("hugepageLimits", [{"pageSize": "2MB", "limit": 1 << 21}])])
def test_limits_without_a_writer_are_refused(oci, key, value):
    oci.config(lambda c: c["linux"]["resources"].update({key: value}))
    res = oci.create("unlimited")
    assert res.returncode == 1
    assert f"config.json: linux.resources.{key}" in res.err and "is not supported yet" in res.err
    assert "Traceback" not in res.err and not os.path.exists(os.path.join(oci.root, "unlimited"))
