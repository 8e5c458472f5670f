"""Carving node subnets out of the cluster CIDR."""

from __future__ import annotations

import ipaddress


class SubnetError(ValueError):
    pass


def parse_cluster(cidr: str, subnet_len: int) -> ipaddress.IPv4Network:
    try:
        cluster = ipaddress.ip_network(cidr)
    except ValueError:
        raise SubnetError(f"invalid --cluster-cidr {cidr!r}: expected an IPv4 network like 10.244.0.0/16") from None
    if cluster.version != 4:
        raise SubnetError(f"invalid --cluster-cidr {cidr!r}: only IPv4 is supported")
    if not cluster.prefixlen < subnet_len <= 28:
        raise SubnetError(f"invalid --subnet-len {subnet_len}: must be longer than the cluster prefix "
                          f"/{cluster.prefixlen} and at most 28")
    return cluster


def candidates(cluster: ipaddress.IPv4Network, subnet_len: int, taken: set[str], preferred: str | None = None):
    """Node subnets to try, in order: the one this node had before, then the free ones. The first subnet
    of the cluster is skipped, as flannel does (it holds the cluster's own network address)."""
    if preferred:
        yield preferred
    for i, subnet in enumerate(cluster.subnets(new_prefix=subnet_len)):
        if i == 0:
            continue
        if str(subnet) not in taken and str(subnet) != preferred:
            yield str(subnet)
