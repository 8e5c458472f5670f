"""End to end as a Kubernetes node drives pynet: containerd 1.6's CRI plugin (Debian's containerd, runc),
called over gRPC the way kubelet calls it (RunPodSandbox with a hostPort and DNS config, PodSandboxStatus,
StopPodSandbox, RemovePodSandbox), runs pynet's plugin executables (`pynet cni install`, standalone: no
daemon) from a bridge -> portmap -> firewall conflist, inside a sandbox host netns.

containerd hands portmap ``runtimeConfig.portMappings`` with Go's field names (``HostPort``,
``ContainerPort``, ``Protocol``, ``HostIP``): the published port working proves pynet reads them.
Skips (with the reason) only when containerd, runc, busybox-static or grpcio are not installed.
"""

import fcntl
import glob
import ipaddress
import os

import pytest

from netns_fixtures import tcp_connect, tcp_listener, veth_link
from tests.test_portmap import nft_elements
from tests.cri.harness import Containerd, cri_api, missing_requirements, pod_netns

NET = "pynetcri"
BRIDGE = "cni-cri0"
SUBNET, GATEWAY = "10.88.42.0/24", "10.88.42.1"
UPLINK_HOST, UPLINK_OUT = "192.168.79.1", "192.168.79.2"
HOST_PORT, POD_PORT = 18090, 80
DNS = {"servers": ["10.96.0.10"], "searches": ["default.svc.cluster.local", "svc.cluster.local"],
       "options": ["ndots:5"]}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    reason = missing_requirements()
    if reason:
        pytest.skip(f"CRI test needs {reason}")
    return cri_api(str(tmp_path_factory.mktemp("cri-api")))


@pytest.fixture
def containerd(host_ns, api, tmp_path):
    """containerd running in host_ns with pynet's plugins and the pause image; yields (Containerd, CRI)."""
    from pynet import cni_install

    bin_dir = str(tmp_path / "cni-bin")
    cni_install.install(bin_dir)
    # One at a time across xdist workers: containerd's pod netns pins and shim sockets share /run.
    with open("/tmp/pynet-cri-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ctd = Containerd(host_ns, bin_dir)
        ctd.write_conflist(NET, BRIDGE, SUBNET, GATEWAY)
        state = {"client": None}
        try:
            try:
                state["client"] = ctd.start(api)
            except RuntimeError as exc:
                pytest.skip(f"containerd cannot start on this machine: {exc}")
            ctd.import_pause_image()
            yield ctd, state
        finally:
            notes = ctd.teardown(state["client"])
            assert not notes, notes


@pytest.fixture
def outside(host_ns, make_netns):
    """A netns behind host_ns's uplink, as a client on the node's network."""
    out = make_netns("pynt-o")
    veth_link(host_ns, "up0", out, "eth0", [f"{UPLINK_HOST}/24"], [f"{UPLINK_OUT}/24"])
    return out


def leases(ctd) -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(ctd.path("ipam", NET, "*"))
                  if os.path.basename(p)[0].isdigit())


def dnat_elements(host_ns) -> list:
    """The elements of pynet-portmap's wildcard-address DNAT map(s) (host port -> pod address . port)."""
    return [e for name, elems in nft_elements(host_ns).items() if name.endswith("_w4") for e in elems]


def veths(host_ns) -> list[str]:
    return [n for n in host_ns.link_names() if n.startswith("veth")]


def test_pod_with_host_port_and_dns_is_served_then_stop_and_remove_leave_nothing(containerd, host_ns, outside):
    ctd, state = containerd
    cri = state["client"]
    pod = cri.run_pod("web", ctd.cgroup_parent, port_mappings=[(HOST_PORT, POD_PORT)], dns=DNS)

    status, _ = cri.status(pod)
    pod_ip = status.network.ip
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(SUBNET)
    assert leases(ctd) == [pod_ip]
    assert len(veths(host_ns)) == 1
    netns_path = cri.netns_path(pod)
    assert pod_netns(netns_path).addresses("eth0") == [f"{pod_ip}/24"]

    with open(ctd.path("root", "io.containerd.grpc.v1.cri", "sandboxes", pod, "resolv.conf")) as f:
        resolv = f.read().split("\n")
    assert "nameserver 10.96.0.10" in resolv
    assert "search default.svc.cluster.local svc.cluster.local" in resolv
    assert "options ndots:5" in resolv

    # containerd's capitalised portMappings became a DNAT element for the pod in pynet's table
    assert dnat_elements(host_ns) == [[{"elem": {"val": {"concat": ["tcp", HOST_PORT]}, "comment": f"{pod}/eth0"}},
                                       {"concat": [pod_ip, POD_PORT]}]]

    with tcp_listener(pod_netns(netns_path), port=POD_PORT):
        assert tcp_connect(outside, UPLINK_HOST, HOST_PORT)
        assert tcp_connect(host_ns, pod_ip, POD_PORT)

    cri.stop_pod(pod)
    assert not os.path.exists(netns_path)
    assert leases(ctd) == []
    assert veths(host_ns) == []
    assert dnat_elements(host_ns) == []
    assert pod_ip not in host_ns.nft_ruleset()
    cri.remove_pod(pod)
    assert cri.pods() == []
    assert not glob.glob(f"/var/lib/cni/results/*{pod}*")
    assert not tcp_connect(outside, UPLINK_HOST, HOST_PORT, timeout=1)
