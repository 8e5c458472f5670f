"""Every registered plugin fed mutated configs and environments: each key path's value replaced by values of
the wrong type or size, and bad CNI_ARGS, CNI_IFNAME, CNI_CONTAINERID and CNI_NETNS, for ADD, CHECK and
DEL, through the plugin executables (mostly the daemon's thin client, a sample standalone).

A failure must be CNI error JSON with a spec code (never the "internal error" of an uncaught exception,
never a traceback on stderr or in ``details``), within a timeout; after a failed ADD the sandbox holds nothing new (links in
the host and container netns, leases in the dataDir, nftables rules); a mutation the plugin accepts is
undone by its DEL.

The mutations are a deterministic sample per plugin (seeded by its name): PYNET_FUZZ_SAMPLE=N takes N
config mutations per plugin (default 36), PYNET_FUZZ_SAMPLE=all the whole cross product."""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import time

import pytest
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted

from cni_plugins.registry import NAMES
from netns_fixtures.runner import CNI, OUR_PLUGINS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plugins need root (in sandbox namespaces)")

VERSION = "1.1.0"
NETWORK = "fuzznet"
VALUES = [True, False, None, 0, -1, 2 ** 63, 1e308, "", "x" * 5000, [], {}, [[]], "\u0000",
          json.loads("[" * 200 + "]" * 200)]
SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51}
TIMEOUT = 20
# Plugins that act on the interface of a prevResult (the sandbox gives the container that eth0).
CHAINED = {"portmap", "firewall", "tuning", "vrf", "bandwidth", "sbr", "dnsname"}


def _prev(container_path: str) -> dict:
    return {"cniVersion": VERSION, "interfaces": [{"name": "fzh0"}, {"name": "eth0", "sandbox": container_path}],
            "ips": [{"address": "10.163.0.5/24", "gateway": "10.163.0.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.163.0.1"}]}


def valid_config(plugin: str, data_dir: str, container_path: str) -> dict:
    """A config each plugin accepts in the fuzz sandbox (see _sandbox)."""
    host_local = {"type": "host-local", "subnet": "10.164.0.0/24", "dataDir": data_dir}
    static = {"type": "static", "addresses": [{"address": "10.165.0.5/24"}]}
    prev = _prev(container_path)
    body = {
        "bridge": {"bridge": "fzbr0", "isGateway": True, "ipMasq": True, "ipam": host_local},
        "host-local": {"ipam": host_local},
        "static": {"ipam": static},
        "loopback": {},
        "portmap": {"capabilities": {"portMappings": True}, "prevResult": prev,
                    "runtimeConfig": {"portMappings": [{"hostPort": 18091, "containerPort": 80, "protocol": "tcp"}]}},
        "firewall": {"prevResult": prev},
        "tuning": {"mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}, "dataDir": data_dir,
                   "prevResult": prev},
        "macvlan": {"master": "fzm0", "mode": "bridge", "ipam": static},
        "ipvlan": {"master": "fzm0", "ipam": static},
        "vlan": {"master": "fzm0", "vlanId": 7, "ipam": static},
        "dummy": {"ipam": static},
        "vrf": {"vrfname": "fzvrf", "prevResult": prev},
        "host-device": {"device": "fzhd0", "dataDir": data_dir},
        "tap": {"ipam": static},
        "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000, "egressRate": 1000000,
                      "egressBurst": 100000, "prevResult": prev},
        "sbr": {"prevResult": prev},
        "ptp": {"ipMasq": True, "mtu": 1400, "ipam": host_local},
        # The resolver answers on the prevResult's gateway, which the sandbox host holds (see Sandbox).
        "dnsname": {"domainName": "fuzz.pynet", "dataDir": os.path.join(data_dir, "dns"), "upstreams": [],
                    "prevResult": prev},
        # No DHCP daemon listens on this socket: every ADD is the "daemon not running" error (code 11).
        "dhcp": {"ipam": {"type": "dhcp", "daemonSocketPath": os.path.join(data_dir, "dhcp.sock")}},
    }[plugin]
    return {"cniVersion": VERSION, "name": NETWORK, "type": plugin, **copy.deepcopy(body)}


def key_paths(obj, prefix=()):
    """Every path to a value in a JSON document (dict keys and list indices), parents before children."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield prefix + (key,)
            yield from key_paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield prefix + (i,)
            yield from key_paths(value, prefix + (i,))


def mutated(conf: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(conf)
    node = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = copy.deepcopy(value)
    return out


def _sample(items: list, n, seed: str) -> list:
    if n == "all" or len(items) <= int(n):
        return items
    return random.Random(seed).sample(items, int(n))


def _env_mutations(tmp_path) -> list[dict]:
    """Bad CNI_NETNS (a regular file, a directory, a mount namespace, a FIFO, a dangling path), CNI_IFNAME,
    CNI_CONTAINERID and CNI_ARGS values."""
    regular = tmp_path / "regular"
    regular.write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = [{"CNI_NETNS": p} for p in (str(regular), str(tmp_path), "/proc/self/ns/mnt", str(fifo),
                                      str(tmp_path / "dangling"), "relative/ns", "x" * 5000)]
    out += [{"CNI_IFNAME": v} for v in ("", "a" * 16, "a/b", "a b", "..", ".", "eth0\u0001", "lo")]
    out += [{"CNI_CONTAINERID": v} for v in ("", "-x", "a/b", "x" * 5000, "a b", "..")]
    out += [{"CNI_ARGS": v} for v in ("=", ";;;", "IP", "IP=", "IP=bogus", "IgnoreUnknown=1;IP=300.1.1.1",
                                      "MAC=zz", "K8S_POD_NAME=" + "x" * 5000, "a=b=c", "\u0001")]
    return out


class Sandbox:
    """One plugin's sandbox: host and container netns, dataDir, and what a failed ADD must not leave."""

    def __init__(self, plugin, host_ns, container_ns, tmp_path):
        self.plugin, self.host, self.container, self.tmp = plugin, host_ns, container_ns, tmp_path
        self.data_dir = str(tmp_path / "data")
        ipr = host_ns.ipr
        chained = plugin in CHAINED
        for name, peer in (("fzm0", "fzm0p"), ("fzhd0", "fzhd0p")) + ((("fzh0", "fzeth0"),) if chained else ()):
            ipr.link("add", ifname=name, kind="veth", peer=peer)
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        self.conf = valid_config(plugin, self.data_dir, container_ns.path)
        self.nft = plugin in ("bridge", "portmap", "firewall")
        if not chained:
            return   # the plugin makes the container's eth0 itself
        # The container's eth0 of the prevResults: the peer of fzh0, with the result's address.
        idx = ipr.link_lookup(ifname="fzeth0")[0]
        with open(container_ns.path) as fd:
            ipr.link("set", index=idx, net_ns_fd=fd.fileno())
        cipr = container_ns.ipr
        cidx = cipr.link_lookup(ifname="fzeth0")[0]
        cipr.link("set", index=cidx, ifname="eth0")
        cipr.addr("add", index=cidx, address="10.163.0.5", prefixlen=24)
        cipr.link("set", index=cidx, state="up")
        if plugin == "dnsname":   # the gateway of the prevResult, where the network's resolver listens
            ipr.addr("add", index=ipr.link_lookup(ifname="fzh0")[0], address="10.163.0.1", prefixlen=24)

    def warm_up(self, cni: CNI) -> None:
        """A valid ADD and DEL first: the tables and chains a plugin keeps between containers exist from
        then on, so what is compared afterwards is the per-container state (links, leases, elements).
        ``baseline``: that state, which every ADD (failed, or accepted and deleted) must come back to."""
        for command in ("ADD", "DEL"):
            _invoke(cni, self.plugin, command, self.conf, _env(cni, command, self, {}))
        self.baseline = self.stable()

    def state(self):
        try:
            return self._state()
        except NetlinkDumpInterrupted:   # a link came or went during the dump: look again
            time.sleep(0.05)
            return self._state()

    def _state(self):
        leases = []
        for root, _, files in os.walk(self.data_dir):
            leases += [os.path.join(root, f) for f in files if f[:1].isdigit() or ":" in f]
        return {"host links": sorted(self.host.link_names()), "container links": sorted(self.container.link_names()),
                "leases": sorted(leases),
                "nft elements": _elements(self.host) + _elements(self.container) if self.nft else None}


    def settled(self, expected: dict, timeout: float = 2.0) -> dict:
        """The state once it equals ``expected``, or after ``timeout``: the daemon may finish closing a
        request's handles (and the kernel a veth's peer) just after its reply."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.state()
            if now == expected or time.monotonic() > deadline:
                return now
            time.sleep(0.05)


    def stable(self, timeout: float = 2.0) -> dict:
        """The state once two looks agree (what an earlier request's deferred work changes is done)."""
        deadline = time.monotonic() + timeout
        last = self.state()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.state()
            if now == last:
                return now
            last = now
        return last


def _elements(ns) -> list:
    """The elements of every nftables set and map (what plugins add per container)."""
    out = []
    for item in ns.nft_json():
        for kind in ("set", "map"):
            body = item.get(kind) if isinstance(item, dict) else None
            if body and body.get("elem"):
                out.append((body.get("table"), body.get("name"), json.dumps(body["elem"], sort_keys=True)))
    return sorted(out)


def _env(cni: CNI, command: str, sandbox: Sandbox, overrides: dict) -> dict:
    env = cni.env(command, sandbox.container, "eth0", "fuzz-ctr", "")
    env.update(overrides)
    return env


def _invoke(cni: CNI, plugin: str, command: str, conf, env: dict):
    stdin = json.dumps(conf).encode()
    try:
        proc = cni.host.run([cni.find(plugin)], input=stdin, env=env, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{plugin} {command} hung (> {TIMEOUT} s)") from None
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def check_reply(what: str, rc: int, out: str, err: str) -> bool:
    """True when the plugin accepted; else asserts a spec-conform error."""
    assert "Traceback" not in err, f"{what}: traceback on stderr:\n{err[-3000:]}"
    if rc == 0:
        return True
    try:
        reply = json.loads(out)
    except ValueError:
        raise AssertionError(f"{what}: exit {rc} without error JSON: {out[:500]!r} {err[-1000:]}") from None
    assert isinstance(reply, dict) and isinstance(reply.get("code"), int), f"{what}: {reply!r}"
    code = reply["code"]
    assert code in SPEC_CODES or 100 <= code <= 999, f"{what}: code {code}: {reply}"
    # 999 is what the reference plugins report kernel failures with; an uncaught exception is a crash.
    assert not str(reply.get("msg")).startswith("internal error"), f"{what}: crashed: {reply}"
    assert isinstance(reply.get("msg"), str) and reply["msg"], f"{what}: no msg: {reply}"
    assert "Traceback" not in str(reply.get("details", "")), f"{what}: traceback in details: {reply}"
    return False


def exercise(cni: CNI, sandbox: Sandbox, command: str, conf, env_overrides: dict, what: str) -> None:
    before = sandbox.baseline
    rc, out, err = _invoke(cni, sandbox.plugin, command, conf, _env(cni, command, sandbox, env_overrides))
    accepted = check_reply(what, rc, out, err)
    if command != "ADD":
        return
    if accepted:   # undo it the way a runtime would: DEL with the same config and environment
        rc, out, err = _invoke(cni, sandbox.plugin, "DEL", conf, _env(cni, "DEL", sandbox, env_overrides))
        check_reply(f"{what} (its DEL)", rc, out, err)
    after = sandbox.settled(before)
    if accepted and sandbox.plugin == "bridge":
        # The bridge outlives its containers (as the reference's does): a config naming another one (or
        # none: cni0) leaves that bridge, and only that.
        kept = set(after["host links"]) - set(before["host links"])
        assert kept <= {"cni0", sandbox.conf["bridge"]} | {b for b in [conf.get("bridge")] if isinstance(b, str)}, \
            f"{what}: ADD+DEL left {kept}"
        sandbox.baseline = dict(before, **{"host links": after["host links"]})   # it stays
        after = dict(after, **{"host links": before["host links"]})
    assert after == before, f"{what}: {'ADD+DEL' if accepted else 'failed ADD'} left something behind"


# A dataDir of null or "" means the plugin's default directory (/var/lib/cni/..., /run/pynet/...): outside
# the sandbox, so those two values are not fed to dataDir keys.
_DEFAULTING = (None, "")


def mutations(conf: dict, seed: str, n) -> list[tuple]:
    paths = [p for p in key_paths(conf) if p != ("type",)]
    every = [(p, i) for p in paths for i in range(len(VALUES))
             if not (p[-1] == "dataDir" and any(VALUES[i] is v or VALUES[i] == v for v in _DEFAULTING
                                                if type(VALUES[i]) is type(v)))]
    return _sample(every, n, seed)


def _sample_size():
    return os.environ.get("PYNET_FUZZ_SAMPLE", "36")


@pytest.mark.parametrize("plugin", NAMES)
def test_mutated_configs_and_environments_get_spec_errors_and_leave_nothing(plugin, daemon_cni, host_ns,
                                                                              container_ns, tmp_path):
    sandbox = Sandbox(plugin, host_ns, container_ns, tmp_path)
    sandbox.warm_up(daemon_cni)
    n = _sample_size()
    for command, share in (("ADD", 1), ("CHECK", 3), ("DEL", 3)):
        picked = mutations(sandbox.conf, f"{plugin}/{command}", n if n == "all" else max(int(n) // share, 1))
        for path, i in picked:
            conf = mutated(sandbox.conf, path, VALUES[i])
            exercise(daemon_cni, sandbox, command, conf, {},
                     f"{plugin} {command} {'.'.join(map(str, path))}={json.dumps(VALUES[i])[:40]}")
    env_cases = _env_mutations(tmp_path)
    for command in ("ADD", "CHECK", "DEL"):
        cases = env_cases if n == "all" else _sample(env_cases, max(int(n) // 4, 1), f"{plugin}/{command}/env")
        for overrides in cases:
            exercise(daemon_cni, sandbox, command, sandbox.conf, overrides,
                     f"{plugin} {command} env {json.dumps(overrides)[:80]}")


@pytest.mark.parametrize("plugin", NAMES)
def test_standalone_plugins_report_mutations_the_same_way(plugin, cni, host_ns, container_ns, tmp_path):
    sandbox = Sandbox(plugin, host_ns, container_ns, tmp_path)
    sandbox.warm_up(cni)
    for path, i in mutations(sandbox.conf, f"{plugin}/standalone", 3):
        conf = mutated(sandbox.conf, path, VALUES[i])
        exercise(cni, sandbox, "ADD", conf, {}, f"{plugin} ADD {'.'.join(map(str, path))}={json.dumps(VALUES[i])[:40]}")
    env = _env_mutations(tmp_path)
    exercise(cni, sandbox, "ADD", sandbox.conf, env[len(plugin) % len(env)], f"{plugin} ADD env")
