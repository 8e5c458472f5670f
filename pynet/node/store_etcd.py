"""The store the nodes share: etcd v3 through its gRPC gateway (the etcd3gw client), several endpoints.

Keys: ``/pynet/subnets/<subnet>`` → node name and ``/pynet/nodes/<name>`` → NodeRecord, both attached to
the node's TTL lease. A subnet key is only ever created atomically (create_revision == 0) or re-taken by
the node that holds it, so two nodes never get one subnet; when a node stops renewing, etcd deletes both
keys at the lease's end and every other node withdraws its routes.
"""

from __future__ import annotations

import base64

from .records import NodeRecord

PREFIX = "/pynet/"
SUBNETS = PREFIX + "subnets/"
NODES = PREFIX + "nodes/"


class StoreUnavailable(Exception):
    """No endpoint answered (no quorum, all down)."""


class StoreError(ValueError):
    pass


def parse_store(spec: str) -> list[tuple[str, int]]:
    """``etcd://HOST:PORT[,HOST:PORT…]`` → endpoints."""
    if not spec.startswith("etcd://"):
        raise StoreError(f"invalid --store {spec!r}: expected etcd://HOST:PORT[,HOST:PORT...]")
    endpoints = []
    for item in spec[len("etcd://"):].split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreError(f"invalid --store endpoint {item!r} in {spec!r}: expected HOST:PORT")
        endpoints.append((host.strip("[]"), int(port)))
    return endpoints


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdStore:
    def __init__(self, endpoints: list[tuple[str, int]], timeout: float = 2.0):
        import etcd3gw

        self._clients = [etcd3gw.client(host=h, port=p, timeout=timeout, api_path="/v3/") for h, p in endpoints]
        self._current = 0

    # -- calls with failover ----------------------------------------------------------------------------
    def _call(self, fn):
        """``fn(client)`` on the endpoint that answered last, then on the others in turn."""
        import requests

        from etcd3gw import exceptions as etcd_errors

        last = None
        for step in range(len(self._clients)):
            index = (self._current + step) % len(self._clients)
            try:
                result = fn(self._clients[index])
            except (requests.exceptions.RequestException, etcd_errors.Etcd3Exception, OSError) as exc:
                last = exc
                continue
            self._current = index
            return result
        raise StoreUnavailable(f"no etcd endpoint answered: {last}")

    # -- leases -------------------------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        return self._call(lambda c: c.lease(ttl).id)

    def keepalive(self, lease_id: int) -> bool:
        """False when the lease has already expired (its keys are gone)."""
        from etcd3gw.lease import Lease

        return self._call(lambda c: Lease(lease_id, c).refresh()) > 0

    def revoke(self, lease_id: int) -> None:
        from etcd3gw.lease import Lease

        self._call(lambda c: Lease(lease_id, c).revoke())

    # -- subnets and records ------------------------------------------------------------------------------
    def assigned_subnet(self, node: str) -> str | None:
        """etcd assigns nothing: the agent picks a free subnet and claims it."""
        return None

    def claim_subnet(self, subnet: str, node: str, lease_id: int) -> bool:
        """Takes ``subnet`` for ``node`` under ``lease_id``: created when nobody holds it, re-attached when
        ``node`` holds it already (an agent restart); False when another node holds it."""
        key = _b64(SUBNETS + subnet)
        put = {"request_put": {"key": key, "value": _b64(node), "lease": lease_id}}
        for compare in ({"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0},
                        {"key": key, "result": "EQUAL", "target": "VALUE", "value": _b64(node)}):
            txn = {"compare": [compare], "success": [put], "failure": []}
            if self._call(lambda c: c.transaction(txn)).get("succeeded"):
                return True
        return False

    def publish(self, record: NodeRecord, lease_id: int) -> None:
        self._call(lambda c: c.put(NODES + record.name, record.to_json(), lease=_lease(c, lease_id)))

    def nodes(self) -> list[NodeRecord]:
        items = self._call(lambda c: c.get_prefix(NODES))
        records = (NodeRecord.from_json(value) for value, _meta in items)
        return sorted((r for r in records if r is not None), key=lambda r: r.name)

    def taken_subnets(self) -> dict[str, str]:
        """subnet → holder."""
        items = self._call(lambda c: c.get_prefix(SUBNETS))
        return {meta["key"].decode()[len(SUBNETS):]: value.decode() for value, meta in items}


def _lease(client, lease_id: int):
    from etcd3gw.lease import Lease

    return Lease(lease_id, client)
