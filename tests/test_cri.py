"""End to end as a Kubernetes node drives pynet: containerd 1.6's CRI plugin (Debian's containerd, runc),
called over gRPC the way kubelet calls it (RunPodSandbox with a hostPort and DNS config, PodSandboxStatus,
StopPodSandbox, RemovePodSandbox), runs pynet's plugin executables (`pynet cni install`, standalone: no
daemon; one test through a pynet daemon) from a bridge -> portmap -> firewall conflist, inside a sandbox host netns.

containerd hands portmap ``runtimeConfig.portMappings`` with Go's field names (``HostPort``,
``ContainerPort``, ``Protocol``, ``HostIP``): the published port working proves pynet reads them.
Skips (with the reason) only when containerd, runc, busybox-static or grpcio are not installed.
"""

import fcntl
import glob
import ipaddress
import json
import os

import pytest

from netns_fixtures import tcp_connect, tcp_listener
from tests.test_podman import UPLINK_HOST, outside  # noqa: F401 (outside: a client on the node's network)
from tests.test_portmap import nft_elements
from tests.cri.harness import Containerd, cri_api, missing_requirements, pod_netns, processes_naming

NET = "pynetcri"
BRIDGE = "cni-cri0"
SUBNET, GATEWAY = "10.88.42.0/24", "10.88.42.1"
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
def plugin_env(request):
    """What containerd's environment tells pynet's shim: standalone (PYNET_DAEMON=off, whatever daemon may
    listen on the default socket) unless a test asks for "daemon": a pynet daemon in host_ns."""
    if getattr(request, "param", "standalone") == "daemon":
        return {"PYNET_SOCKET": request.getfixturevalue("pynet_daemon")}
    return {"PYNET_DAEMON": "off"}


@pytest.fixture
def containerd(host_ns, api, plugin_env, tmp_path):
    """containerd running in host_ns with pynet's plugins and the pause image; yields (Containerd, CRI)."""
    from pynet import cni_install

    bin_dir = str(tmp_path / "cni-bin")
    cni_install.install(bin_dir)
    # One at a time across xdist workers: containerd's pod netns pins and shim sockets share /run.
    with open("/tmp/pynet-cri-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ctd = Containerd(host_ns, bin_dir, plugin_env)
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

    # what containerd handed the chain (libcni's cache): Go's field names, capitalised
    with open(f"/var/lib/cni/results/{NET}-{pod}-eth0") as f:
        cached = json.load(f)
    assert cached["capabilityArgs"]["portMappings"] == [
        {"HostPort": HOST_PORT, "ContainerPort": POD_PORT, "Protocol": "tcp", "HostIP": ""}]
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


def test_second_pod_gets_another_address_and_each_pod_is_reached_and_released_alone(containerd, host_ns):
    ctd, state = containerd
    cri = state["client"]
    first = cri.run_pod("one", ctd.cgroup_parent)
    second = cri.run_pod("two", ctd.cgroup_parent)
    ip1, ip2 = (cri.status(pod)[0].network.ip for pod in (first, second))
    assert ip1 != ip2
    assert {ipaddress.ip_address(ip1), ipaddress.ip_address(ip2)} <= set(ipaddress.ip_network(SUBNET).hosts())
    assert leases(ctd) == sorted([ip1, ip2])
    assert len(veths(host_ns)) == 2
    netns2 = cri.netns_path(second)
    with tcp_listener(pod_netns(netns2), port=POD_PORT):
        assert tcp_connect(pod_netns(cri.netns_path(first)), ip2, POD_PORT)  # pod to pod over the bridge

        cri.stop_pod(first)
        cri.remove_pod(first)
        assert leases(ctd) == [ip2]
        assert len(veths(host_ns)) == 1
        assert tcp_connect(host_ns, ip2, POD_PORT)

    cri.stop_pod(second)
    cri.remove_pod(second)
    assert leases(ctd) == []
    assert veths(host_ns) == []
    assert not os.path.exists(netns2)


def test_pod_survives_a_containerd_restart_and_stop_afterwards_still_cleans_up(containerd, host_ns, outside):
    ctd, state = containerd
    pod = state["client"].run_pod("web", ctd.cgroup_parent, port_mappings=[(HOST_PORT, POD_PORT)])
    pod_ip = state["client"].status(pod)[0].network.ip
    netns_path = state["client"].netns_path(pod)

    state["client"] = cri = ctd.restart(state["client"])
    status, _ = cri.status(pod)
    assert status.network.ip == pod_ip
    assert status.state == cri.pb.SANDBOX_READY
    assert len(dnat_elements(host_ns)) == 1
    with tcp_listener(pod_netns(netns_path), port=POD_PORT):
        assert tcp_connect(outside, UPLINK_HOST, HOST_PORT)

    cri.stop_pod(pod)
    cri.remove_pod(pod)
    assert not os.path.exists(netns_path)
    assert leases(ctd) == []
    assert veths(host_ns) == []
    assert dnat_elements(host_ns) == []
    assert not glob.glob(f"/var/lib/cni/results/*{pod}*")


def read_syscalls(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("syscr:"))


@pytest.mark.parametrize("plugin_env", ["daemon"], indirect=True)
def test_pod_through_a_pynet_daemon_named_in_containerds_environment(containerd, plugin_env, host_ns, outside):
    ctd, state = containerd
    cri = state["client"]
    [daemon] = processes_naming(plugin_env["PYNET_SOCKET"])
    idle = read_syscalls(daemon)  # an idle daemon waits in accept(): no reads
    pod = cri.run_pod("web", ctd.cgroup_parent, port_mappings=[(HOST_PORT, POD_PORT)])
    assert read_syscalls(daemon) > idle  # the shim handed the chain to the daemon
    pod_ip = cri.status(pod)[0].network.ip
    assert len(dnat_elements(host_ns)) == 1
    with tcp_listener(pod_netns(cri.netns_path(pod)), port=POD_PORT):
        assert tcp_connect(outside, UPLINK_HOST, HOST_PORT)

    cri.stop_pod(pod)
    cri.remove_pod(pod)
    assert leases(ctd) == []
    assert veths(host_ns) == []
    assert dnat_elements(host_ns) == []
    assert pod_ip not in host_ns.nft_ruleset()
