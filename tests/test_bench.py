"""The benchmark script stays runnable: its smallest scenarios, once each, print the comparison table."""

import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "bench.py")


def test_bench_prints_a_row_per_scenario_and_cleans_up():
    proc = subprocess.Popen([sys.executable, BENCH, "--quick", "--only", "version,loopback", "--repeat", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].split() == ["scenario", "ours", "standalone", "ours", "daemon", "reference", "standalone/ref",
                                "daemon/ref"]
    rows = {line.split("  ")[0].strip(): line for line in lines[2:]}
    assert set(rows) >= {"VERSION", "loopback ADD"}, stdout
    assert "error" not in stdout
    # Only this run's namespaces (named after its pid): other processes may be benchmarking too.
    assert not [n for n in os.listdir("/run/netns") if n.startswith("pynb-") and f"-{proc.pid}-" in n]
