"""Network definitions written by pynet: the bridge + host-local conflist of `pynet net create`, which is
also the shape of `pynet run`'s default network, and what such a network leaves on the host once unused
(remove_host_side). (Reading them, as libcni does, is netconf.py.)"""

from __future__ import annotations

import os


# Where pynet carves the subnets of the networks it writes when none is given: /24s of 10.200.0.0/16,
# clear of podman's defaults (10.88.0.0/16, 10.89.x.0/24) and Docker's (172.17.0.0/16, 172.18-31.0.0/16).
SUBNET_POOL = "10.200.0.0/16"
SUBNET_PREFIX = 24
RESERVED = ("10.88.0.0/16", "10.89.0.0/16", "172.17.0.0/16", "172.18.0.0/15", "172.20.0.0/14", "172.24.0.0/13")


def subnets_in_use(networks) -> list:
    """The IPAM subnets (``subnet`` and ``ranges``) of netconf.NetworkConfigs."""
    import ipaddress

    out = []
    for conf in networks:
        for plugin in conf.plugins:
            ipam = plugin.get("ipam") if isinstance(plugin.get("ipam"), dict) else {}
            candidates = [ipam.get("subnet")] + [r.get("subnet") for rs in ipam.get("ranges") or []
                                                 if isinstance(rs, list) for r in rs if isinstance(r, dict)]
            for s in candidates:
                try:
                    out.append(ipaddress.ip_network(s, strict=False))
                except (TypeError, ValueError):
                    pass
    return out


def routed_here() -> list:
    """(network, link name) of every route with a destination in this network namespace's main table
    (the subnets of live links here: a network over one could not reach its gateway)."""
    import ipaddress

    from pyroute2 import IPRoute

    out = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for family in (2, 10):   # AF_INET, AF_INET6
            for route in ipr.get_routes(family=family, table=254):
                dst, plen = route.get_attr("RTA_DST"), route["dst_len"]
                if dst is None or plen == 0 or (family == 10 and dst.startswith("fe80:")):
                    continue
                try:
                    out.append((ipaddress.ip_network(f"{dst}/{plen}", strict=False),
                                names.get(route.get_attr("RTA_OIF"), "?")))
                except ValueError:
                    continue
    return out


def free_subnet(taken) -> "ipaddress.IPv4Network":
    """The first /24 of SUBNET_POOL overlapping none of ``taken`` (ipaddress networks) nor RESERVED;
    ValueError when the pool is used up."""
    import ipaddress

    avoid = [t for t in taken if t.version == 4] + [ipaddress.ip_network(r) for r in RESERVED]
    for candidate in ipaddress.ip_network(SUBNET_POOL).subnets(new_prefix=SUBNET_PREFIX):
        if not any(candidate.overlaps(t) for t in avoid):
            return candidate
    raise ValueError(f"every /{SUBNET_PREFIX} of {SUBNET_POOL} is used: give --subnet")


def build_conflist(name: str, subnets: list, bridge: str, gateway, masq: bool, port_map: bool,
                   data_dir: str | None, cni_version: str, dns: dict | None = None,
                   default_route: bool | None = None) -> dict:
    """A bridge (``isGateway``/``ipMasq`` as asked, hairpin, capabilities ips and mac) with host-local over
    ``subnets`` (ipaddress networks) then portmap (capability portMappings) when ``port_map``, then ``dns``
    (a dnsname entry, pynet.dns.plugin_config) when given. ``gateway``: True/False, or the gateway address
    (an ipaddress address in one of the subnets; the bridge is the gateway). ``default_route`` (default:
    ``gateway``): a default route per IP version. ``data_dir``: host-local's lease dir (None: its default)."""
    ranges = []
    for s in subnets:
        r = {"subnet": str(s)}
        if gateway not in (True, False, None) and gateway in s:
            r["gateway"] = str(gateway)
        ranges.append([r])
    ipam: dict = {"type": "host-local", "ranges": ranges}
    if default_route is None:
        default_route = bool(gateway)
    if default_route:
        ipam["routes"] = [{"dst": "0.0.0.0/0" if s.version == 4 else "::/0"}
                          for s in {s.version: s for s in subnets}.values()]
    if data_dir:
        ipam["dataDir"] = data_dir
    plugins: list[dict] = [{"type": "bridge", "bridge": bridge, "isGateway": bool(gateway), "ipMasq": masq,
                            "hairpinMode": True, "ipam": ipam, "capabilities": {"ips": True, "mac": True}}]
    if port_map:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    if dns:
        plugins.append(dns)
    return {"cniVersion": cni_version, "name": name, "plugins": plugins}


def dns_data_dir(locations: dict) -> str | None:
    """Where the name records and resolver state of the networks pynet writes live: ``dns`` in the cache dir
    when one is set (--cache-dir, PYNET_CACHE_DIR), else the dnsname plugin's default (/run/pynet/dns)."""
    return os.path.join(locations["cache_dir"], "dns") if (locations or {}).get("cache_dir") else None


def bridge_of(conf) -> str | None:
    """The bridge name of a network's bridge plugin, if it has one."""
    return next((p["bridge"] for p in conf.plugins if p.get("type") == "bridge" and isinstance(p.get("bridge"), str)),
                None)


def has_dns(conf) -> bool:
    """Whether a network resolves container names (a dnsname plugin in its chain)."""
    return any(p.get("type") == "dnsname" for p in conf.plugins)


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
