"""`pynet-oci`, the runc-compatible runtime: bundles made from the launcher's busybox rootfs and
`pynet-oci spec`, the create/start split and state, hooks, signals, the freezer, and what the container
sees from inside. Every command runs inside a sandbox netns (nsenter-style: the cgroup mounts stay
visible), with its state under pytest's tmp dirs; each test deletes its containers and checks that no
state directory or cgroup is left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from cni_plugins import syscalls
from pynet.launcher import cgroups, images, security

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCI = os.path.join(ROOT, ".venv", "bin", "pynet-oci")
DEFAULT_ROOT = "/run/pynet-oci"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="an OCI runtime needs root")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory) -> str:
    """One read-only busybox rootfs per session (the launcher's default image contents)."""
    root = str(tmp_path_factory.mktemp("oci-rootfs") / "rootfs")
    os.mkdir(root)
    images._populate_busybox(root)
    return root


class Ran(subprocess.CompletedProcess):
    """A pynet-oci command's result (``out``, ``err``: text). Its repr leads with the command and its
    stderr, so a failed ``assert res.returncode == 0`` says why the runtime failed."""

    def __init__(self, args, returncode: int, out: str, err: str):
        super().__init__(args, returncode, out.encode(), err.encode())
        self.out, self.err = out, err

    def __repr__(self) -> str:
        command = next((a for a in self.args[3:] if not a.startswith("-")), "")
        return f"<pynet-oci {command} exited {self.returncode}: {self.err.strip()!r}>"


class Runtime:
    def __init__(self, host_ns, root: str, bundle: str):
        self.host_ns, self.root, self.bundle = host_ns, root, bundle

    def __call__(self, *argv, timeout: float = 60, input: bytes | None = None) -> Ran:
        res = self.host_ns.run([OCI, "--root", self.root, *argv], timeout=timeout, input=input)
        return Ran(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())

    def create(self, cid: str, *flags, bundle: str | None = None) -> Ran:
        """`create` with the container's stdio in files: its init keeps them open (as runc's does)."""
        base = os.path.join(os.path.dirname(self.bundle), cid)
        argv = [OCI, "--root", self.root, "create", "--bundle", bundle or self.bundle, *flags, cid]
        with open(f"{base}.out", "w") as out, open(f"{base}.err", "w+") as err:
            proc = self.host_ns.popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            proc.wait(timeout=60)
            err.seek(0)
            return Ran(argv, proc.returncode, "", err.read())

    def run(self, cid: str, **kw):
        return self("run", "--bundle", self.bundle, cid, **kw)

    def output(self, cid: str) -> str:
        with open(os.path.join(os.path.dirname(self.bundle), f"{cid}.out")) as fh:
            return fh.read()

    def state(self, cid: str) -> dict:
        res = self("state", cid)
        assert res.returncode == 0, res.err
        return json.loads(res.out)

    def config(self, edit) -> dict:
        path = os.path.join(self.bundle, "config.json")
        with open(path) as fh:
            conf = json.load(fh)
        edit(conf)
        with open(path, "w") as fh:
            json.dump(conf, fh)
        return conf

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(cid)
            if st["status"] == status or time.monotonic() > deadline:
                return st
            time.sleep(0.02)


def _cgroup_dirs(cid: str) -> list[str]:
    return [os.path.join(h.mountpoint, "pynet-oci", cid) for h in cgroups.hierarchies()
            if os.path.isdir(os.path.join(h.mountpoint, "pynet-oci", cid))]


@pytest.fixture
def oci(host_ns, busybox_rootfs, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    rt = Runtime(host_ns, str(tmp_path / "state"), str(bundle))
    res = subprocess.run([OCI, "spec", "--bundle", str(bundle)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rt.config(lambda c: c["root"].update(path=busybox_rootfs))
    yield rt
    made = os.listdir(rt.root) if os.path.isdir(rt.root) else []
    for cid in made:
        rt("delete", "--force", cid)
    assert not (os.listdir(rt.root) if os.path.isdir(rt.root) else []), "state directories left behind"
    assert not [d for cid in made for d in _cgroup_dirs(cid)], "cgroups left behind"


def _args(*argv):
    return lambda c: c["process"].update(args=list(argv))


# -- the lifecycle ----------------------------------------------------------------------------------------
def test_spec_writes_runc_default_config(tmp_path):
    res = subprocess.run([OCI, "spec", "--bundle", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    conf = json.load(open(tmp_path / "config.json"))
    assert conf["root"] == {"path": "rootfs", "readonly": True}
    assert conf["process"]["args"] == ["sh"]
    assert [n["type"] for n in conf["linux"]["namespaces"]] == ["pid", "network", "ipc", "uts", "mount"]
    again = subprocess.run([OCI, "spec", "--bundle", str(tmp_path)], capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr


def test_create_start_state_delete_goes_created_running_stopped(oci, tmp_path):
    oci.config(_args("sh", "-c", "echo started; read line < /dev/null; sleep 60"))
    pid_file = str(tmp_path / "pid")
    proc = oci.create("life", "--pid-file", pid_file)
    assert proc.returncode == 0, proc.err
    st = oci.state("life")
    assert st["status"] == "created" and st["id"] == "life" and st["bundle"] == oci.bundle
    assert st["pid"] == int(open(pid_file).read())
    assert st["ociVersion"] and st["annotations"] == {}
    # Created: the init waits on the exec fifo; the command has not run yet.
    assert os.path.exists(os.path.join(oci.root, "life", "exec.fifo"))
    assert "started" not in oci.output("life")
    assert open(f"/proc/{st['pid']}/cgroup").read().count("pynet-oci/life") >= 1

    res = oci("start", "life")
    assert res.returncode == 0, res.err
    running = oci.state("life")
    assert running["status"] == "running" and running["pid"] == st["pid"]
    deadline = time.monotonic() + 10
    while "started" not in oci.output("life") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "started" in oci.output("life")
    assert oci("start", "life").err.strip() == "cannot start an already running container"

    assert oci("kill", "life", "KILL").returncode == 0
    stopped = oci.wait_status("life", "stopped")
    assert stopped["status"] == "stopped" and stopped["pid"] == 0
    assert oci("kill", "life").err.strip() == "container not running"
    res = oci("delete", "life")
    assert res.returncode == 0, res.err
    assert not os.path.exists(os.path.join(oci.root, "life"))
    assert not _cgroup_dirs("life")
    gone = oci("state", "life")
    assert gone.returncode == 1 and gone.err.strip() == "container does not exist: life"


def test_run_passes_the_exit_code_through(oci):
    oci.config(_args("sh", "-c", "echo out-text; exit 7"))
    res = oci.run("runner")
    assert res.returncode == 7, res.err
    assert res.out == "out-text\n"
    assert not os.path.exists(os.path.join(oci.root, "runner"))
    oci.config(_args("no-such-command"))
    res = oci.run("missing")
    assert res.returncode == 127
    assert "no-such-command" in res.err and "Traceback" not in res.err


def test_run_keep_leaves_the_stopped_container(oci):
    oci.config(lambda c: (c["process"].update(args=["sh", "-c", "umask"]), c["process"]["user"].update(umask=0o027)))
    res = oci("run", "--keep", "--bundle", oci.bundle, "kept")
    assert res.returncode == 0 and res.out.strip() == "0027", res.err
    assert oci.state("kept")["status"] == "stopped"
    assert oci("delete", "kept").returncode == 0


def test_hooks_run_in_order_with_the_state_on_stdin(oci, tmp_path):
    logs = tmp_path / "hooks"
    logs.mkdir()

    def host_hook(kind):
        return {"path": "/bin/sh", "args": ["sh", "-c", f"echo {kind} >> {logs}/order; cat > {logs}/{kind}.json"]}

    def edit(c):
        c["process"]["args"] = ["sleep", "60"]
        c["mounts"].append({"destination": "/hooks", "type": "bind", "source": str(logs), "options": ["rbind"]})
        c["hooks"] = {kind: [host_hook(kind)] for kind in ("prestart", "createRuntime", "createContainer",
                                                          "poststart", "poststop")}
        # startContainer runs in the container, after pivot_root: its path and files are the container's.
        c["hooks"]["startContainer"] = [{"path": "/bin/sh", "args": [
            "sh", "-c", "echo startContainer >> /hooks/order; cat > /hooks/startContainer.json"]}]
        c["annotations"] = {"org.example.key": "value"}
    oci.config(edit)
    assert oci.create("hooked").returncode == 0
    order = lambda: (logs / "order").read_text().split()   # noqa: E731
    assert order() == ["prestart", "createRuntime", "createContainer"]
    assert oci("start", "hooked").returncode == 0
    assert order() == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart"]
    assert oci("delete", "--force", "hooked").returncode == 0
    assert order() == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    states = {k: json.loads((logs / f"{k}.json").read_text()) for k in order()}
    pid = states["prestart"]["pid"]
    assert pid > 0 and all(s["id"] == "hooked" and s["bundle"] == oci.bundle for s in states.values())
    assert states["createRuntime"]["pid"] == pid and states["poststart"]["pid"] == pid
    assert states["startContainer"]["pid"] == 1   # its own PID namespace
    assert states["prestart"]["status"] == "created" and states["poststart"]["status"] == "running"
    assert states["poststop"]["status"] == "stopped"
    assert states["poststart"]["annotations"] == {"org.example.key": "value"}


def test_failing_create_hook_leaves_nothing(oci):
    oci.config(lambda c: c.update(hooks={"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}))
    proc = oci.create("badhook")
    assert proc.returncode == 1
    assert "createRuntime hook #0 (/bin/sh) failed with exit status 3" in proc.err
    assert not os.path.exists(os.path.join(oci.root, "badhook")) and not _cgroup_dirs("badhook")


def test_failing_poststart_and_poststop_hooks_only_warn(oci):
    fail = [{"path": "/bin/sh", "args": ["sh", "-c", "exit 5"]}]
    oci.config(lambda c: (c.update(hooks={"poststart": fail, "poststop": fail}),
                          c["process"].update(args=["sleep", "60"])))
    assert oci.create("warned").returncode == 0
    res = oci("start", "warned")
    assert res.returncode == 0 and "warning: poststart hook #0 (/bin/sh) failed with exit status 5" in res.err
    assert oci.state("warned")["status"] == "running"
    res = oci("delete", "--force", "warned")
    assert res.returncode == 0 and "warning: poststop hook #0" in res.err
    assert not os.path.exists(os.path.join(oci.root, "warned")) and not _cgroup_dirs("warned")


def test_kill_all_and_delete_force_of_running_containers(oci):
    oci.config(_args("sh", "-c", "sleep 60 & sleep 60 & wait"))
    for cid in ("many", "forced"):
        assert oci.create(cid).returncode == 0
        assert oci("start", cid).returncode == 0
    deadline = time.monotonic() + 10
    while len(json.loads(oci("ps", "--format", "json", "many").out)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = json.loads(oci("ps", "--format", "json", "many").out)
    assert len(pids) == 3 and oci.state("many")["pid"] in pids
    table = oci("ps", "many").out.splitlines()
    assert "PID" in table[0] and sum(line.endswith(" sleep 60") for line in table) == 2

    assert oci("kill", "--all", "many", "KILL").returncode == 0
    assert oci.wait_status("many", "stopped")["status"] == "stopped"
    assert not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in pids)

    res = oci("delete", "forced")
    assert res.returncode == 1 and res.err.strip() == "cannot delete container forced that is not stopped: running"
    pid = oci.state("forced")["pid"]
    assert oci("delete", "--force", "forced").returncode == 0
    assert not os.path.exists(os.path.join(oci.root, "forced")) and not _cgroup_dirs("forced")
    assert open(f"/proc/{pid}/stat").read().split()[2] == "Z" if os.path.exists(f"/proc/{pid}") else True


def test_pause_and_resume_freeze_the_cgroup(oci):
    oci.config(_args("sleep", "60"))
    assert oci.create("frosty").returncode == 0
    assert oci("start", "frosty").returncode == 0
    freezer = [d for d in _cgroup_dirs("frosty") if os.path.exists(os.path.join(d, "freezer.state"))]
    assert oci("pause", "frosty").returncode == 0
    assert oci.state("frosty")["status"] == "paused"
    if freezer:
        assert open(os.path.join(freezer[0], "freezer.state")).read().strip() == "FROZEN"
    pid = oci.state("frosty")["pid"]
    assert open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in ("D", "S", "T")
    assert oci("resume", "frosty").returncode == 0
    assert oci.state("frosty")["status"] == "running"
    if freezer:
        assert open(os.path.join(freezer[0], "freezer.state")).read().strip() == "THAWED"
    assert oci("resume", "frosty").err.strip() == "container not paused"


# -- what the container sees ------------------------------------------------------------------------------
def test_container_sees_its_config(oci):
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    script = ("hostname; id -u; id -g; id -G; grep -E '^Cap(Eff|Bnd):' /proc/self/status; ulimit -n; ulimit -Hn; "
              "echo $OCI_VAR; pwd; grep ' /work ' /proc/mounts | cut -d' ' -f3,4; "
              "touch /work/ok && echo work-writable; touch /rootfile 2>/dev/null || echo root-ro; "
              "test -c /proc/keys && echo keys-masked; ls /sys/firmware | wc -l; "
              "(echo 1 > /proc/sys/kernel/shmmni) 2>/dev/null || echo procsys-ro")

    def edit(c):
        c["hostname"] = "ocibox"
        c["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [2000, 2001]}
        c["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]
        c["process"]["env"].append("OCI_VAR=yes")
        c["process"]["cwd"] = "/work"
        c["mounts"].append({"destination": "/work", "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev", "size=2m", "mode=1777"]})
        c["process"]["args"] = ["sh", "-c", script]
    oci.config(edit)
    res = oci.run("inside")
    assert res.returncode == 0, res.err
    mask = security.cap_mask([c[4:] for c in caps])
    lines = res.out.splitlines()
    # A non-root user keeps no effective capabilities across execve (no ambient set here), as with runc;
    # the bounding set is the configured one.
    assert lines[:6] == ["ocibox", "1000", "1001", "1001 2000 2001", "CapEff:\t0000000000000000",
                         f"CapBnd:\t{mask:016x}"]
    assert lines[6:10] == ["321", "654", "yes", "/work"]
    fstype, options = lines[10].split()
    assert fstype == "tmpfs" and {"rw", "nosuid", "nodev"} <= set(options.split(","))
    assert lines[11:] == ["work-writable", "root-ro", "keys-masked", "0", "procsys-ro"]


def test_capabilities_of_root_are_the_configured_sets(oci):
    caps = ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    oci.config(lambda c: c["process"].update(
        capabilities={k: caps for k in ("bounding", "effective", "permitted", "inheritable", "ambient")},
        args=["grep", "-E", "^Cap(Inh|Prm|Eff|Bnd|Amb):", "/proc/self/status"]))
    res = oci.run("rootcaps")
    assert res.returncode == 0, res.err
    mask = f"{security.cap_mask(['CHOWN', 'SYS_ADMIN']):016x}"
    assert [line.split()[1] for line in res.out.splitlines()] == [mask] * 5


def test_only_stdio_and_preserved_fds_reach_the_process(oci, tmp_path):
    oci.config(_args("sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"))
    outputs = []
    for flags in ("", "--preserve-fds 1"):
        # fds 3 and 4 open (not close-on-exec) in the runtime, as an engine's would be
        script = f'exec 3<{tmp_path} 4<{tmp_path}; exec {OCI} --root {oci.root} run {flags} --bundle {oci.bundle} fds'
        res = oci.host_ns.run(["sh", "-c", script])
        assert res.returncode == 0, res.stderr
        outputs.append(res.stdout.decode().split())
    # the last one listed is ls's own directory fd
    assert outputs == [["0", "1", "2", "3"], ["0", "1", "2", "3", "4"]]


def test_devices_sysctl_oom_score_no_new_privs_and_a_joined_netns(oci, host_ns):
    script = ("stat -c '%F %t:%T %a' /dev/xnull; echo x > /dev/xnull && echo xnull-ok; "
              "cat /dev/xmem 2>&1 | grep -o 'Operation not permitted'; cat /proc/sys/net/ipv4/ip_forward; "
              "cat /proc/self/oom_score_adj; grep NoNewPrivs /proc/self/status; readlink /proc/self/ns/net")

    def edit(c):
        c["linux"]["devices"] = [
            {"path": "/dev/xnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 0, "gid": 0},
            {"path": "/dev/xmem", "type": "c", "major": 1, "minor": 1, "fileMode": 0o600}]
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
        c["linux"]["namespaces"] = [n if n["type"] != "network" else {"type": "network", "path": host_ns.path}
                                    for n in c["linux"]["namespaces"]]
        c["process"].update(oomScoreAdj=123, noNewPrivileges=True, args=["sh", "-c", script])
    oci.config(edit)
    before = open(f"/proc/sys/net/ipv4/ip_forward").read()
    res = oci.run("devs")
    assert res.returncode == 0, res.err
    netns = os.readlink(f"/proc/self/ns/net")
    with host_ns.entered():
        host_netns = os.readlink("/proc/thread-self/ns/net")
    assert res.out.splitlines() == ["character special file 1:3 640", "xnull-ok", "Operation not permitted", "1",
                                    "123", "NoNewPrivs:\t1", host_netns]
    assert host_netns != netns and open("/proc/sys/net/ipv4/ip_forward").read() == before


def test_parallel_lifecycles_all_succeed(oci, tmp_path):
    # Several engines' worth of short containers created, started and deleted at once. A process may be
    # started, run and gone before `start` looks again (its go-ahead byte was written: started, not
    # "stopped"); a delete removes the shared cgroup parent it leaves empty while another create is making
    # its child there (gone, or dying: ENODEV), and the create makes the parent again.
    from concurrent.futures import ThreadPoolExecutor

    parent = f"pynet-oci-par-{os.getpid()}"
    workers, rounds = 8, 6

    def lifecycle(worker: int) -> list:
        bundle = tmp_path / f"par{worker}"
        bundle.mkdir()
        with open(os.path.join(oci.bundle, "config.json")) as fh:
            conf = json.load(fh)
        conf["process"]["args"] = ["sh", "-c", "exit 3"]
        if worker % 2:   # half under a parent of their own, removed with its last container
            conf["linux"]["cgroupsPath"] = f"/{parent}/w{worker}"
        (bundle / "config.json").write_text(json.dumps(conf))
        failed = []
        for n in range(rounds):
            cid = f"par{worker}-{n}"
            for res in (lambda: oci.create(cid, bundle=str(bundle)), lambda: oci("start", cid),
                        lambda: oci("delete", "--force", cid)):
                ran = res()
                if ran.returncode != 0:
                    failed.append(ran)
        return failed

    with ThreadPoolExecutor(workers) as pool:
        failed = [ran for got in pool.map(lifecycle, range(workers)) for ran in got]
    assert failed == []
    assert not os.listdir(oci.root)
    assert not [h for h in cgroups.hierarchies() if os.path.exists(os.path.join(h.mountpoint, parent))]


def test_start_finds_a_process_that_ran_and_exited_before_it_looked(oci, monkeypatch):
    # The parallel race above made certain: the short process is started, runs and exits between two of
    # start's looks at the fifo; its go-ahead byte is there, so it was started (not "stopped").
    from pynet.oci import runtime

    oci.config(_args("sh", "-c", "exit 3"))
    res = oci.create("brief")
    assert res.returncode == 0, res.err
    real, looks = runtime.Container.alive, []

    def alive_once_it_is_gone(self):
        looks.append(1)
        if len(looks) == 2:   # the first look of start's wait (the first is its status)
            deadline = time.monotonic() + 20
            while real(self) and time.monotonic() < deadline:
                time.sleep(0.005)
        return real(self)

    monkeypatch.setattr(runtime.Container, "alive", alive_once_it_is_gone)
    runtime.start(oci.root, "brief")
    monkeypatch.undo()
    assert oci.state("brief")["status"] == "stopped"


def test_cgroup_parent_dying_under_a_create_is_made_again(monkeypatch):
    # Another container's delete removes the shared parent just as this create prepares it: the kernel
    # refuses files of a cgroup being removed (ENODEV), then the directory is gone; the create makes it again.
    parent = f"pynet-oci-dying-{os.getpid()}"
    real, refused = cgroups._write, []

    def write(path, value):
        if os.path.basename(os.path.dirname(path)) == parent and not refused:
            refused.append(path)
            raise OSError(errno.ENODEV, "No such device", path)
        real(path, value)

    monkeypatch.setattr(cgroups, "_write", write)
    cg = cgroups.create("dying", cgroups.Limits(), rel=f"{parent}/dying", rules=[])
    try:
        assert refused and all(os.path.isdir(d) for d in cg.all_dirs())
    finally:
        cg.remove()
    assert not [h for h in cgroups.hierarchies() if os.path.exists(os.path.join(h.mountpoint, parent))]


def test_cgroups_path_is_used_and_removed(oci):
    parent = f"pynet-oci-test-{os.getpid()}"
    oci.config(lambda c: (c["linux"].update(cgroupsPath=f"/{parent}/box"), c["process"].update(args=["sleep", "60"])))
    assert oci.create("cgpath").returncode == 0
    pid = oci.state("cgpath")["pid"]
    dirs = [os.path.join(h.mountpoint, parent, "box") for h in cgroups.hierarchies()]
    assert dirs and all(str(pid) in open(os.path.join(d, "cgroup.procs")).read().split() for d in dirs)
    assert oci("delete", "--force", "cgpath").returncode == 0
    assert not any(os.path.exists(os.path.dirname(d)) for d in dirs)


def _in_every_cgroup(cid: str, pid: int) -> bool:
    dirs = _cgroup_dirs(cid)
    return len(dirs) == len(cgroups.hierarchies()) and \
        all(str(pid) in open(os.path.join(d, "cgroup.procs")).read().split() for d in dirs)


def test_container_is_moved_into_its_cgroups_where_the_kernel_cannot_fork_into_one(oci, monkeypatch):
    # clone3's CLONE_INTO_CGROUP missing (before Linux 5.7) or refused: a plain fork, moved by the runtime.
    from pynet.oci import runtime

    def refused(_fd):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(syscalls, "fork_into_cgroup", refused)
    oci.config(_args("sleep", "60"))
    with oci.host_ns.entered():
        pid = runtime.create(oci.root, "moved", oci.bundle).data["pid"]
    try:
        assert _in_every_cgroup("moved", pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)   # this process's child: the fixture's delete finds it stopped


def test_user_namespace_container_is_in_every_cgroup(oci):
    # Stage 1 is forked into its cgroup2 directory and writes itself into each v1 hierarchy before it
    # makes the user namespace; the init it forks inherits them all.
    with _user_namespace_bundle(oci, ["sleep", "60"]):
        assert oci.create("userns-cg").returncode == 0
        assert _in_every_cgroup("userns-cg", oci.state("userns-cg")["pid"])
        assert oci("delete", "--force", "userns-cg").returncode == 0


def test_errors_go_to_the_log_file_in_json(oci, tmp_path):
    log = tmp_path / "runtime.log"
    res = oci("--log", str(log), "--log-format", "json", "state", "ghost")
    assert res.returncode == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and entry["msg"] == "container does not exist: ghost" and entry["time"]
    # AppArmor/SELinux fields: accepted, the container runs, a warning says they were not applied
    oci.config(lambda c: c["process"].update(apparmorProfile="docker-default", selinuxLabel="system_u:r:t:s0",
                                             args=["true"]))
    res = oci("--log", str(log), "--log-format", "json", "run", "--bundle", oci.bundle, "lsm")
    assert res.returncode == 0, res.err
    warnings = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert [w["level"] for w in warnings] == ["warning", "warning"]
    assert "process.apparmorProfile 'docker-default' not applied" in warnings[0]["msg"]


def test_seccomp_profile_and_masked_paths(oci):
    def edit(c):
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
        c["linux"]["rootfsPropagation"] = "rslave"
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]})
        c["process"]["args"] = ["sh", "-c", "mkdir /tmp/d 2>&1; grep '^Seccomp:' /proc/self/status; "
                                "test -c /proc/keys && echo keys-masked"]
    oci.config(edit)
    res = oci.run("filtered")
    assert res.returncode == 0, res.err
    assert "Operation not permitted" in res.out and "Seccomp:\t2" in res.out and "keys-masked" in res.out


def test_seccomp_program_is_compiled_once_and_kept_beside_the_root(oci):
    # Engines pass the same profile every time: the second container loads the kept program.
    from pynet.oci.runtime import seccomp_cache

    deny = {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
    oci.config(lambda c: (c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [deny]}),
                          c["process"].update(args=["sh", "-c", "mkdir /d 2>&1; grep '^Seccomp:' /proc/self/status"])))
    outputs = []
    for cid in ("compiled", "kept"):
        res = oci.run(cid)
        assert res.returncode == 0, res.err
        outputs.append(res.out)
        assert len(os.listdir(seccomp_cache(oci.root))) == 1
    assert outputs[0] == outputs[1] and "Operation not permitted" in outputs[1] and "Seccomp:\t2" in outputs[1]
    deny["action"] = "SCMP_ACT_KILL"   # another profile, another program
    oci.config(lambda c: (c["linux"]["seccomp"].update(syscalls=[deny]),
                          c["process"].update(args=["sh", "-c", "mkdir /d; echo $?"])))
    res = oci.run("killed")
    assert res.returncode == 0 and res.out == "159\n", res.err   # 128 + SIGSYS
    assert len(os.listdir(seccomp_cache(oci.root))) == 2


def test_exec_joins_the_running_container(oci):
    oci.config(lambda c: (c.update(hostname="execbox"), c["process"].update(args=["sleep", "60"])))
    assert oci.create("target").returncode == 0
    assert oci("start", "target").returncode == 0
    res = oci("exec", "target", "sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; exit 4")
    assert res.returncode == 4, res.err
    assert res.out.split("\n")[:2] == ["execbox", "sleep 60 "]


def test_exec_of_a_missing_command_is_reported_like_runc(oci):
    oci.config(_args("sleep", "60"))
    assert oci.create("execmiss").returncode == 0
    res = oci("exec", "execmiss", "no-such-command")
    assert res.returncode != 0 and "no-such-command" in res.err and "Traceback" not in res.err, res
    res = oci("exec", "-d", "execmiss", "no-such-command")
    assert res.returncode != 0 and "no-such-command" in res.err and "Traceback" not in res.err, res


@contextlib.contextmanager
def _user_namespace_bundle(oci, args: list):
    """The bundle with a user namespace (container root: host uid 200000) running ``args``. Container root
    must reach its rootfs, as with runc: a busybox rootfs under /tmp, not under pytest's 0700 dirs."""
    rootfs = tempfile.mkdtemp(prefix="pynet-oci-userns-", dir="/tmp")
    try:
        os.chmod(rootfs, 0o755)
        images._populate_busybox(rootfs)

        def edit(c):
            c["root"]["path"] = rootfs
            c["linux"]["namespaces"].append({"type": "user"})
            c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
            c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
            c["process"]["args"] = args
        oci.config(edit)
        yield
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def test_exec_runs_in_the_containers_cgroups(oci):
    oci.config(_args("sleep", "60"))
    assert oci.create("execcg").returncode == 0
    init_cgroups = open(f"/proc/{oci.state('execcg')['pid']}/cgroup").read()
    res = oci("exec", "execcg", "cat", "/proc/self/cgroup")
    assert res.returncode == 0, res.err
    assert res.out == init_cgroups and "pynet-oci/execcg" in res.out


def test_user_namespace_maps_root(oci):
    with _user_namespace_bundle(oci, ["sh", "-c", "id -u; cat /proc/self/uid_map; stat -c %u /bin/busybox"]):
        res = oci.run("mapped")
        assert res.returncode == 0, res.err
        assert res.out.split() == ["0", "0", "200000", "65536", "65534"]   # host root's files: unmapped


def test_unreachable_rootfs_in_a_user_namespace_is_reported(oci):
    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    oci.config(edit)
    proc = oci.create("unreachable")
    assert proc.returncode == 1
    assert "container init:" in proc.err and "Permission denied" in proc.err and "Traceback" not in proc.err
    assert not os.path.exists(os.path.join(oci.root, "unreachable")) and not _cgroup_dirs("unreachable")


def test_memory_and_pids_limits_reach_the_cgroup(oci):
    def edit(c):
        c["process"]["args"] = ["sleep", "60"]
        c["linux"]["resources"].update(memory={"limit": 64 << 20}, pids={"limit": 20},
                                       cpu={"shares": 512, "quota": 50000, "period": 100000})
    oci.config(edit)
    assert oci.create("limited").returncode == 0
    dirs = _cgroup_dirs("limited")
    found = {}
    for d in dirs:
        for name in ("memory.limit_in_bytes", "memory.max", "pids.max", "cpu.shares", "cpu.cfs_quota_us"):
            if os.path.exists(os.path.join(d, name)):
                found[name] = open(os.path.join(d, name)).read().strip()
    assert found.get("memory.limit_in_bytes", found.get("memory.max")) == str(64 << 20)
    assert found["pids.max"] == "20"
    if "cpu.shares" in found:
        assert found["cpu.shares"] == "512" and found["cpu.cfs_quota_us"] == "50000"


class ConsoleSocket:
    """What an engine listens on for --console-socket: receives the pty master (SCM_RIGHTS)."""

    def __init__(self, path: str):
        import socket

        self.path = path
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.server.settimeout(30)

    def receive(self) -> tuple[str, int]:
        import array
        import socket

        conn, _ = self.server.accept()
        with conn:
            fds = array.array("i")
            msg, anc, _flags, _addr = conn.recvmsg(1024, socket.CMSG_SPACE(fds.itemsize))
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[:fds.itemsize])
        assert len(fds) == 1, "no pty master received"
        return msg.decode(), fds[0]

    def close(self) -> None:
        self.server.close()


def _read_until(fd: int, marker: bytes, timeout: float = 20) -> bytes:
    import select

    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:   # EIO: the slave side closed
                break
            if not chunk:
                break
            out += chunk
    return out


def test_terminal_goes_to_the_console_socket(oci, tmp_path):
    console = ConsoleSocket(str(tmp_path / "console.sock"))
    oci.config(lambda c: c["process"].update(
        terminal=True, consoleSize={"height": 33, "width": 101},
        args=["sh", "-c", "tty; stty size; [ -t 0 ] && echo stdin-is-tty; read line; echo got-$line; sleep 60"]))
    try:
        proc = oci.create("tty", "--console-socket", console.path)
        assert proc.returncode == 0, proc.err
        name, master = console.receive()
        assert name.startswith("/dev/pts/")
        try:
            assert oci("start", "tty").returncode == 0
            out = _read_until(master, b"stdin-is-tty")
            assert name.encode() in out and b"33 101" in out and b"stdin-is-tty" in out
            os.write(master, b"typed\n")
            assert b"got-typed" in _read_until(master, b"got-typed")
            res = oci("exec", "--tty", "--console-socket", console.path, "tty", "sh", "-c", "tty")
            assert res.returncode == 0, res.err
            exec_name, exec_master = console.receive()
            try:
                assert exec_name.startswith("/dev/pts/") and exec_name != name
            finally:
                os.close(exec_master)
        finally:
            os.close(master)
    finally:
        console.close()


# -- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["start"], ["state"], ["kill"], ["delete"], ["pause"], ["ps"],
                                     ["exec", "--", None, "true"]])
def test_unknown_id_is_reported_like_runc(oci, command):
    argv = [a if a is not None else "ghost" for a in command]
    if None not in command:
        argv.append("ghost")
    res = oci(*argv)
    assert res.returncode == 1
    assert res.err.strip() == "container does not exist: ghost"


def test_duplicate_id_is_refused_and_the_first_container_kept(oci):
    oci.config(_args("sleep", "60"))
    assert oci.create("twice").returncode == 0
    pid = oci.state("twice")["pid"]
    again = oci.create("twice")
    assert again.returncode == 1 and again.err.strip() == "container with id exists: twice"
    assert oci.state("twice")["pid"] == pid and oci.state("twice")["status"] == "created"


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c.update(mounts=[{"destination": "/x", "type": "nfs", "source": "a"}]), 'mounts[0].type "nfs"'),
    (lambda c: c["process"].update(args=[]), "process.args []"),
    (lambda c: c["process"].update(terminal=True), "process.terminal is true: it needs --console-socket"),
    (lambda c: c["process"].update(consoleSize={"height": -1}), "process.consoleSize.height -1"),
    (lambda c: c["mounts"].append({"destination": "/data", "type": "bind", "source": "/nonexistent-src",
                                   "options": ["rbind"]}), 'mounts[7].source "/nonexistent-src": does not exist'),
    (lambda c: c["linux"]["namespaces"].append({"type": "time"}), 'linux.namespaces[5].type "time"'),
    (lambda c: c["linux"].update(resources={"memory": {"limit": 1000}}), "linux.resources.memory.limit 1000"),
    (lambda c: c["process"].update(capabilities={"bounding": ["CAP_FLY"]}), 'process.capabilities.bounding[0] "CAP_FLY"'),
    (lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_NOPE"}), "defaultAction 'SCMP_ACT_NOPE'"),
    (lambda c: c["linux"].update(cgroupsPath="system.slice:x:y"), "linux.cgroupsPath 'system.slice:x:y'"),
    (lambda c: c["root"].update(path="/nonexistent-rootfs"), 'root.path "/nonexistent-rootfs"'),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]), 'rlimits[0].type "RLIMIT_FOO"'),
    (lambda c: c["linux"].update(rootfsPropagation="rshard"), 'linux.rootfsPropagation "rshard": is not one of'),
])
def test_bad_config_is_named_and_leaves_nothing(oci, edit, expected):
    oci.config(edit)
    proc = oci.create("bad")
    assert proc.returncode == 1
    assert expected in proc.err and "Traceback" not in proc.err
    assert not os.path.exists(os.path.join(oci.root, "bad")) and not _cgroup_dirs("bad")


def test_bad_bundle_and_malformed_json(oci, tmp_path):
    proc = oci.create("nobundle", bundle=str(tmp_path / "missing"))
    assert proc.returncode == 1 and proc.err.strip() == f"bundle {tmp_path / 'missing'}: not a directory"
    with open(os.path.join(oci.bundle, "config.json"), "w") as fh:
        fh.write('{"ociVersion": "1.0.2", "root": ')
    proc = oci.create("malformed")
    assert proc.returncode == 1 and "config.json: not valid JSON" in proc.err and "Traceback" not in proc.err
    assert not os.listdir(oci.root) if os.path.isdir(oci.root) else True
    res = oci("--systemd-cgroup", "state", "x")
    assert res.returncode == 1 and "--systemd-cgroup is not supported" in res.err
    res = oci("kill", "ghost", "SIGNOPE")
    assert res.returncode == 1 and res.err.strip() == "unknown signal 'SIGNOPE'"


def test_features_and_list(oci):
    feats = json.loads(oci("features").out)
    assert "pid" in feats["linux"]["namespaces"] and "poststop" in feats["hooks"]
    assert feats["linux"]["cgroup"]["systemd"] is False
    oci.config(_args("sleep", "60"))
    assert oci.create("listed").returncode == 0
    assert oci("list", "-q").out.split() == ["listed"]
    listed = json.loads(oci("list", "--format", "json").out)
    assert [(c["id"], c["status"]) for c in listed] == [("listed", "created")]
    # delete of a created container needs no --force (runc's rule): its init is killed
    pid = listed[0]["pid"]
    assert oci("delete", "listed").returncode == 0
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z" \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


# -- engines ----------------------------------------------------------------------------------------------
@pytest.fixture
def podman_oci(host_ns, tmp_path):
    """Debian's podman 4.3 fenced into temp dirs as tests/test_podman.py fences it, with --runtime pynet-oci
    and no network (no CNI plugins involved)."""
    from tests.podman.harness import missing_requirements, podman_with_runtime

    reason = missing_requirements()
    if reason:
        pytest.skip(f"podman test needs {reason}")
    with podman_with_runtime(host_ns, str(tmp_path), OCI) as pm, default_seccomp_cache_removed():
        yield pm


@contextlib.contextmanager
def default_seccomp_cache_removed():
    """podman passes no --root to delete, so its containers live in the default root: the compiled
    seccomp programs kept beside it go when this made them."""
    from pynet.oci.runtime import seccomp_cache

    cache = seccomp_cache(DEFAULT_ROOT)
    made = not os.path.exists(cache)
    try:
        yield
    finally:
        if made:
            shutil.rmtree(cache, ignore_errors=True)


def test_podman_runs_containers_through_pynet_oci(podman_oci):
    pm = podman_oci
    run = ("run", "--network", "none", "--cgroup-parent", pm.cgroup_parent)
    assert pm.out("info", "--format", "{{.Host.OCIRuntime.Path}}") == OCI
    res = pm(*run, "--rm", "pynet-busybox", "echo", "hi")
    assert res.stdout == b"hi\n"
    res = pm(*run, "--rm", "pynet-busybox", "sh", "-c", "exit 3", check=False)
    assert res.returncode == 3, res.stderr.decode()   # podman's stderr holds pynet-oci's
    tty = ("sh", "-c", "[ -t 1 ] && echo is-tty")   # conmon's --console-socket
    assert pm(*run, "--rm", "-t", "pynet-busybox", *tty).stdout == b"is-tty\r\n"
    cid = pm.out(*run, "-d", "--hostname", "pmbox", "pynet-busybox", "sleep", "60")
    assert pm.out("exec", cid, "hostname") == "pmbox"            # exec --detach --pid-file --process
    assert pm("exec", "-t", cid, *tty).stdout == b"is-tty\r\n"
    assert "sleep 60" in pm.out("top", cid)
    pm("pause", cid)
    assert pm.out("inspect", "--format", "{{.State.Status}}", cid) == "paused"
    pm("unpause", cid)
    assert pm.out("inspect", "--format", "{{.State.Status}}", cid) == "running"
    assert os.path.isdir(os.path.join(DEFAULT_ROOT, cid))
    pm("rm", "-f", "-t", "0", cid)
    assert pm.out("ps", "-a", "-q") == ""
    assert not os.path.exists(os.path.join(DEFAULT_ROOT, cid))


@pytest.fixture
def containerd(host_ns, tmp_path):
    """A containerd 1.6 of this test (root, state and sockets under a short temp dir, no CRI plugin) in the
    sandbox netns; its shim keeps runtime state in /run/containerd/runc/<namespace>, so a namespace of our
    own, and the /run/containerd directories it made are removed if empty."""
    import shutil as sh

    if not (sh.which("containerd") and sh.which("ctr")):
        pytest.skip("containerd test needs the Debian package containerd")
    base = tempfile.mkdtemp(prefix="pynet-ctd-", dir="/tmp")
    made = [p for p in ("/run/containerd", "/run/containerd/runc", "/run/containerd/fifo", "/run/containerd/s")
            if not os.path.exists(p)]
    ns = f"pynet-oci-{os.getpid()}"
    with open(os.path.join(base, "config.toml"), "w") as fh:
        fh.write(f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
                 'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                 f'[grpc]\n  address = "{base}/c.sock"\n[ttrpc]\n  address = "{base}/c.sock.ttrpc"\n')
    daemon = host_ns.popen(["containerd", "--config", os.path.join(base, "config.toml")],
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "log"), "w"))

    def ctr(*argv, timeout=60):
        res = host_ns.run(["ctr", "--address", f"{base}/c.sock", "-n", ns, *argv], timeout=timeout)
        res.out, res.err = res.stdout.decode(), res.stderr.decode()
        return res
    try:
        deadline = time.monotonic() + 20
        while ctr("version").returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield ctr
    finally:
        for cid in ctr("containers", "list", "-q").out.split():
            ctr("task", "kill", "-s", "KILL", cid)
            ctr("task", "rm", "-f", cid)
            ctr("containers", "rm", cid)
        daemon.terminate()
        daemon.wait(timeout=20)
        sh.rmtree(base, ignore_errors=True)
        leftover = os.listdir(f"/run/containerd/runc/{ns}") if os.path.isdir(f"/run/containerd/runc/{ns}") else []
        for path in [f"/run/containerd/runc/{ns}"] + made[::-1]:
            try:
                os.rmdir(path)
            except OSError:
                pass
        assert not leftover, f"runtime state left behind: {leftover}"


def test_containerd_ctr_runs_tasks_through_pynet_oci(containerd, busybox_rootfs):
    run = ("run", "--runc-binary", OCI, "--rootfs")   # --rootfs: the first argument is a rootfs directory
    res = containerd(*run, "--rm", busybox_rootfs, "one", "sh", "-c", "echo hi-ctr; exit 4")
    assert res.returncode == 4 and res.out == "hi-ctr\n", res.err
    assert containerd(*run, "-d", busybox_rootfs, "two", "sleep", "60").returncode == 0
    res = containerd("task", "exec", "--exec-id", "e1", "two", "sh", "-c", "echo in-exec; exit 2")
    assert res.returncode == 2 and res.out == "in-exec\n"
    assert containerd("task", "pause", "two").returncode == 0
    assert "PAUSED" in containerd("task", "ls").out
    assert containerd("task", "resume", "two").returncode == 0
    assert "RUNNING" in containerd("task", "ls").out
    assert containerd("task", "kill", "-s", "KILL", "two").returncode == 0
    deadline = time.monotonic() + 10
    while "STOPPED" not in containerd("task", "ls").out and time.monotonic() < deadline:
        time.sleep(0.05)
    assert containerd("task", "rm", "two").returncode == 0
    assert containerd("containers", "rm", "two").returncode == 0


def test_cgroup_mount_in_a_cgroup_namespace_shows_the_containers_own_hierarchies(oci):
    # The hierarchies are read from the host's mount table before the cgroup namespace exists (inside it
    # their roots are no longer "/"): the container's /sys/fs/cgroup holds them, rooted at its cgroup.
    def edit(c):
        c["linux"]["namespaces"].append({"type": "cgroup"})
        c["linux"]["resources"]["pids"] = {"limit": 42}
        c["process"]["args"] = ["sh", "-c", "cat /proc/self/cgroup; cat /sys/fs/cgroup/pids/pids.max 2>&1"]
    oci.config(edit)
    res = oci.run("cgns")
    assert res.returncode == 0, res.err
    lines = res.out.splitlines()
    assert all(line.endswith(":/") for line in lines if ":" in line)
    if any(h.version == 1 and "pids" in h.controllers for h in cgroups.hierarchies()):
        assert lines[-1] == "42"
