"""`make demo`: a bridge network for two containers, built by pynet's CNI plugins inside a sandbox.

Everything happens in network namespaces this program creates (a stand-in "host" and two "containers");
the machine's own network is never touched. The plugins are run as a runtime runs them: executables
found on CNI_PATH, configuration on stdin, CNI_* variables, a minimal environment. Teardown (DEL, then
removing the namespaces) runs also when a step fails.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tempfile
import time

from netns_fixtures import CNI, OUR_PLUGINS, Netns, PluginFailed, icmp_echo, tcp_connect, tcp_listener

SUBNET = "10.89.0.0/24"
BRIDGE = "pynet-demo0"
CONTAINERS = ("web", "client")


def conflist(data_dir: str) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "pynet-demo",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "ipMasq": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": SUBNET}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": data_dir,
            },
        }],
    }


LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


class Demo:
    def __init__(self, plugin_dir: str, data_dir: str, out=None):
        self.plugin_dir = plugin_dir
        self.conflist = conflist(data_dir)
        self.out = out
        self.host: Netns | None = None
        self.cni: CNI | None = None
        # name -> (netns, container id, ADD result); filled as containers come up, emptied by teardown.
        self.attached: dict[str, tuple[Netns, str, dict | None]] = {}
        self.ok = True

    def say(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def timed(self, what: str, fn, *args, **kwargs):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        self.say(f"   {what} ({(time.perf_counter() - start) * 1000:.0f} ms)")
        return value

    # -- steps -----------------------------------------------------------------------------------
    def setup(self) -> None:
        self.host = Netns.create("pynet-demo-host")
        self.cni = CNI(self.host, self.plugin_dir)
        self.say(f"1. sandbox host network namespace {self.host.name} (plugins run inside it)")
        self.say(f"   plugins from CNI_PATH={self.plugin_dir}")
        self.say(f"2. network 'pynet-demo': bridge {BRIDGE} (gateway, masquerade) + host-local IPAM on {SUBNET}")
        for step, name in enumerate(CONTAINERS, start=3):
            ns = Netns.create(f"pynet-demo-{name}", lo_up=False)
            container_id = f"pynet-demo-{name}-{os.getpid()}"
            self.attached[name] = (ns, container_id, None)
            self.say(f"{step}. container '{name}': netns {ns.name}")
            self.timed("loopback ADD: lo up", self.cni.add, "loopback", LOOPBACK, ns, container_id=container_id,
                       ifname="lo")
            result = self.timed("bridge ADD: veth eth0 into the bridge, address from host-local",
                                self.cni.add_chain, self.conflist, ns, container_id=container_id)
            self.attached[name] = (ns, container_id, result)
            self.say(f"   {name}: eth0 {', '.join(ns.addresses('eth0'))}, "
                     f"default via {self.default_gateway(ns) or '-'}")

    def default_gateway(self, ns: Netns) -> str | None:
        for route in ns.routes(4):
            if route["dst"] == "default":
                return route["gw"]
        return None

    def ip_of(self, name: str) -> str:
        ns = self.attached[name][0]
        return str(ipaddress.ip_interface(ns.addresses("eth0")[0]).ip)

    def check(self, label: str, passed: bool) -> None:
        self.ok &= passed
        self.say(f"   {label}: {'ok' if passed else 'FAILED'}")

    def reachability(self) -> None:
        web, client = (self.attached[n][0] for n in CONTAINERS)
        web_ip, client_ip = self.ip_of("web"), self.ip_of("client")
        gateway = str(ipaddress.ip_network(SUBNET)[1])
        self.say(f"{len(CONTAINERS) + 3}. reachability")
        self.say(f"   host side: bridge {BRIDGE} {', '.join(self.host.addresses(BRIDGE))}")
        tables = [f"{t['table']['family']} {t['table']['name']}" for t in self.host.nft_json("list tables")
                  if "table" in t]
        self.say(f"   host nftables tables (masquerade for the containers): {', '.join(tables) or '-'}")
        self.check(f"ping client -> web ({web_ip})", icmp_echo(client, web_ip))
        self.check(f"ping web -> client ({client_ip})", icmp_echo(web, client_ip))
        for name, ns in (("web", web), ("client", client)):
            self.check(f"ping {name} -> gateway ({gateway})", icmp_echo(ns, gateway))
        with tcp_listener(web, "0.0.0.0") as port:
            self.check(f"tcp client -> web ({web_ip}:{port})", tcp_connect(client, web_ip, port))
        with tcp_listener(self.host, gateway) as port:
            self.check(f"tcp web -> gateway ({gateway}:{port})", tcp_connect(web, gateway, port))

    def teardown(self) -> None:
        self.say(f"{len(CONTAINERS) + 4}. teardown")
        for name in reversed(list(self.attached)):
            ns, container_id, result = self.attached.pop(name)
            try:
                if self.cni is not None:
                    self.timed(f"{name}: bridge DEL (veth removed, address released)", self.cni.del_chain,
                               self.conflist, ns, result, container_id=container_id)
                    self.cni.delete("loopback", LOOPBACK, ns, container_id=container_id, ifname="lo")
            except Exception as exc:  # keep tearing down the rest; report it
                self.ok = False
                self.say(f"   {name}: DEL failed: {exc}")
            finally:
                ns.remove()
            self.say(f"   {name}: netns {ns.name} removed")
        if self.host is not None:
            self.host.remove()
            self.say(f"   sandbox host {self.host.name} removed (with the bridge and its firewall rules)")
            self.host = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pynet.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", default=OUR_PLUGINS, metavar="DIR",
                        help="CNI_PATH to use (default: pynet's plugins; /usr/lib/cni runs the reference ones)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("pynet demo: must run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="pynet-demo-") as data_dir:
        demo = Demo(args.plugins, data_dir)
        try:
            demo.setup()
            demo.reachability()
        except PluginFailed as exc:
            demo.ok = False
            demo.say(f"   FAILED: {exc.plugin} {exc.command}: code {exc.code}: {exc.msg or exc.stderr[-500:]}")
        except Exception as exc:
            demo.ok = False
            demo.say(f"   FAILED: {exc.__class__.__name__}: {exc}")
        finally:
            demo.teardown()
    demo.say("demo passed: both containers reach each other and the gateway" if demo.ok else "demo FAILED")
    return 0 if demo.ok else 1


if __name__ == "__main__":
    sys.exit(main())
