"""The resident fast path: the same plugin code behind the thin client, results identical to standalone."""

import os

from netns_fixtures import CNI, OUR_PLUGINS, icmp_echo
from netns_fixtures.daemon import dropping_daemon

LOOPBACK = {"cniVersion": "1.0.0", "name": "lo-net", "type": "loopback"}


def test_daemon_serves_add_in_the_callers_netns(daemon_cni, container_ns):
    container_ns.ipr.link("set", index=1, state="down")
    result = daemon_cni.add("loopback", LOOPBACK, container_ns)
    assert container_ns.link("lo")["flags"] & 1
    assert icmp_echo(container_ns, "127.0.0.1")
    assert result["interfaces"][0]["sandbox"] == container_ns.path


def test_daemon_and_standalone_give_the_same_result(daemon_cni, cni, make_netns):
    a, b = make_netns(), make_netns()
    via_daemon = daemon_cni.add("loopback", dict(LOOPBACK, cniVersion="0.3.1"), a)
    standalone = cni.add("loopback", dict(LOOPBACK, cniVersion="0.3.1"), b)
    via_daemon["interfaces"][0]["sandbox"] = standalone["interfaces"][0]["sandbox"] = "x"
    assert via_daemon == standalone


def test_daemon_renders_cni_errors_with_codes(daemon_cni, host_ns):
    # The daemon checks "own netns" against the caller's namespace, not its own.
    inv = daemon_cni.invoke("loopback", "ADD", LOOPBACK, container=host_ns)
    assert inv.rc != 0 and inv.reply["code"] == 4 and "own network namespace" in inv.reply["msg"]
    inv = daemon_cni.invoke("loopback", "ADD", b"{not json", container=host_ns)
    assert inv.rc != 0 and inv.reply["code"] == 6


def test_daemon_del_is_idempotent_after_netns_removed(daemon_cni, make_netns):
    ns = make_netns()
    daemon_cni.add("loopback", LOOPBACK, ns)
    path = ns.path
    ns.remove()
    daemon_cni.delete("loopback", LOOPBACK, path)
    daemon_cni.delete("loopback", LOOPBACK, path)


def test_client_falls_back_to_standalone_when_daemon_dies_mid_request(host_ns, container_ns, tmp_path):
    """A daemon that accepts and then vanishes: the client cleans up and serves the request itself."""
    with dropping_daemon(host_ns, str(tmp_path / "dying.sock")) as path:
        container_ns.ipr.link("set", index=1, state="down")
        cni = CNI(host_ns, OUR_PLUGINS, extra_env={"PYNET_SOCKET": path})
        result = cni.add("loopback", LOOPBACK, container_ns)
        assert container_ns.link("lo")["flags"] & 1
        assert result["ips"][0]["address"] == "127.0.0.1/8"


def test_daemon_socket_is_private(pynet_daemon):
    assert oct(os.stat(pynet_daemon).st_mode & 0o777) == "0o600"


def _bridge_conf(tmp_path, name="dnet"):
    return {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": "dbr0", "isGateway": True,
            "ipMasq": True, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.55.0.0/24"}]],
                                     "dataDir": str(tmp_path / "ipam")}}


def test_readd_after_daemon_del_finds_the_old_link_gone(daemon_cni, host_ns, container_ns, tmp_path):
    """DEL's slow link teardown runs after the reply, but under the container's lock: the next request for
    that container (here the runtime re-adding it at once) always sees it finished."""
    conf = _bridge_conf(tmp_path)
    for _ in range(3):
        daemon_cni.add("bridge", conf, container_ns, container_id="again")
        daemon_cni.delete("bridge", conf, container_ns, container_id="again")
        again = daemon_cni.add("bridge", conf, container_ns, container_id="again")
        assert container_ns.addresses("eth0") == [again["ips"][0]["address"]]
        daemon_cni.delete("bridge", conf, container_ns, container_id="again")
    assert not list((tmp_path / "ipam" / "dnet").glob("10.*"))


def test_daemon_del_takes_the_container_port_off_the_bridge_before_replying(daemon_cni, host_ns, container_ns,
                                                                             tmp_path):
    conf = _bridge_conf(tmp_path)
    result = daemon_cni.add("bridge", conf, container_ns, container_id="down")
    host_veth = result["interfaces"][1]["name"]
    daemon_cni.delete("bridge", conf, container_ns, container_id="down")
    # Either already deleted, or at least down (so its released address cannot answer on the bridge).
    link = container_ns.link("eth0")
    assert link is None or not link["flags"] & 1
    peer = host_ns.link(host_veth)
    assert peer is None or peer.get_attr("IFLA_OPERSTATE") != "UP"


def test_concurrent_adds_through_the_daemon_get_distinct_addresses(daemon_cni, make_netns, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    conf = _bridge_conf(tmp_path)
    containers = [make_netns() for _ in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: daemon_cni.add("bridge", conf, containers[i], container_id=f"p{i}"),
                                range(16)))
    addresses = {r["ips"][0]["address"] for r in results}
    assert len(addresses) == 16
    for ns, r in zip(containers, results):
        assert ns.addresses("eth0") == [r["ips"][0]["address"]]


def _autostarted_daemon_pid(path: str, deadline: float) -> int | None:
    """The PID the autostarted daemon wrote into its lock file (before it binds the socket)."""
    import time

    while time.monotonic() < deadline:
        try:
            text = open(path + ".lock").read().strip()
        except FileNotFoundError:
            text = ""
        if text and os.path.exists(path):
            return int(text)
        time.sleep(0.05)
    return None


def test_opt_in_autostart_serves_later_requests(host_ns, make_netns, tmp_path):
    import signal
    import time

    path = str(tmp_path / "auto.sock")
    cni = CNI(host_ns, OUR_PLUGINS, extra_env={"PYNET_SOCKET": path, "PYNET_DAEMON": "autostart"})
    pid = None
    try:
        first = cni.add("loopback", LOOPBACK, make_netns())  # served standalone while the daemon starts
        pid = _autostarted_daemon_pid(path, time.monotonic() + 60)
        assert pid, "autostarted daemon did not come up"
        second = cni.add("loopback", LOOPBACK, make_netns())
        assert first["ips"] == second["ips"]
        # The daemon serves from inside the sandbox it was started in, never the root netns.
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(host_ns.path).st_ino
    finally:
        # Whatever failed above, the daemon the first ADD started is ours to end (it may still be starting).
        pid = pid or _autostarted_daemon_pid(path, time.monotonic() + 10)
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
    assert not os.path.exists(path)


def test_second_daemon_on_one_socket_is_refused(host_ns, pynet_daemon):
    proc = host_ns.run([os.path.join(OUR_PLUGINS, "pynet"), "daemon", "--socket", pynet_daemon], timeout=30)
    assert proc.returncode == 1
    assert b"another pynet daemon" in proc.stderr
    assert os.path.exists(pynet_daemon)


def test_daemon_delegating_to_another_installations_plugin_does_not_wait_on_itself(host_ns, container_ns,
                                                                                     pynet_daemon, tmp_path):
    """An IPAM plugin that is pynet but not this installation (another interpreter) is executed, not
    served in-process; it must not bring its request back to the daemon, which holds the container's lock
    for the bridge request that delegates to it."""
    other = tmp_path / "other-install"
    other.mkdir()
    from pynet.cni_install import libexec_dir

    ours = open(os.path.join(libexec_dir(), "host-local")).read().split("\n", 1)[1]   # the Python plugin script
    (other / "host-local").write_text("#!/usr/bin/python3 -IS\n" + ours)
    (other / "host-local").chmod(0o755)
    cni = CNI(host_ns, str(other), OUR_PLUGINS, extra_env={"PYNET_SOCKET": pynet_daemon})
    result = cni.add("bridge", _bridge_conf(tmp_path), container_ns, container_id="foreign-ipam")
    assert container_ns.addresses("eth0") == [result["ips"][0]["address"]]
    assert list((tmp_path / "ipam" / "dnet").glob("10.55.0.*"))
    cni.delete("bridge", _bridge_conf(tmp_path), container_ns, container_id="foreign-ipam")
    assert not list((tmp_path / "ipam" / "dnet").glob("10.55.0.*"))


# -- a caller in a private mount namespace (containerd's shims, `ip netns exec`, nested runtimes) -----------
def _from_private_mounts(cni: CNI, plugin: str, command: str, conf: dict, source_netns: str, mount_dir,
                         container_id: str):
    """One invocation from a private mount namespace in which CNI_NETNS (``mount_dir/ns``, a bind mount of
    ``source_netns``) exists; outside it ``mount_dir`` is an empty directory."""
    import json

    script = ('mount -t tmpfs pynet-private "$1" && touch "$1/ns" && mount --bind "$2" "$1/ns" && '
              'exec "$3"')
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(mount_dir),
            source_netns, cni.find(plugin)]
    env = cni.env(command, str(mount_dir / "ns"), "eth0", container_id, "")
    proc = cni.host.run(argv, input=json.dumps(conf).encode(), env=env)
    reply = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, reply


def test_daemon_serves_a_caller_whose_netns_exists_only_in_its_private_mount_namespace(
        daemon_cni, cni, make_netns, tmp_path):
    conf = _bridge_conf(tmp_path)
    results = {}
    for label, runner in (("daemon", daemon_cni), ("standalone", cni)):
        ns = make_netns()
        where = tmp_path / f"mnt-{label}"
        where.mkdir()
        rc, reply = _from_private_mounts(runner, "bridge", "ADD", conf, ns.path, where, f"priv-{label}")
        assert rc == 0, reply
        assert ns.addresses("eth0") == [reply["ips"][0]["address"]]
        results[label] = reply
        rc, reply = _from_private_mounts(runner, "bridge", "DEL", dict(conf, prevResult=reply), ns.path, where,
                                         f"priv-{label}")
        assert rc == 0, reply
        eth0 = ns.link("eth0")   # read once: the veth may go between two reads (DEL's deferred teardown)
        assert eth0 is None or not eth0["flags"] & 1
    # Same answer both ways, apart from what differs per container (names, MACs, the address).
    for reply in results.values():
        bridge, host_veth, container = reply["interfaces"]
        del host_veth["name"], host_veth["mac"], container["mac"], reply["ips"][0]["address"]
        container["sandbox"] = "x"
    assert results["daemon"] == results["standalone"]
    assert not list((tmp_path / "ipam" / "dnet").glob("10.55.0.*"))


def test_netns_of_another_type_is_refused_with_code_4(daemon_cni, cni, host_ns):
    for runner in (daemon_cni, cni):
        inv = runner.invoke("loopback", "ADD", LOOPBACK, container="/proc/self/ns/mnt")
        assert inv.rc != 0 and inv.reply["code"] == 4, inv
        assert "/proc/self/ns/mnt" in inv.reply["msg"] and "Traceback" not in inv.stderr


def test_netns_path_that_is_a_fifo_fails_without_hanging(daemon_cni, cni, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for runner in (daemon_cni, cni):
        inv = runner.invoke("loopback", "ADD", LOOPBACK, container=str(fifo))
        assert inv.rc != 0 and inv.reply["code"] == 4 and str(fifo) in inv.reply["msg"]


def test_deeply_nested_config_is_a_decoding_error_not_a_crash(daemon_cni, cni, container_ns):
    nested = b'{"cniVersion": "1.0.0", "name": "n", "type": "loopback", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    for runner in (daemon_cni, cni):
        inv = runner.invoke("loopback", "ADD", nested, container=container_ns)
        assert inv.rc != 0 and inv.reply["code"] == 6, inv
        assert "Traceback" not in inv.stderr


def test_readd_into_the_same_netns_under_another_container_id_finds_the_old_link_gone(daemon_cni, container_ns,
                                                                                      tmp_path):
    """A DEL's link removal runs after the reply; a runtime that re-creates the sandbox in the same netns
    under a new container ID must not find the old eth0 still there."""
    conf = _bridge_conf(tmp_path)
    for i in range(3):
        result = daemon_cni.add("bridge", conf, container_ns, container_id=f"first{i}")
        daemon_cni.delete("bridge", conf, container_ns, container_id=f"first{i}")
        again = daemon_cni.add("bridge", conf, container_ns, container_id=f"second{i}")
        assert container_ns.addresses("eth0") == [again["ips"][0]["address"]], result
        daemon_cni.delete("bridge", conf, container_ns, container_id=f"second{i}")
