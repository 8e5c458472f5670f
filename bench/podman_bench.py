"""`podman run --rm --network mynet -p 8080:80 busybox true` with pynet's plugins next to the reference Go
plugins (/usr/lib/cni): same sitting, runs interleaved, medians and the ratio. Nothing asserts a timing.

Each case is its own podman 4.3 instance fenced like the podman tests (tests/podman/harness.py: temp
root/runroot/tmpdir/network-config-dir, cgroupfs, runc, file events, its own cgroup parent) inside its own
sandbox host netns, with podman's conflist shape (bridge -> portmap -> firewall -> tuning):

- "pynet, daemon": the plugin dir is `pynet cni install DIR` (the native shim per plugin) in the temp dir,
  and a `pynet daemon` runs in that sandbox on the default socket /run/pynet/pynetd.sock, as after
  `pynet daemon install`. Podman's DEL comes from `podman container cleanup`, which conmon starts with a
  bare environment (no PYNET_SOCKET), so the socket must be at the default path: the daemon and this
  case's podman commands share a private mount namespace in which a temp dir is bind-mounted on
  /run/pynet (an empty /run/pynet is made for the mount point if missing, and removed afterwards).
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
from netns_fixtures.daemon import stop_daemon  # noqa: E402
from tests.podman.harness import IMAGE, Podman, missing_requirements  # noqa: E402

NET, BRIDGE, SUBNET, GATEWAY = "mynet", "cni-mynet", "10.89.9.0/24", "10.89.9.1"
# The podman tests take this lock too: instances share the caches root podman keeps in /var/lib.
LOCK = "/tmp/pynet-podman-test.lock"


class EnvPodman(Podman):
    """A fenced podman whose plugins also get ``extra`` in their environment (podman passes its own on),
    run in the mount namespace of process ``mount_ns_of`` when given."""

    def __init__(self, host: Netns, plugin_dir: str, extra: dict):
        super().__init__(host, plugin_dir)
        self.extra = extra
        self.mount_ns_of: int | None = None

    def env(self) -> dict:
        return dict(super().env(), **self.extra)

    def argv(self, *args) -> list[str]:
        inner = super().argv(*args)
        return ["nsenter", f"--mount=/proc/{self.mount_ns_of}/ns/mnt", "--", *inner] if self.mount_ns_of else inner


def start_default_socket_daemon(host: Netns, socket_dir: str):
    """`pynet daemon` on /run/pynet/pynetd.sock inside a private mount namespace where ``socket_dir`` is
    bind-mounted on /run/pynet (so the socket file is ``socket_dir``/pynetd.sock from outside). The
    daemon's PID is the namespace's holder."""
    os.makedirs(socket_dir, mode=0o700)
    script = 'mount --bind "$1" /run/pynet && exec "$2" daemon --socket /run/pynet/pynetd.sock'
    proc = host.popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", socket_dir,
                       os.path.join(OUR_PLUGINS, "pynet")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(socket_dir, "pynetd.sock")):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_daemon(proc)
            raise SystemExit(f"pynet daemon did not start: {proc.stderr.read().decode(errors='replace')}")
        time.sleep(0.05)
    return proc


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
    made_run_dir = not os.path.exists("/run/pynet")
    with open(LOCK, "w") as lock, tempfile.TemporaryDirectory(prefix="pynet-pmb-", dir="/tmp") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if made_run_dir:
                os.mkdir("/run/pynet", 0o700)   # only the mount point; the socket is in the private namespace
            plugin_dir = os.path.join(tmp, "cni-bin")
            subprocess.run([os.path.join(OUR_PLUGINS, "pynet"), "cni", "install", plugin_dir], check=True,
                           stdout=subprocess.DEVNULL)
            with open(os.path.join(plugin_dir, "bridge"), "rb") as fh:
                door = "the native shim" if fh.read(4) == b"\x7fELF" else "a Python script"
            socket_dir = os.path.join(tmp, "run-pynet")
            for label, directory, extra in (("pynet, daemon", plugin_dir, {}),
                                            ("pynet, standalone", plugin_dir, {"PYNET_DAEMON": "off"}),
                                            ("reference", REFERENCE_PLUGINS, {})):
                host = Netns.create("pynb-pm")
                hosts.append(host)
                pm = EnvPodman(host, directory, extra)
                instances[label] = pm
                pm.import_busybox()
                pm.write_conflist(NET, BRIDGE, SUBNET, GATEWAY)
            daemon = start_default_socket_daemon(instances["pynet, daemon"].host, socket_dir)
            instances["pynet, daemon"].mount_ns_of = daemon.pid
            for pm in instances.values():   # warm: image, storage, the first network set-up
                run_once(pm)
            samples = {label: [] for label in instances}
            # Interleaved, so load from other processes on this shared machine hits every case alike.
            for _ in range(n):
                for label, pm in instances.items():
                    samples[label].append(run_once(pm))
            counters = served(os.path.join(socket_dir, "pynetd.sock"), daemon.pid)
        finally:
            for pm in instances.values():   # while the daemon holds the private mount namespace
                notes = pm.teardown()
                if notes:
                    print(f"teardown: {notes}", file=sys.stderr)
            if daemon is not None:
                stop_daemon(daemon)
            for host in hosts:
                host.remove()
            if made_run_dir:
                try:
                    os.rmdir("/run/pynet")
                except OSError as exc:   # something else put a file there meanwhile: not ours to remove
                    print(f"left /run/pynet: {exc.strerror}", file=sys.stderr)
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
