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

from pynet.runner import ports
from tests.test_cli_attach import PYNET, pynet  # noqa: F401  (pynet: the CLI fixture of a sandbox host netns)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    assert sorted(v for v in set(re.findall(r"PYNET_[A-Z][A-Z_]*[A-Z]", readme)) if v not in help_text) == []


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


def test_publish_without_host_port_gets_a_free_one(pynet):
    pynet.run("net", "create", "a", "--disable-dns")
    proc = pynet.sleeper()
    pynet.run("attach", proc.pid, "-p", "80", "-p", "127.0.0.1::80-81/udp")
    [c] = pynet.json("ls")
    one, rng = c["attachments"][0]["portMappings"]
    assert one["containerPort"] == 80 and 1024 <= one["hostPort"] <= 65535
    first, last = map(int, rng["hostPort"].split("-"))
    assert last == first + 1 and rng["containerPort"] == "80-81" and rng["hostIP"] == "127.0.0.1"
    assert f"->{80}/tcp" in pynet.run("ls").out


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


# -- `pynet run` containers: identity, ports, DNS ---------------------------------------------------------
from tests.test_launcher import Launcher, pynet_root  # noqa: E402,F401  (pynet_root: the busybox image, once)


@pytest.fixture
def docker(host_ns, pynet_root, tmp_path):  # noqa: F811
    """`pynet` with a state dir, an image store and network dirs of its own; containers removed after."""
    from cni_plugins import syscalls
    from pynet.launcher import security

    if not security.seccomp_available():
        pytest.skip("python3-seccomp not installed (scripts/install.sh)")
    host_ns.set_sysctl("net/ipv4/ip_forward", 1)
    d = Launcher(host_ns, pynet_root, str(tmp_path / "state"))
    for key, sub in (("PYNET_CONFIG_DIR", "net.d"), ("PYNET_CACHE_DIR", "cache"), ("PYNET_NETNS_DIR", "netns")):
        os.makedirs(tmp_path / sub, exist_ok=True)
        d.env[key] = str(tmp_path / sub)
    d.env["PYNET_DAEMON"] = "off"
    yield d
    for rec in d.records():
        if syscalls.is_alive(rec.get("pid"), rec.get("pid_start")):
            os.kill(rec["pid"], 9)
        d("rm", "-f", rec["id"])
    assert not [r["id"] for r in d.records()], "containers left behind"


def ok(res):
    assert res.returncode == 0, f"{res.args} failed ({res.returncode}): {res.err}{res.out}"
    return res


def test_run_container_has_one_identity_in_ps_ls_inspect_and_port(docker, host_ns):
    ok(docker("net", "create", "front", "--disable-dns"))
    ok(docker("net", "create", "back", "--disable-dns"))
    cid = ok(docker("run", "-d", "--name", "web", "--network", "front", "-p", "80", "busybox", "sleep", "60")).out.strip()
    line = ok(docker("ps", "--format", "{{.Name}} {{.Networks}} {{.IPs}}")).out.split()
    assert line[:2] == ["web", "front"] and line[2].startswith("10.200.")
    [c] = json.loads(ok(docker("--json", "ls")).out)
    assert (c["id"], c["name"]) == (cid, "web")
    assert json.loads(ok(docker("inspect", cid[:6], "--json")).out)[0]["name"] == "web"
    assert "Container:  web (" + cid in ok(docker("inspect", "web")).out
    port = ok(docker("port", "web")).out.strip()
    assert re.fullmatch(r"80/tcp -> 0\.0\.0\.0:\d+", port)
    assert str(json.loads(ok(docker("port", "web", "--json")).out)[0]["hostPort"]) in ok(docker("ps")).out
    ok(docker("network", "connect", "back", "web"))
    assert ok(docker("ps", "--format", "{{.Networks}}")).out.strip() == "back,front"
    again = docker("attach", "web", "--net", "back")
    assert again.returncode == 1 and "already on network 'back'" in again.err
    ok(docker("network", "disconnect", "back", "web"))
    assert ok(docker("ps", "--format", "{{.Networks}}")).out.strip() == "front"
    ok(docker("stop", "-t", "1", "web"))
    res = docker("kill", "web")
    assert res.returncode == 1 and "not running" in res.err
    short = docker("logs", cid[:2])
    assert short.returncode == 1 and "at least 3 characters" in short.err
    ok(docker("rm", "web"))
    assert json.loads(ok(docker("ls", "--json")).out) == []


def test_run_accepts_dockers_everyday_flags_and_exit_codes(docker):
    ok(docker("run", "--rm", "-it", "--net", "none", "busybox", "true"))
    ok(docker("run", "--rm", "-i", "-u", "0", "--net", "none", "busybox", "true"))
    assert docker("run", "--rm", "--net", "none", "busybox", "sh", "-c", "exit 7").returncode == 7
    assert docker("run", "--rm", "--net", "none", "busybox", "no-such-command").returncode == 127
    bad = docker("run", "--memory", "12q", "busybox", "true")
    assert bad.returncode == 125 and "invalid --memory '12q'" in bad.err and "64m" in bad.err
    bad = docker("run", "--no-such-flag", "busybox", "true")
    assert bad.returncode == 125
    bad = docker("run", "-p", "10.9.9.9:8091:80", "busybox", "true")
    assert bad.returncode == 125 and "not an address of this host" in bad.err
    assert docker.records() == []


def test_containers_resolve_each_other_by_name_and_alias_on_their_network_only(docker):
    ok(docker("net", "create", "front"))
    ok(docker("net", "create", "other"))
    ok(docker("run", "-d", "--name", "web", "--network", "front", "--network-alias", "www", "busybox", "sleep", "120"))
    ok(docker("run", "-d", "--name", "client", "--network", "front", "busybox", "sleep", "120"))
    ok(docker("run", "-d", "--name", "outsider", "--network", "other", "busybox", "sleep", "120"))
    [web] = [c for c in json.loads(ok(docker("ps", "--json")).out) if c["name"] == "web"]
    [web_ip] = web["ips"]
    resolv = ok(docker("exec", "client", "cat", "/etc/resolv.conf")).out
    gateway = str(next(ipaddress.ip_network(web_ip + "/24", strict=False).hosts()))
    assert f"nameserver {gateway}" in resolv and "search dns.pynet" in resolv
    for name in ("web", "www", "web.dns.pynet"):
        res = docker("exec", "client", "nslookup", name)
        assert res.returncode == 0 and web_ip in res.out, (name, res.out, res.err)
    res = docker("exec", "outsider", "timeout", "10", "nslookup", "web")
    assert web_ip not in res.out
    ok(docker("rm", "-f", "web"))
    res = docker("exec", "client", "timeout", "10", "nslookup", "web")
    assert web_ip not in res.out


def test_names_that_are_no_dns_labels_are_refused_on_a_dns_network(docker):
    ok(docker("net", "create", "front"))
    bad = docker("run", "--name", "a.b", "--network", "front", "busybox", "true")
    assert bad.returncode == 125 and "invalid --name 'a.b'" in bad.err and "DNS" in bad.err
    bad = docker("run", "--network-alias", "bad_alias-", "--network", "front", "busybox", "true")
    assert bad.returncode == 125 and "invalid --network-alias 'bad_alias-'" in bad.err
    ok(docker("net", "create", "plain", "--disable-dns"))
    ok(docker("run", "--rm", "--name", "a.b", "--network", "plain", "busybox", "true"))
    assert docker.records() == []
