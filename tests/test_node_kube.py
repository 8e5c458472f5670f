"""`pynet node` on Kubernetes, offline: the manifests load as valid objects of the Kubernetes client's
models, and the agent's Kubernetes store is driven against recorded API responses (no kube-apiserver
exists on this machine; deploy/kubernetes/pynet.yaml says so too)."""

import json
import os

import pytest

lightkube = pytest.importorskip("lightkube")

from pynet.node.records import NodeRecord  # noqa: E402
from pynet.node.store_kube import BACKEND, PUBLIC_IP, VTEP_MAC, KubeStore  # noqa: E402
from pynet.node.store_etcd import StoreUnavailable  # noqa: E402

MANIFEST = os.path.join(os.path.dirname(__file__), "..", "deploy", "kubernetes", "pynet.yaml")


def test_manifests_are_valid_kubernetes_objects():
    from lightkube import codecs

    with open(MANIFEST) as f:
        objects = codecs.load_all_yaml(f)
    kinds = {type(o).__name__: o for o in objects}
    assert set(kinds) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
    ds = kinds["DaemonSet"]
    pod = ds.spec.template.spec
    assert pod.hostNetwork and pod.serviceAccountName == kinds["ServiceAccount"].metadata.name
    agent = next(c for c in pod.containers if c.name == "node-agent")
    assert agent.securityContext.privileged
    assert agent.command[:4] == ["/opt/pynet/.venv/bin/pynet", "node", "run", "--store"] and "kube" in agent.command
    host_paths = {v.hostPath.path for v in pod.volumes}
    assert {"/opt/cni/bin", "/etc/cni/net.d", "/run/netns", "/var/lib/cni"} <= host_paths
    assert "cni install /host/opt/cni/bin" in pod.initContainers[0].args[0]
    rules = kinds["ClusterRole"].rules
    assert any("nodes" in r.resources and "patch" in r.verbs for r in rules)
    config_keys = set(kinds["ConfigMap"].data)
    referenced = {e.valueFrom.configMapKeyRef.key for e in agent.env if e.valueFrom and e.valueFrom.configMapKeyRef}
    assert referenced <= config_keys


def _node(name, cidr, ip=None, ready=True, mac="0a:58:0a:f4:01:00"):
    notes = {PUBLIC_IP: ip, BACKEND: "vxlan", VTEP_MAC: mac} if ip else {}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": notes, "resourceVersion": "1"},
            "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


class RecordedApi:
    """Answers like a kube-apiserver with a fixed set of Nodes, and records the patches it gets."""

    def __init__(self, nodes):
        self.nodes = {n["metadata"]["name"]: n for n in nodes}
        self.patches = []

    def __call__(self, request):
        import httpx2 as httpx

        path = request.url.path
        if request.method == "GET" and path == "/api/v1/nodes":
            return httpx.Response(200, json={"apiVersion": "v1", "kind": "NodeList", "metadata": {},
                                             "items": list(self.nodes.values())})
        name = path.rsplit("/", 1)[-1]
        if request.method == "GET" and name in self.nodes:
            return httpx.Response(200, json=self.nodes[name])
        if request.method == "PATCH" and name in self.nodes:
            patch = json.loads(request.content)
            self.patches.append((name, patch))
            self.nodes[name]["metadata"]["annotations"].update(patch["metadata"]["annotations"])
            return httpx.Response(200, json=self.nodes[name])
        return httpx.Response(404, json={"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "reason": "NotFound", "code": 404, "message": f"{path} not found"})


def _client(handler):
    """A lightkube client whose requests go to ``handler`` (a recorded API), with a service-account-like token."""
    import httpx2 as httpx
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig

    config = KubeConfig.from_dict({
        "clusters": [{"name": "c", "cluster": {"server": "http://kube.invalid"}}],
        "users": [{"name": "u", "user": {"token": "recorded"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"})
    return Client(config, transport=httpx.MockTransport(handler))


def _store(api):
    return KubeStore(_client(api))


def test_kube_store_reads_subnets_and_live_peers():
    api = RecordedApi([_node("a", "10.244.1.0/24", "192.0.2.1"), _node("b", "10.244.2.0/24", "192.0.2.2"),
                       _node("c", "10.244.3.0/24", "192.0.2.3", ready=False), _node("d", "10.244.4.0/24"),
                       _node("e", None, "192.0.2.5")])
    store = _store(api)
    assert store.assigned_subnet("a") == "10.244.1.0/24"
    assert store.claim_subnet("10.244.1.0/24", "a", store.grant(10)) and not store.claim_subnet("10.244.9.0/24", "a", 0)
    # Not ready (c), not yet annotated (d) and without a podCIDR (e): not peers.
    assert [n.name for n in store.nodes()] == ["a", "b"]
    assert store.taken_subnets() == {"10.244.1.0/24": "a", "10.244.2.0/24": "b", "10.244.3.0/24": "c",
                                     "10.244.4.0/24": "d"}


def test_kube_store_publishes_the_node_record_as_annotations():
    api = RecordedApi([_node("d", "10.244.4.0/24")])
    store = _store(api)
    store.publish(NodeRecord("d", "10.244.4.0/24", "192.0.2.4", "vxlan", "0a:58:0a:f4:04:00"), 0)
    assert api.patches == [("d", {"metadata": {"annotations": {PUBLIC_IP: "192.0.2.4", BACKEND: "vxlan",
                                                                VTEP_MAC: "0a:58:0a:f4:04:00"}}})]
    assert [(n.name, n.public_ip, n.vtep_mac) for n in store.nodes()] == [("d", "192.0.2.4", "0a:58:0a:f4:04:00")]


def test_kube_store_errors_are_store_unavailable():
    import httpx2 as httpx

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    store = KubeStore(_client(refuse))
    with pytest.raises(StoreUnavailable):
        store.nodes()
    api = RecordedApi([])
    with pytest.raises(StoreUnavailable):
        _store(api).assigned_subnet("missing")
