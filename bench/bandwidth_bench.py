"""Traffic shaping measured: iperf3 throughput through pynet's bandwidth plugin and the reference's, side by
side, against the configured rates.

Everything happens in namespaces this script creates: a sandbox "host" netns with a bridge, an "outside"
namespace on that bridge (running the iperf3 server), and one container per implementation, each attached
with our bridge then a bandwidth plugin (ours, or the reference's from /usr/lib/cni) with the same config.
iperf3 runs from the container towards the outside (egress: traffic from the container) and in reverse
(ingress: traffic towards the container), each for a bounded time. The server is stopped by PID and every
namespace, lease directory and link is removed at the end, also on failure. Nothing here asserts a number.

    .venv/bin/python bench/bandwidth_bench.py                       # 20 Mbit/s in, 10 Mbit/s out, 5 s runs
    .venv/bin/python bench/bandwidth_bench.py --ingress 50 --egress 5 --seconds 3

iperf3 is not installed by scripts/install.sh: `apt-get install iperf3`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netns_fixtures import CNI, OUR_PLUGINS, REFERENCE_PLUGINS, Netns, reference_available  # noqa: E402

SUBNET = "10.97.0.0/24"
PORT = 5201
MBIT = 1_000_000


def conflist(data_dir: str, ingress_mbit: float, egress_mbit: float, burst_kbit: int) -> dict:
    burst = burst_kbit * 1000
    return {"cniVersion": "1.0.0", "name": "bwbench", "plugins": [
        {"type": "bridge", "bridge": "bwbench0", "isGateway": True,
         "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": SUBNET}]]}},
        {"type": "bandwidth", "ingressRate": int(ingress_mbit * MBIT), "ingressBurst": burst,
         "egressRate": int(egress_mbit * MBIT), "egressBurst": burst}]}


def plugin_dir(tmp: str, label: str, bandwidth_dir: str) -> str:
    """Our bridge and host-local with the bandwidth plugin of ``bandwidth_dir``."""
    d = os.path.join(tmp, f"plugins-{label}")
    os.mkdir(d)
    for name in ("bridge", "host-local"):
        os.symlink(os.path.join(OUR_PLUGINS, name), os.path.join(d, name))
    os.symlink(os.path.join(bandwidth_dir, "bandwidth"), os.path.join(d, "bandwidth"))
    return d


def iperf(ctr: Netns, server_ip: str, seconds: int, reverse: bool, attempts: int = 10) -> float:
    """Received throughput in bit/s of one bounded iperf3 TCP run from ``ctr`` (reverse: server sends).

    A run that cannot start is tried again after a moment: the server may not listen yet, or may still be
    closing the previous run (it serves one at a time and turns others away)."""
    argv = ["iperf3", "-c", server_ip, "-p", str(PORT), "-t", str(seconds), "-J"]
    if reverse:
        argv.append("-R")
    error = ""
    for _ in range(attempts):
        proc = ctr.run(argv, timeout=seconds + 20)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            report = {"error": proc.stderr.decode(errors="replace")[-500:] or "no output"}
        if "error" not in report:
            return report["end"]["sum_received"]["bits_per_second"]
        error = report["error"]
        time.sleep(0.5)
    raise RuntimeError(f"iperf3: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingress", type=float, default=20, help="ingressRate in Mbit/s (default 20)")
    parser.add_argument("--egress", type=float, default=10, help="egressRate in Mbit/s (default 10)")
    parser.add_argument("--burst", type=int, default=512, help="both bursts in kbit (default 512)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run (default 5)")
    args = parser.parse_args()

    if shutil.which("iperf3") is None:
        print("iperf3 is not installed; install it with: apt-get install iperf3", file=sys.stderr)
        return 2
    impls = [("ours", OUR_PLUGINS)]
    if reference_available():
        impls.append(("reference", REFERENCE_PLUGINS))
    else:
        print("reference plugins not in /usr/lib/cni: measuring ours only", file=sys.stderr)

    made: list[Netns] = []
    server = None
    attached: list[tuple[CNI, dict, object, str, dict]] = []
    tmp = tempfile.mkdtemp(prefix="pynet-bwbench-")
    try:
        host = Netns.create("pynbw-h")
        made.append(host)
        conf = conflist(os.path.join(tmp, "ipam"), args.ingress, args.egress, args.burst)
        plain = dict(conf, plugins=conf["plugins"][:1])
        outside = Netns.create("pynbw-o")
        made.append(outside)
        ours = CNI(host, OUR_PLUGINS)
        result = ours.add_chain(plain, outside, container_id="bwbench-outside")
        attached.append((ours, plain, outside, "bwbench-outside", result))
        server_ip = result["ips"][0]["address"].split("/")[0]
        server = outside.popen(["iperf3", "-s", "-B", server_ip, "-p", str(PORT)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        measured: dict[str, dict[str, float]] = {}
        for label, directory in impls:
            cni = CNI(host, plugin_dir(tmp, label, directory))
            ctr = Netns.create(f"pynbw-{label[:3]}")
            made.append(ctr)
            cid = f"bwbench-{label}"
            result = cni.add_chain(conf, ctr, container_id=cid)
            attached.append((cni, conf, ctr, cid, result))
            measured[label] = {"egress": iperf(ctr, server_ip, args.seconds, reverse=False),
                               "ingress": iperf(ctr, server_ip, args.seconds, reverse=True)}

        head = f"{'direction':<9} {'configured':>11}"
        for label, _ in impls:
            head += f" {label + ' Mbit/s':>17} {label + '/conf':>15}"
        print(head)
        print("-" * len(head))
        for direction, rate in (("ingress", args.ingress), ("egress", args.egress)):
            line = f"{direction:<9} {rate:>11.2f}"
            for label, _ in impls:
                got = measured[label][direction] / MBIT
                line += f" {got:>17.2f} {got / rate:>15.3f}"
            print(line)
        return 0
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        for cni, c, ns, cid, result in reversed(attached):
            try:
                cni.del_chain(c, ns, result, container_id=cid)
            except Exception as exc:
                print(f"cleanup: DEL of {cid} failed: {exc}", file=sys.stderr)
        for ns in reversed(made):
            ns.remove()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
