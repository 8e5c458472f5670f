"""pynet's plugins next to the reference Go plugins (/usr/lib/cni), scenario by scenario.

Every scenario runs once per implementation in its own sandbox "host" netns with its own container
namespaces and host-local dataDir (a temp dir); all of it is removed afterwards, also on failure. The
plugins are run as a runtime runs them (executables, minimal environment), timed around the process.
Numbers are medians unless the scenario says wall time; the latency rows (VERSION to chain DEL) take one
sample of each implementation in turn. Nothing here asserts a timing.

    .venv/bin/python bench/bench.py            # the issue's scenario sizes (~10 minutes)
    .venv/bin/python bench/bench.py --quick    # small sizes, a minute or so
"""

from __future__ import annotations

import argparse
import json
import concurrent.futures
import contextlib
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netns_fixtures import CNI, OUR_PLUGINS, REFERENCE_PLUGINS, Netns, reference_available  # noqa: E402
from netns_fixtures.daemon import start_daemon, stop_daemon  # noqa: E402

SUBNET = "10.90.0.0/21"  # room for the largest population plus probes and the parallel batch
LOOPBACK = {"cniVersion": "1.0.0", "name": "bench-lo", "type": "loopback"}
# Like a podman network: a masquerading gateway bridge with host-local IPAM.
BRIDGE = {"type": "bridge", "bridge": "bench0", "isGateway": True, "ipMasq": True, "hairpinMode": True}
# Modules a scenario needs from pynet; a missing one means "not implemented (yet)".
NEEDS = {
    "bridge": ("cni_plugins.bridge.plugin", "cni_plugins.ipam.host_local"),
    "chain": ("cni_plugins.bridge.plugin", "cni_plugins.ipam.host_local", "cni_plugins.portmap.plugin", "cni_plugins.firewall.plugin"),
}
# GNU time reports the peak RSS of the process it runs; being small C, its own pre-exec image does not
# mask the plugin's (a Python wrapper's would: maxrss keeps the forked image's high-water mark).
TIME = "/usr/bin/time"


class Skipped(Exception):
    pass


@dataclass
class Impl:
    label: str
    plugin_dir: str
    check_modules: bool  # pynet's own: a scenario is skipped when its modules are not written yet
    daemon: bool = False  # pynet's plugins reaching a resident daemon (started inside the sandbox)

    def require(self, scenario: str) -> None:
        if self.check_modules:
            missing = [m for m in NEEDS.get(scenario, ()) if importlib.util.find_spec(m) is None]
            if missing:
                raise Skipped("not implemented")


@dataclass
class Sandbox:
    """One sandbox host with its containers and IPAM data; everything goes when the sandbox closes."""
    impl: Impl
    host: Netns
    data_dir: str
    containers: list[Netns] = field(default_factory=list)
    daemon: subprocess.Popen | None = None
    daemon_socket: str = ""

    @property
    def cni(self) -> CNI:
        extra = {"PYNET_SOCKET": self.daemon_socket} if self.daemon_socket else {"PYNET_DAEMON": "off"}
        return CNI(self.host, self.impl.plugin_dir, extra_env=extra)

    def daemon_rss_mib(self) -> float:
        with open(f"/proc/{self.daemon.pid}/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kib / 1024

    def container(self) -> Netns:
        ns = Netns.create("pynb-c", lo_up=False)
        self.containers.append(ns)
        return ns

    def bridge_conflist(self) -> dict:
        return {"cniVersion": "1.0.0", "name": "bench", "plugins": [self._bridge()]}

    def chain_conflist(self) -> dict:
        return {"cniVersion": "1.0.0", "name": "bench", "plugins": [
            self._bridge(),
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
        ]}

    def _bridge(self) -> dict:
        return dict(BRIDGE, ipam={"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.data_dir})


@contextlib.contextmanager
def sandbox(impl: Impl):
    host = Netns.create("pynb-h")
    box = None
    try:
        with tempfile.TemporaryDirectory(prefix="pynet-bench-") as data_dir:
            box = Sandbox(impl, host, data_dir)
            if impl.daemon:
                start_box_daemon(box)
            yield box
    finally:
        if box and box.daemon:
            stop_daemon(box.daemon)  # our own child, by PID
        for ns in box.containers if box else ():
            ns.remove()
        host.remove()


def start_box_daemon(box: Sandbox) -> None:
    """`pynet daemon` inside the sandbox host netns, listening on a socket in the sandbox's temp dir."""
    box.daemon_socket = os.path.join(box.data_dir, "pynetd.sock")
    box.daemon = start_daemon(box.host, box.daemon_socket)


def port_mappings(index: int) -> dict:
    base = 20000 + 2 * index
    return {"portMappings": [{"hostPort": base, "containerPort": 80, "protocol": "tcp"},
                             {"hostPort": base + 1, "containerPort": 443, "protocol": "tcp"}]}


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - start) * 1000


def children_cpu_ms() -> float:
    """User+sys CPU of this process's reaped children (plugins and their delegates), in ms: what a plugin
    call costs the machine, which load from other processes disturbs less than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def timed_cpu(fn, *args, **kwargs) -> tuple[float, float]:
    """(wall ms, children's CPU ms) of one call; the latency scenarios run their plugins one at a time."""
    cpu = children_cpu_ms()
    wall = timed(fn, *args, **kwargs)
    return wall, children_cpu_ms() - cpu


# -- scenarios: each returns (value, unit) for one implementation ------------------------------------

def s_version(box: Sandbox, opts) -> tuple[float, str]:
    cni = box.cni
    return statistics.median(timed(cni.version, "loopback") for _ in range(opts.repeat)), "ms"


def s_loopback_add(box: Sandbox, opts):
    cni, ns = box.cni, box.container()
    walls, cpus = zip(*(timed_cpu(cni.add, "loopback", LOOPBACK, ns) for _ in range(opts.repeat)))
    return (statistics.median(walls), "ms"), (statistics.median(cpus), "ms")


def _add_del(box: Sandbox, opts, conflist: dict, caps: bool):
    """(ADD wall ms, DEL wall ms, ADD CPU ms) per sample."""
    cni = box.cni
    adds, dels, cpus = [], [], []
    first = getattr(opts, "offset", 0)   # the round, when interleaved: IDs and ports differ per round
    for i in range(first, first + opts.repeat):
        # A netns per container, as runtimes do: the daemon finishes a DEL's link teardown after its reply,
        # serialized only with later requests for the same container ID.
        ns = box.container()
        kw = {"container_id": f"bench-{i}", "capability_args": port_mappings(i) if caps else None}
        cpu, start = children_cpu_ms(), time.perf_counter()
        result = cni.add_chain(conflist, ns, **kw)
        adds.append((time.perf_counter() - start) * 1000)
        cpus.append(children_cpu_ms() - cpu)
        dels.append(timed(cni.del_chain, conflist, ns, result, **kw))
    return adds, dels, cpus


def s_bridge(box: Sandbox, opts):
    box.impl.require("bridge")
    adds, dels, cpus = _add_del(box, opts, box.bridge_conflist(), caps=False)
    return (statistics.median(adds), "ms"), (statistics.median(dels), "ms"), (statistics.median(cpus), "ms")


def s_chain(box: Sandbox, opts):
    box.impl.require("chain")
    adds, dels, cpus = _add_del(box, opts, box.chain_conflist(), caps=True)
    return (statistics.median(adds), "ms"), (statistics.median(dels), "ms"), (statistics.median(cpus), "ms")


def s_parallel(box: Sandbox, opts):
    """Wall time of N chain ADDs on W workers, then of their N DELs."""
    box.impl.require("chain")
    cni, conflist = box.cni, box.chain_conflist()
    targets = [(i, box.container()) for i in range(opts.parallel)]
    # One ADD first, untimed: the first attachment creates the host's shared tables/chains, and the
    # reference portmap fails when several processes race to create its top-level iptables chains.
    cni.add_chain(conflist, box.container(), container_id="par-warmup", capability_args=port_mappings(opts.parallel))
    results = {}

    def add(item):
        i, ns = item
        results[i] = cni.add_chain(conflist, ns, container_id=f"par-{i}", capability_args=port_mappings(i))

    def delete(item):
        i, ns = item
        cni.del_chain(conflist, ns, results[i], container_id=f"par-{i}", capability_args=port_mappings(i))

    walls = []
    for step in (add, delete):
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(opts.workers) as pool:
            list(pool.map(step, targets))  # re-raises the first failure
        walls.append((time.perf_counter() - start, "s"))
    return walls


def s_scale(box: Sandbox, opts) -> list[tuple[float, str]]:
    """Chain ADD latency with N containers (two port mappings each) already attached, for each N."""
    box.impl.require("chain")
    cni, conflist = box.cni, box.chain_conflist()
    attached = 0
    out = []

    def attach(i):
        cni.add_chain(conflist, box_containers[i], container_id=f"pop-{i}", capability_args=port_mappings(i))

    box_containers: dict[int, Netns] = {}
    for target in opts.counts:
        todo = list(range(attached, target))
        for i in todo:
            box_containers[i] = box.container()
        if todo and attached == 0:  # the first ADD alone: it creates the shared tables (see s_parallel)
            attach(todo.pop(0))
        with concurrent.futures.ThreadPoolExecutor(opts.populate_workers) as pool:
            list(pool.map(attach, todo))
        attached = target
        samples = []
        for _ in range(opts.probes):  # the probes stay attached: N, N+1, ... N+probes-1 present
            box_containers[attached] = box.container()
            start = time.perf_counter()
            attach(attached)
            samples.append((time.perf_counter() - start) * 1000)
            attached += 1
        out.append((statistics.median(samples), "ms"))
        print(f"    {box.impl.label}: {target} containers attached, probe ADD median {out[-1][0]:.0f} ms",
              file=sys.stderr, flush=True)
    out.append((float(box.host.nft_ruleset().count("\n")), "lines"))
    out.append((box.daemon_rss_mib(), "MiB") if box.daemon else Skipped("no daemon"))
    return out


def s_rss(box: Sandbox, opts):
    """Peak RSS of one plugin process (the largest of it and its delegated IPAM child), by GNU time."""
    if not os.access(TIME, os.X_OK):
        raise Skipped(f"{TIME} not installed (apt-get install time)")
    cni = box.cni
    results = []
    for plugin, conf, scenario in (("loopback", LOOPBACK, None),
                                   ("bridge", dict(box.bridge_conflist()["plugins"][0], cniVersion="1.0.0",
                                                   name="bench"), "bridge")):
        try:
            if scenario:
                box.impl.require(scenario)
        except Skipped as exc:
            results.append(exc)
            continue
        ns = box.container()
        env = cni.env("ADD", ns, "eth0", f"rss-{plugin}", "")
        proc = box.host.run([TIME, "-f", "%M", cni.find(plugin)], input=json.dumps(conf).encode(), env=env)
        if proc.returncode != 0:
            results.append(RuntimeError(proc.stderr.decode(errors="replace")[-300:]))
        else:
            results.append((int(proc.stderr.split()[-1]) / 1024, "MiB"))
    return results


# -- running and printing ------------------------------------------------------------------------

def run_scenario(fn, impl: Impl, opts):
    try:
        with sandbox(impl) as box:
            return fn(box, opts)
    except Skipped as exc:
        return exc
    except Exception as exc:
        return RuntimeError(f"{exc.__class__.__name__}: {str(exc)[:1500]}")


# Latency scenarios run interleaved: one sample of each implementation in turn, so that load from other
# processes on this shared machine hits every implementation alike (run one after the other, a busy
# minute for one and a quiet one for the other moves the ratio more than anything measured).
INTERLEAVED = {"version", "loopback", "bridge", "chain"}


def _error(exc: Exception) -> Exception:
    return exc if isinstance(exc, Skipped) else RuntimeError(f"{exc.__class__.__name__}: {str(exc)[:1500]}")


def run_interleaved(fn, impls: list[Impl], opts, rows: int) -> dict:
    """label -> row values: ``opts.repeat`` rounds of one sample per implementation; each row is the
    median of its samples (the unit of the first)."""
    outcome: dict = {}
    samples: dict = {impl.label: [] for impl in impls}
    one = argparse.Namespace(**{**vars(opts), "repeat": 1})
    with contextlib.ExitStack() as stack:
        boxes = {}
        for impl in impls:
            try:
                boxes[impl.label] = stack.enter_context(sandbox(impl))
            except Exception as exc:
                outcome[impl.label] = _error(exc)
        for round_ in range(opts.repeat):
            one.offset = round_
            for label, box in boxes.items():
                if label in outcome:
                    continue
                try:
                    samples[label].append(spread(fn(box, one), rows))
                except Exception as exc:
                    outcome[label] = _error(exc)
    for label, rounds in samples.items():
        if label not in outcome:
            outcome[label] = [(statistics.median(r[i][0] for r in rounds), rounds[0][i][1]) for i in range(rows)]
    return outcome


def fmt(value) -> str:
    if isinstance(value, Skipped):
        return f"skipped: {value}"
    if isinstance(value, Exception):
        return "error"
    number, unit = value
    if unit == "ms":
        return f"{number:.1f} ms"
    if unit == "s":
        return f"{number:.2f} s"
    if unit == "MiB":
        return f"{number:.1f} MiB"
    return f"{number:.0f} {unit}"


def ratio(ours, ref) -> str:
    if isinstance(ours, Exception) or isinstance(ref, Exception) or not ref[0]:
        return "-"
    return f"{ours[0] / ref[0]:.2f}"


def spread(value, n: int) -> list:
    """A scenario's outcome as n row values (a failure or skip applies to all its rows)."""
    if isinstance(value, Exception):
        return [value] * n
    if n == 1 and not isinstance(value, list):
        return [value]
    return list(value)


def front_door(plugin_dir: str) -> str:
    """What a runtime executes there: the native shim (an ELF) or a Python plugin script."""
    try:
        with open(os.path.join(plugin_dir, "loopback"), "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return "the native shim (ELF)" if head == b"\x7fELF" else "a Python script (no shim built)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: counts 1,10,20, 10 parallel ADDs")
    parser.add_argument("--counts", help="existing-container counts for the scale scenario (default 1,250,500)")
    parser.add_argument("--repeat", type=int, help="samples per latency scenario (default 10, quick 5)")
    parser.add_argument("--probes", type=int, help="ADDs measured at each count (default 5, quick 3)")
    parser.add_argument("--parallel", type=int, help="chain ADDs in the parallel scenario (default 50, quick 10)")
    parser.add_argument("--workers", type=int, default=8, help="workers in the parallel scenario (default 8)")
    parser.add_argument("--populate-workers", type=int, default=4,
                        help="workers attaching the population of the scale scenario (default 4)")
    parser.add_argument("--ours", default=OUR_PLUGINS, help=f"pynet's plugin directory (default {OUR_PLUGINS})")
    parser.add_argument("--reference", default=REFERENCE_PLUGINS, help="reference plugin directory")
    parser.add_argument("--no-daemon", action="store_true", help="measure pynet standalone only")
    parser.add_argument("--only", help="comma-separated scenario keys: version,loopback,bridge,chain,parallel,"
                                       "scale,rss")
    opts = parser.parse_args(argv)
    opts.counts = [int(c) for c in (opts.counts or ("1,10,20" if opts.quick else "1,250,500")).split(",")]
    opts.repeat = opts.repeat or (5 if opts.quick else 10)
    opts.probes = opts.probes or (3 if opts.quick else 5)
    opts.parallel = opts.parallel or (10 if opts.quick else 50)
    if os.geteuid() != 0:
        print("bench: must run as root (it creates network namespaces)", file=sys.stderr)
        return 1

    own = os.path.abspath(opts.ours) == os.path.abspath(OUR_PLUGINS)
    impls = [Impl("ours", opts.ours, check_modules=own)]
    if not opts.no_daemon:
        impls.append(Impl("daemon", opts.ours, check_modules=own, daemon=True))
    if reference_available() or opts.reference != REFERENCE_PLUGINS:
        impls.append(Impl("reference", opts.reference, check_modules=False))
    else:
        print("reference plugins not installed (apt-get install containernetworking-plugins)", file=sys.stderr)

    top = max(opts.counts)
    scenarios = [  # key, function, row labels
        ("version", s_version, ["VERSION"]),
        ("loopback", s_loopback_add, ["loopback ADD", "loopback ADD CPU (user+sys)"]),
        ("bridge", s_bridge, ["bridge+host-local ADD", "bridge+host-local DEL", "bridge+host-local ADD CPU (user+sys)"]),
        ("chain", s_chain, ["bridge>portmap>firewall ADD", "bridge>portmap>firewall DEL",
                            "bridge>portmap>firewall ADD CPU (user+sys)"]),
        ("parallel", s_parallel, [f"{opts.parallel} parallel chain ADDs, {opts.workers} workers (wall)",
                                  f"{opts.parallel} parallel chain DELs, {opts.workers} workers (wall)"]),
        ("scale", s_scale, [f"chain ADD with {n} containers" for n in opts.counts]
         + [f"nft ruleset at {top + opts.probes} containers", f"daemon RSS with {top + opts.probes} attached"]),
        ("rss", s_rss, ["peak RSS loopback ADD", "peak RSS bridge ADD"]),
    ]
    only = set(opts.only.split(",")) if opts.only else None
    rows = []
    errors = []
    for key, fn, labels in scenarios:
        if only and key not in only:
            continue
        print(f"  running {key} ...", file=sys.stderr, flush=True)
        if key in INTERLEAVED:
            outcome = {label: spread(value, len(labels))
                       for label, value in run_interleaved(fn, impls, opts, len(labels)).items()}
        else:
            outcome = {impl.label: spread(run_scenario(fn, impl, opts), len(labels)) for impl in impls}
        for impl in impls:
            for value in outcome[impl.label]:
                if isinstance(value, Exception) and not isinstance(value, Skipped):
                    errors.append(f"{key} ({impl.label}): {value}")
        for i, label in enumerate(labels):
            ours = outcome["ours"][i]
            daemon = outcome["daemon"][i] if "daemon" in outcome else Skipped("off")
            ref = outcome["reference"][i] if "reference" in outcome else Skipped("not installed")
            rows.append((label, fmt(ours), fmt(daemon), fmt(ref), ratio(ours, ref), ratio(daemon, ref)))

    header = ("scenario", "ours standalone", "ours daemon", "reference", "standalone/ref", "daemon/ref")
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header))]
    line = "  ".join("{:<%d}" % w for w in widths)
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))
    print(f"front door measured (ours): {os.path.join(opts.ours, 'loopback')} is {front_door(opts.ours)}; "
          "standalone = PYNET_DAEMON=off (the front door runs the Python plugin), daemon = the same front door "
          "reaching a `pynet daemon` in the sandbox")
    for err in sorted(set(errors)):
        print(f"error: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
