"""`pynet run`: each isolation property asserted from inside the container.

The launcher always runs inside a sandbox host netns (``host_ns.run``), with its image store and state
under pytest's tmp dirs; containers' mounts live in their own mount namespaces; every test removes its
containers (and so their cgroups) even on failure.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import tarfile
import time

import pytest

from cni_plugins import syscalls
from pynet.launcher import cgroups, images, security

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYNET = os.path.join(ROOT, ".venv", "bin", "pynet")
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the launcher needs root"),
    # The default seccomp profile is mandatory (no silent fallback): without Debian's python3-seccomp every
    # container start fails by design.
    pytest.mark.skipif(not security.seccomp_available(), reason="python3-seccomp not installed (scripts/install.sh)"),
]


@pytest.fixture(scope="session")
def pynet_root(tmp_path_factory):
    """One image store per test session (per xdist worker), with busybox built once."""
    root = str(tmp_path_factory.mktemp("pynet-root"))
    old = os.environ.get("PYNET_ROOT")
    os.environ["PYNET_ROOT"] = root
    try:
        images.build_busybox()
    finally:
        if old is None:
            os.environ.pop("PYNET_ROOT")
        else:
            os.environ["PYNET_ROOT"] = old
    return root


class Launcher:
    def __init__(self, host_ns, root: str, state: str):
        self.host_ns, self.root, self.state = host_ns, root, state
        self.env = dict(os.environ, PYNET_ROOT=root, PYNET_STATE=state)

    def __call__(self, *argv, timeout: float = 60, input: bytes | None = None):
        res = self.host_ns.run([PYNET, *argv], env=self.env, timeout=timeout, input=input)
        res.out = res.stdout.decode()
        res.err = res.stderr.decode()
        return res

    def run(self, *argv, **kw):
        return self("run", "--net", "none", "--dns", "127.0.0.1", *argv, **kw)

    def detach(self, *argv) -> str:
        res = self("run", "-d", "--net", "none", "--dns", "127.0.0.1", *argv)
        assert res.returncode == 0, res.err
        return res.stdout.decode().strip()

    def inspect(self, ref: str) -> dict:
        res = self("container", "inspect", ref)
        assert res.returncode == 0, res.err
        return json.loads(res.out)[0]

    def records(self) -> list[dict]:
        return state_records(self.state)


def state_records(state: str) -> list[dict]:
    """The container records under a PYNET_STATE dir, as `pynet ps -a` lists them."""
    d = os.path.join(state, "containers")
    out = []
    for cid in os.listdir(d) if os.path.isdir(d) else ():
        if cid.startswith(".removing-"):
            continue   # set aside for deletion, which may be under way: no longer a container (state.set_aside)
        try:
            with open(os.path.join(d, cid, "state.json")) as fh:
                out.append(json.load(fh))
        except (FileNotFoundError, json.JSONDecodeError):
            continue   # removed (or being written) while we looked
    return out


@pytest.fixture
def pynet(host_ns, pynet_root, tmp_path):
    launcher = Launcher(host_ns, pynet_root, str(tmp_path / "state"))
    yield launcher
    # Leave nothing behind: kill our containers by their recorded PID, then the same cleanup as `rm -f`.
    for rec in launcher.records():
        if syscalls.is_alive(rec.get("pid"), rec.get("pid_start")):
            os.kill(rec["pid"], signal.SIGKILL)
        launcher("rm", "-f", rec["id"])
    leftover = [r["id"] for r in launcher.records()]
    assert not leftover, f"containers left behind: {leftover}"


def _cgroup_dirs(cid: str) -> list[str]:
    return [os.path.join(h.mountpoint, "pynet", cid) for h in cgroups.hierarchies()
            if os.path.isdir(os.path.join(h.mountpoint, "pynet", cid))]


# -- namespaces ---------------------------------------------------------------------------------------
def test_hostname_is_the_containers_own(pynet):
    res = pynet.run("--rm", "--hostname", "box-one", "busybox", "sh", "-c", "hostname; cat /etc/hostname")
    assert res.returncode == 0, res.err
    assert res.out.split() == ["box-one", "box-one"]
    assert socket.gethostname() != "box-one"


def test_command_is_pid_1_and_sees_only_its_own_processes(pynet):
    res = pynet.run("--rm", "busybox", "sh", "-c",
                    "echo $$; for p in /proc/[0-9]*; do echo ${p#/proc/}; done")
    assert res.returncode == 0, res.err
    lines = res.out.split()
    assert lines[0] == "1"
    assert set(lines[1:]) <= {"1", "2", "3"}   # sh, maybe the glob's own process: never host PIDs


def test_container_mounts_are_invisible_on_the_host(pynet):
    cid = pynet.detach("busybox", "sleep", "60")
    info = pynet.inspect(cid)
    targets = {m["target"] for m in info["mounts"]}
    assert {"/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/etc/hosts"} <= targets
    assert next(m for m in info["mounts"] if m["target"] == "/")["type"] == "overlay"
    with open("/proc/self/mountinfo") as fh:
        host_table = fh.read()
    assert cid not in host_table and "pynet-stage" not in host_table
    assert info["namespaces"]["mnt"] != info["host_namespaces"]["mnt"]


def test_ipc_objects_are_invisible_across_containers(pynet):
    a = pynet.detach("busybox", "sh", "-c", "touch /dev/mqueue/pynet-q; sleep 60")
    for _ in range(100):
        if pynet("exec", a, "ls", "/dev/mqueue").out.strip():
            break
        time.sleep(0.05)
    assert pynet("exec", a, "ls", "/dev/mqueue").out.split() == ["pynet-q"]
    res = pynet.run("--rm", "busybox", "ls", "/dev/mqueue")
    assert res.returncode == 0 and res.out.strip() == ""
    b = pynet.detach("busybox", "sleep", "60")
    assert pynet.inspect(a)["namespaces"]["ipc"] != pynet.inspect(b)["namespaces"]["ipc"]


def test_userns_maps_root_to_an_unprivileged_host_uid(pynet):
    res = pynet.run("--rm", "--userns", "busybox", "sh", "-c", "id -u; cat /proc/self/uid_map; touch /mine; stat -c %u /mine")
    assert res.returncode == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "100000", "65536"]
    assert lines[2] == "0"
    cid = pynet.detach("--userns", "busybox", "sleep", "60")
    pid = pynet.inspect(cid)["pid"]
    with open(f"/proc/{pid}/status") as fh:
        uids = next(line for line in fh if line.startswith("Uid:")).split()[1:]
    assert uids == ["100000"] * 4


def test_net_none_has_only_loopback_and_it_is_up(pynet):
    res = pynet.run("--rm", "busybox", "sh", "-c", "cat /proc/net/dev; ip -o link")
    assert res.returncode == 0, res.err
    devs = [line.split(":")[0].strip() for line in res.out.splitlines()[2:] if ":" in line and "|" not in line][:1]
    assert devs == ["lo"]
    assert "lo: <LOOPBACK,UP" in res.out


def test_net_host_shares_the_launchers_sandbox_netns(pynet, host_ns):
    res = pynet("run", "--rm", "--net", "host", "busybox", "readlink", "/proc/self/ns/net")
    assert res.returncode == 0, res.err
    assert res.out.strip() == f"net:[{os.stat(host_ns.path).st_ino}]"


# -- filesystem --------------------------------------------------------------------------------------
def test_overlay_writes_do_not_touch_the_image(pynet, pynet_root):
    image = json.load(open(os.path.join(pynet_root, "images", "busybox%3Alatest.json")))
    layer = os.path.join(pynet_root, "layers", image["layers"][0])
    before = open(os.path.join(layer, "etc/passwd")).read()
    res = pynet.run("--name", "writer", "busybox", "sh", "-c", "echo x >> /etc/passwd; echo new > /created; rm /bin/ls")
    assert res.returncode == 0, res.err
    rec = next(r for r in pynet.records() if r["name"] == "writer")
    upper = os.path.join(rec["storage"], "upper")
    assert open(os.path.join(upper, "created")).read() == "new\n"
    assert open(os.path.join(layer, "etc/passwd")).read() == before
    assert not os.path.exists(os.path.join(layer, "created"))
    assert os.path.islink(os.path.join(layer, "bin/ls"))
    again = pynet.run("--rm", "busybox", "sh", "-c", "cat /created 2>/dev/null; ls /bin/ls")
    assert again.out.strip() == "/bin/ls"
    assert pynet("rm", "writer").returncode == 0
    assert not os.path.exists(rec["storage"])


def test_rm_flag_removes_the_writable_layer(pynet, pynet_root):
    res = pynet.run("--rm", "busybox", "true")
    assert res.returncode == 0, res.err
    assert pynet.records() == []
    assert os.listdir(os.path.join(pynet_root, "containers")) == []


def test_read_only_rootfs_refuses_writes(pynet):
    res = pynet.run("--rm", "--read-only", "busybox", "touch", "/x")
    assert res.returncode != 0
    assert "Read-only file system" in res.err


def test_proc_sys_is_read_only_and_kernel_files_masked(pynet):
    res = pynet.run("--rm", "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c",
                    "echo 1 > /proc/sys/kernel/ns_last_pid; echo rc=$?; cat /proc/keys | wc -c; ls /sys/firmware | wc -l")
    lines = res.out.split()
    assert lines[0] != "rc=0"
    assert lines[1:] == ["0", "0"]


def test_per_container_etc_files(pynet):
    res = pynet.run("--rm", "--hostname", "etcbox", "busybox", "sh", "-c", "cat /etc/hosts /etc/resolv.conf")
    assert "etcbox" in res.out
    assert "nameserver 127.0.0.1" in res.out


# -- security -------------------------------------------------------------------------------------
def test_blocked_syscall_returns_eperm(pynet):
    res = pynet.run("--rm", "busybox", "sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; unshare -U true")
    assert res.returncode != 0
    assert "Operation not permitted" in res.err
    assert "Seccomp:\t2" in res.out and "NoNewPrivs:\t1" in res.out
    unconfined = pynet.run("--rm", "--security-opt", "seccomp=unconfined", "busybox", "unshare", "-U", "true")
    assert unconfined.returncode == 0, unconfined.err


def test_dropped_capability_denies_the_operation(pynet):
    script = "touch /tmp/f; chown 1 /tmp/f && echo chowned"
    assert pynet.run("--rm", "busybox", "sh", "-c", script).out.strip() == "chowned"
    res = pynet.run("--rm", "--cap-drop", "CHOWN", "busybox", "sh", "-c", script)
    assert res.out.strip() == "" and "Operation not permitted" in res.err
    # Not in the default set at all: changing the hostname needs CAP_SYS_ADMIN.
    res = pynet.run("--rm", "busybox", "hostname", "other")
    assert res.returncode != 0 and "Operation not permitted" in res.err


def test_capability_sets_are_the_default_set(pynet):
    from pynet.launcher import security

    res = pynet.run("--rm", "busybox", "grep", "CapBnd", "/proc/self/status")
    assert int(res.out.split()[1], 16) == security.cap_mask(security.resolve_caps())


# -- cgroups -------------------------------------------------------------------------------------------
def test_memory_hog_is_oom_killed_inside_its_limit(pynet):
    res = pynet.run("--name", "hog", "-m", "32m", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1")
    assert res.returncode == 137
    rec = next(r for r in pynet.records() if r["name"] == "hog")
    assert rec["oom_killed"] is True
    assert _cgroup_dirs(rec["id"]) == []


def test_fork_bomb_stops_at_the_pids_limit(pynet):
    script = ("(for i in $(seq 40); do sleep 30 & done) 2>/dev/null; "
              "n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n")
    res = pynet.run("--rm", "--pids-limit", "10", "busybox", "sh", "-c", script)
    assert res.returncode == 0, res.err
    assert 3 <= int(res.out.strip()) <= 10


def test_limits_are_written_and_cgroups_removed_at_exit(pynet):
    cid = pynet.detach("-m", "48m", "--cpus", "0.5", "--pids-limit", "33", "--cpuset-cpus", "0", "busybox", "sleep", "60")
    info = pynet.inspect(cid)
    paths = info["cgroups"]
    assert set(_cgroup_dirs(cid)) == set(paths.values())
    assert all(f"/pynet/{cid}" in p for p in paths.values())
    cg = cgroups.from_paths(paths)
    assert cg.stats()["memory_limit"] == 48 << 20
    assert cg.stats()["pids_limit"] == 33
    cpu, cpuset = cg.controller("cpu"), cg.controller("cpuset")
    if os.path.exists(os.path.join(cpu, "cpu.max")):
        assert open(os.path.join(cpu, "cpu.max")).read().split() == ["50000", "100000"]
    else:
        assert open(os.path.join(cpu, "cpu.cfs_quota_us")).read().strip() == "50000"
    assert open(os.path.join(cpuset, "cpuset.cpus")).read().strip() == "0"
    ex = pynet("exec", cid, "grep", "Cpus_allowed_list", "/proc/self/status")
    assert ex.out.split()[-1] == "0"
    assert info["pid"] in cg.pids()
    stats = json.loads(pynet("stats", "--json", cid).out)[0]
    assert stats["pids"] == 1 and stats["memory_limit"] == 48 << 20
    assert pynet("stop", "-t", "0.2", cid).returncode == 0
    assert _cgroup_dirs(cid) == []


# -- lifecycle ----------------------------------------------------------------------------------------
def test_exit_code_passes_through(pynet):
    assert pynet.run("--rm", "busybox", "sh", "-c", "exit 7").returncode == 7
    res = pynet.run("--rm", "busybox", "no-such-command")
    assert res.returncode == 127 and "not found" in res.err


def test_detached_container_lifecycle(pynet):
    cid = pynet.detach("--name", "life", "--hostname", "lifebox", "busybox", "sh", "-c", "echo hello-log; exec sleep 60")
    ps = pynet("ps", "--json")
    assert [r["name"] for r in json.loads(ps.out)] == ["life"]
    ex = pynet("exec", "life", "sh", "-c", "hostname; echo $$; cat /proc/1/cmdline | tr '\\0' ' '")
    assert ex.returncode == 0, ex.err
    host, pid, cmdline = ex.out.splitlines()
    assert host == "lifebox" and pid != "1" and cmdline.strip() == "sleep 60"
    assert pynet("exec", "life", "sh", "-c", "exit 5").returncode == 5
    for _ in range(100):
        if "hello-log" in pynet("logs", "life").out:
            break
        time.sleep(0.05)
    assert pynet("logs", "life").out == "hello-log\n"
    assert pynet("kill", "-s", "TERM", "life").returncode == 0   # sleep as PID 1 ignores SIGTERM
    assert pynet("stop", "-t", "0.2", "life").returncode == 0
    rec = pynet.inspect("life")
    assert rec["state"] == "exited" and rec["exit_code"] == 137
    assert pynet("rm", "life").returncode == 0
    assert pynet("ps", "-a", "-q").out == ""
    assert _cgroup_dirs(cid) == []


def test_exec_joins_every_namespace_of_the_container(pynet):
    cid = pynet.detach("--userns", "busybox", "sleep", "60")
    ex = pynet("exec", cid, "sh", "-c", "for n in user mnt uts ipc net pid cgroup; do readlink /proc/self/ns/$n; done")
    assert ex.returncode == 0, ex.err
    pid = pynet.inspect(cid)["pid"]
    expected = [os.readlink(f"/proc/{pid}/ns/{n}") for n in ("user", "mnt", "uts", "ipc", "net", "pid", "cgroup")]
    assert ex.out.split() == expected


def test_rm_force_cleans_up_after_a_crashed_launcher(pynet):
    cid = pynet.detach("busybox", "sleep", "60")
    rec = pynet.inspect(cid)
    os.kill(rec["monitor_pid"], signal.SIGKILL)   # the detached launcher we started
    for _ in range(200):
        if not syscalls.is_alive(rec["monitor_pid"], rec["monitor_start"]):
            break
        time.sleep(0.01)
    assert pynet.inspect(cid)["state"] == "running"
    assert pynet("rm", "-f", cid).returncode == 0
    assert not syscalls.is_alive(rec["pid"], rec["pid_start"])
    assert _cgroup_dirs(cid) == []
    assert pynet.records() == []


def test_gc_cleans_dead_records(pynet):
    cid = pynet.detach("busybox", "sleep", "60")
    rec = pynet.inspect(cid)
    os.kill(rec["monitor_pid"], signal.SIGKILL)
    os.kill(rec["pid"], signal.SIGKILL)
    for _ in range(200):
        if pynet.inspect(cid)["state"] == "dead":
            break
        time.sleep(0.01)
    res = pynet("container", "gc")
    assert res.out.split() == [cid]
    assert _cgroup_dirs(cid) == [] and pynet.records() == []


def test_init_reaps_orphans_and_passes_the_exit_code(pynet):
    # The orphan is re-parented to PID 1; wait (bounded) until nothing is a zombie, then show the table.
    res = pynet.run("--rm", "--init", "busybox", "sh", "-c",
                    "(sleep 0.1 &); sleep 0.2; for i in $(seq 100); do ps -o stat | grep -q Z || break; sleep 0.05; done;"
                    " ps -o pid,stat,comm; exit 3")
    assert res.returncode == 3
    rows = [line.split() for line in res.out.splitlines()[1:]]
    assert rows[0][0] == "1" and rows[0][2] == "pynet-init"
    assert not any("Z" in r[1] for r in rows)


# -- images ---------------------------------------------------------------------------------------
def _tar_bytes(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _oci_layout(path, base_layer_dir: str):
    import hashlib

    os.makedirs(os.path.join(path, "blobs", "sha256"))

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(path, "blobs", "sha256", digest), "wb") as fh:
            fh.write(data)
        return f"sha256:{digest}"

    base = io.BytesIO()
    with tarfile.open(fileobj=base, mode="w") as tf:
        tf.add(base_layer_dir, arcname=".")
    top = _tar_bytes([("etc/.wh.group", "file", b""), ("hello", "file", b"from layer two\n"),
                      ("var/", "dir", b""), ("var/.wh..wh..opq", "file", b""), ("var/only", "file", b"x\n")])
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(base.getvalue()),
               "size": len(base.getvalue())},
              {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(top), "size": len(top)}]
    config = json.dumps({"config": {"Cmd": ["cat", "/hello"], "Env": ["PATH=/bin", "FROM_IMAGE=yes"]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": blob(config), "size": len(config)},
                           "layers": layers}).encode()
    index = {"schemaVersion": 2, "manifests": [{"digest": blob(manifest), "size": len(manifest),
                                                 "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}
    with open(os.path.join(path, "index.json"), "w") as fh:
        json.dump(index, fh)
    with open(os.path.join(path, "oci-layout"), "w") as fh:
        json.dump({"imageLayoutVersion": "1.0.0"}, fh)


def test_import_oci_layout_applies_whiteouts_and_config(pynet, pynet_root, tmp_path):
    image = json.load(open(os.path.join(pynet_root, "images", "busybox%3Alatest.json")))
    layout = tmp_path / "oci"
    _oci_layout(str(layout), os.path.join(pynet_root, "layers", image["layers"][0]))
    name = f"ocitest-{os.getpid()}:v1"
    res = pynet("image", "import", str(layout), name)
    assert res.returncode == 0, res.err
    try:
        assert pynet("run", "--rm", "--net", "none", name).out == "from layer two\n"
        res = pynet.run("--rm", name, "sh", "-c", "ls /etc/group 2>&1; ls /var; echo $FROM_IMAGE")
        lines = res.out.splitlines()
        assert "No such file" in lines[0]
        assert lines[1:] == ["only", "yes"]
        assert name in pynet("image", "ls").out
    finally:
        assert pynet("image", "rm", name).returncode == 0
    assert name not in pynet("image", "ls").out


def test_import_rootfs_tar(pynet, pynet_root, tmp_path):
    image = json.load(open(os.path.join(pynet_root, "images", "busybox%3Alatest.json")))
    tar = tmp_path / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(os.path.join(pynet_root, "layers", image["layers"][0]), arcname=".")
        data = b"tarball\n"
        info = tarfile.TarInfo("marker")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("../escape")
        evil.size = 1
        tf.addfile(evil, io.BytesIO(b"x"))
    name = f"tartest-{os.getpid()}"
    assert pynet("image", "import", str(tar), name).returncode == 0
    try:
        assert pynet.run("--rm", name, "cat", "/marker").out == "tarball\n"
        assert not os.path.exists(os.path.join(pynet_root, "escape"))
    finally:
        pynet("image", "rm", name)


def test_import_docker_save_tar(pynet_root, tmp_path, monkeypatch):
    monkeypatch.setenv("PYNET_ROOT", pynet_root)
    layer = _tar_bytes([("etc/", "dir", b""), ("etc/os-release", "file", b"ID=saved\n")])
    config = json.dumps({"config": {"Cmd": ["cat", "/etc/os-release"], "WorkingDir": "/etc"}}).encode()
    manifest = json.dumps([{"Config": "cfg.json", "RepoTags": ["saved:1"], "Layers": ["l1/layer.tar"]}]).encode()
    tar = tmp_path / "saved.tar"
    with tarfile.open(tar, "w") as tf:
        for name, data in (("cfg.json", config), ("l1/layer.tar", layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    name = f"saved-{os.getpid()}:1"
    image = images.import_image(str(tar), name)
    try:
        assert image["config"]["Cmd"] == ["cat", "/etc/os-release"] and image["config"]["WorkingDir"] == "/etc"
        with open(os.path.join(images.layer_path(image["layers"][0]), "etc", "os-release")) as fh:
            assert fh.read() == "ID=saved\n"
    finally:
        images.remove(name)


def test_userns_with_a_rootfs_dir_gets_a_shifted_private_copy(pynet, pynet_root):
    image = json.load(open(os.path.join(pynet_root, "images", "busybox%3Alatest.json")))
    res = pynet.run("--rm", "--userns", "--rootfs", os.path.join(pynet_root, "layers", image["layers"][0]),
                    "sh", "-c", "stat -c %u /etc/passwd; echo ok > /root/x && cat /root/x")
    assert res.out.split() == ["0", "ok"], res.err


def test_rootfs_dir_is_used_copy_on_write(pynet, pynet_root, tmp_path):
    image = json.load(open(os.path.join(pynet_root, "images", "busybox%3Alatest.json")))
    res = pynet.run("--rm", "--rootfs", os.path.join(pynet_root, "layers", image["layers"][0]),
                    "sh", "-c", "echo hi > /tmp/x && cat /tmp/x")
    assert res.out == "hi\n", res.err
    assert not os.path.exists(os.path.join(pynet_root, "layers", image["layers"][0], "tmp/x"))


# -- network (CNI chain through pynet's runner, the `pynet attach` code path) ----------------------------
@pytest.fixture
def netenv(pynet, tmp_path):
    for key, sub in (("PYNET_CONFIG_DIR", "net.d"), ("PYNET_CACHE_DIR", "cache"), ("PYNET_NETNS_DIR", "netns")):
        os.makedirs(tmp_path / sub, exist_ok=True)
        pynet.env[key] = str(tmp_path / sub)
    leases = tmp_path / "leases"
    res = pynet("net", "create", "ctrnet", "--subnet", "10.151.7.0/24", "--bridge", "pnctr0", "--gateway", "--disable-dns",
                "--port-map", "--data-dir", str(leases))
    assert res.returncode == 0, res.err
    return {"leases": leases, "cache": tmp_path / "cache", "pins": tmp_path / "netns"}


def _leased(leases) -> list[str]:
    base = leases / "ctrnet"
    return sorted(n for n in os.listdir(base) if n[0].isdigit()) if base.exists() else []


def test_container_on_a_bridge_network_gets_an_address_and_del_runs_at_exit(pynet, netenv, host_ns):
    from netns_fixtures import icmp_echo

    res = pynet("run", "-d", "--dns", "127.0.0.1", "--net", "ctrnet", "--ip", "10.151.7.9", "--hostname", "netbox", "busybox", "sleep", "60")
    assert res.returncode == 0, res.err
    cid = res.out.strip()
    ex = pynet("exec", cid, "sh", "-c", "ip -o -4 addr show eth0; ip route; cat /etc/hosts")
    assert ex.returncode == 0, ex.err
    assert "10.151.7.9/24" in ex.out and "default via 10.151.7.1" in ex.out
    assert "10.151.7.9\tnetbox" in ex.out
    assert icmp_echo(host_ns, "10.151.7.9")
    assert _leased(netenv["leases"]) == ["10.151.7.9"]
    assert pynet.inspect(cid)["network"]["network"] == "ctrnet"
    # Killed, not stopped: the launcher still runs the chain's DEL.
    assert pynet("kill", cid).returncode == 0
    for _ in range(200):
        if pynet.inspect(cid)["state"] == "exited":
            break
        time.sleep(0.02)
    assert _leased(netenv["leases"]) == []
    assert not [n for n in os.listdir(netenv["pins"]) if n.startswith("pynet-")]
    assert not [n for n in host_ns.link_names() if n.startswith("veth")]


def test_rm_force_runs_del_for_a_crashed_launcher(pynet, netenv, host_ns):
    res = pynet("run", "-d", "--dns", "127.0.0.1", "--net", "ctrnet", "busybox", "sleep", "60")
    assert res.returncode == 0, res.err
    rec = pynet.inspect(res.out.strip())
    assert len(_leased(netenv["leases"])) == 1
    os.kill(rec["monitor_pid"], signal.SIGKILL)
    os.kill(rec["pid"], signal.SIGKILL)
    assert pynet("rm", "-f", rec["id"]).returncode == 0
    assert _leased(netenv["leases"]) == []


def test_published_port_reaches_the_container(pynet, netenv, host_ns):
    from netns_fixtures import tcp_connect

    res = pynet("run", "-d", "--dns", "127.0.0.1", "--net", "ctrnet", "-p", "18080:80", "busybox", "sh", "-c",
                "while true; do echo pynet | nc -l -p 80; done")
    assert res.returncode == 0, res.err
    cid = res.out.strip()
    ok = False
    for _ in range(100):
        if tcp_connect(host_ns, "10.151.7.1", 18080):
            ok = True
            break
        time.sleep(0.05)
    assert ok
    assert "18080" in host_ns.nft_ruleset()
    assert pynet("rm", "-f", cid).returncode == 0
    # The monitor ran portmap's DEL in its own process (our plugins run in-process): the mapping is gone.
    assert "18080" not in host_ns.nft_ruleset()
    assert _leased(netenv["leases"]) == []


def test_default_network_is_a_bridge_created_on_first_use(pynet, tmp_path, host_ns):
    pynet.env.update(PYNET_CONFIG_DIR=str(tmp_path / "net.d"), PYNET_CACHE_DIR=str(tmp_path / "cache"),
                     PYNET_NETNS_DIR=str(tmp_path / "netns"), PYNET_DEFAULT_DATA_DIR=str(tmp_path / "leases"))
    os.makedirs(tmp_path / "netns")
    res = pynet("run", "--rm", "--dns", "127.0.0.1", "busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert res.returncode == 0, res.err
    assert "10.200." in res.out
    conf = json.load(open(tmp_path / "net.d" / "pynet.conflist"))
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "dnsname"]
    assert conf["plugins"][0]["ipam"]["dataDir"] == str(tmp_path / "leases")
    assert host_ns.link("pynet0") is not None
    assert not [n for n in os.listdir(tmp_path / "leases" / "pynet") if n[0].isdigit()]


def test_failed_network_attach_leaves_nothing_behind(pynet, netenv):
    res = pynet("run", "--rm", "--dns", "127.0.0.1", "--net", "no-such-net", "busybox", "true")
    assert res.returncode == 125 and "no-such-net" in res.err
    assert pynet.records() == []   # and with it the cgroups and the writable layer (cleanup ran)
    assert os.listdir(os.path.join(pynet.root, "containers")) == []


def test_unknown_image_is_a_clear_error(pynet):
    res = pynet.run("--rm", "no-such-image", "true")
    assert res.returncode == 125 and "no such image: no-such-image" in res.err
    assert pynet.records() == []


def test_container_sees_its_own_cgroup_read_only(pynet):
    res = pynet.run("--rm", "--pids-limit", "42", "busybox", "sh", "-c",
                    "cat /proc/self/cgroup; find /sys/fs/cgroup -maxdepth 2 -name pids.max | xargs cat; "
                    "echo 1 > /sys/fs/cgroup/pids/pids.max || echo denied")
    lines = res.out.splitlines()
    assert all(line.endswith(":/") for line in lines if ":" in line)   # cgroup namespace rooted at the container
    if cgroups.controller_mounted("pids"):
        assert "42" in lines
    assert lines[-1] == "denied"


def test_image_symlinks_cannot_make_the_launcher_write_host_files(pynet, pynet_root, tmp_path):
    image = json.load(open(os.path.join(pynet_root, "images", "busybox%3Alatest.json")))
    src = tmp_path / "evil-rootfs"
    images.copy_tree(os.path.join(pynet_root, "layers", image["layers"][0]), str(src))
    victim = tmp_path / "victim"
    victim.mkdir()
    import shutil
    shutil.rmtree(src / "etc")
    os.symlink(str(victim), src / "etc")          # absolute: the host's path if followed before pivot_root
    name = f"evil-{os.getpid()}"
    assert pynet("image", "import", str(src), name).returncode == 0
    try:
        res = pynet.run("--rm", "--hostname", "evilbox", name, "cat", "/etc/hostname")
        assert res.out.strip() == "evilbox", res.err
        assert os.listdir(victim) == []
    finally:
        pynet("image", "rm", name)


def test_benchmark_script_runs_and_prints_the_ratio():
    import shutil
    import subprocess
    import sys

    if not (shutil.which("runc") or os.path.exists("/usr/sbin/runc")):
        pytest.skip("runc not installed")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "launcher_bench.py"), "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ratio pynet/runc:" in res.stdout


def test_env_workdir_and_volumes(pynet, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from host\n")
    res = pynet.run("--rm", "-e", "GREETING=hi", "-w", "/work", "-v", f"{shared}:/data",
                    "-v", f"{shared}:/ro:ro", "busybox", "sh", "-c",
                    "echo $GREETING; pwd; cat /data/in.txt; echo out > /data/out.txt; touch /ro/x || echo ro-denied")
    assert res.out.splitlines() == ["hi", "/work", "from host", "ro-denied"], res.err
    assert (shared / "out.txt").read_text() == "out\n"
    assert not (shared / "x").exists()


def test_cgroup_warmup_moves_nothing_and_is_reaped_by_the_join():
    def own():
        with open("/proc/self/cgroup") as fh:
            return fh.read()

    before = own()
    cgroups.start_warmup()
    owner, child = cgroups._warmup
    assert owner == os.getpid()
    cgroups._wait_warmup()
    assert cgroups._warmup is None
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)   # already reaped
    assert own() == before


def test_inspect_shows_the_oci_spec_the_container_was_run_with(pynet):
    cid = pynet.detach("--cap-drop", "ALL", "--cap-add", "KILL", "busybox", "sleep", "30")
    spec = pynet.inspect(cid)["spec"]
    assert spec["process"]["args"] == ["sleep", "30"]
    assert spec["process"]["capabilities"]["bounding"] == ["CAP_KILL"]
    assert spec["hostname"] == cid[:12] and spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert pynet("rm", "-f", cid).returncode == 0
