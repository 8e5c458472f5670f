"""Part 2: the rest of the stack through the `pynet` command line, as a user would type it.

`pynet net create` writes two bridge networks, `pynet run -d` starts two busybox containers on the first
(one serving HTTP on a published port), `pynet attach`/`detach` add and remove a second interface on the
running web container, and `pynet stop/rm/net rm` take everything down again.

Every `pynet` command runs as a subprocess inside a sandbox host netns this program creates, with every
location the launcher and the CNI runner use (image store, container state, network definitions, libcni
cache, netns pins, host-local leases) under one temp dir, so the machine's network, /etc/cni, /var/lib/cni
and /run/netns are never touched. An "outside" netns joined to the sandbox host by a veth pair plays a
client elsewhere on the network. Teardown runs also when a step fails; the only processes it ever kills
are the containers and monitors it started, by their recorded PID (and start time).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import tempfile
import time

from netns_fixtures import OUR_PLUGINS, Netns, icmp_echo, veth_link

from .steps import Steps

PYNET = os.path.join(OUR_PLUGINS, "pynet")
FRONT, BACK = "demo-front", "demo-back"
FRONT_SUBNET, BACK_SUBNET = "10.89.10.0/24", "10.89.20.0/24"
FRONT_BRIDGE, BACK_BRIDGE = "pd-front0", "pd-back0"
# The link between the sandbox host and the "outside" netns (a client on another network).
UPLINK_HOST, UPLINK_OUTSIDE = "pd-uplink", "pd-uplink-out"
UPLINK_HOST_IP, UPLINK_OUTSIDE_IP, UPLINK_PREFIX = "192.168.249.1", "192.168.249.2", 30
HOST_PORT = 8080
PAGE = "hello from web"   # the page names the container's hostname
HTTPD = 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 80 -h /www'
STOP_TIMEOUT = "0.5"   # sleep and httpd as PID 1 ignore SIGTERM: SIGKILL after this


def http_get(ns: Netns, ip: str, port: int, timeout: float = 2.0) -> tuple[str, str]:
    """(status line, body) of ``GET /`` sent from inside ``ns``; ("", "") when nothing answers."""
    with ns.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except OSError:
        return "", ""
    finally:
        sock.close()
    head, _, body = b"".join(chunks).decode(errors="replace").partition("\r\n\r\n")
    return head.split("\r\n", 1)[0], body


class StackDemo(Steps):
    def __init__(self, plugin_dir: str, out=None, first_step: int = 1):
        super().__init__(out, first_step)
        self.plugin_dir = plugin_dir
        self.tmp: str | None = None
        self.env: dict = {}
        self.host: Netns | None = None
        self.outside: Netns | None = None
        self.networks: list[str] = []          # created by us, removed by teardown
        self.container_ids: list[str] = []    # every container we started (cgroup check after teardown)
        self.web: dict = {}                    # `pynet container inspect` of each container
        self.client: dict = {}
        self.web_ip = self.client_ip = ""

    def run(self) -> bool:
        try:
            self.setup()
            self.launch()
            self.isolation()
            self.reachability()
            self.second_interface()
        except Exception as exc:
            self.failed(f"{exc.__class__.__name__}: {exc}")
        finally:
            self.teardown()
        return self.ok

    # -- the pynet command line, inside the sandbox host ----------------------------------------------
    def pynet(self, *argv: str, show: bool = True, expect_ok: bool = True, timeout: float = 30):
        if show:
            self.say(f"   $ pynet {shlex.join(argv)}")
        res = self.host.run([PYNET, *argv], env=self.env, timeout=timeout)
        res.out, res.err = res.stdout.decode(), res.stderr.decode()
        if show:
            for line in res.out.rstrip("\n").splitlines():
                self.say(f"     {line.split(chr(92), 1)[0].rstrip()}")   # `ip -o` continues lines with a backslash
        if expect_ok and res.returncode != 0:
            raise RuntimeError(f"pynet {argv[0]} exited {res.returncode}: {res.err.strip()[-500:]}")
        return res

    def inspect(self, ref: str) -> dict:
        return json.loads(self.pynet("container", "inspect", ref, show=False).out)[0]

    def records(self) -> list[dict]:
        d = os.path.join(self.env.get("PYNET_STATE", "/nonexistent"), "containers")
        out = []
        for cid in os.listdir(d) if os.path.isdir(d) else ():
            try:
                with open(os.path.join(d, cid, "state.json")) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                pass
        return out

    # -- steps -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="pynet-demo-stack-")
        dirs = {"PYNET_ROOT": "root", "PYNET_STATE": "state", "PYNET_CONFIG_DIR": "net.d",
                "PYNET_CACHE_DIR": "cache", "PYNET_NETNS_DIR": "netns", "PYNET_DEFAULT_DATA_DIR": "leases-default"}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYNET_", "CNI_"))}
        for key, sub in dirs.items():
            os.makedirs(os.path.join(self.tmp, sub))
            self.env[key] = os.path.join(self.tmp, sub)
        self.env["PYNET_CNI_PATH"] = self.plugin_dir
        self.host = Netns.create("pynet-demo-stack-host")
        self.outside = Netns.create("pynet-demo-outside")
        self.next(f"sandbox host netns {self.host.name}; every pynet command runs inside it")
        self.say(f"   image store, container state, networks, CNI cache, netns pins, leases under {self.tmp}")
        veth_link(self.host, UPLINK_HOST, self.outside, UPLINK_OUTSIDE, [f"{UPLINK_HOST_IP}/{UPLINK_PREFIX}"],
                  [f"{UPLINK_OUTSIDE_IP}/{UPLINK_PREFIX}"])
        self.say(f"   'outside' netns {self.outside.name}: {UPLINK_OUTSIDE} {UPLINK_OUTSIDE_IP}/{UPLINK_PREFIX}"
                 f" <-veth-> host {UPLINK_HOST} {UPLINK_HOST_IP}/{UPLINK_PREFIX}")
        self.next("two networks (bridge + host-local, gateway, masquerade, port mapping)")
        # The reference plugins (1.1.1) stop at CNI 1.0.0; ours speak 1.1.0, `net create`'s default.
        version = () if self.plugin_dir == OUR_PLUGINS else ("--cni-version", "1.0.0")
        for name, subnet, bridge in ((FRONT, FRONT_SUBNET, FRONT_BRIDGE), (BACK, BACK_SUBNET, BACK_BRIDGE)):
            self.pynet("net", "create", name, "--subnet", subnet, "--bridge", bridge, "--gateway", "--masq",
                       "--port-map", "--data-dir", os.path.join(self.tmp, "leases"), *version)
            self.networks.append(name)

    def launch(self) -> None:
        self.next(f"containers on {FRONT}: 'web' (busybox httpd, -p {HOST_PORT}:80) and 'client'")
        start = time.perf_counter()
        for argv in (("--name", "web", "--hostname", "web", "-p", f"{HOST_PORT}:80", "busybox", "sh", "-c", HTTPD),
                     ("--name", "client", "--hostname", "client", "busybox", "sleep", "3600")):
            res = self.pynet("run", "-d", "--net", FRONT, "--dns", "127.0.0.1", *argv)
            self.container_ids.append(res.out.strip())
        self.say(f"   (both started in {(time.perf_counter() - start) * 1000:.0f} ms, busybox image built on first use)")
        self.pynet("ps")
        self.web, self.client = self.inspect("web"), self.inspect("client")
        self.web_ip = self.web["network"]["result"]["ips"][0]["address"].split("/")[0]
        self.client_ip = self.client["network"]["result"]["ips"][0]["address"].split("/")[0]
        self.say(f"   web: eth0 {self.web_ip}, PID {self.web['pid']} on the host; client: eth0 {self.client_ip}")

    def isolation(self) -> None:
        self.next("isolation seen from inside 'web' (pynet exec joins its namespaces)")
        res = self.pynet("exec", "web", "hostname")
        self.check(f"hostname is the container's own ('web', host is '{socket.gethostname()}')",
                   res.out.strip() == "web" and socket.gethostname() != "web")
        res = self.pynet("exec", "web", "ps", "-o", "pid,comm")
        rows = [line.split() for line in res.out.splitlines()[1:] if line.strip()]
        self.check("PID 1 is httpd, and only the container's processes are visible",
                   rows[:1] == [["1", "httpd"]] and all(int(pid) < 10 for pid, *_ in rows))

    def reachability(self) -> None:
        self.next(f"reaching httpd: published port {HOST_PORT} and the container network")
        status, body = "", ""
        for _ in range(50):   # httpd binds port 80 a moment after `run -d` returns
            status, body = http_get(self.outside, UPLINK_HOST_IP, HOST_PORT)
            if status:
                break
            time.sleep(0.1)
        self.say(f"   outside GET http://{UPLINK_HOST_IP}:{HOST_PORT}/ -> {status or 'no answer'}: {body.strip()}")
        self.check(f"http outside -> host:{HOST_PORT} -> web:80 (mapped port)",
                   status.endswith("200 OK") and body.strip() == PAGE)
        url = f"http://{self.web_ip}/"
        # busybox wget -T segfaults here (REFERENCE.md): bounded by timeout instead.
        res = self.pynet("exec", "client", "timeout", "5", "wget", "-qO-", url, expect_ok=False)
        self.check(f"http client -> web ({url})", res.returncode == 0 and res.out.strip() == PAGE)
        gateway = str(ipaddress.ip_network(FRONT_SUBNET)[1])
        status, body = http_get(self.host, gateway, HOST_PORT)
        self.check(f"http host -> {gateway}:{HOST_PORT} -> web:80 (mapped port, from the host itself)",
                   status.endswith("200 OK") and body.strip() == PAGE)

    def second_interface(self) -> None:
        pid = str(self.web["pid"])
        self.next(f"second interface: `pynet attach` web's PID {pid} to {BACK}, then `pynet detach`")
        self.pynet("attach", pid, "--net", BACK)
        self.pynet("ls")
        res = self.pynet("exec", "web", "ip", "-o", "-4", "addr")
        fields = next((line.split() for line in res.out.splitlines() if " eth1 " in f"{line} "), [])
        address = fields[fields.index("inet") + 1] if "inet" in fields else ""
        in_back = bool(address) and ipaddress.ip_interface(address) in ipaddress.ip_network(BACK_SUBNET)
        self.check(f"attach address: web eth1 {address or '-'} in {BACK_SUBNET}", in_back)
        if in_back:
            ip = address.split("/")[0]
            self.check(f"ping host -> web eth1 ({ip})", icmp_echo(self.host, ip))
            status, body = http_get(self.host, ip, 80)
            self.check(f"http host -> web eth1 ({ip}:80)", status.endswith("200 OK") and body.strip() == PAGE)
        self.pynet("detach", pid, "--net", BACK)
        res = self.pynet("exec", "web", "ip", "-o", "link", show=False)
        self.check("eth1 gone from web after detach, eth0 still there",
                   " eth1:" not in res.out and " eth0@" in res.out)

    # -- teardown ------------------------------------------------------------------------------------------
    def teardown(self) -> None:
        self.next("teardown")
        if self.host is not None and self.records():
            self.remove_containers()
        for name in reversed(self.networks):
            try:
                if self.pynet("net", "rm", name, expect_ok=False).returncode != 0:
                    self.failed(f"net rm {name} refused (attachments left?): forcing")
                    self.pynet("net", "rm", "--force", name)
            except Exception as exc:
                self.failed(f"net rm {name}: {exc}")
        self.networks.clear()
        if self.tmp is not None:
            self.check_nothing_left()
        for ns in (self.outside, self.host):
            if ns is not None:
                ns.remove()
        if self.host is not None:
            self.say(f"   netns {self.host.name} and {self.outside.name} removed")
        self.host = self.outside = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.say(f"   {self.tmp} removed")
            self.tmp = None

    def remove_containers(self) -> None:
        refs = [r["name"] for r in self.records()]
        try:
            self.pynet("stop", "-t", STOP_TIMEOUT, *refs)
            self.pynet("rm", *refs)
        except Exception as exc:
            self.failed(f"stop/rm: {exc}")
        from cni_plugins import syscalls

        # Whatever survived (a failed step above): our own containers and monitors, by recorded PID.
        for rec in self.records():
            for pid_key, start_key in (("pid", "pid_start"), ("monitor_pid", "monitor_start")):
                if syscalls.is_alive(rec.get(pid_key), rec.get(start_key)):
                    os.kill(rec[pid_key], signal.SIGKILL)
            self.pynet("rm", "-f", rec["id"], expect_ok=False)
            self.ok = False

    def check_nothing_left(self) -> None:
        from pynet.launcher import cgroups

        left = [r["id"][:12] for r in self.records()]
        cgroup_dirs = [os.path.join(h.mountpoint, "pynet", cid) for h in cgroups.hierarchies()
                       for cid in self.container_ids if os.path.exists(os.path.join(h.mountpoint, "pynet", cid))]
        with open("/proc/self/mounts") as fh:
            mounts = [line.split()[1] for line in fh if self.tmp in line]
        pin_dir = self.env.get("PYNET_NETNS_DIR", "")
        pins = os.listdir(pin_dir) if os.path.isdir(pin_dir) else []
        self.check(f"nothing left: containers {left or 'none'}, cgroups {cgroup_dirs or 'none'}, "
                   f"mounts {mounts or 'none'}, netns pins {pins or 'none'}",
                   not (left or cgroup_dirs or mounts or pins))
