"""The resident fast path: the same plugin code behind the thin client, results identical to standalone."""

import os
import socket
import threading

from netns_fixtures import CNI, OUR_PLUGINS, icmp_echo

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
    path = str(tmp_path / "dying.sock")
    with host_ns.entered():
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)

    def accept_and_drop():
        conn, _ = server.accept()
        conn.recv(16)
        conn.close()

    thread = threading.Thread(target=accept_and_drop, daemon=True)
    thread.start()
    try:
        container_ns.ipr.link("set", index=1, state="down")
        cni = CNI(host_ns, OUR_PLUGINS, extra_env={"PYNET_SOCKET": path})
        result = cni.add("loopback", LOOPBACK, container_ns)
        assert container_ns.link("lo")["flags"] & 1
        assert result["ips"][0]["address"] == "127.0.0.1/8"
    finally:
        thread.join(5)
        server.close()


def test_daemon_socket_is_private(pynet_daemon):
    assert oct(os.stat(pynet_daemon).st_mode & 0o777) == "0o600"
