"""`pynet attach`/`detach` when the pin of a container's network namespace is not there any more: made
inside `ip netns exec` (a fresh mount namespace per command: the pin goes when the command ends), removed
by hand, or gone with a dead process. Detach must re-pin a live process, check that the interface really
left the container, and say so when the namespace could not be reached; attach must never take the
host's initial network namespace, also where /proc/1/ns/net cannot be stat'ed (EACCES here, even for root).

Same sandbox set-up as tests/test_cli_attach.py: the CLI runs in a sandbox host netns, the containers are
`unshare --net sleep` processes, every dir under tmp_path."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess

import pytest

from cni_plugins import netns as cni_netns
from cni_plugins.syscalls import MNT_DETACH, make_shared, mount, release_shared, umount2, unpin
from netns_fixtures import OUR_PLUGINS
from pynet.runner import attachments as atts_mod
from pynet.runner.attachments import AttachError, Attachments, is_pinned
from pynet.runner.chain import Runner

from .test_cli_attach import (PYNET, Pynet, addresses_in, bridge_ports, mounted_here, needs_portmap,  # noqa: F401
                              needs_reference, pynet, ref_pynet, unpin_all)

IP = shutil.which("ip") or "/usr/sbin/ip"


def run_in_exec(p: Pynet, *argv, ok: bool = True) -> subprocess.CompletedProcess:
    """`ip netns exec SANDBOX pynet ...`: the command gets a mount namespace of its own (rslave), as
    anyone typing that command does; bind mounts it makes there end with it."""
    proc = subprocess.run([IP, "netns", "exec", p.host.name, PYNET, *map(str, argv)], env=p.env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    proc.out, proc.err = proc.stdout.decode(), proc.stderr.decode()
    if ok:
        assert proc.returncode == 0, f"ip netns exec pynet {argv} failed ({proc.returncode}): {proc.err}{proc.out}"
    return proc


def has_link(pid_or_path, ifname: str) -> bool:
    """Asked of the container's netns over netlink, not of pynet."""
    path = pid_or_path if isinstance(pid_or_path, str) else f"/proc/{pid_or_path}/ns/net"
    ipr = cni_netns.iproute(path)
    try:
        return bool(ipr.link_lookup(ifname=ifname))
    finally:
        ipr.close()


def the_container(p: Pynet) -> dict:
    [container] = p.json("ls")
    return container


# -- pins made inside `ip netns exec` -------------------------------------------------------------------------
def test_attach_inside_ip_netns_exec_then_detach_outside_removes_the_interface(pynet, host_ns):
    bridge = pynet.net("exa", "10.91.0.0/24")
    pynet.net("exb", "10.92.0.0/24")
    proc = pynet.sleeper()
    run_in_exec(pynet, "attach", proc.pid, "--net", "exa")
    container = the_container(pynet)
    assert has_link(proc.pid, "eth0")
    # What this is about: the pin was made in the command's own mount namespace and went with it.
    assert not is_pinned(container["netns"]) and container["reachable"] is False
    # The next attach re-pins the live process (it failed on the lost pin before).
    pynet.run("attach", proc.pid, "--net", "exb")
    assert addresses_in(proc.pid, "eth1") == ["10.92.0.2/24"]
    assert the_container(pynet)["reachable"] is True
    out = pynet.run("detach", proc.pid, "--net", "exa").out
    assert out.strip() == f"detached {container['name']} ({container['id']}) eth0 from exa"
    assert not has_link(proc.pid, "eth0") and has_link(proc.pid, "eth1")
    assert bridge_ports(host_ns, bridge) == [] and pynet.leases("exa") == []
    pynet.run("detach", proc.pid)
    assert not has_link(proc.pid, "eth1") and pynet.leases("exb") == []
    assert pynet.json("ls") == [] and list(pynet.netns_dir.iterdir()) == []
    assert not mounted_here(pynet.netns_dir)


def test_pin_dir_is_a_shared_mount_while_it_holds_pins(pynet):
    """As `ip netns` does for /run/netns: a pin made here reaches mount namespaces made from this one
    earlier (their copy of the dir is a slave of it); the dir's own mount goes with its last pin."""
    pynet.net("shr", "10.87.1.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid)
    with open("/proc/self/mountinfo") as f:
        [line] = [line for line in f if line.split()[4] == str(pynet.netns_dir)]
    assert "shared:" in line
    pynet.run("detach", proc.pid)
    assert not mounted_here(pynet.netns_dir)


def test_inspect_check_pins_a_live_process_again_and_names_an_unreachable_netns(pynet):
    pynet.net("insp", "10.86.2.0/24")
    proc = pynet.sleeper()
    run_in_exec(pynet, "attach", proc.pid)
    [att] = pynet.json("inspect", proc.pid, "--check")[0]["attachments"]
    assert att["check"] == "ok"
    container = the_container(pynet)
    assert container["reachable"] is True
    unpin(container["netns"])
    proc.kill()
    proc.wait()
    res = pynet.run("inspect", container["id"], "--check", "--json", ok=False)
    [att] = json.loads(res.out)[0]["attachments"]
    assert res.returncode == 1 and "cannot be reached" in att["check"] and "has exited" in att["check"]


def test_attach_outside_then_detach_inside_ip_netns_exec(pynet, host_ns):
    bridge = pynet.net("exc", "10.93.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid)
    pin = the_container(pynet)["netns"]
    assert is_pinned(pin) and mounted_here(pin)
    out = run_in_exec(pynet, "detach", proc.pid).out
    assert out.startswith("detached ")
    assert not has_link(proc.pid, "eth0")
    assert bridge_ports(host_ns, bridge) == [] and pynet.leases("exc") == []
    # The pin is gone from this mount namespace too, not only from the command's.
    assert not os.path.exists(pin) and not mounted_here(pin)
    assert pynet.json("ls") == []


def test_attach_inside_ip_netns_exec_refuses_the_sandbox_own_netns(pynet):
    pynet.net("exd", "10.94.0.0/24")
    proc = pynet.sleeper(netns=False)   # in the sandbox netns, where the command runs
    res = run_in_exec(pynet, "attach", proc.pid, ok=False)
    assert res.returncode == 1 and "own network namespace" in res.err
    assert not pynet.netns_dir.exists() or not list(pynet.netns_dir.iterdir())


def test_gc_pins_a_live_process_again_so_detach_after_its_death_reaches_the_netns(pynet):
    pynet.net("regc", "10.86.1.0/24")
    proc = pynet.sleeper()
    run_in_exec(pynet, "attach", proc.pid)
    pin = the_container(pynet)["netns"]
    assert not is_pinned(pin)
    assert pynet.json("gc") == []
    assert is_pinned(pin)
    proc.kill()
    proc.wait()
    assert [d["interface"] for d in pynet.json("detach", proc.pid)] == ["removed"]
    assert pynet.leases("regc") == []


# -- pins removed by hand, processes gone -------------------------------------------------------------------
def test_detach_repins_a_live_process_whose_pin_was_removed(pynet, host_ns):
    bridge = pynet.net("rep", "10.95.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid)
    container = the_container(pynet)
    unpin(container["netns"])
    out = pynet.json("detach", container["id"])
    assert out == [{"containerID": container["id"], "network": "rep", "ifname": "eth0",
                                "interface": "removed"}]
    assert not has_link(proc.pid, "eth0")
    assert bridge_ports(host_ns, bridge) == [] and pynet.leases("rep") == []
    assert list(pynet.netns_dir.iterdir()) == []


def test_repin_refuses_a_process_that_left_its_namespace(pynet, tmp_path):
    """The record says PID X in netns N; X is alive but the pin is gone and the recorded namespace does not
    match what X is in now: its namespace cannot be reached, so detach must not DEL in X's current one."""
    pynet.net("left", "10.96.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid)
    container = the_container(pynet)
    unpin(container["netns"])
    record = pynet.cache_dir / "pynet" / "containers" / f"{container['id']}.json"
    data = json.loads(record.read_text())
    data["netnsInode"] = [data["netnsInode"][0], data["netnsInode"][1] + 1]   # "moved elsewhere"
    record.write_text(json.dumps(data))
    out = pynet.json("detach", proc.pid)
    assert out[0]["interface"] == "unknown"
    assert has_link(proc.pid, "eth0")    # not touched: it is not the namespace that was attached
    assert pynet.leases("left") == []


@needs_portmap
def test_detach_with_process_dead_and_pin_gone_releases_host_side_and_says_so(pynet, host_ns):
    pynet.net("dead", "10.97.0.0/24", "--port-map")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid, "-p", "18197:80")
    container = the_container(pynet)
    assert "18197" in host_ns.nft_ruleset() and pynet.leases("dead") == ["10.97.0.2"]
    unpin(container["netns"])
    proc.kill()
    proc.wait()
    res = pynet.run("detach", container["id"])
    assert "detached" not in res.out
    assert f"released {container['name']} ({container['id']}) eth0 from dead" in res.out
    assert "could not be reached" in res.out and f"process {proc.pid} has exited" in res.out
    assert pynet.leases("dead") == [] and "18197" not in host_ns.nft_ruleset()
    assert list((pynet.cache_dir / "results").iterdir()) == [] and pynet.json("ls") == []


def test_detach_after_kill_with_the_pin_still_there_is_verified(pynet, host_ns):
    pynet.net("kept", "10.98.0.0/24")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid)
    pin = the_container(pynet)["netns"]
    fd = os.open(pin, os.O_RDONLY)   # watch the namespace after the pin is released
    try:
        proc.kill()
        proc.wait()
        out = pynet.json("detach", proc.pid)
        assert out[0]["interface"] == "removed"
        assert not has_link(f"/proc/self/fd/{fd}", "eth0")
    finally:
        os.close(fd)


# -- an interface that does not go ----------------------------------------------------------------------------
STICKY = """#!/bin/sh
# ADD: our bridge plugin. DEL: "success" without removing anything.
if [ "$CNI_COMMAND" = DEL ]; then cat >/dev/null; exit 0; fi
exec {bridge}
"""


def test_detach_fails_naming_the_interface_that_stayed(pynet, tmp_path):
    plugins = tmp_path / "sticky-plugins"
    plugins.mkdir()
    (plugins / "sticky").write_text(STICKY.format(bridge=os.path.join(OUR_PLUGINS, "bridge")))
    (plugins / "sticky").chmod(0o755)
    pynet.cni_path = f"{plugins}:{OUR_PLUGINS}"
    pynet.config_dir.mkdir()
    (pynet.config_dir / "sticky.conflist").write_text(json.dumps({
        "cniVersion": "1.1.0", "name": "sticky",
        "plugins": [{"type": "sticky", "bridge": f"pbsti{os.getpid() % 100000}"[:15],
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]],
                              "dataDir": str(pynet.data_dir)}}]}))
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid)
    container = the_container(pynet)
    res = pynet.run("detach", proc.pid, ok=False)
    assert res.returncode == 1
    assert "eth0" in res.err and container["id"] in res.err and "still" in res.err
    assert "detached" not in res.out
    assert has_link(proc.pid, "eth0")
    # Still listed: what `ls` shows is what is there; the JSON form says the same, and so does every
    # other caller of detach (`net rm --force` keeps the network).
    assert [a["ifname"] for a in the_container(pynet)["attachments"]] == ["eth0"]
    assert is_pinned(container["netns"])
    res = pynet.run("detach", container["id"], "--json", ok=False)
    out = json.loads(res.out)
    assert res.returncode == 1 and [d["interface"] for d in out] == ["present"]
    assert "eth0" in out[0]["reason"] and container["id"] in out[0]["reason"]
    res = pynet.run("net", "rm", "sticky", "--force", ok=False)
    assert res.returncode == 1 and "eth0 is still in container" in res.err
    assert (pynet.config_dir / "sticky.conflist").exists()


# -- the initial network namespace ---------------------------------------------------------------------------
def inert_network(config_dir) -> None:
    """A network whose only plugin does not exist: should a guard fail, nothing is set up anywhere."""
    os.makedirs(config_dir, exist_ok=True)
    with open(os.path.join(config_dir, "inert.conflist"), "w") as f:
        json.dump({"cniVersion": "1.1.0", "name": "inert", "plugins": [{"type": "pynet-test-absent"}]}, f)


@pytest.fixture
def root_sleeper():
    """A process in the test's own network namespace: the machine's initial one."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def in_process(tmp_path):
    """Attachments over tmp dirs, run in this process; pins and the pin dir's own mount undone after."""
    netns_dir = tmp_path / "pins"
    inert_network(tmp_path / "net.d")
    atts = Attachments(Runner(str(tmp_path / "net.d"), [str(tmp_path / "no-plugins")], str(tmp_path / "cache")),
                       str(netns_dir))
    yield atts
    unpin_all(netns_dir)


def _deny(paths, real):
    def call(path, *args, **kwargs):
        if str(path).startswith(paths):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)
    return call


def test_initial_netns_guard_survives_eacces_from_stat(monkeypatch, in_process, host_ns, root_sleeper):
    monkeypatch.setattr(os, "stat", _deny(("/proc/1/",), os.stat))
    with host_ns.entered():   # pynet's own netns is the sandbox: only the initial-netns guard can refuse
        with pytest.raises(AttachError, match="initial network namespace"):
            in_process.attach(root_sleeper.pid, "inert")
    assert not os.path.isdir(in_process.netns_dir) or not os.listdir(in_process.netns_dir)


def test_initial_netns_identity_is_read_with_readlink(monkeypatch):
    """No stat at all: the initial netns is still known (here through readlink), and it is this test's."""
    monkeypatch.setattr(os, "stat", _deny(("/proc/",), os.stat))
    own = int(os.readlink("/proc/self/ns/net").removeprefix("net:[").rstrip("]"))
    assert own in atts_mod.initial_netns_inodes()


def test_attach_refused_when_the_initial_netns_cannot_be_identified(monkeypatch, in_process, host_ns, pynet):
    proc = pynet.sleeper()  # a proper container netns: only the missing identity makes this refuse
    monkeypatch.setattr(os, "stat", _deny(("/proc/1/", "/proc/2/"), os.stat))
    monkeypatch.setattr(os, "readlink", _deny(("/proc/1/", "/proc/2/"), os.readlink))
    with host_ns.entered():
        with pytest.raises(AttachError, match="cannot tell"):
            in_process.attach(proc.pid, "inert")


def test_cli_refuses_a_process_in_the_initial_netns(pynet, root_sleeper):
    inert_network(pynet.config_dir)
    res = pynet.run("attach", root_sleeper.pid, "--net", "inert", ok=False)
    assert res.returncode == 1 and "initial network namespace" in res.err
    assert not pynet.netns_dir.exists() or not list(pynet.netns_dir.iterdir())


def test_sigkill_of_the_only_holder_then_gc_is_clean(pynet, host_ns):
    """gc after a lost pin and a dead process: nothing of the attachment is left on the host side."""
    bridge = pynet.net("gcl", "10.90.0.0/24")
    proc = pynet.sleeper()
    run_in_exec(pynet, "attach", proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    report = pynet.json("gc")
    assert [r["ifname"] for r in report] == ["eth0"]
    assert pynet.leases("gcl") == [] and bridge_ports(host_ns, bridge) == []
    assert pynet.json("ls") == []


@needs_reference
def test_reference_plugins_release_attachments_whose_pin_was_lost(ref_pynet, host_ns):
    """The Go plugins fail DEL on a CNI_NETNS that is not a namespace (the empty file of a lost pin); an
    unreachable namespace is handed to them as none at all, by detach and by gc."""
    bridge = ref_pynet.net("refpin", "10.88.0.0/24")
    first, second = ref_pynet.sleeper(), ref_pynet.sleeper()
    run_in_exec(ref_pynet, "attach", first.pid)
    run_in_exec(ref_pynet, "attach", second.pid)
    assert ref_pynet.leases("refpin") == ["10.88.0.2", "10.88.0.3"]
    for proc in (first, second):
        proc.kill()
        proc.wait()
    out = ref_pynet.json("detach", first.pid)
    assert [d["interface"] for d in out] == ["unknown"]
    assert ref_pynet.leases("refpin") == ["10.88.0.3"]
    report = ref_pynet.json("gc")
    assert [r["addresses"] for r in report] == [["10.88.0.3/24"]]
    assert ref_pynet.leases("refpin") == [] and bridge_ports(host_ns, bridge) == []
    assert ref_pynet.json("ls") == [] and list(ref_pynet.netns_dir.iterdir()) == []


def test_release_shared_undoes_only_its_own_bind(tmp_path):
    plain, own = tmp_path / "plain", tmp_path / "own"
    plain.mkdir()
    own.mkdir()
    try:
        make_shared(str(plain))       # not a mount point: bound on itself, then shared
        assert mounted_here(plain)
        assert release_shared(str(plain)) and not mounted_here(plain)
        mount("tmpfs", str(own), "tmpfs", 0, "size=64k")   # somebody's mount: made shared, never unmounted
        make_shared(str(own))
        assert not release_shared(str(own)) and mounted_here(own)
    finally:
        for d in (plain, own):
            while mounted_here(d):
                umount2(str(d), MNT_DETACH)


# -- what a late DEL lets go first ------------------------------------------------------------------------------
@needs_portmap
def test_a_late_del_unmaps_the_ports_before_the_veth_goes_and_before_it_needs_the_attachments_lock(pynet, host_ns):
    """LateDetach lets a run publishing the same port go on (PENDING_PORTS) once the mappings are gone from
    the ruleset, while the container's eth0 is still there; a run waiting for that under the attachments
    lock (attach_cni's before_step) is not waiting on a DEL that needs that lock first."""
    import threading

    from pynet.launcher import network

    pynet.net("late", "10.86.7.0/24", "--port-map")
    proc = pynet.sleeper()
    runner_locations = {"config_dir": str(pynet.config_dir), "cache_dir": str(pynet.cache_dir),
                        "cni_path": pynet.cni_path, "netns_dir": str(pynet.netns_dir)}
    net = {"mode": "late", "publish": [{"hostPort": 18181, "containerPort": 80, "protocol": "tcp"}],
           "ifname": "eth0", "runner": runner_locations}
    seen, outcome = [], []

    class Rec(dict):   # what a late DEL reads and writes of a container record
        path = str(pynet.tmp / "no-record")
        data: dict = {}

    with host_ns.entered():
        attached = network.attach_cni(net, proc.pid, "late-one", "0123456789abcdef")
        assert "18181" in host_ns.nft_ruleset()
        rec = Rec(network=attached)
        rec.data = dict(rec)
        late = network.LateDetach(rec)
        release = late.pending.ports_released

        def observed_release():
            if not seen:
                seen.append(("18181" in host_ns.nft_ruleset(), has_link(attached["netns"], "eth0")))
            release()
        late.pending.ports_released = observed_release
        atts = late.atts
        with atts._locked():   # as a run's ADD holds it while it waits for the ports
            worker = threading.Thread(target=lambda: outcome.append(late()))
            worker.start()
            network.wait_pending_detaches(str(pynet.cache_dir), network.PENDING_PORTS)
        worker.join(60)
    assert not worker.is_alive() and outcome == [True]
    assert seen == [(False, True)]   # ports gone, the container's eth0 not yet
    assert not has_link(proc.pid, "eth0") and "18181" not in host_ns.nft_ruleset()
    assert pynet.leases("late") == [] and rec.data["network"]["detached"]
    assert pynet.json("ls") == []
