"""Beyond one host: a pod network across nodes (flannel's job), on a shared store.

Each host runs one agent (`pynet node run`). It leases a node subnet out of the cluster CIDR from the
store (etcd: an atomic create of ``/pynet/subnets/<subnet>``, kept alive by a TTL lease; the same subnet
again after a restart), publishes its underlay address and VTEP MAC (``/pynet/nodes/<name>``), writes the
node's conflist (bridge + host-local on its subnet, portmap, firewall), masquerades only traffic leaving
the cluster CIDR, and keeps the data plane towards every other node in step with the store:

- ``vxlan``: one VXLAN device per node, and per peer an FDB entry (its VTEP MAC → its underlay address),
  a permanent neighbour entry (its subnet's .0 → its VTEP MAC) and a route to its subnet via that .0,
  onlink (flannel's L3 scheme); the device's MTU is the underlay's minus the encapsulation (50 bytes).
- ``host-gw``: a route to each peer subnet via the peer's underlay address (peers share one L2).

A peer whose lease expires is withdrawn everywhere. An agent that stops (or loses the store) leaves its
data plane as it is, so pods keep their connectivity; it reports not ready until the store answers again.

Modules: ``records`` (what is stored), ``subnets`` (carving the cluster CIDR), ``store_etcd`` (the store),
``dataplane`` (the two backends over pyroute2, the masquerade table over the nft layer), ``agent`` (the
loop), ``cli`` (`pynet node run|ls`).
"""
