import yaml

from netns_fixtures import icmp_echo, tcp_connect, tcp_listener, veth_link


def test_two_namespaces_talk_over_a_veth_pair(make_netns):
    a, b = make_netns(), make_netns()          # removed when the test ends, pass or fail
    veth_link(a, "eth0", b, "eth0", ["10.77.0.1/30"], ["10.77.0.2/30"])
    assert icmp_echo(a, "10.77.0.2")
    with tcp_listener(b) as port:
        assert tcp_connect(a, "10.77.0.2", port)


ROUTED = """
name: user-example
nodes:
  a: {routes: [{dst: default, via: 10.78.1.1}]}
  r: {forwarding: true}
  b: {routes: [{dst: default, via: 10.78.2.1}]}
links:
  - {endpoints: ["a:eth0", "r:eth0"], addresses: [10.78.1.2/24, 10.78.1.1/24]}
  - {endpoints: ["r:eth1", "b:eth0"], addresses: [10.78.2.1/24, 10.78.2.2/24]}
checks:
  - {type: icmp, from: a, to: b}
  - {type: tcp, from: b, to: a, port: 7000}
"""


def test_a_router_between_two_nodes(topology):
    dep = topology(yaml.safe_load(ROUTED))     # up now, down when the test ends, pass or fail
    report = dep.check()
    assert report.ok, report.matrix()
    assert icmp_echo(dep.netns("a"), dep.address("b"))


# -- the README, as written ---------------------------------------------------------------------------
# Not shown in the README: the checks that keep the README's own examples runnable.
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

from tests.test_cli_docker import docker  # noqa: E402,F401  (`pynet` with every dir under tmp_path)
from tests.test_launcher import PYNET, pynet_root  # noqa: E402,F401  (the busybox image, once)

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _readme_blocks(language: str, after: str) -> list[str]:
    text = open(README).read()
    return re.findall(rf"```{language}\n(.*?)```", text[text.index(after):], re.S)


def test_the_readme_shows_this_file_as_it_begins():
    [shown] = _readme_blocks("python", "## Testing your own networks with netns_fixtures")[:1]
    assert open(__file__).read().startswith(shown)


def test_the_readmes_first_web_example_runs_as_written(docker, host_ns):  # noqa: F811
    block = _readme_blocks("sh", "## The `pynet` command line")[0]
    lines = [line.split("   #")[0].strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    env = dict(docker.env, PATH=os.path.dirname(PYNET) + os.pathsep + docker.env.get("PATH", os.defpath))
    out = []
    for line in lines:
        # A client may come a moment before httpd listens: a client line is tried again, a few times.
        for _ in range(20 if "curl" in line or "| nc" in line else 1):
            res = host_ns.run(["sh", "-c", line], env=env, timeout=60)
            if res.returncode == 0 and res.stdout.strip():
                break
            time.sleep(0.25)
        assert res.returncode == 0, f"{line!r} failed ({res.returncode}): {res.stderr.decode()}"
        out.append(res.stdout.decode())
    assert lines[0].startswith("pynet net create web") and "wget" not in block
    assert out[2].strip() == "hello from api"                                # curl, through the published port
    assert "HTTP/1.1 200 OK" in out[3] and out[3].rstrip().endswith("hello from api")   # nc, by alias
    [api] = [c for c in json.loads(docker("ps", "--json").out) if c["name"] == "api"]
    assert api["ips"][0] in out[4]                                           # nslookup backend
