"""Name resolution between containers: the resolver (server.py) the dnsname plugin starts per network, and
what a conflist needs to use it (cni_plugins/dnsname holds the plugin and the records file format)."""

from __future__ import annotations

from cni_plugins.dnsname.config import DEFAULT_DOMAIN


def plugin_config(domain: str = DEFAULT_DOMAIN, data_dir: str | None = None,
                  upstreams: list[str] | None = None) -> dict:
    """The dnsname entry of a conflist, chained after a bridge with ``isGateway: true``. It takes the
    ``aliases`` (``{"<network>": [names]}``) and ``dns`` (``{"servers": [...]}``) capabilities; the
    container's name comes from CNI_ARGS ``K8S_POD_NAME`` (or ``runtimeConfig.name``). ``upstreams``
    None: forward to the nameservers of /etc/resolv.conf."""
    entry: dict = {"type": "dnsname", "domainName": domain, "capabilities": {"aliases": True, "dns": True}}
    if data_dir is not None:
        entry["dataDir"] = data_dir
    if upstreams is not None:
        entry["upstreams"] = list(upstreams)
    return entry
