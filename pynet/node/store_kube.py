"""The store as Kubernetes sees it (`pynet node run --store kube`): each node's subnet is the
``spec.podCIDR`` the controller manager assigned, and what peers need (underlay address, backend, VTEP
MAC) is published as annotations on the node's own Node object, as flannel does. A peer is live while its
Node's Ready condition is True. Through the lightkube client: in a pod it reads the service account's
credentials; elsewhere the kubeconfig.

Not run against a live cluster here (no kube-apiserver on this machine): tested on recorded API responses.
"""

from __future__ import annotations

from .records import NodeRecord
from .store_etcd import StoreUnavailable

ANNOTATION = "pynet.dev/"
PUBLIC_IP, BACKEND, VTEP_MAC = ANNOTATION + "public-ip", ANNOTATION + "backend", ANNOTATION + "vtep-mac"


class KubeStore:
    def __init__(self, client=None):
        if client is None:
            from lightkube import Client

            client = Client(field_manager="pynet-node")
        self.client = client

    def _call(self, fn):
        from lightkube import ApiError
        import httpx2 as httpx

        try:
            return fn()
        except (ApiError, httpx.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"the Kubernetes API did not answer: {exc}") from None

    # Leases are the Node objects' own liveness: nothing to grant or keep alive here.
    def grant(self, ttl: int) -> int:
        return 0

    def keepalive(self, lease_id: int) -> bool:
        return True

    def revoke(self, lease_id: int) -> None:
        pass

    def assigned_subnet(self, node: str) -> str | None:
        from lightkube.resources.core_v1 import Node

        spec = self._call(lambda: self.client.get(Node, node)).spec
        return (spec.podCIDR if spec else None) or None

    def claim_subnet(self, subnet: str, node: str, lease_id: int) -> bool:
        return subnet == self.assigned_subnet(node)

    def taken_subnets(self) -> dict[str, str]:
        from lightkube.resources.core_v1 import Node

        return {n.spec.podCIDR: n.metadata.name for n in self._call(lambda: list(self.client.list(Node)))
                if n.spec and n.spec.podCIDR}

    def publish(self, record: NodeRecord, lease_id: int) -> None:
        from lightkube.resources.core_v1 import Node

        patch = {"metadata": {"annotations": {PUBLIC_IP: record.public_ip, BACKEND: record.backend,
                                              VTEP_MAC: record.vtep_mac}}}
        self._call(lambda: self.client.patch(Node, record.name, patch))

    def nodes(self) -> list[NodeRecord]:
        from lightkube.resources.core_v1 import Node

        out = []
        for node in self._call(lambda: list(self.client.list(Node))):
            notes = node.metadata.annotations or {}
            if not (node.spec and node.spec.podCIDR and notes.get(PUBLIC_IP) and _ready(node)):
                continue
            record = NodeRecord(node.metadata.name, node.spec.podCIDR, notes[PUBLIC_IP],
                                notes.get(BACKEND, "vxlan"), notes.get(VTEP_MAC, ""))
            if NodeRecord.from_json(record.to_json()) is not None:
                out.append(record)
        return sorted(out, key=lambda r: r.name)


def _ready(node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)
