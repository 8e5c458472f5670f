"""dhcp IPAM and `dhcp daemon`: containers on a macvlan (or bridge) get their address from a real DHCP server
(dnsmasq) in the sandbox, asserted on the container interface, dnsmasq's lease file and its log; DEL
releases the lease; a short T1 makes the daemon renew; errors without a daemon and for bad options; the
wire format and the lease state machine (fake clock) as units."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from cni_plugins.dhcp import config as dhcp_config
from cni_plugins.dhcp import lease as dhcp_lease
from cni_plugins.dhcp import message, rpc
from cni_plugins.dhcp.daemon import parse_duration, parse_flags
from netns_fixtures import OUR_PLUGINS
from netns_fixtures.daemon import stop_daemon
from netns_fixtures.runner import PluginFailed

MASTER, SERVER_IF = "dh0", "dh0srv"
SERVER_IP = "10.77.0.1"
RANGE = ("10.77.0.50", "10.77.0.99")
NETWORK = "dhcpnet"



# -- fixtures: a DHCP server behind the macvlan master, and the daemon --------------------------------------
class Dnsmasq:
    def __init__(self, ns, tmp_path, *extra: str):
        self.leasefile = tmp_path / "dnsmasq.leases"
        self.logfile = tmp_path / "dnsmasq.log"
        self.log = open(self.logfile, "wb")
        self.proc = ns.popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--port=0",
                              f"--interface={SERVER_IF}", "--bind-interfaces", "--user=root", "--group=root",
                              f"--dhcp-range={RANGE[0]},{RANGE[1]},255.255.255.0,2m",
                              f"--dhcp-leasefile={self.leasefile}", "--pid-file=", "--log-dhcp",
                              "--log-facility=-", f"--dhcp-option=option:router,{SERVER_IP}",
                              "--dhcp-option=option:dns-server,10.77.0.53", "--dhcp-option=option:domain-name,dhcp.test",
                              "--dhcp-authoritative", "--no-ping", *extra],
                             stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while b"DHCP, IP range" not in self.logfile.read_bytes():
            assert self.proc.poll() is None, self.logfile.read_text()
            assert time.monotonic() < deadline, self.logfile.read_text()
            time.sleep(0.05)

    def leases(self) -> dict[str, str]:
        """MAC -> address, from the lease file."""
        if not self.leasefile.exists():
            return {}
        out = {}
        for line in self.leasefile.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3:
                out[fields[1]] = fields[2]
        return out

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace")

    def stop(self) -> None:
        stop_daemon(self.proc)
        self.log.close()


def wait_for(predicate, timeout: float = 20, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def server_ns(host_ns, make_netns):
    """A veth pair: MASTER in the sandbox host (the macvlan master), its peer in a server netns."""
    srv = make_netns("pynt-s")
    host_ns.ipr.link("add", ifname=MASTER, kind="veth", peer={"ifname": SERVER_IF})
    peer = host_ns.ipr.link_lookup(ifname=SERVER_IF)[0]
    with open(srv.path) as f:
        host_ns.ipr.link("set", index=peer, net_ns_fd=f.fileno())
    host_ns.ipr.link("set", index=host_ns.ipr.link_lookup(ifname=MASTER)[0], state="up")
    index = srv.ipr.link_lookup(ifname=SERVER_IF)[0]
    srv.ipr.addr("add", index=index, address=SERVER_IP, prefixlen=24)
    srv.ipr.link("set", index=index, state="up")
    return srv


@pytest.fixture
def dnsmasq_extra() -> list[str]:
    return []


@pytest.fixture
def dnsmasq(server_ns, tmp_path, dnsmasq_extra):
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq not installed")
    server = Dnsmasq(server_ns, tmp_path, *dnsmasq_extra)
    yield server
    server.stop()


class DhcpDaemon:
    def __init__(self, ns, socket_path: str, *flags: str):
        self.ns, self.socket_path, self.flags = ns, socket_path, flags
        self.start()

    def start(self) -> None:
        self.logfile = self.socket_path + ".log"
        with open(self.logfile, "ab") as log:
            self.proc = self.ns.popen([os.path.join(OUR_PLUGINS, "dhcp"), "daemon", "-socketpath", self.socket_path,
                                       "-timeout", "2s", "-resendtimeout", "20s", *self.flags],
                                      stdout=subprocess.DEVNULL, stderr=log)
        wait_for(lambda: self.listening() or self.proc.poll() is not None, what="the dhcp daemon")
        assert self.proc.poll() is None, self.log()

    def listening(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(self.socket_path)
            except OSError:
                return False
        return True

    def log(self) -> str:
        with open(self.logfile, errors="replace") as f:
            return f.read()

    def stop(self) -> str:
        """Stops it by PID (SIGTERM); its log."""
        stop_daemon(self.proc)
        return self.log()

    def status(self) -> dict:
        return rpc.call(self.socket_path, rpc.STATUS, {})


@pytest.fixture
def dhcp_daemon_flags() -> list[str]:
    return []


@pytest.fixture
def dhcp_daemon(host_ns, tmp_path, dnsmasq, dhcp_daemon_flags):
    (tmp_path / "run").mkdir(exist_ok=True)
    daemon = DhcpDaemon(host_ns, str(tmp_path / "run" / "dhcp.sock"), *dhcp_daemon_flags)
    yield daemon
    daemon.stop()


@pytest.fixture
def conf(tmp_path):
    def make(version: str = "1.0.0", **ipam) -> dict:
        return {"cniVersion": version, "name": NETWORK, "type": "macvlan", "master": MASTER,
                "ipam": {"type": "dhcp", "daemonSocketPath": str(tmp_path / "run" / "dhcp.sock"), **ipam}}
    return make


def address_of(result: dict) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(result["ips"][0]["address"])


def in_range(ip) -> bool:
    return ipaddress.IPv4Address(RANGE[0]) <= ipaddress.IPv4Address(str(ip)) <= ipaddress.IPv4Address(RANGE[1])


def mac_of(ns, ifname: str = "eth0") -> str:
    return ns.link(ifname).get_attr("IFLA_ADDRESS")


# -- against dnsmasq ----------------------------------------------------------------------------------------
def test_add_leases_an_address_from_the_server_and_del_releases_it(cni, container_ns, conf, dnsmasq, dhcp_daemon):
    result = cni.add("macvlan", conf(), container_ns, container_id="ctr-a")
    address = address_of(result)
    assert in_range(address.ip) and address.network.prefixlen == 24
    assert str(address) in container_ns.addresses("eth0")
    assert result["ips"][0]["gateway"] == SERVER_IP
    assert {"dst": "0.0.0.0/0", "gw": SERVER_IP} in result["routes"]
    assert {"dst": "default", "gw": SERVER_IP, "dev": "eth0"} in container_ns.routes()
    assert result["dns"] == {"nameservers": ["10.77.0.53"], "domain": "dhcp.test"}
    mac = mac_of(container_ns)
    assert dnsmasq.leases() == {mac: str(address.ip)}
    # the client identifier is the reference's: 0, then containerID/network/ifname
    assert dnsmasq.leasefile.read_text().split()[4] == "00:" + ":".join(f"{b:02x}" for b in b"ctr-a/dhcpnet/eth0")

    # the client ran in the container netns only through its sockets: every thread of the daemon is in its own
    assert {os.readlink(f"/proc/{dhcp_daemon.proc.pid}/task/{tid}/ns/net")
            for tid in os.listdir(f"/proc/{dhcp_daemon.proc.pid}/task")} == {os.readlink(
                f"/proc/{dhcp_daemon.proc.pid}/ns/net")}

    cni.delete("macvlan", conf(), container_ns, container_id="ctr-a")
    wait_for(lambda: dnsmasq.leases() == {}, what="dnsmasq to drop the released lease")
    assert "DHCPRELEASE" in dnsmasq.log_text()
    assert dhcp_daemon.status() == {"leases": []}


@pytest.mark.parametrize("dhcp_daemon_flags", [["-broadcast"]])
def test_broadcast_flag_asks_for_broadcast_replies(cni, container_ns, conf, dnsmasq, dhcp_daemon):
    result = cni.add("macvlan", conf(), container_ns, container_id="ctr-a")
    assert str(address_of(result)) in container_ns.addresses("eth0")
    assert "broadcast response" in dnsmasq.log_text()


@pytest.mark.parametrize("dhcp_daemon_flags", [["-resendtimeout", "3s", "-timeout", "1s"]])
def test_no_answer_fails_the_add_after_resendtimeout(cni, container_ns, conf, dnsmasq, dhcp_daemon):
    dnsmasq.stop()
    with pytest.raises(PluginFailed) as err:
        cni.add("macvlan", conf(), container_ns, container_id="ctr-a")
    assert "no DHCPOFFER from a DHCP server on 'eth0' within 3s" in err.value.msg
    assert container_ns.link("eth0") is None and dhcp_daemon.status() == {"leases": []}


def test_two_containers_get_different_addresses(cni, make_netns, conf, dnsmasq, dhcp_daemon):
    a, b = make_netns(), make_netns()
    ra = cni.add("macvlan", conf(), a, container_id="ctr-a")
    rb = cni.add("macvlan", conf(), b, container_id="ctr-b")
    assert address_of(ra) != address_of(rb)
    assert dnsmasq.leases() == {mac_of(a): str(address_of(ra).ip), mac_of(b): str(address_of(rb).ip)}
    cni.delete("macvlan", conf(), a, container_id="ctr-a")
    wait_for(lambda: dnsmasq.leases() == {mac_of(b): str(address_of(rb).ip)}, what="only b's lease left")


def test_check_passes_for_the_held_lease_and_fails_after_del(cni, container_ns, conf, dnsmasq, dhcp_daemon):
    result = cni.add("macvlan", conf(), container_ns, container_id="ctr-a")
    cni.check("macvlan", dict(conf(), prevResult=result), container_ns, container_id="ctr-a")
    cni.check("dhcp", dict(conf(), prevResult=result), container_ns, container_id="ctr-a")
    cni.delete("macvlan", conf(), container_ns, container_id="ctr-a")
    assert dhcp_daemon.status() == {"leases": []}
    with pytest.raises(PluginFailed) as err:
        cni.check("dhcp", dict(conf(), prevResult=result), container_ns, container_id="ctr-a")
    assert "no DHCP lease held for ctr-a/dhcpnet/eth0" in err.value.msg


def test_gc_releases_the_leases_of_attachments_no_longer_valid(cni, make_netns, conf, dnsmasq, dhcp_daemon):
    a, b = make_netns(), make_netns()
    ra = cni.add("macvlan", conf("1.1.0"), a, container_id="ctr-a")
    cni.add("macvlan", conf("1.1.0"), b, container_id="ctr-b")
    cni.gc("dhcp", conf("1.1.0"), [{"containerID": "ctr-a", "ifname": "eth0"}])
    assert [lease["clientID"] for lease in dhcp_daemon.status()["leases"]] == ["ctr-a/dhcpnet/eth0"]
    wait_for(lambda: dnsmasq.leases() == {mac_of(a): str(address_of(ra).ip)}, what="b's lease released")


def test_options_provided_from_cni_args_reach_the_server(cni, container_ns, conf, dnsmasq, dhcp_daemon):
    ipam = {"provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}],
            "request": [{"skipDefault": False, "option": "routers"}], "priority": 50}
    result = cni.add("macvlan", conf(**ipam), container_ns, container_id="ctr-a",
                     args="IgnoreUnknown=1;K8S_POD_NAME=web-7")
    assert "web-7" in dnsmasq.leasefile.read_text().split()
    assert all(route.get("priority") is None for route in result["routes"])   # 1.0.0 has no route priority
    result = cni.add("macvlan", conf("1.1.0", **ipam), container_ns, container_id="ctr-a", ifname="eth1",
                     args="IgnoreUnknown=1;K8S_POD_NAME=web-7")
    assert result["routes"] and all(route["priority"] == 50 for route in result["routes"])


@pytest.mark.parametrize("dnsmasq_extra", [["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,100"]])
def test_the_daemon_renews_at_t1(cni, container_ns, conf, dnsmasq, dhcp_daemon):
    result = cni.add("macvlan", conf(), container_ns, container_id="ctr-a")
    wait_for(lambda: dhcp_daemon.status()["leases"][0]["renewals"] >= 1, timeout=30, what="a renewal")
    lease = dhcp_daemon.status()["leases"][0]
    assert lease["address"] == str(address_of(result).ip) and lease["state"] == "bound"
    # the renewal was a DHCPREQUEST from the leased address, answered by an ACK for it
    assert f"DHCPREQUEST({SERVER_IF}) {address_of(result).ip}" in dnsmasq.log_text()
    assert dnsmasq.log_text().count(f"DHCPACK({SERVER_IF}) {address_of(result).ip}") >= 2


def test_a_restarted_daemon_takes_over_the_leases_and_serves_new_containers(cni, make_netns, conf, dnsmasq,
                                                                            dhcp_daemon):
    a, b = make_netns(), make_netns()
    ra = cni.add("macvlan", conf(), a, container_id="ctr-a")
    log = dhcp_daemon.stop()
    assert "listening on" in log and not os.path.exists(dhcp_daemon.socket_path)
    assert dnsmasq.leases() == {mac_of(a): str(address_of(ra).ip)}   # a daemon stopping releases nothing
    dhcp_daemon.start()
    assert dhcp_daemon.status()["leases"] == [{"clientID": "ctr-a/dhcpnet/eth0", "state": "bound",
                                               "address": str(address_of(ra).ip), "renewals": 0}]
    rb = cni.add("macvlan", conf(), b, container_id="ctr-b")
    assert in_range(address_of(rb).ip) and address_of(rb) != address_of(ra)
    mac_a, mac_b = mac_of(a), mac_of(b)
    cni.delete("macvlan", conf(), a, container_id="ctr-a")   # the taken-over lease is released
    wait_for(lambda: mac_a not in dnsmasq.leases(), what="a's lease released")
    cni.delete("macvlan", conf(), b, container_id="ctr-b")
    wait_for(lambda: mac_b not in dnsmasq.leases(), what="b's lease released")
    assert os.listdir(os.path.join(os.path.dirname(dhcp_daemon.socket_path), "dhcp-leases")) == []


def test_a_lease_whose_namespace_is_gone_is_not_taken_over(cni, make_netns, conf, dnsmasq, dhcp_daemon):
    a = make_netns()
    cni.add("macvlan", conf(), a, container_id="ctr-a")
    dhcp_daemon.stop()
    a.remove()
    dhcp_daemon.start()
    assert dhcp_daemon.status() == {"leases": []}
    assert "not taking over the lease" in dhcp_daemon.log()
    assert os.listdir(os.path.join(os.path.dirname(dhcp_daemon.socket_path), "dhcp-leases")) == []


def test_a_stale_socket_file_is_replaced_and_a_live_daemon_is_not(host_ns, tmp_path, dnsmasq):
    path = tmp_path / "run" / "dhcp.sock"
    path.parent.mkdir()
    path.write_text("")
    daemon = DhcpDaemon(host_ns, str(path))
    try:
        second = host_ns.run([os.path.join(OUR_PLUGINS, "dhcp"), "daemon", "-socketpath", str(path)], timeout=30)
        assert second.returncode != 0 and b"another daemon is listening" in second.stderr
        assert daemon.status() == {"leases": []}
    finally:
        daemon.stop()


def test_through_the_pynet_daemon(daemon_cni, container_ns, conf, dnsmasq, dhcp_daemon):
    result = daemon_cni.add("macvlan", conf(), container_ns, container_id="ctr-d")
    assert str(address_of(result)) in container_ns.addresses("eth0")
    assert dnsmasq.leases() == {mac_of(container_ns): str(address_of(result).ip)}
    daemon_cni.delete("macvlan", conf(), container_ns, container_id="ctr-d")
    wait_for(lambda: dnsmasq.leases() == {}, what="the release")


def test_bridge_with_dhcp_ipam(cni, host_ns, container_ns, tmp_path, server_ns, dnsmasq, dhcp_daemon):
    # the bridge enslaves the sandbox end of the server's veth
    index = host_ns.ipr.link_lookup(ifname=MASTER)[0]
    host_ns.ipr.link("add", ifname="dhbr0", kind="bridge")
    bridge = host_ns.ipr.link_lookup(ifname="dhbr0")[0]
    host_ns.ipr.link("set", index=index, master=bridge)
    conf = {"cniVersion": "1.0.0", "name": NETWORK, "type": "bridge", "bridge": "dhbr0",
            "ipam": {"type": "dhcp", "daemonSocketPath": dhcp_daemon.socket_path}}
    result = cni.add("bridge", conf, container_ns, container_id="ctr-b")
    address = address_of(result)
    assert in_range(address.ip) and str(address) in container_ns.addresses("eth0")
    cni.delete("bridge", conf, container_ns, container_id="ctr-b")
    wait_for(lambda: dnsmasq.leases() == {}, what="the release")


# -- errors -------------------------------------------------------------------------------------------------
def test_without_a_daemon_add_fails_naming_the_socket(cni, host_ns, container_ns, conf, tmp_path, server_ns):
    with pytest.raises(PluginFailed) as err:
        cni.add("macvlan", conf(), container_ns, container_id="ctr-a")
    assert err.value.code == 11
    assert "error dialing DHCP daemon" in err.value.msg and str(tmp_path / "run" / "dhcp.sock") in err.value.msg
    assert container_ns.link("eth0") is None   # the macvlan was undone
    with pytest.raises(PluginFailed) as err:
        cni.status("dhcp", conf("1.1.0"))
    assert err.value.code == 50


@pytest.mark.parametrize("ipam, key", [
    ({"request": [{"option": "no-such-option"}]}, "ipam.request[0].option"),
    ({"provide": [{"option": "300", "value": "x"}]}, "ipam.provide[0].option"),
    ({"provide": [{"option": "host-name", "value": 5}]}, "ipam.provide[0].value"),
    ({"provide": "host-name"}, "ipam.provide"),
    ({"priority": "high"}, "ipam.priority"),
    ({"provide": [{"option": "12", "value": "x" * 256}]}, "ipam.provide[0].value"),
])
def test_malformed_options_are_code_7_naming_them(cni, container_ns, conf, ipam, key):
    with pytest.raises(PluginFailed) as err:
        cni.add("dhcp", conf(**ipam), container_ns)
    assert err.value.code == 7 and key in err.value.msg


# -- units: wire format, options, flags, state machine -----------------------------------------------------
def test_message_round_trip_with_long_and_repeated_options():
    msg = message.Message(message.BOOTREQUEST, 0x12345678, bytes.fromhex("02aabbccddee"),
                          ciaddr=ipaddress.IPv4Address("10.0.0.7"), flags=message.FLAG_BROADCAST,
                          options={message.MESSAGE_TYPE: bytes([message.REQUEST]), 250: b"x" * 300,
                                   message.HOST_NAME: b"web"})
    raw = msg.encode()
    assert len(raw) >= message.MIN_LENGTH and raw[236:240] == message.MAGIC
    back = message.Message.decode(raw)
    assert back == msg and back.message_type == message.REQUEST and back.options[250] == b"x" * 300


def test_decode_rejects_truncated_options_and_foreign_packets():
    raw = message.Message(message.BOOTREPLY, 1, b"\x02" * 6, options={message.HOST_NAME: b"abc"}).encode()
    cut = raw[:240] + bytes([message.HOST_NAME, 10, 65])
    with pytest.raises(message.MalformedMessage):
        message.Message.decode(cut)
    with pytest.raises(message.MalformedMessage):
        message.Message.decode(raw[:100])
    with pytest.raises(message.MalformedMessage):
        message.Message.decode(raw[:236] + b"\0\0\0\0" + raw[240:])


def test_udp_framing_round_trip_and_filtering():
    payload = b"hello dhcp"
    packet = message.udp_datagram(ipaddress.IPv4Address("10.0.0.1"), message.BROADCAST, payload,
                                  sport=67, dport=68)
    assert message._checksum(packet[:20]) == 0   # a valid IPv4 header checksum
    assert message.parse_udp_datagram(packet) == (ipaddress.IPv4Address("10.0.0.1"), payload)
    assert message.parse_udp_datagram(packet, dport=67) is None
    assert message.parse_udp_datagram(packet[:10]) is None


def test_classless_and_static_routes_and_search_list():
    routes = [(ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Address("10.77.0.1")),
              (ipaddress.IPv4Network("192.168.5.0/24"), message.ZERO),
              (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv4Address("10.77.0.254"))]
    assert message.classless_routes(message.encode_classless_routes(routes)) == routes
    assert message.encode_classless_routes(routes[:1]) == bytes([8, 10, 10, 77, 0, 1])
    with pytest.raises(message.MalformedMessage):
        message.classless_routes(bytes([24, 10, 1]))
    assert message.static_routes(bytes([172, 16, 0, 0, 10, 0, 0, 1])) == [
        (ipaddress.IPv4Network("172.16.0.0/16"), ipaddress.IPv4Address("10.0.0.1"))]
    # "eng.example.com", "example.com" (a pointer to offset 4)
    search = b"\x03eng\x07example\x03com\x00\xc0\x04"
    assert message.domain_search(search) == ["eng.example.com", "example.com"]


def ack() -> message.Message:
    opts = {message.MESSAGE_TYPE: bytes([message.ACK]), message.SUBNET_MASK: bytes([255, 255, 255, 0])}
    return message.Message(message.BOOTREPLY, 1, b"\x02" * 6, yiaddr=ipaddress.IPv4Address("10.77.0.60"),
                           options=opts)


def test_result_prefers_classless_routes_over_router_and_static_routes():
    classless = message.encode_classless_routes([("10.9.0.0/16", "10.77.0.2"), ("10.8.0.0/16", "0.0.0.0")])
    result = dhcp_lease.result_of(_with(ack(), {message.ROUTER: bytes([10, 77, 0, 1]),
                                                message.CLASSLESS_ROUTES: classless}))
    d = result.to_dict("1.1.0")
    assert d["ips"] == [{"address": "10.77.0.60/24", "gateway": "10.77.0.1"}]
    assert d["routes"] == [{"dst": "10.9.0.0/16", "gw": "10.77.0.2"},
                           {"dst": "10.8.0.0/16", "gw": "0.0.0.0", "scope": 253}]
    plain = dhcp_lease.result_of(_with(ack(), {message.ROUTER: bytes([10, 77, 0, 1])})).to_dict("1.0.0")
    assert plain["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}]
    no_mask = ack()
    del no_mask.options[message.SUBNET_MASK]
    with pytest.raises(Exception, match="Subnet Mask not found"):
        dhcp_lease.result_of(no_mask)


def _with(msg: message.Message, options: dict) -> message.Message:
    msg.options.update(options)
    return msg


def test_timers_follow_t1_t2_and_the_defaults():
    lease = (3600).to_bytes(4, "big")
    t = dhcp_lease.Timers.from_ack(_with(ack(), {message.LEASE_TIME: lease}), 100.0)
    assert (t.renew_at, t.rebind_at, t.expire_at) == (1900.0, 100 + 3060.0, 3700.0)
    t = dhcp_lease.Timers.from_ack(_with(ack(), {message.LEASE_TIME: lease, message.RENEWAL_TIME: (10).to_bytes(4, "big"),
                                                 message.REBINDING_TIME: (20).to_bytes(4, "big")}), 0.0)
    assert (t.renew_at, t.rebind_at, t.expire_at) == (10.0, 20.0, 3600.0)
    t = dhcp_lease.Timers.from_ack(ack(), 0.0)   # no lease time: the reference's hour
    assert t.expire_at == 3600.0


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def machine(clock, renew, rebind, present=lambda: True, expired=lambda: None):
    timers = dhcp_lease.Timers(renew_at=50.0, rebind_at=87.5, expire_at=100.0)
    return dhcp_lease.Maintainer(timers, clock, clock.wait, renew, rebind, present, expired, log=lambda text: None)


def test_state_machine_renews_at_t1_and_starts_over():
    clock = FakeClock()
    renewed = _with(ack(), {message.LEASE_TIME: (100).to_bytes(4, "big")})
    calls = []
    m = machine(clock, lambda deadline: calls.append(("renew", clock.now, deadline)) or renewed,
                lambda deadline: pytest.fail("no rebinding when renewal works"))
    assert m.step() and m.state == dhcp_lease.BOUND and clock.now == 50.0   # slept to T1
    assert m.step() and m.state == dhcp_lease.BOUND and m.renewals == 1
    assert calls == [("renew", 50.0, 87.5)]
    assert m.timers == dhcp_lease.Timers(100.0, 135.0, 150.0)


def test_state_machine_rebinds_after_t2_and_expires_after_the_lease():
    clock = FakeClock()
    calls, expired = [], []
    m = machine(clock, lambda deadline: calls.append(("renew", clock.now)) and None,
                lambda deadline: calls.append(("rebind", clock.now)) and None, expired=lambda: expired.append(clock.now))
    assert m.run() == dhcp_lease.EXPIRED
    assert expired == [100.0]
    kinds = [k for k, _ in calls]
    assert kinds[0] == "renew" and "rebind" in kinds
    assert all(t < 87.5 for k, t in calls if k == "renew") and all(87.5 <= t < 100 for k, t in calls if k == "rebind")
    # retries wait half the time left (at least 60 s, never past the deadline)
    assert clock.waits[1] == 37.5 and clock.waits[2] == 12.5


def test_state_machine_ends_when_the_interface_goes_or_on_stop():
    clock = FakeClock()
    m = machine(clock, lambda d: None, lambda d: None, present=lambda: False)
    assert m.run() == dhcp_lease.GONE
    stopping = machine(clock, lambda d: None, lambda d: None)
    stopping.wait = lambda seconds: True
    assert stopping.run() == dhcp_lease.STOPPED


def test_options_as_the_reference_prepares_them():
    from cni_plugins.skel import build_request

    def load(ipam, args=""):
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0",
               "CNI_PATH": "/x", "CNI_ARGS": args}
        stdin = json.dumps({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "dhcp", **ipam}}).encode()
        return dhcp_config.load(build_request(env, stdin))

    conf = load({})
    assert conf.socket_path == "/run/cni/dhcp.sock" and conf.request == list(dhcp_config.DEFAULT_REQUEST)
    conf = load({"request": [{"option": "host-name", "skipDefault": True}]})
    assert conf.request == [message.HOST_NAME]
    conf = load({"provide": [{"option": "host-name", "value": "fixed", "fromArg": "K8S_POD_NAME"},
                             {"option": "60", "value": "vendor"}]}, "K8S_POD_NAME=pod-1")
    assert conf.provide == {message.HOST_NAME: b"pod-1", message.VENDOR_CLASS: b"vendor"}
    conf = load({"provide": [{"option": "host-name", "value": "fixed", "fromArg": "K8S_POD_NAME"}]})
    assert conf.provide == {message.HOST_NAME: b"fixed"}
    assert dhcp_config.client_id("c" * 300, "n", "eth0") == ("c" * 300)[:254]


def test_daemon_flags_are_read_as_go_reads_them():
    flags = parse_flags(["-socketpath", "/tmp/x.sock", "--broadcast", "-timeout=1m30s", "-resendmax", "500ms"])
    assert flags["socketpath"] == "/tmp/x.sock" and flags["broadcast"] is True
    assert flags["timeout"] == 90.0 and flags["resendmax"] == 0.5 and flags["resendtimeout"] == 208.0
    assert parse_flags(["-broadcast=false"])["broadcast"] is False
    assert parse_duration("1h2m3s") == 3723.0
    for bad in (["-nosuch"], ["-timeout", "ten"], ["-socketpath"], ["stray"]):
        with pytest.raises(ValueError):
            parse_flags(bad)


def test_dhcp_daemon_with_a_bad_flag_says_so():
    proc = subprocess.run([os.path.join(OUR_PLUGINS, "dhcp"), "daemon", "-timeout", "soon"], capture_output=True,
                          timeout=30)
    assert proc.returncode == 2 and b"invalid value 'soon' for flag -timeout" in proc.stderr


def test_reference_macvlan_with_our_dhcp(make_cni, tmp_path, container_ns, conf, dnsmasq, dhcp_daemon):
    from netns_fixtures import REFERENCE_PLUGINS, reference_available

    if not reference_available():
        pytest.skip("reference plugins not installed")
    mixed = tmp_path / "bin"
    mixed.mkdir()
    os.symlink(os.path.join(REFERENCE_PLUGINS, "macvlan"), mixed / "macvlan")
    os.symlink(os.path.join(OUR_PLUGINS, "dhcp"), mixed / "dhcp")
    cni = make_cni(str(mixed))
    result = cni.add("macvlan", conf(), container_ns, container_id="ctr-r")
    assert str(address_of(result)) in container_ns.addresses("eth0")
    mac = mac_of(container_ns)
    assert dnsmasq.leases() == {mac: str(address_of(result).ip)}
    cni.delete("macvlan", conf(), container_ns, container_id="ctr-r")
    wait_for(lambda: dnsmasq.leases() == {}, what="the release")


class FakeInterface:
    """A client interface that answers from a script instead of a network: ``server(msg)`` gives the reply."""

    def __init__(self, server):
        import threading

        self.mac, self.ifname, self._lock = bytes.fromhex("02aabbccddee"), "eth0", threading.Lock()
        self.server, self.sent, self.pending = server, [], None

    def send(self, msg, src, dst, dst_mac):
        msg = message.Message.decode(msg.encode())   # what went over the wire
        self.sent.append((msg, str(src), str(dst), dst_mac))
        self.pending = self.server(msg)

    def receive(self, until, accept, cancel=None):
        reply, self.pending = self.pending, None
        return (reply, b"\x02\x00\x00\x00\x00\x01") if reply is not None and accept(reply) else None


def reply_to(msg, kind, **options):
    opts = {message.MESSAGE_TYPE: bytes([kind]), message.SERVER_ID: bytes([10, 77, 0, 1]),
            message.SUBNET_MASK: bytes([255, 255, 255, 0]), **options}
    return message.Message(message.BOOTREPLY, msg.xid, msg.chaddr, yiaddr=ipaddress.IPv4Address("10.77.0.60"),
                           options=opts)


def test_acquire_sends_discover_then_request_with_the_offered_address_and_our_options():
    from cni_plugins.dhcp import client

    iface = FakeInterface(lambda m: reply_to(m, message.OFFER if m.message_type == message.DISCOVER else message.ACK))
    c = client.Client(iface, client.client_options("c1/n/eth0", {message.HOST_NAME: b"web"}), [1, 3, 121],
                      client.Timing())
    ack, server_mac = c.acquire()
    assert ack.message_type == message.ACK and server_mac == b"\x02\x00\x00\x00\x00\x01"
    (discover, src, dst, mac), (request, *_rest) = iface.sent
    assert (discover.message_type, src, dst, mac) == (message.DISCOVER, "0.0.0.0", "255.255.255.255", b"\xff" * 6)
    assert discover.options[message.CLIENT_ID] == b"\0c1/n/eth0" and discover.options[message.HOST_NAME] == b"web"
    assert discover.options[message.PARAMETER_LIST] == bytes([1, 3, 121]) and discover.flags == 0
    assert request.message_type == message.REQUEST and request.xid == discover.xid   # RFC 2131, table 5
    assert request.options[message.REQUESTED_IP] == bytes([10, 77, 0, 60])
    assert request.options[message.SERVER_ID] == bytes([10, 77, 0, 1])


def test_renewal_is_unicast_from_the_leased_address_and_a_nak_fails_it():
    from cni_plugins.dhcp import client

    lease = reply_to(message.Message(message.BOOTREQUEST, 1, bytes.fromhex("02aabbccddee")), message.ACK)
    iface = FakeInterface(lambda m: reply_to(m, message.ACK))
    c = client.Client(iface, {}, [], client.Timing())
    c.extend(lease, b"\x02\x00\x00\x00\x00\x01", time.monotonic() + 60, broadcast=False)
    msg, src, dst, mac = iface.sent[0]
    assert (msg.message_type, str(msg.ciaddr), src, dst, mac) == (
        message.REQUEST, "10.77.0.60", "10.77.0.60", "10.77.0.1", b"\x02\x00\x00\x00\x00\x01")
    assert message.REQUESTED_IP not in msg.options and message.SERVER_ID not in msg.options
    c.extend(lease, b"\x02\x00\x00\x00\x00\x01", time.monotonic() + 60, broadcast=True)
    assert iface.sent[1][2:] == ("255.255.255.255", b"\xff" * 6)
    iface.server = lambda m: reply_to(m, message.NAK)
    with pytest.raises(client.ExchangeFailed, match="DHCPNAK"):
        c.extend(lease, b"\x02\x00\x00\x00\x00\x01", time.monotonic() + 60, broadcast=False)


def test_a_cancelled_client_stops_exchanging():
    import threading

    from cni_plugins.dhcp import client

    lease = reply_to(message.Message(message.BOOTREQUEST, 1, bytes.fromhex("02aabbccddee")), message.ACK)
    cancel = threading.Event()
    cancel.set()
    iface = FakeInterface(lambda m: None)
    c = client.Client(iface, {}, [], client.Timing(), cancel=cancel)
    with pytest.raises(client.ExchangeFailed, match="cancelled"):
        c.extend(lease, b"\x02" * 6, time.monotonic() + 600, broadcast=False)
    assert iface.sent == []


def test_resend_delays_follow_the_reference_backoff():
    from cni_plugins.dhcp import client

    delays = client.resend_delays(client.Timing(timeout=100, resend_max=16), rand=lambda a, b: 0.0)
    assert [next(delays) for _ in range(8)] == [2, 2, 2, 2, 4, 8, 16, 16]
    capped = client.resend_delays(client.Timing(timeout=3), rand=lambda a, b: 0.0)
    assert [next(capped) for _ in range(6)] == [2, 2, 2, 2, 3, 3]


def test_same_result_and_client_id_as_the_reference_dhcp(host_ns, make_cni, tmp_path, make_netns, conf, dnsmasq,
                                                         dhcp_daemon):
    from netns_fixtures import REFERENCE_PLUGINS, reference_available

    if not reference_available() or not os.access(os.path.join(REFERENCE_PLUGINS, "dhcp"), os.X_OK):
        pytest.skip("reference dhcp plugin not installed")
    ref_socket = str(tmp_path / "refrun" / "dhcp.sock")
    os.makedirs(os.path.dirname(ref_socket))
    ref_daemon = host_ns.popen([os.path.join(REFERENCE_PLUGINS, "dhcp"), "daemon", "-socketpath", ref_socket],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(ref_socket), what="the reference dhcp daemon")
        ref_conf = dict(conf(), ipam={"type": "dhcp", "daemonSocketPath": ref_socket})
        a, b = make_netns(), make_netns()
        ref = make_cni(REFERENCE_PLUGINS).add("macvlan", ref_conf, a, container_id="ctr-ref")
        ref_client_id = dnsmasq.leasefile.read_text().split()[4]
        ours = make_cni(OUR_PLUGINS).add("macvlan", conf(), b, container_id="ctr-ref", ifname="eth0")
        ours_line = [line for line in dnsmasq.leasefile.read_text().splitlines() if mac_of(b) in line][0]
    finally:
        stop_daemon(ref_daemon)
    assert ours_line.split()[4] == ref_client_id   # the same client identifier (same container, network, ifname)
    assert address_of(ours).network == address_of(ref).network
    assert ours["ips"][0]["gateway"] == ref["ips"][0]["gateway"] and ours["routes"] == ref["routes"]
    assert "dns" not in ref or not ref["dns"]   # the reference leaves DNS out; ours carries the server's
