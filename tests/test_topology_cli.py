"""`pynet topology up|check|show|down|validate` on real topologies, with state under tmp_path."""

import json
import os
import shutil

import pytest
import yaml

from pynet.cli import main
from pynet.topology import attach, load
from pynet.topology.deploy import kernel_supports_vxlan
from pynet.topology.state import existing_netns

pytestmark = pytest.mark.skipif(not kernel_supports_vxlan(), reason="these tests use the vxlan example")

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "topologies")
VXLAN = os.path.join(EXAMPLES, "two-hosts-vxlan.yaml")


def pynet(capsys, *argv):
    rc = main(["topology", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def state(tmp_path):
    directory = str(tmp_path / "state")
    yield directory
    main(["topology", "down", "--state-dir", directory, VXLAN])   # whatever a failing test left


def test_up_check_show_down(capsys, state, tmp_path):
    rc, out, _ = pynet(capsys, "up", "--state-dir", state, VXLAN)
    assert rc == 0
    assert "topology two-hosts-vxlan (up, run" in out and "10.99.0.1/24" in out
    run = json.load(open(os.path.join(state, "two-hosts-vxlan.json")))["run"]
    assert len(existing_netns(f"pynet.two-hosts-vxlan.{run}.")) == 4

    rc, out, _ = pynet(capsys, "check", "--state-dir", state, VXLAN)
    assert rc == 0
    assert "6 checks, 0 mismatches" in out and out.rstrip().endswith("PASS")

    rc, out, _ = pynet(capsys, "check", "--state-dir", state, "--json", "--only", "5", VXLAN)
    data = json.loads(out)
    assert rc == 0 and data["ok"] and [c["name"] for c in data["checks"]] == ["c1 -> c2 mtu 1450"]

    rc, out, _ = pynet(capsys, "show", "--state-dir", state, "--json", VXLAN)
    shown = json.loads(out)
    assert shown["up"] and shown["run"] == run
    assert ["vx42", "10.99.0.2/24"] in shown["nodes"]["host2"]["addresses"]

    rc, out, _ = pynet(capsys, "ls", "--state-dir", state)
    assert rc == 0 and out.splitlines()[1].split()[:4] == ["two-hosts-vxlan", run, "up", "4/4"]

    rc, out, _ = pynet(capsys, "down", "--state-dir", state, VXLAN)
    assert rc == 0 and "removed 4 namespaces" in out
    assert existing_netns(f"pynet.two-hosts-vxlan.{run}.") == []
    assert os.listdir(state) == []


def test_check_with_mismatches_exits_1_with_matrix_and_json(capsys, state, tmp_path):
    doc = {"name": f"mismatch-{os.getpid()}",
           "nodes": {"a": {}, "b": {}},
           "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.5.0.1/30", "10.5.0.2/30"]}],
           "checks": [{"type": "icmp", "from": "a", "to": "b"},
                      {"type": "tcp", "from": "a", "to": "b", "port": 9000, "expect": "fail"}]}
    path = tmp_path / "mismatch.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        rc, out, _ = pynet(capsys, "up", "--state-dir", state, "--check", str(path))
        assert rc == 1
        assert "2 checks, 1 mismatches" in out and "MISMATCH" in out
        rc, out, _ = pynet(capsys, "check", "--state-dir", state, "--json", str(path))
        data = json.loads(out)
        assert rc == 1 and not data["ok"]
        assert [(c["expected"], c["actual"], c["ok"]) for c in data["checks"]] == [
            ("success", "success", True), ("fail", "success", False)]
    finally:
        assert pynet(capsys, "down", "--state-dir", state, doc["name"])[0] == 0   # by name, without the file
    assert existing_netns(f"pynet.{doc['name']}.") == []


def test_check_when_not_up_is_an_error(capsys, state):
    rc, _, err = pynet(capsys, "check", "--state-dir", state, VXLAN)
    assert rc == 1 and "topology 'two-hosts-vxlan' is not up" in err


def test_validate_reports_problems_and_exits_1(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nnodes: {a: {}}\nlinks: [{endpoints: ['a:eth0', 'b:eth0']}]\n")
    rc, _, err = pynet(capsys, "validate", str(path))
    assert rc == 1 and "links[0].endpoints[1]: unknown node 'b'" in err
    rc, out, _ = pynet(capsys, "validate", VXLAN)
    assert rc == 0 and "is valid (4 nodes, 2 links, 6 checks)" in out


def test_show_draws_a_topology_that_is_not_up(capsys, state, tmp_path):
    rc, out, _ = pynet(capsys, "show", "--state-dir", state, VXLAN)
    assert rc == 0 and "topology two-hosts-vxlan (not up)" in out and "(from 10.42.1.0/24)" in out
    rc, out, _ = pynet(capsys, "show", "--state-dir", state, "--format", "dot", VXLAN)
    assert out.startswith('graph "two-hosts-vxlan"') and "vxlan 42" in out
    if shutil.which("dot") is None:
        pytest.skip("graphviz dot not installed")
    svg = tmp_path / "t.svg"
    rc, out, _ = pynet(capsys, "show", "--state-dir", state, "-o", str(svg), VXLAN)
    assert rc == 0 and svg.read_text().lstrip().startswith("<?xml") and "host1" in svg.read_text()
    png = tmp_path / "t.png"
    assert pynet(capsys, "show", "--state-dir", state, "-o", str(png), VXLAN)[0] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_refuses_a_file_whose_nodes_changed_since_up(capsys, state, tmp_path):
    doc = yaml.safe_load(open(VXLAN))
    assert pynet(capsys, "up", "--state-dir", state, VXLAN)[0] == 0
    doc["nodes"]["c3"] = {"kind": "container", "host": "host1", "attach": ["pods"]}
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    rc, _, err = pynet(capsys, "check", "--state-dir", state, str(changed))
    assert rc == 1 and "was brought up from a file with other nodes" in err


def small_topology(tmp_path, name):
    doc = {"name": f"{name}-{os.getpid()}", "nodes": {"a": {}, "b": {}},
           "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.5.0.1/30", "10.5.0.2/30"]}],
           "checks": [{"type": "icmp", "from": "a", "to": "b"}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return doc["name"], str(path)


def test_check_only_an_unknown_number_fails_naming_it(capsys, state, tmp_path):
    name, path = small_topology(tmp_path, "only")
    try:
        assert pynet(capsys, "up", "--state-dir", state, path)[0] == 0
        rc, out, err = pynet(capsys, "check", "--state-dir", state, "--only", "99", path)
        assert rc == 1 and "unknown check 99: topology only-" in err and "has checks 1 to 1" in err
        rc, out, _ = pynet(capsys, "check", "--state-dir", state, "--only", "1", path)
        assert rc == 0 and "1 checks, 0 mismatches" in out
        dep = attach(load(path), state)
        with pytest.raises(ValueError, match="has no check with index 1 "):
            dep.check(only=[1])
        dep.close()
    finally:
        assert pynet(capsys, "down", "--state-dir", state, name)[0] == 0
    assert existing_netns(f"pynet.{name}.") == []


def test_validate_names_a_subnet_that_is_no_network(capsys, tmp_path):
    doc = yaml.safe_load(open(VXLAN))
    doc["nodes"]["host1"]["networks"]["pods"]["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.22.1.0/33"}]]
    path = tmp_path / "bad-subnet.yaml"
    path.write_text(yaml.safe_dump(doc))
    rc, _, err = pynet(capsys, "validate", str(path))
    assert rc == 1 and "bad subnet '10.22.1.0/33'" in err and "Traceback" not in err


def test_down_refuses_a_name_that_leaves_the_state_dir(capsys, state, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    rc, _, err = pynet(capsys, "down", "--state-dir", state, "../victim")
    assert rc == 1 and "neither a topology file nor a topology name" in err
    assert victim.is_dir()


def test_validate_counts_in_the_singular_for_one(tmp_path, capsys):
    from pynet import cli

    path = tmp_path / "one.yaml"
    path.write_text("name: one\nnodes:\n  a: {}\n  b: {}\nlinks:\n  - endpoints: [a:eth0, b:eth0]\n"
                    "    addresses: [10.44.0.1/24, 10.44.0.2/24]\nchecks:\n  - {type: icmp, from: a, to: b}\n")
    assert cli.main(["topology", "validate", str(path)]) == 0
    assert "(2 nodes, 1 link, 1 check)" in capsys.readouterr().out


def test_namespaces_deleted_by_hand_are_named_and_down_removes_the_rest(capsys, state):
    from pyroute2 import netns as pr_netns

    from pynet.topology import NamespaceGone

    assert pynet(capsys, "up", "--state-dir", state, VXLAN)[0] == 0
    run = json.load(open(os.path.join(state, "two-hosts-vxlan.json")))["run"]
    for node in ("c1", "host2"):
        pr_netns.remove(f"pynet.two-hosts-vxlan.{run}.{node}")     # as `ip netns del` would

    rc, out, err = pynet(capsys, "check", "--state-dir", state, VXLAN)
    assert rc == 1 and out == ""
    assert (f"the namespaces of nodes host2 (/run/netns/pynet.two-hosts-vxlan.{run}.host2), c1 "
            f"(/run/netns/pynet.two-hosts-vxlan.{run}.c1) no longer exist (deleted outside pynet?)") in err
    assert "Errno" not in err

    dep = attach(load(VXLAN), state)                 # the API: each check says which namespace is gone
    report = dep.check()
    dep.close()
    assert [r.error.startswith("topology 'two-hosts-vxlan': the namespace of node ") for r in report.results] \
        == [True] * 6
    with pytest.raises(NamespaceGone):
        attach(load(VXLAN), state).netns("c1")

    rc, out, _ = pynet(capsys, "show", "--state-dir", state, VXLAN)
    assert rc == 0 and "2 of 4 namespaces gone" in out
    assert f"netns pynet.two-hosts-vxlan.{run}.c1 (GONE: deleted outside pynet?)" in out

    rc, out, err = pynet(capsys, "down", "--state-dir", state, VXLAN)
    assert rc == 0 and "removed 2 namespaces" in out
    assert "warning: the namespaces of nodes host2, c1 were already gone (deleted outside pynet?)" in err
    assert "Errno" not in err
    assert existing_netns(f"pynet.two-hosts-vxlan.{run}.") == []
    assert os.listdir(state) == []


def test_validate_names_a_misspelt_kind_once(capsys, tmp_path):
    doc = yaml.safe_load(open(VXLAN))
    doc["nodes"]["c1"]["kind"] = "contianer"
    doc["links"][1]["kind"] = "vxaln"
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    rc, _, err = pynet(capsys, "validate", str(path))
    assert rc == 1
    assert err.splitlines()[1:] == [
        "  - nodes.c1.kind: unknown node kind 'contianer' (valid: host, netns, container, switch); "
        "did you mean 'container'?",
        "  - links[1].kind: unknown link kind 'vxaln' (valid: veth, vxlan); did you mean 'vxlan'?"]
