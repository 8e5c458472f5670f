"""podman 4.3 with `--runtime .venv/bin/pynet-oci` on what engines ask of a runtime: users, read-only roots,
tmpfs and bind volumes, dropped capabilities, seccomp (podman's default profile and unconfined), memory
limits down to the OOM kill, `podman update`; and podman entirely on pynet (pynet's CNI plugins for the
network, pynet-oci for the container). Podman is fenced as tests/test_podman.py fences it."""

from __future__ import annotations

import os

import pytest

from tests.test_oci import OCI, default_seccomp_cache_removed, podman_oci  # noqa: F401 - fixture
from tests.test_podman import http_get, plugin_dir  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="podman as root")


def _run(pm, *args):
    return ("run", "--network", "none", "--cgroup-parent", pm.cgroup_parent, *args)


def _status(pm, *args) -> dict:
    """/proc/self/status of a container run with ``args`` (podman run flags), as {key: value}."""
    out = pm.out(*_run(pm, "--rm", *args, "pynet-busybox", "cat", "/proc/self/status"))
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def test_podman_user_caps_and_seccomp_through_pynet_oci(podman_oci):
    pm = podman_oci
    assert _status(pm, "--user", "1000:1001")["Uid"].split()[:2] == ["1000", "1000"]
    assert _status(pm, "--user", "1000:1001")["Gid"].split()[0] == "1001"
    assert _status(pm, "--cap-drop", "ALL")["CapEff"] == "0000000000000000"
    default = _status(pm)
    assert default["CapEff"] != "0000000000000000" and default["Seccomp"] == "2"   # podman's default profile
    assert _status(pm, "--security-opt", "seccomp=unconfined")["Seccomp"] == "0"


def test_podman_read_only_tmpfs_and_volumes_through_pynet_oci(podman_oci, tmp_path):
    pm = podman_oci
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from-host\n")
    script = ("cat /data/in.txt; echo from-container > /data/out.txt; "
              "echo x > /root-file 2>/dev/null || echo root-read-only; "
              "echo y > /scratch/f && echo scratch-ok; grep ' /scratch ' /proc/self/mountinfo | grep -c ' - tmpfs '")
    res = pm(*_run(pm, "--rm", "--read-only", "--tmpfs", "/scratch:size=1m", "-v", f"{shared}:/data",
                   "pynet-busybox", "sh", "-c", script))
    assert res.stdout.decode().split() == ["from-host", "root-read-only", "scratch-ok", "1"]
    assert (shared / "out.txt").read_text() == "from-container\n"


def test_podman_memory_limit_oom_kill_exits_137_and_update_changes_it(podman_oci):
    pm = podman_oci
    # busybox tail holds the whole newline-free stream of /dev/zero: PID 1 itself is OOM-killed
    res = pm(*_run(pm, "--memory", "16m", "pynet-busybox", "busybox", "tail", "/dev/zero"), check=False,
             timeout=120)
    assert res.returncode == 137, res.stderr
    cid = pm.out("ps", "-a", "-q", "--no-trunc").split()[0]
    # (.State.OOMKilled stays false here with runc too: conmon does not see this hybrid's OOM events)
    assert pm.out("inspect", "--format", "{{.State.ExitCode}}", cid) == "137"
    pm("rm", cid)

    cid = pm.out(*_run(pm, "-d", "--memory", "32m", "pynet-busybox", "sleep", "60"))
    pid = pm.out("inspect", "--format", "{{.State.Pid}}", cid)
    cgroup = {line.split(":")[1]: line.split(":", 2)[2].strip() for line in open(f"/proc/{pid}/cgroup")}
    memory = os.path.join("/sys/fs/cgroup/memory", cgroup["memory"].lstrip("/"))
    cpu = os.path.join("/sys/fs/cgroup/cpu", cgroup["cpu"].lstrip("/"))
    assert open(os.path.join(memory, "memory.limit_in_bytes")).read().strip() == str(32 << 20)
    pm("update", "--memory", "64m", "--cpu-shares", "512", cid)
    assert open(os.path.join(memory, "memory.limit_in_bytes")).read().strip() == str(64 << 20)
    assert open(os.path.join(cpu, "cpu.shares")).read().strip() == "512"
    pm("rm", "-f", "-t", "0", cid)


@pytest.fixture
def podman_pynet(host_ns, plugin_dir):  # noqa: F811 - the imported fixture
    """podman on pynet alone: pynet's CNI plugins (installed in plugin_dir) and pynet-oci."""
    from tests.podman.harness import podman_with_runtime

    with podman_with_runtime(host_ns, plugin_dir, OCI) as pm, default_seccomp_cache_removed():
        yield pm


def test_podman_runs_entirely_on_pynet_plugins_and_pynet_oci(podman_pynet, host_ns):
    pm = podman_pynet
    pm.write_conflist("pynetoci", "cni-po0", "10.89.9.0/24", "10.89.9.1")
    run = ("run", "--network", "pynetoci", "--cgroup-parent", pm.cgroup_parent)
    out = pm.out(*run, "--rm", "pynet-busybox", "sh", "-c", "ip -4 -o addr show eth0; ip route")
    assert "inet 10.89.9." in out and "default via 10.89.9.1" in out
    cid = pm.out(*run, "-d", "pynet-busybox", "httpd", "-f", "-p", "80", "-h", "/www")
    ip = pm.out("inspect", "--format", "{{.NetworkSettings.Networks.pynetoci.IPAddress}}", cid)
    assert ip.startswith("10.89.9.")
    assert b"pynet-podman-ok" in http_get(host_ns, ip, 80)   # from the host side of pynet's bridge
    pm("rm", "-f", "-t", "0", cid)
    assert not os.path.exists(os.path.join("/run/pynet-oci", cid))
