"""`make demo` end to end: part 1 brings up two containers on a bridge with the CNI plugins, part 2 runs the
`pynet` command line (networks, launcher with a published port, attach/detach); both tear everything down."""

import glob
import importlib.util
import os
import re
import signal
import subprocess
import sys

import pytest

from netns_fixtures import REFERENCE_PLUGINS, reference_available
from pynet import demo
from pynet.launcher import security

PART1 = ["ping client -> web", "ping web -> client", "ping web -> gateway", "ping client -> gateway",
         "tcp client -> web", "tcp web -> gateway"]
PART2 = ["hostname is the container's own", "PID 1 is httpd",
         "http outside -> host:8080 -> web:80 (mapped port)", "http client -> web", "http host -> 10.89.10.1:8080",
         "attach address: web eth1 10.89.20.", "ping host -> web eth1", "http host -> web eth1",
         "eth1 gone from web after detach", "nothing left: containers none, cgroups none, mounts none, netns pins none"]

needs_plugins = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("cni_plugins.bridge.plugin", "cni_plugins.ipam.host_local", "cni_plugins.portmap.plugin")),
    reason="bridge, host-local or portmap plugin not written yet")
needs_launcher = pytest.mark.skipif(not security.seccomp_available(),
                                    reason="python3-seccomp not installed (the launcher's seccomp profile needs it)")


def ok_line(out: str, label: str) -> bool:
    return any(line.strip().startswith(label) and line.rstrip().endswith(": ok") for line in out.splitlines())


def assert_demo_passed(rc: int, out: str) -> None:
    assert rc == 0, out
    for label in PART1 + PART2:
        assert ok_line(out, label), (label, out)
    assert "hello from web" in out   # the page itself came back through the mapped port
    assert out.rstrip().splitlines()[-1].startswith("demo passed: ")


def assert_nothing_left(pid: int, out: str) -> None:
    assert not [n for n in os.listdir("/run/netns") if n.startswith("pynet-demo-") and f"-{pid}-" in n]
    (tmp,) = re.findall(r"under (/\S*pynet-demo-stack-\S+)", out)
    assert not os.path.exists(tmp)
    container_ids = re.findall(r"^\s+([0-9a-f]{64})$", out, re.M)
    assert len(container_ids) == 2, out
    assert not [d for cid in container_ids for d in glob.glob(f"/sys/fs/cgroup/*/pynet/{cid}")]
    with open("/proc/self/mounts") as fh:
        mounts = fh.read()
    assert tmp not in mounts   # the netns pins the runner made under PYNET_NETNS_DIR
    assert not re.search(rf"/run/netns/pynet-demo-\S+-{pid}-", mounts)


@needs_plugins
@needs_launcher
def test_demo_with_pynet_plugins_passes_and_cleans_up():
    # As `make demo` runs it: a separate process.
    proc = subprocess.Popen([sys.executable, "-m", "pynet.demo"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # SIGINT first: the demo's teardown runs on KeyboardInterrupt
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert_demo_passed(proc.returncode, out)
    assert_nothing_left(proc.pid, out)


@needs_launcher
@pytest.mark.skipif(not reference_available(), reason="reference plugins not installed")
def test_demo_script_itself_works_with_the_reference_plugins(capsys):
    rc = demo.main(["--plugins", REFERENCE_PLUGINS])
    out = capsys.readouterr().out
    assert_demo_passed(rc, out)
    assert_nothing_left(os.getpid(), out)
