"""`pynet-oci` on a live container's resources: `update` (runc's flags and --resources JSON) written to the
cgroups, device rules read in order (a deny after allows), rootfsPropagation on the new root, and
`events` (stats and OOM kills). Same sandbox and bundles as tests/test_oci.py."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.test_oci import OCI, _args, _cgroup_dirs, busybox_rootfs, oci  # noqa: F401 - fixtures

# Container ids (and so cgroup names) of this process: other test processes run pynet-oci at the same time.
U = {name: f"{name}-{os.getpid()}" for name in ("upd", "grow", "bad", "kmem", "allowed", "denied", "flipped",
                                                 "wiped", "prop", "cgmount", "pidhost", "pidguest", "hookns", "ev", "oom")}
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="an OCI runtime needs root")


def _files(cid: str, *names) -> dict:
    """{file name: content} of the container's cgroup files (whichever hierarchy holds each)."""
    found = {}
    for d in _cgroup_dirs(cid):
        for name in names:
            if os.path.exists(os.path.join(d, name)):
                found[name] = open(os.path.join(d, name)).read().strip()
    return found


def _running(oci, cid: str, *argv) -> None:
    oci.config(_args(*(argv or ("sleep", "60"))))
    res = oci.create(cid)
    assert res.returncode == 0, res.err
    assert oci("start", cid).returncode == 0


# -- update -----------------------------------------------------------------------------------------------
def test_update_flags_reach_the_running_containers_cgroups(oci):
    oci.config(lambda c: c["linux"]["resources"].update(memory={"limit": 64 << 20}, pids={"limit": 20}))
    _running(oci, U["upd"])
    res = oci("update", "--memory", "96m", "--memory-swap", "128m", "--memory-reservation", "32m",
              "--cpu-share", "512", "--cpu-period", "50000", "--cpu-quota", "25000", "--cpuset-cpus", "0",
              "--cpuset-mems", "0", "--pids-limit", "50", U["upd"])
    assert res.returncode == 0, res.err
    assert _files(U["upd"], "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.soft_limit_in_bytes",
                  "cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpuset.cpus", "cpuset.mems",
                  "pids.max") == {
        "memory.limit_in_bytes": str(96 << 20), "memory.memsw.limit_in_bytes": str(128 << 20),
        "memory.soft_limit_in_bytes": str(32 << 20), "cpu.shares": "512", "cpu.cfs_period_us": "50000",
        "cpu.cfs_quota_us": "25000", "cpuset.cpus": "0", "cpuset.mems": "0", "pids.max": "50"}
    assert oci.state(U["upd"])["status"] == "running"

    # --resources from stdin: -1 lifts the limits (memory and swap together), absent keys stay.
    res = oci("update", "--resources", "-", U["upd"],
              input=json.dumps({"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1}}).encode())
    assert res.returncode == 0, res.err
    after = _files(U["upd"], "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "pids.max", "cpu.cfs_quota_us",
                   "cpu.shares")
    assert int(after["memory.limit_in_bytes"]) > 1 << 60 and int(after["memory.memsw.limit_in_bytes"]) > 1 << 60
    assert after["pids.max"] == "max" and after["cpu.cfs_quota_us"] == "-1" and after["cpu.shares"] == "512"


def test_update_memory_alone_keeps_the_swap_allowance(oci):
    # create gives memory+swap = memory (no swap): a larger --memory alone raises both, as the kernel needs
    oci.config(lambda c: c["linux"]["resources"].update(memory={"limit": 32 << 20}))
    _running(oci, U["grow"])
    assert oci("update", "--memory", "64m", U["grow"]).returncode == 0
    assert _files(U["grow"], "memory.limit_in_bytes", "memory.memsw.limit_in_bytes") == {
        "memory.limit_in_bytes": str(64 << 20), "memory.memsw.limit_in_bytes": str(64 << 20)}
    assert oci("update", "--memory", "16m", U["grow"]).returncode == 0
    assert _files(U["grow"], "memory.limit_in_bytes")["memory.limit_in_bytes"] == str(16 << 20)


@pytest.mark.parametrize("argv, expected", [
    (("--memory", "lots"), "invalid value for memory: invalid size: 'lots'"),
    (("--cpu-share", "-5"), "invalid value for cpu-share"),
    (("--cpu-quota", "x"), "invalid value for cpu-quota"),
    (("--blkio-weight", "500"), "blkio"),
    (("--resources", "/nonexistent/res.json"), "open /nonexistent/res.json: no such file or directory"),
    (("--l3-cache-schema", "L3:0=f"), "Intel RDT/CAT: l3 cache schema is not enabled"),
])
def test_update_errors_are_reported_like_runc(oci, argv, expected):
    _running(oci, U["bad"])
    before = _files(U["bad"], "memory.limit_in_bytes", "cpu.shares", "cpu.cfs_quota_us")
    res = oci("update", *argv, U["bad"])
    assert res.returncode == 1 and expected in res.err, res.err
    assert "Traceback" not in res.err
    assert _files(U["bad"], "memory.limit_in_bytes", "cpu.shares", "cpu.cfs_quota_us") == before


def test_update_kernel_memory_is_ignored_with_a_warning_and_stopped_containers_refused(oci):
    _running(oci, U["kmem"])
    res = oci("update", "--kernel-memory", "10m", U["kmem"])
    assert res.returncode == 0 and "Setting --kernel-memory is ignored" in res.err
    res = oci("update", "--resources", "-", U["kmem"], input=b'{"memory": {"limit": "64m"}}')
    assert res.returncode == 1 and 'memory.limit "64m": must be an integer' in res.err
    assert oci("update", "--memory", "64m", "nosuch").err.strip() == "container does not exist: nosuch"
    assert oci("kill", U["kmem"], "KILL").returncode == 0
    assert oci.wait_status(U["kmem"], "stopped")["status"] == "stopped"
    res = oci("update", "--memory", "64m", U["kmem"])
    assert res.returncode == 1 and res.err.strip() == "container not running"


# -- devices and propagation -------------------------------------------------------------------------------
def test_device_rules_apply_in_order_a_deny_after_an_allow(oci):
    tun = {"type": "c", "major": 10, "minor": 200}   # opening it needs no capability: the device rules decide
    probe = "(exec 3</dev/xtun) && echo read-ok; (exec 3>/dev/xtun) 2>/dev/null && echo write-ok; true"

    def edit(rules):
        def apply(c):
            c["linux"]["devices"] = [dict(tun, path="/dev/xtun", fileMode=0o600)]
            c["linux"]["resources"]["devices"] = rules
            c["process"]["args"] = ["sh", "-c", probe]
        return apply

    deny_all = {"allow": False, "access": "rwm"}
    oci.config(edit([deny_all, dict(tun, allow=True, access="rwm")]))
    assert oci.run(U["allowed"]).out.split() == ["read-ok", "write-ok"]
    oci.config(edit([deny_all, dict(tun, allow=True, access="rwm"), dict(tun, allow=False, access="w")]))
    assert oci.run(U["denied"]).out.split() == ["read-ok"]
    # allow everything, then deny the one device: the default flips, the deny is the exception
    oci.config(edit([{"allow": True, "access": "rwm"}, dict(tun, allow=False, access="rw")]))
    assert oci.run(U["flipped"]).out.split() == []
    # a deny-all after the allow wipes it
    oci.config(edit([dict(tun, allow=True, access="rwm"), deny_all]))
    assert oci.run(U["wiped"]).out.split() == []


@pytest.mark.parametrize("propagation, mark", [("rshared", "shared:"), ("private", None),
                                               ("runbindable", "unbindable")])
def test_rootfs_propagation_is_applied_to_the_new_root(oci, propagation, mark):
    oci.config(lambda c: (c["linux"].update(rootfsPropagation=propagation),
                          c["process"].update(args=["cat", "/proc/self/mountinfo"])))
    res = oci.run(U["prop"])
    assert res.returncode == 0, res.err
    root = next(line for line in res.out.splitlines() if line.split()[4] == "/")
    optional = root.split(" - ")[0].split()[6:]
    marks = [m.split(":")[0] + ":" if ":" in m else m for m in optional]
    assert marks == ([mark] if mark else []), res.out


def test_cgroup_mount_without_a_cgroup_namespace_shows_the_containers_own_cgroups(oci):
    oci.config(lambda c: (c["linux"]["resources"].update(pids={"limit": 33}),
                          c["process"].update(args=["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max; "
                                                    "echo 5 > /sys/fs/cgroup/pids/pids.max || echo read-only"])))
    res = oci.run(U["cgmount"])
    assert res.returncode == 0, res.err
    assert res.out.split() == ["33", "read-only"]


def test_joined_pid_namespace_sees_the_first_containers_processes(oci):
    _running(oci, U["pidhost"], "sleep", "60")
    first = oci.state(U["pidhost"])["pid"]
    oci.config(lambda c: (c["linux"].update(namespaces=[n if n["type"] != "pid" else
                                                        {"type": "pid", "path": f"/proc/{first}/ns/pid"}
                                                        for n in c["linux"]["namespaces"]]),
                          c["process"].update(args=["cat", "/proc/1/cmdline"])))
    res = oci.run(U["pidguest"])
    assert res.returncode == 0, res.err
    assert res.out.split("\0")[:2] == ["sleep", "60"]   # PID 1 there is the first container's
    assert os.readlink(f"/proc/{first}/ns/pid") != os.readlink("/proc/self/ns/pid")


def test_runtime_hooks_run_in_the_hosts_pid_namespace(oci, tmp_path):
    # the init is forked straight into its new PID namespace: the runtime must be back in its own after
    out = tmp_path / "hook-ns"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"readlink /proc/self/ns/pid >> {out}"]}
    oci.config(lambda c: (c.update(hooks={"createRuntime": [hook], "poststart": [hook], "poststop": [hook]}),
                          c["process"].update(args=["true"])))
    res = oci.run(U["hookns"])
    assert res.returncode == 0, res.err
    assert out.read_text().split() == [os.readlink("/proc/self/ns/pid")] * 3


# -- events ----------------------------------------------------------------------------------------------
def test_events_stats_reports_the_cgroups_usage(oci):
    oci.config(lambda c: c["linux"]["resources"].update(memory={"limit": 64 << 20}, pids={"limit": 30}))
    _running(oci, U["ev"], "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 60")
    res = oci("events", "--stats", U["ev"])
    assert res.returncode == 0, res.err
    event = json.loads(res.out)
    assert event["type"] == "stats" and event["id"] == U["ev"]
    data = event["data"]
    assert data["pids"]["current"] >= 1 and data["pids"]["limit"] == 30
    assert data["memory"]["usage"]["limit"] == 64 << 20 and data["memory"]["usage"]["usage"] > 0
    assert data["cpu"]["usage"]["total"] > 0 and isinstance(data["blkio"], dict)
    assert oci("events", "--interval", "0s", U["ev"]).err.strip() == "duration interval must be greater than 0"


def test_events_stream_reports_an_oom_kill_and_ends_with_the_container(oci):
    oci.config(lambda c: c["linux"]["resources"].update(memory={"limit": 16 << 20}))
    # tail keeps the whole newline-free stream in memory: OOM-killed; the shell goes on, then exits
    _running(oci, U["oom"], "sh", "-c", "read x < /dev/null; sleep 0.5; head -c 200m /dev/zero | tail; sleep 0.5")
    proc = oci.host_ns.popen([OCI, "--root", oci.root, "events", "--interval", "200ms", U["oom"]],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert {"type": "oom", "id": U["oom"]} in events
    assert any(e["type"] == "stats" for e in events)
