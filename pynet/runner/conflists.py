"""Network definitions written by pynet: the bridge + host-local conflist of `pynet net create`, which is
also the shape of `pynet run`'s default network, and what such a network leaves on the host once unused
(remove_host_side). (Reading them, as libcni does, is netconf.py.)"""

from __future__ import annotations

import os


def build_conflist(name: str, subnets: list, bridge: str, gateway: bool, masq: bool, port_map: bool,
                   data_dir: str | None, cni_version: str) -> dict:
    """A bridge (``isGateway``/``ipMasq`` as asked, hairpin, capabilities ips and mac) with host-local over
    ``subnets`` (ipaddress networks; with ``gateway`` a default route per IP version), then portmap
    (capability portMappings) when ``port_map``. ``data_dir``: host-local's lease dir (None: its default)."""
    ipam: dict = {"type": "host-local", "ranges": [[{"subnet": str(s)}] for s in subnets]}
    if gateway:
        ipam["routes"] = [{"dst": "0.0.0.0/0" if s.version == 4 else "::/0"}
                          for s in {s.version: s for s in subnets}.values()]
    if data_dir:
        ipam["dataDir"] = data_dir
    plugins: list[dict] = [{"type": "bridge", "bridge": bridge, "isGateway": gateway, "ipMasq": masq,
                            "hairpinMode": True, "ipam": ipam, "capabilities": {"ips": True, "mac": True}}]
    if port_map:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return {"cniVersion": cni_version, "name": name, "plugins": plugins}


def remove_host_side(conf, all_leases: bool = False) -> list[str]:
    """What a network (a netconf.NetworkConfig) leaves in this netns once nothing is attached to it: the
    bridges of its bridge plugins (with their gateway addresses and routes) that no link is enslaved to,
    and the host-local lease folders holding no lease (``all_leases``: whatever they hold). For `net rm`,
    and after a failed first attach.
    Returns what was removed."""
    import shutil

    from cni_plugins.ipam.config import DEFAULT_DATA_DIR

    removed = []
    bridges = [p["bridge"] for p in conf.plugins if p.get("type") == "bridge" and isinstance(p.get("bridge"), str)]
    if bridges:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for name in bridges:
                found = ipr.link_lookup(ifname=name)
                if not found:
                    continue
                link = ipr.get_links(found[0])[0]
                info = link.get_attr("IFLA_LINKINFO")
                ports = [x for x in ipr.get_links() if x.get_attr("IFLA_MASTER") == found[0]]
                if info is None or info.get_attr("IFLA_INFO_KIND") != "bridge" or ports:
                    continue   # not a bridge, or something still uses it
                ipr.link("del", index=found[0])
                removed.append(f"link {name}")
    for plugin in conf.plugins:
        ipam = plugin.get("ipam") if isinstance(plugin.get("ipam"), dict) else {}
        if ipam.get("type") != "host-local":
            continue
        data_dir = ipam.get("dataDir") if isinstance(ipam.get("dataDir"), str) and ipam.get("dataDir") else \
            DEFAULT_DATA_DIR
        folder = os.path.join(data_dir, conf.name)
        if os.path.isdir(folder) and (all_leases or not [n for n in os.listdir(folder) if n[:1].isdigit() or ":" in n]):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(f"leases {folder}")
    return removed
