"""`pynet run --rm busybox true` end to end against `runc run` of a bundle from `runc spec` (the same
busybox rootfs as a plain directory, new mount/uts/ipc/pid/net/cgroup namespaces, no network attached, no
seccomp filter: pynet's runs also load its default seccomp profile and mount an overlay). Prints medians
and the ratios.

`pynet-oci run` runs the runc bundle itself (bundle -> exit, same config.json); `podman run --rm
--network none busybox true` runs once with `--runtime pynet-oci` and once with `--runtime runc` (podman
fenced into the temp dir as tests/podman/harness.py fences it). --oci measures only those four rows.

Run as root: .venv/bin/python bench/launcher_bench.py [N] [--net] [--oci] [--only TEXT]
(--only: just the rows whose name holds TEXT, and runc's)
The `pynet` measured is the installed one (.venv/bin/pynet, the lean script that scripts/install.sh
writes). Everything runs inside a throwaway network namespace; image store, state, leases and the bundle
live in a temp dir. "local" rows run with PYNET_DAEMON=off (the launcher in the command's own process);
"via daemon" rows reach a `pynet daemon --containers` started in the namespace (socket in the temp dir):
the thin client of pynet/launcher/remote.py, the container launched by the daemon's zygote
(pynet/launcher/zygote.py: a spare launcher with the container's cgroups, namespaces and PID 1 made in
advance). --net adds the same on the default bridge network, whose plugins (ours) the launcher runs in
its own process (loaded ahead by the zygote in the "via daemon" row, whose spare also attaches ahead to the
default network as far as the chain needs nothing from the run, pynet/launcher/warm.py; while the container
is being built in the "local" one), and `pynet run --rm -p 18080:80 busybox true` on it (portmap too), and
the latter on a bridge network without DNS (`net create --disable-dns`); runc has no network there, so those rows compare a
networked pynet run with a bare runc.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from netns_fixtures import Netns  # noqa: E402
from netns_fixtures.daemon import start_daemon, stop_daemon  # noqa: E402
from pynet.launcher import images  # noqa: E402
from pynet.oci.runtime import default_cgroup_parents, remove_default_cgroup_parents, seccomp_cache  # noqa: E402
from tests.podman.harness import OCI_DEFAULT_ROOT, missing_requirements as podman_missing, podman_with_runtime  # noqa: E402

RUNC = shutil.which("runc") or "/usr/sbin/runc"
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def timed(ns: Netns, argv, env, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = ns.run(argv, env=env)
        out.append((time.perf_counter() - t0) * 1000)
        if res.returncode != 0:
            raise SystemExit(f"{argv[0]} failed: {res.stderr.decode()[-2000:]}")
    return out


def runc_bundle(tmp: str, layer: str) -> str:
    bundle = os.path.join(tmp, "bundle")
    os.makedirs(bundle)
    shutil.copytree(layer, os.path.join(bundle, "rootfs"), symlinks=True)
    subprocess.run([RUNC, "spec"], cwd=bundle, check=True)
    with open(os.path.join(bundle, "config.json")) as fh:
        spec = json.load(fh)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    spec["root"]["readonly"] = False
    with open(os.path.join(bundle, "config.json"), "w") as fh:
        json.dump(spec, fh)
    return bundle


def main() -> None:
    argv = sys.argv[1:]
    only = None
    if "--only" in argv:
        at = argv.index("--only")
        only = argv[at + 1]
        del argv[at:at + 2]
    args = [a for a in argv if a not in ("--net", "--oci")]
    n = int(args[0]) if args else 30
    with_net = "--net" in sys.argv[1:]
    only_oci = "--oci" in sys.argv[1:]
    if not os.path.exists(RUNC):
        raise SystemExit("runc not installed (apt-get install runc)")
    if not default_cgroup_parents():   # pynet-oci keeps the parent it makes; a benchmark leaves nothing
        atexit.register(remove_default_cgroup_parents)
    with tempfile.TemporaryDirectory(prefix="pynet-bench-") as tmp, Netns.create("pynet-bench") as ns:
        env = dict(os.environ, PYNET_ROOT=os.path.join(tmp, "root"), PYNET_STATE=os.path.join(tmp, "state"))
        local = dict(env, PYNET_DAEMON="off")
        daemon_env = dict(env, PYNET_SOCKET=os.path.join(tmp, "pynetd.sock"))
        os.environ["PYNET_ROOT"] = env["PYNET_ROOT"]
        image = images.build_busybox()
        bundle = runc_bundle(tmp, images.layer_path(image["layers"][0]))
        pynet = os.path.join(VENV_BIN, "pynet")
        bare = [pynet, "run", "--rm", "--net", "none", "busybox", "true"]
        cases = {
            "runc run": [RUNC, "--root", os.path.join(tmp, "runc-state"), "run", "-b", bundle, f"pynet-bench-runc-{os.getpid()}"],
            "pynet-oci run": [os.path.join(VENV_BIN, "pynet-oci"), "--root", os.path.join(tmp, "oci-state"), "run", "-b",
                              bundle, f"pynet-bench-oci-{os.getpid()}"],
            "pynet run, local": bare,
            "pynet run, via daemon": bare,
        }
        envs = {"runc run": local, "pynet-oci run": local, "pynet run, local": local, "pynet run, via daemon": daemon_env}
        if with_net:
            for key, sub in (("PYNET_CONFIG_DIR", "net.d"), ("PYNET_CACHE_DIR", "cache"), ("PYNET_NETNS_DIR", "netns"),
                             ("PYNET_DEFAULT_DATA_DIR", "leases")):
                for e in (local, daemon_env):
                    e[key] = os.path.join(tmp, sub)
                os.makedirs(local[key], exist_ok=True)
            networked = [pynet, "run", "--rm", "--dns", "127.0.0.1", "busybox", "true"]
            cases["pynet run --net default, local"] = networked
            envs["pynet run --net default, local"] = local
            cases["pynet run --net default, via daemon"] = networked
            envs["pynet run --net default, via daemon"] = daemon_env
            # A published port: portmap's DNAT rules (and their removal) on top of the bridge network.
            published = [pynet, "run", "--rm", "--dns", "127.0.0.1", "-p", "18080:80", "busybox", "true"]
            for where, e in (("local", local), ("via daemon", daemon_env)):
                cases[f"pynet run -p 18080:80 (bridge), {where}"] = published
                envs[f"pynet run -p 18080:80 (bridge), {where}"] = e
            # The same on a bridge network without the dnsname plugin (whose resolver starts with the first
            # container of a network and stops with the last: each run here pays for a resolver start).
            subprocess.run([pynet, "net", "create", "nodns", "--disable-dns"], env=local, check=True,
                           stdout=subprocess.DEVNULL)
            cases["pynet run --net nodns -p 18080:80, via daemon"] = [
                pynet, "run", "--rm", "--dns", "127.0.0.1", "--net", "nodns", "-p", "18080:80", "busybox", "true"]
            envs["pynet run --net nodns -p 18080:80, via daemon"] = daemon_env
        if only_oci:
            cases = {k: v for k, v in cases.items() if k in ("runc run", "pynet-oci run")}
        if only:
            cases = {k: v for k, v in cases.items() if k == "runc run" or only in k}
        with contextlib.ExitStack() as stack:
            if only is not None and "podman" not in only:
                pass
            elif podman_missing() is None:
                os.makedirs(os.path.join(tmp, "no-plugins"))
                pm = stack.enter_context(podman_with_runtime(ns, os.path.join(tmp, "no-plugins"), "runc"))
                podman = pm.argv("run", "--rm", "--network", "none", "--cgroup-parent", pm.cgroup_parent,
                                 "pynet-busybox", "true")
                oci = os.path.join(VENV_BIN, "pynet-oci")
                cache = seccomp_cache(OCI_DEFAULT_ROOT)   # podman's containers are in the default root
                if not os.path.exists(cache):
                    stack.callback(shutil.rmtree, cache, ignore_errors=True)
                cases["podman run --runtime runc"] = podman
                cases["podman run --runtime pynet-oci"] = [oci if a == "runc" else a for a in podman]
                envs["podman run --runtime runc"] = envs["podman run --runtime pynet-oci"] = pm.env()
            else:
                print(f"podman rows skipped: {podman_missing()}")
            try:
                results, samples = measure(ns, cases, envs, n, daemon_env, with_daemon=not only_oci)
            finally:
                if with_net:   # the last run's DEL (after its reply) must be done before the temp dir goes
                    from pynet.launcher.network import wait_pending_detaches

                    wait_pending_detaches(local["PYNET_CACHE_DIR"])
        for name, ms in results.items():
            print(f"{name:44s} median {ms:7.1f} ms  min {min(samples[name]):7.1f} ms  (n={n})")
        base = results["runc run"]
        print("ratio pynet/runc: " + ", ".join(f"{results[name] / base:.2f} ({name})"
                                               for name in results if name != "runc run" and "podman" not in name))
        if "podman run --runtime runc" in results:
            print(f"ratio podman --runtime pynet-oci / runc: "
                  f"{results['podman run --runtime pynet-oci'] / results['podman run --runtime runc']:.2f}")


def measure(ns: Netns, cases: dict, envs: dict, n: int, daemon_env: dict, with_daemon: bool):
    """(medians, samples) of every case, interleaved."""
    daemon = start_daemon(ns, daemon_env["PYNET_SOCKET"], "--containers", env=daemon_env) if with_daemon else None
    try:
        for name, argv in cases.items():
            timed(ns, argv, envs[name], 2)   # warm caches
        # Interleaved, so load from other processes on this shared machine hits every case alike.
        samples = {name: [] for name in cases}
        for _ in range(n):
            for name, argv in cases.items():
                samples[name] += timed(ns, argv, envs[name], 1)
    finally:
        if daemon is not None:
            stop_daemon(daemon)
    return {name: statistics.median(v) for name, v in samples.items()}, samples


if __name__ == "__main__":
    main()
