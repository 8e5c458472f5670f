"""Launcher pieces that need no root or kernel state: cgroup layout detection, option parsing, image
layer extraction safety."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from pynet.launcher import cgroups, images, network, security

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V1_COMOUNTED = ("32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
                "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
                "36 31 0:33 /docker/abc /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n")


def test_hybrid_layout_lists_each_v1_controller_and_the_controllerless_unified_tree():
    hs = cgroups.hierarchies(HYBRID, v2_controllers=lambda m: frozenset())
    assert cgroups.layout(hs) == "hybrid"
    assert {h.mountpoint: (h.version, set(h.controllers)) for h in hs} == {
        "/sys/fs/cgroup/cpu": (1, {"cpu"}), "/sys/fs/cgroup/cpuacct": (1, {"cpuacct"}),
        "/sys/fs/cgroup/memory": (1, {"memory"}), "/sys/fs/cgroup/pids": (1, {"pids"}),
        "/sys/fs/cgroup/systemd": (1, set()), "/sys/fs/cgroup/unified": (2, set())}


def test_pure_v2_layout_uses_the_root_controllers():
    hs = cgroups.hierarchies(V2, v2_controllers=lambda m: frozenset({"cpu", "memory", "pids", "cpuset"}))
    assert cgroups.layout(hs) == "v2"
    assert hs[0].controllers == {"cpu", "memory", "pids", "cpuset"}


def test_v1_comounted_controllers_and_non_root_bind_mounts():
    hs = cgroups.hierarchies(V1_COMOUNTED)
    assert cgroups.layout(hs) == "v1"
    # A hierarchy mounted from a sub-cgroup (a nested container's view) is not a root to build under.
    assert [(h.mountpoint, set(h.controllers)) for h in hs] == [
        ("/sys/fs/cgroup/cpu,cpuacct", {"cpu", "cpuacct"}), ("/sys/fs/cgroup/memory", {"memory"})]


def test_controller_lookup_falls_back_to_the_unified_tree_only_when_it_has_the_controller(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    cg = cgroups.ContainerCgroups({"unified": str(tmp_path), "cpu": "/x/cpu"})
    assert cg.controller("memory") == str(tmp_path)
    assert cg.controller("cpu") == "/x/cpu"
    assert cg.controller("cpuset") is None


@pytest.mark.parametrize("text,value", [("64m", 64 << 20), ("1g", 1 << 30), ("512k", 512 << 10),
                                        ("1000", 1000), ("2MB", 2 << 20)])
def test_memory_sizes_parse_like_docker(text, value):
    assert cgroups.parse_size(text) == value


def test_capabilities_default_add_drop_and_all():
    assert "NET_ADMIN" not in security.resolve_caps()
    assert set(security.resolve_caps()) == set(security.DEFAULT_CAPS)
    caps = security.resolve_caps(cap_add=["net_admin"], cap_drop=["CAP_CHOWN"])
    assert "NET_ADMIN" in caps and "CHOWN" not in caps
    assert security.resolve_caps(cap_drop=["ALL"], cap_add=["KILL"]) == ["KILL"]
    with pytest.raises(security.SecurityError, match="BOGUS"):
        security.resolve_caps(cap_add=["bogus"])


def test_seccomp_filter_builds_with_python3_seccomp():
    if not security.seccomp_available():
        pytest.skip("python3-seccomp not installed")
    assert security.build_seccomp_filter() is not None


def test_lsm_status_records_that_selinux_and_apparmor_are_inactive():
    st = security.lsm_status()
    if not (st["selinux"] or st["apparmor"]):
        assert "not active" in st["applied"]


@pytest.mark.parametrize("spec,entry", [
    ("8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}),
    ("127.0.0.1:53:53/udp", {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}),
])
def test_publish_flags_become_port_mappings_in_the_record(spec, entry):
    assert network.NetOptions.from_flags(publish=[spec]).to_record()["publish"] == [entry]


@pytest.mark.parametrize("argv, message", [
    (["-p", "80-81:80", "busybox"], "invalid -p '80-81:80': the host range holds 2 ports, the container range 1"),
    (["-p", "0:80", "busybox"], "invalid -p '0:80': ports must be 1-65535"),
    (["--ip", "10.0.0.300", "busybox"], "invalid --ip '10.0.0.300'"),
    (["--net", "none", "-p", "1:2", "busybox"], "make no sense with --net none"),
    (["--security-opt", "foo=bar", "busybox"], "unsupported --security-opt 'foo=bar'"),
    (["--memory", "lots", "busybox"], "invalid --memory 'lots'"),
    (["-v", "a:/b", "busybox"], "invalid -v 'a:/b'"),
    (["--rm"], "needs an IMAGE"),
])
def test_bad_run_options_are_refused_naming_the_value(argv, message):
    from pynet.launcher import options

    with pytest.raises(options.OptionsError, match=message):
        options.parse(argv)


def test_layer_extraction_translates_whiteouts_and_refuses_escapes(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(name, data=b"", kind=tarfile.REGTYPE, linkname=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, linkname, len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
        add("etc", kind=tarfile.DIRTYPE)
        add("etc/.wh.gone")
        add("opaque", kind=tarfile.DIRTYPE)
        add("opaque/.wh..wh..opq")
        add("../outside", b"x")
        add("/abs/file", b"y")
        add("link", kind=tarfile.SYMTYPE, linkname="/etc")
        add("link/through", b"z")
        add("hard", kind=tarfile.LNKTYPE, linkname="link/passwd")
        add("dev-node", kind=tarfile.CHRTYPE)
    buf.seek(0)
    root = tmp_path / "layer"
    root.mkdir()
    with tarfile.open(fileobj=buf) as tf:
        images.extract_layer(tf, str(root))
    gone = os.lstat(root / "etc" / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(root / "opaque", images.OPAQUE_XATTR) == b"y"
    assert (root / "abs" / "file").read_bytes() == b"y"
    assert not (tmp_path / "outside").exists()
    assert not os.path.exists("/etc/through")
    assert not (root / "hard").exists()
    assert not (root / "dev-node").exists()


def test_image_names_default_to_latest():
    assert images.normalize("busybox") == "busybox:latest"
    assert images.normalize("reg:5000/x") == "reg:5000/x:latest"
    with pytest.raises(images.ImageError):
        images.normalize("-bad")


def test_container_cgroup_mounts_mirror_the_host_layout():
    hybrid = cgroups.container_mounts(cgroups.hierarchies(HYBRID, v2_controllers=lambda m: frozenset()))
    assert ("memory", "cgroup", "memory") in hybrid
    assert ("systemd", "cgroup", "none,name=systemd") in hybrid
    assert ("unified", "cgroup2", "") in hybrid
    v2 = cgroups.container_mounts(cgroups.hierarchies(V2, v2_controllers=lambda m: frozenset({"memory"})))
    assert v2 == [("", "cgroup2", "")]


def test_secure_join_keeps_image_symlinks_inside_the_rootfs(tmp_path):
    from pynet.launcher.rootfs import secure_join

    root = tmp_path / "rootfs"
    (root / "real").mkdir(parents=True)
    os.symlink("/tmp", root / "abs")             # would be the host's /tmp if followed before pivot_root
    os.symlink("../../../..", root / "up")
    os.symlink("real", root / "rel")
    assert secure_join(str(root), "/abs/hostname") == str(root / "tmp" / "hostname")
    assert secure_join(str(root), "/up/etc/passwd") == str(root / "etc" / "passwd")
    assert secure_join(str(root), "/rel/x") == str(root / "real" / "x")
    assert secure_join(str(root), "/../../etc") == str(root / "etc")


# -- the start-up path: the fast `run` parser agrees with argparse, the light value objects behave ---------
def _argparse_run(argv):
    import argparse

    from pynet.launcher import cli

    parser = argparse.ArgumentParser(prog="pynet")
    cli.register(parser.add_subparsers(dest="command"), only="run")
    return parser.parse_args(["run", *argv])


@pytest.mark.parametrize("argv", [
    [],
    ["--rm", "busybox", "true"],
    ["--rm", "--net", "none", "busybox", "true"],
    ["--net=none", "-d", "--name", "web", "-e", "A=1", "-e", "B", "busybox", "sh", "-c", "echo $A"],
    ["-h", "box", "-w", "/srv", "-v", "/tmp:/b:ro", "-p", "8080:80", "-p", "53:53/udp", "--ip", "10.0.0.5", "img"],
    ["--memory", "64m", "--cpus", "0.5", "--pids-limit", "20", "--cpuset-cpus", "0", "busybox"],
    ["--userns", "--userns-base=200000", "--userns-size", "1000", "--cap-add", "NET_ADMIN", "--cap-drop=ALL", "x"],
    ["--security-opt", "seccomp=unconfined", "--read-only", "--init", "--dns", "1.1.1.1", "busybox", "ls", "-l"],
    ["--rootfs", "/tmp/r", "--config-dir", "/c", "--cache-dir", "/k", "--cni-path", "/p", "--netns-dir", "/n", "sh"],
    ["busybox", "--rm", "--", "-x"],           # everything after IMAGE belongs to the command
    ["--network", "mynet", "--name=", "busybox"],
])
def test_fast_run_parser_gives_what_argparse_gives(argv):
    from pynet.launcher import options

    fast = options.fast_namespace(argv)
    assert fast is not None
    slow = _argparse_run(argv)
    assert vars(fast) == {k: v for k, v in vars(slow).items() if k not in ("command", "func")}
    if argv:   # [] has no IMAGE: both refuse it
        assert options.parse_fast(argv) == options.to_run_options(slow) == options.parse(argv)


@pytest.mark.parametrize("argv", [
    ["--help"], ["--de", "busybox"], ["-dit", "busybox"], ["-eA=1", "busybox"], ["--cpus", "x", "busybox"],
    ["--name"], ["--name", "--rm", "busybox"], ["--rm=yes", "busybox"], ["--", "busybox"], ["-x", "busybox"],
])
def test_fast_run_parser_leaves_unusual_forms_to_argparse(argv):
    from pynet.launcher import options

    assert options.fast_namespace(argv) is None


def test_value_objects_construct_compare_and_copy_defaults():
    from pynet.launcher.options import RunOptions
    from pynet.launcher.namespaces import ProcessSpec

    a, b = RunOptions(image="busybox"), RunOptions(image="busybox")
    assert a == b and a.command == [] and a.limits == cgroups.Limits()
    a.command.append("true")
    assert b.command == [] and a != b                      # factories: no shared mutable defaults
    assert vars(cgroups.Limits(memory=1)) == {"memory": 1, "cpus": None, "pids": None, "cpuset_cpus": None}
    assert cgroups.Hierarchy("/m", 1, frozenset({"pids"})).version == 1
    with pytest.raises(TypeError, match="oci"):
        ProcessSpec(caps=[], seccomp="default")
    with pytest.raises(TypeError, match="bogus"):
        RunOptions(bogus=1)


@pytest.mark.parametrize("name", ["busybox:latest", "reg:5000/x:latest", "a b/ü~_.-%:v1"])
def test_image_file_names_quote_like_urllib(name):
    import urllib.parse

    assert images.quote(name) == urllib.parse.quote(name, safe="")


def test_set_aside_directories_leave_listings_at_once_and_gc_deletes_what_a_crash_left(tmp_path, monkeypatch):
    from pynet.launcher import container, state

    monkeypatch.setenv("PYNET_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("PYNET_ROOT", str(tmp_path / "root"))
    rec = state.Record.create({"id": "c0ffee" * 4, "name": "doomed", "status": "exited", "rm": False})
    storage = tmp_path / "root" / "containers" / rec.id / "upper"
    storage.mkdir(parents=True)
    (storage / "file").write_text("x")
    assert [r.id for r in state.all_records()] == [rec.id]
    deferred = []
    container.cleanup(rec, remove_all=True, deferred=deferred)
    assert state.all_records() == []
    assert sorted(os.path.basename(p) for p in deferred) == [f".removing-{rec.id}"] * 2
    assert all(os.path.isdir(p) for p in deferred)   # their launcher deletes them after replying ...
    container.gc()                                     # ... or gc, when that launcher died first
    assert not any(os.path.exists(p) for p in deferred)


def test_a_late_del_lets_published_ports_go_before_the_rest_of_its_teardown(tmp_path):
    import fcntl

    from pynet.launcher import network

    cache = tmp_path / "cache"
    rec = {"network": {"runner": {"cache_dir": str(cache)}}}

    def free(name):   # what wait_pending_detaches(cache, name) would not wait for
        fd = os.open(cache / name, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    pending = network.PendingDetach(rec)
    assert not free(network.PENDING_PORTS) and not free(network.PENDING_ALL)
    pending.ports_released()
    assert free(network.PENDING_PORTS) and not free(network.PENDING_ALL)
    network.wait_pending_detaches(str(cache), network.PENDING_PORTS)   # returns at once
    pending.done()
    assert free(network.PENDING_ALL)
    network.wait_pending_detaches(str(cache))
