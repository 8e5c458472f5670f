"""Network definitions written by pynet: the bridge + host-local conflist of `pynet net create`, which is
also the shape of `pynet run`'s default network. (Reading them, as libcni does, is netconf.py.)"""

from __future__ import annotations


def build_conflist(name: str, subnets: list, bridge: str, gateway: bool, masq: bool, port_map: bool,
                   data_dir: str | None, cni_version: str) -> dict:
    """A bridge (``isGateway``/``ipMasq`` as asked, hairpin, capabilities ips and mac) with host-local over
    ``subnets`` (ipaddress networks; with ``gateway`` a default route per IP version), then portmap
    (capability portMappings) when ``port_map``. ``data_dir``: host-local's lease dir (None: its default)."""
    ipam: dict = {"type": "host-local", "ranges": [[{"subnet": str(s)}] for s in subnets]}
    if gateway:
        ipam["routes"] = [{"dst": "0.0.0.0/0" if s.version == 4 else "::/0"}
                          for s in {s.version: s for s in subnets}.values()]
    if data_dir:
        ipam["dataDir"] = data_dir
    plugins: list[dict] = [{"type": "bridge", "bridge": bridge, "isGateway": gateway, "ipMasq": masq,
                            "hairpinMode": True, "ipam": ipam, "capabilities": {"ips": True, "mac": True}}]
    if port_map:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    return {"cniVersion": cni_version, "name": name, "plugins": plugins}
