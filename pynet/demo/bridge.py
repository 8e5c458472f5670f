"""Part 1: a bridge network for two containers, built by pynet's CNI plugins inside a sandbox.

The plugins are run as a runtime runs them: executables found on CNI_PATH, configuration on stdin, CNI_*
variables, a minimal environment. Teardown (DEL, then removing the namespaces) runs also when a step fails.
"""

from __future__ import annotations

import ipaddress
import os

from netns_fixtures import CNI, Netns, PluginFailed, icmp_echo, tcp_connect, tcp_listener

from .steps import Steps

SUBNET = "10.89.0.0/24"
BRIDGE = "pynet-demo0"
CONTAINERS = ("web", "client")
LOOPBACK = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


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


class BridgeDemo(Steps):
    def __init__(self, plugin_dir: str, data_dir: str, out=None):
        super().__init__(out)
        self.plugin_dir = plugin_dir
        self.conflist = conflist(data_dir)
        self.host: Netns | None = None
        self.cni: CNI | None = None
        # name -> (netns, container id, ADD result); filled as containers come up, emptied by teardown.
        self.attached: dict[str, tuple[Netns, str, dict | None]] = {}

    def run(self) -> bool:
        try:
            self.setup()
            self.reachability()
        except PluginFailed as exc:
            self.failed(f"{exc.plugin} {exc.command}: code {exc.code}: {exc.msg or exc.stderr[-500:]}")
        except Exception as exc:
            self.failed(f"{exc.__class__.__name__}: {exc}")
        finally:
            self.teardown()
        return self.ok

    # -- steps -----------------------------------------------------------------------------------
    def setup(self) -> None:
        self.host = Netns.create("pynet-demo-host")
        self.cni = CNI(self.host, self.plugin_dir)
        self.next(f"sandbox host network namespace {self.host.name} (plugins run inside it)")
        self.say(f"   plugins from CNI_PATH={self.plugin_dir}")
        self.next(f"network 'pynet-demo': bridge {BRIDGE} (gateway, masquerade) + host-local IPAM on {SUBNET}")
        for name in CONTAINERS:
            ns = Netns.create(f"pynet-demo-{name}", lo_up=False)
            container_id = f"pynet-demo-{name}-{os.getpid()}"
            self.attached[name] = (ns, container_id, None)
            self.next(f"container '{name}': netns {ns.name}")
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

    def reachability(self) -> None:
        web, client = (self.attached[n][0] for n in CONTAINERS)
        web_ip, client_ip = self.ip_of("web"), self.ip_of("client")
        gateway = str(ipaddress.ip_network(SUBNET)[1])
        self.next("reachability")
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
        self.next("teardown")
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
