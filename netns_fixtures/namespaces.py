"""Named network namespaces (bind-mounted under /run/netns like `ip netns add`), created and removed
through pyroute2, with processes and netlink handles inside them."""

from __future__ import annotations

import atexit
import errno
import ipaddress
import itertools
import os
import subprocess
import threading

from cni_plugins import netns as cni_netns
from cni_plugins import sysctl

_counter = itertools.count()
_live: dict[str, "Netns"] = {}
_lock = threading.Lock()


def _unique_name(prefix: str) -> str:
    # pid keeps xdist workers and parallel runs apart; names stay short enough to read in `ip netns`.
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


class Netns:
    """A network namespace this process created and will remove."""

    def __init__(self, name: str):
        self.name = name
        self.path = f"/run/netns/{name}"
        self._ipr = None

    @classmethod
    def create(cls, prefix: str = "pynt", lo_up: bool = True) -> "Netns":
        from pyroute2 import netns as pr_netns

        name = _unique_name(prefix)
        pr_netns.create(name)
        ns = cls(name)
        with _lock:
            _live[name] = ns
        if lo_up:
            ns.ipr.link("set", index=1, state="up")
        return ns

    # -- processes -------------------------------------------------------------------------------
    # The child is spawned from this thread while the thread is inside the namespace (a child inherits
    # its creator thread's namespaces), not moved there by a preexec_fn: a preexec_fn forces a full fork
    # of this whole process, where subprocess otherwise uses vfork, ~1-3 ms less per command, which
    # matters to every test and is the harness's own cost in the benchmarks.
    def run(self, argv, *, input: bytes | None = None, env: dict | None = None, timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess:
        """Runs a command with its network namespace set to this one (nothing else changes)."""
        with self.entered():   # the thread waits for the child in there too: harmless, it only waits
            return subprocess.run(argv, input=input, env=env, timeout=timeout, check=check,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def popen(self, argv, **kwargs) -> subprocess.Popen:
        with self.entered():
            return subprocess.Popen(argv, **kwargs)

    def entered(self):
        """Context manager: this thread inside the namespace (sockets made there stay there)."""
        return cni_netns.entered(self.path)

    # -- inspection ------------------------------------------------------------------------------
    @property
    def ipr(self):
        if self._ipr is None:
            self._ipr = cni_netns.iproute(self.path)
        return self._ipr

    def link_names(self) -> list[str]:
        return [msg.get_attr("IFLA_IFNAME") for msg in self.ipr.get_links()]

    def link(self, name: str):
        """The link message of ``name`` (pyroute2 nlmsg), or None."""
        from pyroute2.netlink.exceptions import NetlinkError

        found = self.ipr.link_lookup(ifname=name)
        try:
            return self.ipr.get_links(found[0])[0] if found else None
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None   # deleted between the lookup and the read (e.g. a DEL's deferred teardown)
            raise

    def addresses(self, ifname: str) -> list[str]:
        """Addresses on ``ifname`` as 'ip/prefix' strings, IPv6 link-local left out."""
        found = self.ipr.link_lookup(ifname=ifname)
        if not found:
            return []
        out = []
        for msg in self.ipr.get_addr(index=found[0]):
            addr = ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            if not (addr.version == 6 and addr.ip.is_link_local):
                out.append(str(addr))
        return out

    def routes(self, family: int = 4) -> list[dict]:
        """Main-table routes as {'dst': 'a.b.c.d/n' or 'default', 'gw': str|None, 'dev': ifname}."""
        names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in self.ipr.get_links()}
        out = []
        for msg in self.ipr.get_routes(family=10 if family == 6 else 2, table=254):
            dst = msg.get_attr("RTA_DST")
            out.append({"dst": f"{dst}/{msg['dst_len']}" if dst else "default",
                        "gw": msg.get_attr("RTA_GATEWAY"), "dev": names.get(msg.get_attr("RTA_OIF"))})
        return out

    def sysctl(self, key: str) -> str:
        with self.entered():
            return sysctl.read(key)

    def set_sysctl(self, key: str, value) -> None:
        with self.entered():
            sysctl.write(key, str(value))

    def nft_ruleset(self) -> str:
        """The namespace's whole ruleset in nft's text form (for assertions and failure messages)."""
        import nftables

        with self.entered():
            ctx = nftables.Nftables()
            rc, out, err = ctx.cmd("list ruleset")
        assert rc == 0, err
        return out

    def nft_json(self, command: str = "list ruleset") -> list:
        import json
        import nftables

        with self.entered():
            ctx = nftables.Nftables()
            ctx.set_json_output(True)
            rc, out, err = ctx.cmd(command)
        if rc != 0:
            raise RuntimeError(err)
        return json.loads(out)["nftables"] if out else []

    # -- lifetime --------------------------------------------------------------------------------
    def remove(self) -> None:
        from pyroute2 import netns as pr_netns

        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        with _lock:
            _live.pop(self.name, None)
        if os.path.exists(self.path):
            try:
                pr_netns.remove(self.name)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __repr__(self):
        return f"Netns({self.name!r})"


def cleanup_all() -> None:
    """Removes every namespace this process created and still holds (also run at exit)."""
    for ns in list(_live.values()):
        try:
            ns.remove()
        except Exception:
            pass


atexit.register(cleanup_all)
