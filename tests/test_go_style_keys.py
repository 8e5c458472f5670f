"""Config keys in any case, as the reference plugins' Go JSON decoding accepts them (an exact match first,
then any case). containerd's CRI plugin sends Kubernetes hostPorts as
``{"HostPort": 18090, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}``."""

import pytest

from netns_fixtures import tcp_connect, tcp_listener

from .test_portmap import HOST4, conflist, outside  # noqa: F401  (outside is a fixture)


def capitalised(value, data_maps=("sysctl",)):
    """Every object key with its first letter upper-cased, except inside maps whose keys are data."""
    if isinstance(value, list):
        return [capitalised(v, data_maps) for v in value]
    if isinstance(value, dict):
        return {k[:1].upper() + k[1:]: (v if k in data_maps else capitalised(v, data_maps)) for k, v in value.items()}
    return value


def test_containerd_style_host_port_mapping_is_served(cni, host_ns, container_ns, outside, tmp_path):
    conf = conflist(tmp_path)
    mapping = {"HostPort": 18090, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}
    result = cni.add_chain(conf, container_ns, capability_args={"portMappings": [mapping]})
    address = result["ips"][0]["address"].split("/")[0]
    assert "18090" in host_ns.nft_ruleset()
    with tcp_listener(container_ns, address, 80):
        assert tcp_connect(outside, HOST4, 18090), "DNAT of the capitalised mapping does not work"
    cni.del_chain(conf, container_ns, result, capability_args={"portMappings": [mapping]})
    assert "18090" not in host_ns.nft_ruleset()


@pytest.mark.parametrize("plugin_conf", [
    {"type": "bridge", "bridge": "gokeys0", "isGateway": True, "ipMasq": True, "mtu": 1400,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.61.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "bridge", "bridge": "gokeys1", "isGateway": True,
     "ipam": {"type": "static", "addresses": [{"address": "10.62.0.5/24", "gateway": "10.62.0.1"}]}},
], ids=["bridge-host-local", "bridge-static"])
def test_every_key_capitalised_gives_the_same_result(cni, make_netns, tmp_path, plugin_conf):
    plain = {"cniVersion": "1.0.0", "name": "gokeys", "plugins": [
        plugin_conf, {"type": "firewall"},
        {"type": "tuning", "mtu": 1300, "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"},
         "dataDir": str(tmp_path / "tuning")}]}
    for p in plain["plugins"]:
        if "ipam" in p and p["ipam"]["type"] == "host-local":
            p["ipam"]["dataDir"] = str(tmp_path / "ipam")
    # The conflist itself is the runtime's to read (libcni); what each plugin is given goes capitalised,
    # except the "type" the runner itself looks up.
    loud = dict(plain, plugins=[dict(capitalised(p), type=p["type"]) for p in plain["plugins"]])
    for p in loud["plugins"]:
        del p["Type"]
    a, b = make_netns(), make_netns()
    first = cni.add_chain(plain, a)
    cni.del_chain(plain, a, first)
    second = cni.add_chain(loud, b)
    link = b.link("eth0")
    assert link.get_attr("IFLA_MTU") == 1300
    assert b.addresses("eth0") == [second["ips"][0]["address"]]
    if plugin_conf["ipam"].get("routes"):
        assert [r["dst"] for r in b.routes() if r["dst"] == "default"] == ["default"]
    for result in (first, second):
        for iface in result["interfaces"]:
            iface.pop("mac", None)
            iface.pop("sandbox", None)
            if iface["name"].startswith("veth"):
                iface["name"] = "veth"
        for ip in result["ips"]:
            ip["address"] = ip["address"].split(".")[0]   # host-local hands the second ADD the next address
    assert second == first
    cni.del_chain(loud, b, second)
    assert b.link("eth0") is None


def test_capitalised_prev_result_is_read(cni, container_ns, tmp_path):
    conf = {"cniVersion": "1.0.0", "name": "gokeys-prev", "type": "tuning", "mtu": 1280,
            "dataDir": str(tmp_path / "tuning")}
    made = cni.add("bridge", {"cniVersion": "1.0.0", "name": "gokeys-prev", "type": "bridge", "bridge": "gokeys2",
                              "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.63.0.0/24"}]],
                                       "dataDir": str(tmp_path / "ipam")}}, container_ns)
    out = cni.add("tuning", dict(conf, prevResult=capitalised(made)), container_ns)
    assert container_ns.link("eth0").get_attr("IFLA_MTU") == 1280
    assert out["ips"][0]["address"] == made["ips"][0]["address"]
