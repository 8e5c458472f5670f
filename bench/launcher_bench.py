"""`pynet run --rm busybox true` end to end against runc with an equivalent bundle (same busybox rootfs,
new mount/uts/ipc/pid/net namespaces, no network attached). Prints medians and the ratios.

Three ways into the same launcher code: the `pynet` console script, ``python -m pynet.launcher``, and the
lean `pynet` script (``-IS``, no site) that pynet.launcher.entry.write_script makes.

Run as root: .venv/bin/python bench/launcher_bench.py [N] [--net]
Everything runs inside a throwaway network namespace; image store, state and bundle live in a temp dir.
--net adds `pynet run --rm busybox true` on the default bridge network (created in that namespace, leases
in the temp dir; the plugins use a running `pynet daemon` when PYNET_SOCKET or the default socket has one).
"via daemon" starts a `pynet daemon` in the namespace (socket in the temp dir) and runs the lean script
against it: the thin client of pynet/launcher/remote.py, the container launched by the daemon's zygote
(pynet/launcher/zygote.py: a spare launcher with the container's cgroups and first stage made in advance).
The other rows run with PYNET_DAEMON=off, so they measure the local launcher whatever else is running.
"""

from __future__ import annotations

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
from pynet.launcher.entry import write_script  # noqa: E402

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
    args = [a for a in sys.argv[1:] if a != "--net"]
    n = int(args[0]) if args else 30
    with_net = "--net" in sys.argv[1:]
    if not os.path.exists(RUNC):
        raise SystemExit("runc not installed (apt-get install runc)")
    with tempfile.TemporaryDirectory(prefix="pynet-bench-") as tmp, Netns.create("pynet-bench") as ns:
        env = dict(os.environ, PYNET_ROOT=os.path.join(tmp, "root"), PYNET_STATE=os.path.join(tmp, "state"))
        local = dict(env, PYNET_DAEMON="off")
        daemon_env = dict(env, PYNET_SOCKET=os.path.join(tmp, "pynetd.sock"))
        os.environ["PYNET_ROOT"] = env["PYNET_ROOT"]
        image = images.build_busybox()
        bundle = runc_bundle(tmp, images.layer_path(image["layers"][0]))
        lean = write_script(os.path.join(tmp, "pynet"))
        cases = {
            "pynet run (full CLI)": [os.path.join(VENV_BIN, "pynet"), "run", "--rm", "--net", "none", "busybox", "true"],
            "python -m pynet.launcher run": [os.path.join(VENV_BIN, "python"), "-m", "pynet.launcher", "run", "--rm",
                                            "--net", "none", "busybox", "true"],
            "lean script (-IS)": [lean, "run", "--rm", "--net", "none", "busybox", "true"],
            "runc run": [RUNC, "--root", os.path.join(tmp, "runc-state"), "run", "-b", bundle, f"pynet-bench-runc-{os.getpid()}"],
            "pynet run via daemon (lean)": [lean, "run", "--rm", "--net", "none", "busybox", "true"],
        }
        envs = {name: local for name in cases}
        envs["pynet run via daemon (lean)"] = daemon_env
        if with_net:
            for key, sub in (("PYNET_CONFIG_DIR", "net.d"), ("PYNET_CACHE_DIR", "cache"), ("PYNET_NETNS_DIR", "netns"),
                             ("PYNET_DEFAULT_DATA_DIR", "leases")):
                env[key] = os.path.join(tmp, sub)
                os.makedirs(env[key], exist_ok=True)
            cases["pynet run, default network"] = [os.path.join(VENV_BIN, "pynet"), "run", "--rm", "--dns", "127.0.0.1",
                                                   "busybox", "true"]
            envs["pynet run, default network"] = env
        daemon = start_daemon(ns, daemon_env["PYNET_SOCKET"], "--containers", env=daemon_env)
        try:
            for name, argv in cases.items():
                timed(ns, argv, envs[name], 2)   # warm caches
            # Interleaved, so load from other processes on this shared machine hits every case alike.
            samples = {name: [] for name in cases}
            for _ in range(n):
                for name, argv in cases.items():
                    samples[name] += timed(ns, argv, envs[name], 1)
        finally:
            stop_daemon(daemon)
        results = {name: statistics.median(v) for name, v in samples.items()}
        for name, ms in results.items():
            print(f"{name:32s} median {ms:7.1f} ms  min {min(samples[name]):7.1f} ms  (n={n})")
        base = results["runc run"]
        print(f"ratio pynet/runc: {results['pynet run (full CLI)'] / base:.2f} (full CLI), "
              f"{results['python -m pynet.launcher run'] / base:.2f} (launcher entry point), "
              f"{results['lean script (-IS)'] / base:.2f} (lean script), "
              f"{results['pynet run via daemon (lean)'] / base:.2f} (via daemon)")


if __name__ == "__main__":
    main()
