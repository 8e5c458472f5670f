"""Topology services (processes started in a node's netns, waited for, ended by PID) and networks whose
conflist a service writes: the pod-network example end to end through `pynet topology up/check/down`,
and the failure paths on small topologies. State lives under tmp_path; every process a test starts is
found again by PID (and start time) to prove it ended."""

import json
import os
import subprocess
import sys

import pytest

from cni_plugins.syscalls import is_alive
from netns_fixtures.multinode import ETCD, PYNET
from pynet.cli import main
from pynet.topology import DeployError, attach, down, load, parse, up
from pynet.topology.deploy import kernel_supports_vxlan
from pynet.topology.state import existing_netns

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "topologies", "pod-network-etcd.yaml")


def _services(state_dir: str, name: str) -> list[dict]:
    with open(os.path.join(state_dir, f"{name}.json")) as f:
        return json.load(f)["services"]


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


@pytest.mark.skipif(ETCD is None or not kernel_supports_vxlan(),
                    reason="needs Debian's etcd-server and the kernel's vxlan driver")
def test_pod_network_example_up_check_down_through_the_cli(tmp_path, capsys):
    state = str(tmp_path / "state")
    pynet = [PYNET, "topology"]
    try:
        # up in its own process, as a user runs it: the services outlive it, and down finds them in the state.
        done = subprocess.run([*pynet, "up", "--state-dir", state, EXAMPLE], capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0, done.stderr
        assert "service agent0: pynet, ready on file" in done.stdout
        records = _services(state, "pod-network-etcd")
        assert [r["name"] for r in records] == ["etcd0", "etcd1", "etcd2", "agent0", "agent1", "agent2"]
        assert all(is_alive(r["pid"], r["start_time"]) for r in records)
        assert "--name m0" in _cmdline(records[0]["pid"]) and "node run --name node0" in _cmdline(records[3]["pid"])
        run = json.load(open(os.path.join(state, "pod-network-etcd.json")))["run"]
        assert len(existing_netns(f"pynet.pod-network-etcd.{run}.")) == 13

        dep = attach(load(EXAMPLE), state)
        try:   # each agent made its VXLAN device, 50 bytes below the underlay's MTU
            assert [dep.netns(f"node{i}").link("pynet-vxlan").get_attr("IFLA_MTU") for i in range(3)] == [1450] * 3
        finally:
            dep.close()

        assert main(["topology", "show", "--json", "--state-dir", state, EXAMPLE]) == 0
        shown = json.loads(capsys.readouterr().out)["services"]
        assert shown["agent1"]["node"] == "node1" and shown["agent1"]["pid"] == records[4]["pid"]
        assert all(s["running"] for s in shown.values())

        assert main(["topology", "ls", "--state-dir", state]) == 0
        assert capsys.readouterr().out.splitlines()[1].split()[:5] == ["pod-network-etcd", run, "up", "13/13", "6/6"]

        assert main(["topology", "check", "--state-dir", state, "--json", EXAMPLE]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] and report["total"] == 35
        pods = {c["to_ip"].rsplit(".", 1)[0] for c in report["checks"] if c["type"] == "icmp"}
        assert len(pods) == 3                         # three node subnets, every pod reached from every other
        assert all(ip.startswith("10.244.") for ip in pods)

        done = subprocess.run([*pynet, "down", "--state-dir", state, EXAMPLE], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "removed 13 namespaces, ended 6 services" in done.stdout
        assert not any(is_alive(r["pid"], r["start_time"]) for r in records)
        assert existing_netns(f"pynet.pod-network-etcd.{run}.") == []
        assert os.listdir(state) == []
    finally:
        main(["topology", "down", "--state-dir", state, EXAMPLE])


def _small(**services) -> dict:
    return {"name": f"svc-{os.getpid() % 100000}",
            "nodes": {"h1": {"kind": "host"}, "r1": {}},
            "links": [{"endpoints": ["h1:eth0", "r1:eth0"], "addresses": ["10.61.0.1/24", "10.61.0.2/24"]}],
            "services": services,
            "checks": [{"type": "icmp", "from": "r1", "to": "h1"}]}


def _up_fails(doc: dict, tmp_path) -> str:
    """The message of the DeployError ``up`` must raise; an ``up`` that succeeds is taken down again."""
    try:
        dep = up(parse(doc), state_dir=str(tmp_path / "state"))
    except DeployError as exc:
        return str(exc)
    dep.down()
    pytest.fail(f"up of {doc['name']} succeeded")


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in _cmdline(int(entry)) and is_alive(int(entry), None):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def test_generated_network_is_waited_for_and_used_by_the_containers(tmp_path):
    conflist = {"cniVersion": "1.0.0", "name": "gen", "plugins": [
        {"type": "bridge", "bridge": "gen0", "isGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.62.0.0/24"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}}]}
    # Writes the conflist after a while, then its status, then serves TCP on the host's link address.
    writer = (f"import json, os, socket, sys, time\n"
              f"d = sys.argv[1]; os.makedirs(d, exist_ok=True); time.sleep(0.5)\n"
              f"open(d + '/gen.conflist', 'w').write({json.dumps(json.dumps(conflist))})\n"
              f"s = socket.create_server(('10.61.0.1', 7100)); open(d + '/status', 'w').write('{{\"ok\": 1}}')\n"
              f"while True: s.accept()[0].close()\n")
    doc = _small(writer={"node": "h1", "command": [*_python(writer), "${data}/h1"],
                         "ready": {"file": "${data}/h1/status", "json": {"ok": 1}}},
                 waiter={"node": "r1", "command": "sleep 600", "after": ["writer"],
                         "ready": {"tcp": "10.61.0.1:7100", "timeout": 10}})
    doc["nodes"]["h1"]["networks"] = {"gen": {"file": "${data}/h1/gen.conflist", "written_by": "writer"}}
    doc["nodes"]["c1"] = {"kind": "container", "host": "h1", "attach": ["gen"]}
    doc["nodes"]["c2"] = {"kind": "container", "host": "h1", "attach": ["gen"]}
    doc["checks"] = [{"type": "tcp", "from": "c1", "to": "c2", "port": 7200},
                     {"type": "icmp", "from": "c2", "to": "h1"}]
    dep = up(parse(doc), state_dir=str(tmp_path / "state"))
    try:
        records = list(dep.state["services"])
        assert dep.address("c1").startswith("10.62.0.")
        assert dep.netns("h1").link("gen0") is not None
        report = dep.check()
        assert report.ok, report.matrix()
    finally:
        report = dep.down()
    assert report["services"] == ["waiter", "writer"]            # reverse start order
    assert not any(is_alive(r["pid"], r["start_time"]) for r in records)
    assert existing_netns(f"pynet.{doc['name']}.") == []


def test_a_service_that_exits_before_ready_fails_up_and_leaves_nothing(tmp_path):
    doc = _small(bad={"node": "r1", "command": ["sh", "-c", "echo cannot bind; exit 3"],
                      "ready": {"tcp": "10.61.0.2:2379"}})
    msg = _up_fails(doc, tmp_path)
    assert "service 'bad' exited with status 3 before it was ready (tcp 10.61.0.2:2379)" in msg
    assert "cannot bind" in msg                                  # the last lines of its log
    assert existing_netns(f"pynet.{doc['name']}.") == []
    assert os.listdir(tmp_path / "state") == []


def test_services_of_a_failed_up_are_ended_by_pid(tmp_path):
    marker = f"{600 + os.getpid() % 1000}.25"                    # an argument no other process has
    doc = _small(first={"node": "h1", "command": ["sleep", marker]},
                 slow={"node": "r1", "command": ["sleep", marker], "after": ["first"],
                       "ready": {"file": "${data}/never", "timeout": 1}})
    msg = _up_fails(doc, tmp_path)
    assert "service 'slow' was not ready within 1 s (waiting for file " in msg
    assert _processes_with(f"sleep {marker}") == []
    assert existing_netns(f"pynet.{doc['name']}.") == []


def test_a_missing_command_is_a_clear_error(tmp_path):
    doc = _small(s={"node": "r1", "command": "no-such-program-here --flag"})
    msg = _up_fails(doc, tmp_path)
    assert "service 's': command 'no-such-program-here' not found" in msg
    assert existing_netns(f"pynet.{doc['name']}.") == []


def test_down_from_another_process_ends_the_services(tmp_path):
    state = str(tmp_path / "state")
    doc = _small(s={"node": "r1", "command": "sleep 600", "ready": {"file": "/proc/self"}})
    dep = up(parse(doc), state_dir=state)
    records = list(dep.state["services"])
    dep.close()
    try:
        assert is_alive(records[0]["pid"], records[0]["start_time"])
        done = subprocess.run([PYNET, "topology", "down", "--state-dir", state, doc["name"]], capture_output=True,
                              text=True, timeout=60)
    finally:
        down(doc["name"], state)     # whatever the other process left (nothing, when it worked)
    assert done.returncode == 0, done.stderr
    assert "ended 1 service" in done.stdout
    os.waitpid(records[0]["pid"], os.WNOHANG)                   # our child: reap it
    assert not is_alive(records[0]["pid"], records[0]["start_time"])
    assert existing_netns(f"pynet.{doc['name']}.") == []


def test_a_service_without_readiness_that_ends_during_up_fails_it(tmp_path):
    doc = _small(quick={"node": "r1", "command": ["sh", "-c", "echo bad flag >&2; exit 2"]},
                 slow={"node": "h1", "command": ["sh", "-c", "sleep 1; touch ${data}/ok; exec sleep 600"],
                       "ready": {"file": "${data}/ok", "timeout": 30}})
    msg = _up_fails(doc, tmp_path)
    assert "service 'quick' exited with status 2 during up" in msg and "bad flag" in msg
    assert existing_netns(f"pynet.{doc['name']}.") == []
