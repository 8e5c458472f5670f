"""`make demo` end to end: the demo module brings up two containers on a bridge and tears them down."""

import importlib.util
import os
import signal
import subprocess
import sys

import pytest

from netns_fixtures import REFERENCE_PLUGINS, reference_available
from pynet import demo

REACHABILITY = ["ping client -> web", "ping web -> client", "ping web -> gateway", "ping client -> gateway",
                "tcp client -> web", "tcp web -> gateway"]


def assert_demo_passed(rc: int, out: str) -> None:
    assert rc == 0, out
    for label in REACHABILITY:
        assert any(line.strip().startswith(label) and line.rstrip().endswith(": ok") for line in out.splitlines()), \
            (label, out)
    assert "demo passed" in out


def leftover_demo_namespaces(pid: int) -> list[str]:
    return [n for n in os.listdir("/run/netns") if n.startswith("pynet-demo-") and f"-{pid}-" in n]


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("bridge.plugin", "ipam.host_local")),
                    reason="bridge or host-local plugin not written yet")
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
    assert not leftover_demo_namespaces(proc.pid)


@pytest.mark.skipif(not reference_available(), reason="reference plugins not installed")
def test_demo_script_itself_works_with_the_reference_plugins(capsys):
    rc = demo.main(["--plugins", REFERENCE_PLUGINS])
    assert_demo_passed(rc, capsys.readouterr().out)
    assert not leftover_demo_namespaces(os.getpid())
