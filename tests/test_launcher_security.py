"""`pynet run`'s security defaults, the ones runc and Docker give every container: the device allowlist
(cgroup v1 devices controller and a cgroup2 device program, each proven alone too), the image's User and
--user/--group-add, rlimits (--ulimit), empty inheritable/ambient capabilities, Docker's seccomp allowlist
(--security-opt seccomp=unconfined|PROFILE.json), --tmpfs with --read-only.

Container tests run the launcher inside a sandbox host netns (the ``pynet`` fixture of test_launcher.py);
the unit tests of the device filters make a cgroup of their own, move one forked child into it, and
remove it at the end.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import os
import tarfile

import pytest

from tests.test_launcher import PYNET, pynet, pynet_root, pytestmark  # noqa: F401
from tests.test_launcher_daemon import pynet_daemon_args, remote  # noqa: F401

from cni_plugins import syscalls
from pynet.launcher import cgroups, devices, security, seccomp_profile, zygote
from pynet.launcher.options import parse_fast

KVM = (10, 232)          # a device not in the allowlist that root can open on this host
LOOP_CONTROL = "/dev/loop-control"


def _status(text: str) -> dict:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


# -- devices ---------------------------------------------------------------------------------------------
def test_container_root_may_mknod_but_not_open_a_device_outside_the_allowlist(pynet):
    res = pynet.run("--rm", "busybox", "sh", "-c",
                    f"mknod /tmp/kvm c {KVM[0]} {KVM[1]} && echo made; cat /tmp/kvm; "
                    "head -c 3 /dev/urandom | wc -c; echo x > /dev/null && echo null-ok")
    assert res.out.split() == ["made", "3", "null-ok"], res.err
    assert "can't open '/tmp/kvm': Operation not permitted" in res.err


def test_device_flag_creates_the_node_and_allows_only_the_given_access(pynet):
    st = os.stat(LOOP_CONTROL)
    res = pynet.run("--rm", "--device", f"{LOOP_CONTROL}:/dev/lc", "busybox", "sh", "-c",
                    "stat -c '%t %T' /dev/lc; exec 3</dev/lc && echo opened")
    assert res.returncode == 0, res.err
    assert res.out.split() == [f"{os.major(st.st_rdev):x}", f"{os.minor(st.st_rdev):x}", "opened"]
    res = pynet.run("--rm", "--device", f"{LOOP_CONTROL}:/dev/lc:m", "busybox", "sh", "-c", "exec 3</dev/lc")
    assert res.returncode != 0 and "Operation not permitted" in res.err


@pytest.mark.parametrize("spec, message", [
    ("/no/such/node", "/no/such/node"), ("/etc/hostname", "not a character or block device"),
    (f"{LOOP_CONTROL}:/dev/lc:rwx", "'rwx'"), ("relative", "'relative'"),
])
def test_bad_device_is_a_clear_error_and_leaves_nothing(pynet, spec, message):
    res = pynet.run("--rm", "--device", spec, "busybox", "true")
    assert res.returncode == 125 and message in res.err and "Traceback" not in res.err
    assert pynet.records() == []


def test_v1_devices_cgroup_holds_the_allowlist(pynet):
    if not cgroups.controller_mounted("devices"):
        pytest.skip("no v1 devices controller")
    cid = pynet.detach("--device", f"{LOOP_CONTROL}:/dev/lc:r", "busybox", "sleep", "30")
    path = pynet.inspect(cid)["cgroups"]["devices"]
    with open(os.path.join(path, "devices.list")) as fh:
        listed = set(fh.read().split("\n")) - {""}
    st = os.stat(LOOP_CONTROL)
    assert listed == {r.line() for r in devices.DEFAULT_RULES} | {f"c {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} r"}


def _in_child(work):
    """What ``work()`` returns (JSON data) when run in a forked child (which it may change for good)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, json.dumps(work()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _try_in_cgroup(procs_files: list, paths: list) -> dict:
    """Opens each path for reading in a child moved into the cgroups (their cgroup.procs files);
    returns {path: "ok" or the errno name}."""
    def work():
        for procs in procs_files:
            with open(procs, "w") as fh:
                fh.write(str(os.getpid()))
        out = {}
        for path in paths:
            try:
                os.close(os.open(path, os.O_RDONLY))
                out[path] = "ok"
            except OSError as exc:
                out[path] = errno.errorcode[exc.errno]
        return out

    return _in_child(work)


@pytest.fixture
def nodes(tmp_path):
    """A disallowed (kvm) and an allowed (null) character node, under tmp_path."""
    made = {}
    for name, (major, minor) in (("kvm", KVM), ("null", (1, 3))):
        made[name] = str(tmp_path / name)
        os.mknod(made[name], 0o600 | 0o020000, os.makedev(major, minor))
    return made


@pytest.fixture
def test_cgroup():
    made = []

    def make(mountpoint: str) -> str:
        path = os.path.join(mountpoint, f"pynet-test-devices-{os.getpid()}")
        os.mkdir(path)
        made.append(path)
        return path

    yield make
    for path in made:
        os.rmdir(path)


def _hierarchy(version: int, controller: str | None = None) -> str:
    for h in cgroups.hierarchies():
        if h.version == version and (controller is None or controller in h.controllers):
            return h.mountpoint
    pytest.skip(f"no cgroup v{version} hierarchy{' with ' + controller if controller else ''}")


def test_v2_device_program_alone_denies_an_open_outside_the_allowlist(nodes, test_cgroup):
    path = test_cgroup(_hierarchy(2))
    procs = os.path.join(path, "cgroup.procs")
    assert _try_in_cgroup([procs], list(nodes.values())) == {nodes["kvm"]: "ok", nodes["null"]: "ok"}
    devices.attach_v2(path, devices.rules_for())
    assert _try_in_cgroup([procs], list(nodes.values())) == {nodes["kvm"]: "EPERM", nodes["null"]: "ok"}


def test_v2_device_program_matches_type_access_and_numbers():
    rules = [devices.Rule("c", 1, None, "r"), devices.Rule("b", None, None, "m")]
    program = devices.program(rules)
    assert len(program) % 8 == 0
    fd = syscalls.bpf_prog_load(syscalls.BPF_PROG_TYPE_CGROUP_DEVICE, program)   # the verifier accepts it
    os.close(fd)


def test_v1_devices_alone_denies_an_open_outside_the_allowlist(nodes, test_cgroup):
    path = test_cgroup(_hierarchy(1, "devices"))
    devices.apply_v1(path, devices.rules_for())
    assert _try_in_cgroup([os.path.join(path, "cgroup.procs")], list(nodes.values())) == \
        {nodes["kvm"]: "EPERM", nodes["null"]: "ok"}


# -- user --------------------------------------------------------------------------------------------------
def _image_with_user(pynet, pynet_root, tmp_path, user: str) -> str:
    """An OCI layout of busybox whose config has ``User``, imported; returns its name."""
    image = json.load(open(os.path.join(pynet_root, "images", "busybox%3Alatest.json")))
    layout = tmp_path / "oci"
    os.makedirs(layout / "blobs" / "sha256")

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        tf.add(os.path.join(pynet_root, "layers", image["layers"][0]), arcname=".")
    config = blob(json.dumps({"config": {"User": user, "Cmd": ["id"], "Env": ["PATH=/bin:/usr/bin"]}}).encode())
    manifest = blob(json.dumps({"schemaVersion": 2, "config": config, "layers": [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(layer.getvalue())}]}).encode())
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {**manifest, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    name = f"usertest-{os.getpid()}:v1"
    res = pynet("image", "import", str(layout), name)
    assert res.returncode == 0, res.err
    return name


def test_image_user_is_honoured_and_user_flag_overrides_it(pynet, pynet_root, tmp_path):
    name = _image_with_user(pynet, pynet_root, tmp_path, "65534")
    try:
        res = pynet("run", "--rm", "--net", "none", name)
        assert res.out.strip() == "uid=65534(nobody) gid=65534(nogroup)", res.err
        res = pynet.run("--rm", "-u", "0", name, "sh", "-c", "id -u; echo $HOME")
        assert res.out.split() == ["0", "/root"], res.err
    finally:
        pynet("image", "rm", name)


def test_user_names_groups_home_and_capabilities(pynet):
    res = pynet.run("--rm", "-u", "nobody:tty", "--group-add", "root", "--group-add", "4242", "busybox", "sh", "-c",
                    "id; echo $HOME; grep -E '^Cap(Inh|Prm|Eff|Amb)' /proc/self/status")
    assert res.returncode == 0, res.err
    lines = res.out.splitlines()
    assert lines[0] == "uid=65534(nobody) gid=5(tty) groups=0(root),4242"
    assert lines[1] == "/nonexistent"
    # A non-root user keeps no capability after execve (inheritable and ambient are empty).
    assert {v for k, v in _status("\n".join(lines[2:])).items()} == {"0000000000000000"}
    res = pynet.run("--rm", "-u", "1234:5678", "-e", "HOME=/given", "busybox", "sh", "-c", "id -u; id -g; echo $HOME")
    assert res.out.split() == ["1234", "5678", "/given"]


def test_exec_runs_as_the_containers_user_with_its_limits(pynet):
    cid = pynet.detach("-u", "nobody", "--ulimit", "nofile=512", "busybox", "sleep", "30")
    res = pynet("exec", cid, "sh", "-c", "id -u; ulimit -n; grep CapEff /proc/self/status")
    assert res.out.split() == ["65534", "512", "CapEff:", "0000000000000000"], res.err


@pytest.mark.parametrize("argv, message", [
    (["-u", "nosuchuser"], "'nosuchuser'"), (["-u", "nobody:nosuchgroup"], "'nosuchgroup'"),
    (["--group-add", "nosuchgroup"], "'nosuchgroup'"),
])
def test_unknown_user_or_group_is_a_clear_error(pynet, argv, message):
    res = pynet.run("--rm", *argv, "busybox", "true")
    assert res.returncode == 125 and message in res.err and "Traceback" not in res.err
    assert pynet.records() == []


# -- rlimits -------------------------------------------------------------------------------------------
def test_default_rlimits_are_runcs_and_ulimit_sets_others(pynet):
    res = pynet.run("--rm", "busybox", "sh", "-c", "ulimit -n; ulimit -Hn")
    assert res.out.split() == ["1024", "1024"], res.err
    res = pynet.run("--rm", "--ulimit", "nofile=100:200", "--ulimit", "nproc=77", "--ulimit", "core=0",
                    "busybox", "sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u; ulimit -Hu; ulimit -c")
    assert res.out.split() == ["100", "200", "77", "77", "0"], res.err


@pytest.mark.parametrize("spec, message", [
    ("bogus=1", "'bogus=1'"), ("nofile=x", "'x'"), ("nofile=10:5", "above hard limit"),
    ("nofile=1:999999999", "hard limit above"),
])
def test_bad_ulimit_is_a_clear_error(pynet, spec, message):
    res = pynet.run("--rm", "--ulimit", spec, "busybox", "true")
    assert res.returncode == 125 and message in res.err and spec in res.err, res.err
    assert pynet.records() == []


# -- capabilities ---------------------------------------------------------------------------------------
def test_inheritable_and_ambient_are_empty_and_cap_add_still_works(pynet):
    res = pynet.run("--rm", "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN", "busybox", "grep", "^Cap",
                    "/proc/self/status")
    caps = {k: int(v, 16) for k, v in _status(res.out).items()}
    kept = security.cap_mask(security.resolve_caps(["NET_ADMIN"], ["CHOWN"]))
    assert caps == {"CapInh": 0, "CapPrm": kept, "CapEff": kept, "CapBnd": kept, "CapAmb": 0}


# -- seccomp ------------------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
SYS = {"personality": 135, "kexec_load": 246, "io_uring_setup": 425, "getpid": 39, "clone3": 435, "unshare": 272}


def _syscalls_under(filt, calls: list) -> list:
    """Loads ``filt`` in a forked child, makes the calls ((name, args)); returns each result: 0 for
    success (or a positive return) or the errno name."""
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers here are x86_64's")

    def work():
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
        if filt is not None:
            filt.load()
        out = []
        for name, args in calls:
            ret = _libc.syscall(ctypes.c_long(SYS[name]), *[ctypes.c_long(a) for a in args])
            out.append(errno.errorcode[ctypes.get_errno()] if ret == -1 else 0)
        return out

    return _in_child(work)


def test_default_profile_is_an_allowlist_with_argument_filters():
    calls = [("personality", [0x0040000]), ("personality", [0xFFFFFFFF]), ("kexec_load", [0, 0, 0, 0]),
             ("io_uring_setup", [1, 0]), ("getpid", []), ("clone3", [0, 0])]
    got = _syscalls_under(security.build_seccomp_filter(), calls)
    assert got == ["EPERM", 0, "EPERM", "EPERM", 0, "ENOSYS"]
    unconfined = _syscalls_under(security.build_seccomp_filter("unconfined"), calls[:2])
    assert unconfined == [0, 0]


def test_default_profile_allows_more_with_capabilities():
    noop_unshare = [("unshare", [0])]
    assert _syscalls_under(security.build_seccomp_filter(), noop_unshare) == ["EPERM"]
    with_admin = security.build_seccomp_filter(caps=security.resolve_caps(["SYS_ADMIN"]))
    assert _syscalls_under(with_admin, noop_unshare) == [0]
    profile = seccomp_profile.load()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert any("CAP_SYS_ADMIN" in (e.get("includes") or {}).get("caps", []) for e in profile["syscalls"])


def test_containers_run_under_the_default_profile_and_unconfined_lifts_it(pynet):
    res = pynet.run("--rm", "busybox", "sh", "-c", "grep Seccomp: /proc/self/status; linux32 uname -m; "
                    "ls / >/dev/null && echo ls-ok; unshare -U true")
    assert res.out.split() == ["Seccomp:", "2", "i686", "ls-ok"]
    assert "Operation not permitted" in res.err
    res = pynet.run("--rm", "--cap-add", "SYS_ADMIN", "busybox", "unshare", "-U", "true")
    assert res.returncode == 0, res.err
    res = pynet.run("--rm", "--security-opt", "seccomp=unconfined", "busybox", "sh", "-c",
                    "grep Seccomp: /proc/self/status; unshare -U true && echo unshared")
    assert res.out.split() == ["Seccomp:", "0", "unshared"], res.err


def test_custom_profile_is_honoured(pynet, tmp_path):
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                            {"names": ["unshare"], "action": "SCMP_ACT_ALLOW"}]}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    res = pynet.run("--rm", "--security-opt", f"seccomp={path}", "busybox", "sh", "-c",
                    "mkdir /tmp/d; unshare -U true && echo unshared")
    assert "Permission denied" in res.err and res.out.split() == ["unshared"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"defaultAction": "SCMP_ACT_BOGUS"}), "defaultAction 'SCMP_ACT_BOGUS'"),
    (json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "ALLOW"}]}),
     "syscalls[0]: action 'ALLOW'"),
    (json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
     "syscalls[0].args[0]: index 9"),
])
def test_malformed_profile_is_a_clear_error_naming_the_file(pynet, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    res = pynet.run("--rm", "--security-opt", f"seccomp={path}", "busybox", "true")
    assert res.returncode == 125 and str(path) in res.err and message in res.err, res.err
    assert "Traceback" not in res.err and pynet.records() == []


# -- the daemon's fast path ---------------------------------------------------------------------------------
def test_runs_served_by_the_daemon_get_the_same_defaults(remote, pynet_root, tmp_path):
    argv = ["--rm", "--net", "none", "--dns", "127.0.0.1", "busybox", "sh", "-c",
            f"ulimit -n; grep -E '^Cap(Inh|Amb)|^Seccomp:' /proc/self/status; mknod /tmp/k c {KVM[0]} {KVM[1]}; "
            "cat /tmp/k; unshare -U true"]
    assert zygote.why_not_served(parse_fast(argv)) is None
    res = remote("run", *argv)
    assert res.out.split() == ["1024", "CapInh:", "0000000000000000", "CapAmb:", "0000000000000000",
                               "Seccomp:", "2"], res.err
    assert res.err.count("Operation not permitted") == 2
    name = _image_with_user(remote, pynet_root, tmp_path, "nobody")
    try:
        argv = ["--rm", "--net", "none", name]
        assert zygote.why_not_served(parse_fast(argv)) is None
        assert remote("run", *argv).out.strip() == "uid=65534(nobody) gid=65534(nogroup)"
    finally:
        remote("image", "rm", name)


# -- tmpfs ---------------------------------------------------------------------------------------------------
def test_tmpfs_is_writable_on_a_read_only_rootfs(pynet):
    res = pynet.run("--rm", "--read-only", "--tmpfs", "/scratch:size=1m,mode=1770", "--tmpfs", "/run/x:exec",
                    "busybox", "sh", "-c",
                    "touch /file; touch /scratch/ok && echo wrote; stat -c %a /scratch; "
                    "grep -E ' /(scratch|run/x) ' /proc/mounts")
    assert "Read-only file system" in res.err
    lines = res.out.splitlines()
    assert lines[:2] == ["wrote", "1770"], res.err
    scratch, runx = (line.split()[3].split(",") for line in lines[2:4])
    assert {"rw", "nosuid", "nodev", "noexec", "size=1024k"} <= set(scratch)
    assert "noexec" not in runx


@pytest.mark.parametrize("spec, message", [("relative", "'relative'"), ("/x:bogus=1", "'bogus=1'"), ("/", "'/'")])
def test_bad_tmpfs_is_a_clear_error(pynet, spec, message):
    res = pynet.run("--rm", "--tmpfs", spec, "busybox", "true")
    assert res.returncode == 125 and message in res.err and "Traceback" not in res.err


def test_new_flags_are_read_by_the_fast_parser_and_run_locally():
    opts = parse_fast(["-u", "nobody:tty", "--group-add", "5", "--ulimit", "nofile=10:20", "--tmpfs", "/t:size=1m",
                       "--device", f"{LOOP_CONTROL}:/dev/lc:r", "busybox", "true"])
    assert (opts.user, opts.group_add, opts.ulimits) == ("nobody:tty", ["5"], ["nofile=10:20"])
    assert opts.tmpfs == [("/t", syscalls.MS_NOEXEC | syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=1m")]
    assert [(d.path, d.access, d.kind) for d in opts.devices] == [("/dev/lc", "r", "c")]
    assert zygote.why_not_served(opts) is not None   # the local launcher runs these
