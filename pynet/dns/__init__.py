"""Name resolution between containers: the resolver the dnsname plugin starts per network (supervise.py:
its watchdog; server.py: its serving process), and what a conflist needs to use it (cni_plugins/dnsname
holds the plugin and the records file format). Kept free of imports: the watchdog starts through here."""

from __future__ import annotations


def plugin_config(domain: str | None = None, data_dir: str | None = None,
                  upstreams: list[str] | None = None) -> dict:
    """The dnsname entry of a conflist, chained after a bridge with ``isGateway: true`` (``domain`` None:
    the plugin's default, dns.pynet). It takes the ``aliases`` (``{"<network>": [names]}``) and ``dns``
    (``{"servers": [...]}``) capabilities; the container's name comes from CNI_ARGS ``K8S_POD_NAME`` (or
    ``runtimeConfig.name``). ``upstreams`` None: forward to the nameservers of /etc/resolv.conf."""
    from cni_plugins.dnsname.config import DEFAULT_DOMAIN

    entry: dict = {"type": "dnsname", "domainName": domain or DEFAULT_DOMAIN,
                   "capabilities": {"aliases": True, "dns": True}}
    if data_dir is not None:
        entry["dataDir"] = data_dir
    if upstreams is not None:
        entry["upstreams"] = list(upstreams)
    return entry
