"""The `pynet` command line as a Docker user expects it: one identity per container (name, ID or unique
prefix everywhere), global options anywhere, defaults a user would choose (a gateway, masquerade, DNS,
subnets clear of podman's and Docker's), Docker's -p grammar, --json/--format output of one shape,
messages in the user's terms. Commands run through the installed `pynet` inside sandbox namespaces with
PYNET_* dirs under tmp_path."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess

import pytest

from netns_fixtures import OUR_PLUGINS
from pynet.runner import ports
from tests.test_cli_attach import PYNET, Pynet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def pynet(host_ns, tmp_path):
    host_ns.set_sysctl("net/ipv4/ip_forward", 1)
    p = Pynet(host_ns, tmp_path, OUR_PLUGINS)
    yield p
    p.cleanup()


def conflist(pynet, name) -> dict:
    return json.loads((pynet.config_dir / f"{name}.conflist").read_text())


# -- global options, version, help ----------------------------------------------------------------------
def test_global_options_work_before_and_after_the_command(pynet):
    pynet.run("net", "create", "a", "--disable-dns")
    before = json.loads(pynet.run("--json", "net", "ls").out)
    after = json.loads(pynet.run("net", "ls", "--json").out)
    assert before == after and [n["name"] for n in before] == ["a"]
    moved = pynet.run("--config-dir", pynet.tmp / "elsewhere", "--json", "net", "ls").out
    assert json.loads(moved) == []
    assert json.loads(pynet.run("--json", "ls").out) == []


def test_version_and_help_list_every_environment_variable():
    version = subprocess.run([PYNET, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and re.match(r"pynet \d+\.\d+", version.stdout)
    help_text = subprocess.run([PYNET, "--help"], capture_output=True, text=True).stdout
    readme = open(os.path.join(ROOT, "README.md")).read()
    read = set()
    for base in ("pynet", "cni_plugins", "netns_fixtures"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
            for f in files:
                if f.endswith((".py", ".c")):
                    read |= set(re.findall(r"[\"']PYNET_([A-Z][A-Z_]*[A-Z])[\"']", open(os.path.join(dirpath, f)).read()))
    assert read, "no PYNET_ variable found in the code"
    read = {f"PYNET_{v}" for v in read}
    assert sorted(v for v in read if v not in help_text) == []
    assert sorted(v for v in read if v not in readme) == []


# -- network defaults -----------------------------------------------------------------------------------
def test_net_create_defaults_to_gateway_masquerade_ports_and_dns_in_pynets_range(pynet, host_ns):
    # A /24 of pynet's range routed here is skipped.
    ipr = host_ns.ipr
    ipr.link("add", ifname="pnrt0", kind="veth", peer="pnrt1")
    idx = ipr.link_lookup(ifname="pnrt0")[0]
    ipr.addr("add", index=idx, address="10.200.0.1", prefixlen=24)
    ipr.link("set", index=idx, state="up")
    pynet.run("net", "create", "web")
    conf = conflist(pynet, "web")
    bridge = conf["plugins"][0]
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap", "dnsname"]
    assert bridge["isGateway"] and bridge["ipMasq"] and bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    subnet = ipaddress.ip_network(bridge["ipam"]["ranges"][0][0]["subnet"])
    assert subnet == ipaddress.ip_network("10.200.1.0/24")
    for taken in ("10.88.0.0/16", "10.89.0.0/16", "172.16.0.0/12"):
        assert not subnet.overlaps(ipaddress.ip_network(taken))
    assert conf["plugins"][2]["dataDir"] == str(pynet.cache_dir / "dns")
    # The next one takes the next free /24.
    pynet.run("net", "create", "db")
    assert conflist(pynet, "db")["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.200.2.0/24"}]]


def test_net_create_gateway_address_internal_no_masq_and_no_dns(pynet):
    pynet.run("net", "create", "a", "--subnet", "10.150.10.0/24", "--gateway", "10.150.10.254")
    rng = conflist(pynet, "a")["plugins"][0]["ipam"]["ranges"]
    assert rng == [[{"subnet": "10.150.10.0/24", "gateway": "10.150.10.254"}]]
    pynet.run("net", "create", "b", "--internal", "--disable-dns")
    b = conflist(pynet, "b")
    assert [p["type"] for p in b["plugins"]] == ["bridge", "portmap"]
    assert not b["plugins"][0]["ipMasq"] and "routes" not in b["plugins"][0]["ipam"]
    pynet.run("net", "create", "c", "--no-masq", "--no-port-map")
    c = conflist(pynet, "c")
    assert [p["type"] for p in c["plugins"]] == ["bridge", "dnsname"] and not c["plugins"][0]["ipMasq"]
    bad = pynet.run("net", "create", "d", "--subnet", "10.150.11.0/24", "--gateway", "10.9.9.9", ok=False)
    assert bad.returncode == 1 and "invalid --gateway 10.9.9.9: not in --subnet 10.150.11.0/24" in bad.err
    bad = pynet.run("net", "create", "d", "--gateway", "nope", ok=False)
    assert bad.returncode == 1 and "invalid --gateway 'nope'" in bad.err
    assert not (pynet.config_dir / "d.conflist").exists()


def test_a_bridge_shared_by_two_networks_is_refused_unless_forced(pynet):
    pynet.run("net", "create", "a", "--bridge", "pnshared0")
    res = pynet.run("net", "create", "b", "--bridge", "pnshared0", ok=False)
    assert res.returncode == 1 and "bridge pnshared0 is already the bridge of network 'a'" in res.err
    assert not (pynet.config_dir / "b.conflist").exists()
    pynet.run("net", "create", "b", "--bridge", "pnshared0", "--force")


def test_net_inspect_is_text_unless_json_and_lists_plugins_once(pynet):
    pynet.run("net", "create", "a")
    text = pynet.run("net", "inspect", "a").out
    assert not text.lstrip().startswith(("{", "[")) and "Plugins:       bridge, portmap, dnsname" in text
    [out] = pynet.json("net", "inspect", "a")
    assert "plugins" not in out and [p["type"] for p in out["config"]["plugins"]] == ["bridge", "portmap", "dnsname"]


# -- -p grammar ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, cni", [
    ("8092-8093:80-81", {"hostPort": "8092-8093", "containerPort": "80-81", "protocol": "tcp"}),
    ("127.0.0.1:8080:80/udp", {"hostPort": 8080, "containerPort": 80, "protocol": "udp", "hostIP": "127.0.0.1"}),
])
def test_publish_ranges_follow_dockers_grammar(spec, cni):
    assert ports.parse_publish(spec).to_cni() == cni


def test_publish_without_host_port_gets_a_free_one():
    [one] = ports.to_port_mappings(["80"])
    assert one["containerPort"] == 80 and 1024 <= one["hostPort"] <= 65535
    [rng] = ports.to_port_mappings(["127.0.0.1::80-81/udp"])
    first, last = map(int, rng["hostPort"].split("-"))
    assert last == first + 1 and rng["containerPort"] == "80-81" and rng["hostIP"] == "127.0.0.1"


@pytest.mark.parametrize("spec, why", [
    ("8092-8094:80-81", "the host range holds 3 ports, the container range 2"),
    ("90-80", "ends below its start"), ("99999:80", "1-65535"), ("80/icmp", "expected"),
])
def test_bad_publish_ranges_are_refused_naming_the_value(spec, why):
    with pytest.raises(ports.PortSpecError, match=re.escape(f"invalid -p {spec!r}: ") + ".*" + re.escape(why)):
        ports.parse_publish(spec)


def test_publish_on_an_address_not_on_the_host_is_refused(pynet):
    pynet.run("net", "create", "a")
    proc = pynet.sleeper()
    res = pynet.run("attach", proc.pid, "-p", "10.9.9.9:8091:80", ok=False)
    assert res.returncode == 1 and "10.9.9.9" in res.err and "not an address of this host" in res.err
    assert pynet.json("ls") == []
    res = pynet.run("attach", proc.pid, "-p", "99999:80", ok=False)
    assert res.returncode == 1 and "invalid -p '99999:80': ports must be 1-65535" in res.err
    assert "runtimeConfig" not in res.err


def test_attach_by_pid_gives_a_name_used_everywhere(pynet):
    pynet.run("net", "create", "a", "--disable-dns")
    pynet.run("net", "create", "b", "--disable-dns")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid, "--name", "worker", "--net", "a")
    [c] = pynet.json("ls")
    assert c["name"] == "worker" and c["pid"] == proc.pid
    assert pynet.json("inspect", "worker")[0]["id"] == c["id"] == pynet.json("inspect", c["id"][:6])[0]["id"]
    assert "worker" in pynet.run("inspect", "worker").out
    assert pynet.run("ls", "--format", "{{.Name}} {{.Networks}}").out.split() == ["worker", "a"]
    again = pynet.run("attach", "worker", "--net", "a", ok=False)
    assert again.returncode == 1 and "container worker is already on network 'a'" in again.err
    pynet.run("network", "connect", "b", "worker")
    assert pynet.run("ls", "--format", "{{.Networks}}").out.strip() == "a,b"
    pynet.run("network", "disconnect", "b", "worker")
    assert pynet.run("ls", "--format", "{{.Networks}}").out.strip() == "a"
    other = pynet.sleeper()
    taken = pynet.run("attach", other.pid, "--name", "worker", "--net", "a", ok=False)
    assert taken.returncode == 1 and "the name 'worker' is taken" in taken.err
    unnamed = pynet.sleeper()
    pynet.run("attach", unnamed.pid, "--net", "b")
    assert f"sleep-{unnamed.pid}" in pynet.run("ls").out
    missing = pynet.run("inspect", "nope", ok=False)
    assert missing.returncode == 1 and "no container 'nope'" in missing.err and "pynet ls" in missing.err
    pynet.run("detach", "worker")
    assert sorted(c["name"] for c in pynet.json("ls")) == [f"sleep-{unnamed.pid}"]


def test_messages_name_the_flag_not_the_cni_key(pynet):
    pynet.run("net", "create", "a", "--disable-dns")
    proc = pynet.sleeper()
    res = pynet.run("attach", proc.pid, "--ifname", "bad name", ok=False)
    assert res.returncode == 1 and "invalid --ifname 'bad name'" in res.err and "CNI_IFNAME" not in res.err
    res = pynet.run("attach", proc.pid, "--format", "x", ok=False)
    assert res.returncode == 2   # argparse: no such option for attach
    pynet.run("attach", proc.pid)
    res = pynet.run("ls", "--format", "{{.Nope}}", ok=False)
    assert res.returncode == 1 and "no field 'Nope'" in res.err


def test_format_fills_fields_of_every_row():
    from pynet.cli_base import CommandError, render_format

    assert render_format("{{.Name}}\\t{{ .Networks }}", {"Name": "web", "Networks": ["a", "b"]}) == "web\ta,b"
    with pytest.raises(CommandError, match="no field 'X'"):
        render_format("{{.X}}", {"Name": "web"})
