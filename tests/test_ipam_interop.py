"""Our IPAM plugins next to the reference Go plugins: delegated to by the reference bridge, and host-local
sharing one dataDir (format and lock) with the reference host-local."""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from netns_fixtures import OUR_PLUGINS, REFERENCE_PLUGINS, icmp_echo, reference_available

pytestmark = pytest.mark.skipif(not reference_available(), reason="reference plugins not installed in /usr/lib/cni")

NET = "interop-net"


@pytest.fixture
def mixed_dir(tmp_path):
    """A CNI_PATH directory: the reference bridge, our IPAM plugins."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "bridge").symlink_to(os.path.join(REFERENCE_PLUGINS, "bridge"))
    for name in ("host-local", "static"):
        (d / name).symlink_to(os.path.join(OUR_PLUGINS, name))
    return str(d)


def bridge_conf(ipam):
    return {"cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "pyntbr0", "isGateway": True,
            "ipam": ipam}


def host_local_conf(tmp_path, cidr="10.120.0.0/24"):
    return {"cniVersion": "1.0.0", "name": NET, "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(tmp_path / "leases"), "ranges": [[{"subnet": cidr}]]}}


def test_reference_bridge_with_our_host_local_configures_container(make_cni, mixed_dir, container_ns, tmp_path):
    cni = make_cni(mixed_dir)
    conf = bridge_conf({"type": "host-local", "dataDir": str(tmp_path / "leases"),
                        "ranges": [[{"subnet": "10.121.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]})
    result = cni.add("bridge", conf, container_ns, container_id="web")
    assert [ip["address"] for ip in result["ips"]] == ["10.121.0.2/24"]
    assert container_ns.addresses("eth0") == ["10.121.0.2/24"]
    assert {"dst": "default", "gw": "10.121.0.1", "dev": "eth0"} in container_ns.routes(4)
    assert icmp_echo(container_ns, "10.121.0.1")
    assert (tmp_path / "leases" / NET / "10.121.0.2").read_bytes() == b"web\r\neth0"
    cni.delete("bridge", conf, container_ns, container_id="web")
    assert not (tmp_path / "leases" / NET / "10.121.0.2").exists()


def test_reference_bridge_with_our_static_configures_container(make_cni, mixed_dir, container_ns):
    cni = make_cni(mixed_dir)
    conf = bridge_conf({"type": "static", "addresses": [{"address": "10.122.0.5/24", "gateway": "10.122.0.1"}]})
    cni.add("bridge", conf, container_ns, container_id="web")
    assert container_ns.addresses("eth0") == ["10.122.0.5/24"]
    cni.delete("bridge", conf, container_ns, container_id="web")


def test_our_and_reference_host_local_share_one_data_dir(cni, ref_cni, tmp_path):
    conf = host_local_conf(tmp_path)
    ns = "/run/netns/unused"
    assert cni.add("host-local", conf, ns, container_id="a")["ips"][0]["address"] == "10.120.0.2/24"
    # The reference continues our round-robin cursor and sees our lease.
    assert ref_cni.add("host-local", conf, ns, container_id="b")["ips"][0]["address"] == "10.120.0.3/24"
    assert cni.add("host-local", conf, ns, container_id="c")["ips"][0]["address"] == "10.120.0.4/24"
    inv = ref_cni.invoke("host-local", "ADD", conf, container=ns, container_id="c")
    assert inv.rc != 0 and "duplicate allocation" in inv.reply["msg"]
    inv = cni.invoke("host-local", "ADD", conf, container=ns, container_id="b")
    assert inv.rc != 0 and "duplicate allocation" in inv.reply["msg"]
    # Each releases what the other allocated.
    ref_cni.delete("host-local", conf, ns, container_id="a")
    cni.delete("host-local", conf, ns, container_id="b")
    left = sorted(n for n in os.listdir(tmp_path / "leases" / NET) if n[0].isdigit())
    assert left == ["10.120.0.4"]


def test_concurrent_adds_from_both_implementations_never_collide(cni, ref_cni, tmp_path):
    conf = host_local_conf(tmp_path, "10.123.0.0/24")

    def one(i):
        runner = cni if i % 2 else ref_cni
        return runner.invoke("host-local", "ADD", conf, container="/run/netns/unused", container_id=f"ctr{i}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        invocations = list(pool.map(one, range(20)))
    assert [inv.rc for inv in invocations] == [0] * 20, [inv.reply for inv in invocations if inv.rc]
    assert len({inv.reply["ips"][0]["address"] for inv in invocations}) == 20
