"""`podman run --rm --network mynet -p 8080:80 busybox true` with pynet's plugins next to the reference Go
plugins (/usr/lib/cni): same sitting, runs interleaved, medians and the ratio. Nothing asserts a timing.

Each case is its own podman 4.3 instance fenced like the podman tests (tests/podman/harness.py: temp
root/runroot/tmpdir/network-config-dir, cgroupfs, runc, file events, its own cgroup parent) inside its own
sandbox host netns, with podman's conflist shape (bridge -> portmap -> firewall -> tuning):

- "pynet, daemon": the plugin dir is `pynet cni install DIR` (the native shim per plugin) in the temp dir,
  and a `pynet daemon` runs in that sandbox; podman's environment carries PYNET_SOCKET to the plugins.
- "pynet, standalone": the same executables with PYNET_DAEMON=off (the shim execs the Python plugin).
- "reference": /usr/lib/cni.

Run as root: .venv/bin/python bench/podman_bench.py [N]   (N rounds, default 10)
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from netns_fixtures import OUR_PLUGINS, REFERENCE_PLUGINS, Netns, reference_available  # noqa: E402
from netns_fixtures.daemon import start_daemon, stop_daemon  # noqa: E402
from tests.podman.harness import IMAGE, Podman, missing_requirements  # noqa: E402

NET, BRIDGE, SUBNET, GATEWAY = "mynet", "cni-mynet", "10.89.9.0/24", "10.89.9.1"
# The podman tests take this lock too: instances share the caches root podman keeps in /var/lib.
LOCK = "/tmp/pynet-podman-test.lock"


class EnvPodman(Podman):
    """A fenced podman whose plugins also get ``extra`` in their environment (podman passes its own on)."""

    def __init__(self, host: Netns, plugin_dir: str, extra: dict):
        super().__init__(host, plugin_dir)
        self.extra = extra

    def env(self) -> dict:
        return dict(super().env(), **self.extra)


def run_once(pm: Podman) -> float:
    start = time.perf_counter()
    pm("run", "--rm", "--network", NET, "--cgroup-parent", pm.cgroup_parent, "-p", "8080:80", IMAGE, "true",
       timeout=120)
    return (time.perf_counter() - start) * 1000


def served(socket_path: str, pid: int) -> dict:
    """The daemon's request counters (written next to its socket on SIGUSR1)."""
    out = socket_path + ".served"
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not os.path.exists(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    with open(out) as fh:
        return json.load(fh)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    if os.geteuid() != 0:
        raise SystemExit("podman_bench: must run as root")
    reason = missing_requirements()
    if reason:
        raise SystemExit(f"podman_bench needs {reason}")
    if not reference_available():
        raise SystemExit("reference plugins not installed (apt-get install containernetworking-plugins)")
    hosts, instances, daemon = [], {}, None
    with open(LOCK, "w") as lock, tempfile.TemporaryDirectory(prefix="pynet-pmb-", dir="/tmp") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            plugin_dir = os.path.join(tmp, "cni-bin")
            subprocess.run([os.path.join(OUR_PLUGINS, "pynet"), "cni", "install", plugin_dir], check=True,
                           stdout=subprocess.DEVNULL)
            with open(os.path.join(plugin_dir, "bridge"), "rb") as fh:
                door = "the native shim" if fh.read(4) == b"\x7fELF" else "a Python script"
            socket_path = os.path.join(tmp, "pynetd.sock")
            for label, directory, extra in (("pynet, daemon", plugin_dir, {"PYNET_SOCKET": socket_path}),
                                            ("pynet, standalone", plugin_dir, {"PYNET_DAEMON": "off"}),
                                            ("reference", REFERENCE_PLUGINS, {})):
                host = Netns.create("pynb-pm")
                hosts.append(host)
                pm = EnvPodman(host, directory, extra)
                instances[label] = pm
                pm.import_busybox()
                pm.write_conflist(NET, BRIDGE, SUBNET, GATEWAY)
            daemon = start_daemon(instances["pynet, daemon"].host, socket_path)
            for pm in instances.values():   # warm: image, storage, the first network set-up
                run_once(pm)
            samples = {label: [] for label in instances}
            # Interleaved, so load from other processes on this shared machine hits every case alike.
            for _ in range(n):
                for label, pm in instances.items():
                    samples[label].append(run_once(pm))
            counters = served(socket_path, daemon.pid)
        finally:
            if daemon is not None:
                stop_daemon(daemon)
            for pm in instances.values():
                notes = pm.teardown()
                if notes:
                    print(f"teardown: {notes}", file=sys.stderr)
            for host in hosts:
                host.remove()
    medians = {label: statistics.median(v) for label, v in samples.items()}
    print(f"podman run --rm --network {NET} -p 8080:80 busybox true (n={n}, interleaved; plugins: ours = {door})")
    for label, ms in medians.items():
        print(f"  {label:20s} median {ms:7.1f} ms  min {min(samples[label]):7.1f} ms")
    ref = medians["reference"]
    print("  ratio to reference: " + ", ".join(f"{medians[k] / ref:.2f} ({k})" for k in medians if k != "reference"))
    print(f"  requests the daemon served (warm-up included): {counters}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
