"""`pynet node run` (the agent, foreground) and `pynet node ls` (the cluster's nodes)."""

from __future__ import annotations

import json
import signal
import sys
import threading


def _agent(args) -> int:
    from pynet.cli_base import CommandError

    from .agent import Agent, AgentConfig
    from .store_etcd import StoreError
    from .subnets import SubnetError

    try:
        store = _store(args.store)
        cfg = AgentConfig(name=args.name, cluster_cidr=args.cluster_cidr, backend=args.backend, iface=args.iface,
                          config_dir=args.config_dir, ipam_dir=args.ipam_dir, subnet_len=args.subnet_len,
                          ttl=args.ttl, interval=args.interval, leave_on_exit=args.leave_on_exit)
        agent = Agent(cfg, store)
    except (StoreError, SubnetError) as exc:
        raise CommandError(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        agent.run(stop)
    except Exception as exc:   # noqa: BLE001 - a one-line error for the operator, not a traceback
        print(f"pynet node: {exc}", file=sys.stderr)
        return 1
    return 0


def _ls(args) -> int:
    from pynet.cli_base import CommandError, table

    from .store_etcd import StoreError, StoreUnavailable

    try:
        nodes = _store(args.store).nodes()
    except (StoreError, StoreUnavailable) as exc:
        raise CommandError(str(exc)) from None
    # Only live nodes are in the store: a node's record goes with its lease.
    rows = [{"name": n.name, "subnet": n.subnet, "publicIP": n.public_ip, "backend": n.backend,
             "vtepMAC": n.vtep_mac, "alive": True} for n in nodes]
    if args.json:
        print(json.dumps(rows))
    else:
        table(["NAME", "SUBNET", "PUBLIC IP", "BACKEND", "ALIVE"],
              [[r["name"], r["subnet"], r["publicIP"], r["backend"], "yes"] for r in rows])
    return 0


def _store(spec: str):
    """``kube`` (the Kubernetes API: subnets from Node.spec.podCIDR) or ``etcd://HOST:PORT[,...]``."""
    if spec == "kube":
        from .store_kube import KubeStore

        return KubeStore()
    from .store_etcd import EtcdStore, parse_store

    return EtcdStore(parse_store(spec))


def register(subparsers) -> None:
    node = subparsers.add_parser("node", help="pod network across nodes (agent on etcd)")
    sub = node.add_subparsers(dest="node_command", metavar="COMMAND")
    node.set_defaults(func=lambda args: (node.print_help(), 2)[1])
    run = sub.add_parser("run", help="run this host's node agent in the foreground")
    run.add_argument("--name", required=True, help="this node's name")
    run.add_argument("--store", required=True, help="etcd://HOST:PORT[,HOST:PORT...], or kube (subnets from the Kubernetes Nodes' podCIDR)")
    run.add_argument("--cluster-cidr", required=True, help="the pod network of the whole cluster, e.g. 10.244.0.0/16")
    run.add_argument("--subnet-len", type=int, default=24, help="prefix length of each node's subnet (default 24)")
    run.add_argument("--backend", choices=("vxlan", "host-gw"), default="vxlan")
    run.add_argument("--iface", required=True, help="the underlay interface (its IPv4 address is published)")
    run.add_argument("--config-dir", default="/etc/cni/net.d", help="where the node's conflist is written")
    run.add_argument("--ipam-dir", default="/var/lib/cni/networks", help="host-local's dataDir in that conflist")
    run.add_argument("--ttl", type=int, default=10, help="lease TTL in seconds: a silent node is withdrawn after it")
    run.add_argument("--interval", type=float, default=1.0, help="seconds between keep-alive and reconcile rounds")
    run.add_argument("--leave-on-exit", action="store_true",
                     help="on SIGTERM give the subnet back and remove the data plane (default: keep both, "
                          "so pods keep their connectivity across an agent restart)")
    run.set_defaults(func=_agent)
    ls = sub.add_parser("ls", help="list the cluster's nodes")
    ls.add_argument("--store", required=True, help="etcd://HOST:PORT[,HOST:PORT...], or kube (subnets from the Kubernetes Nodes' podCIDR)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_ls)
