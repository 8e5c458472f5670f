"""Throwaway network namespaces as test "hosts" and "containers", plugin runners and traffic probes.

Plain API (usable outside pytest)::

    with Netns.create("host") as host, Netns.create("ctr") as ctr:
        cni = CNI(host, OUR_PLUGINS)
        result = cni.add("bridge", conf, ctr)
        assert icmp_echo(ctr, "10.1.0.1")

pytest fixtures live in ``netns_fixtures.pytest_plugin``, a pytest11 entry point: pytest loads it wherever
pynet is installed. This package depends on ``cni_plugins`` only, never on ``pynet``.
"""

from .links import veth_link
from .namespaces import Netns, cleanup_all
from .runner import CNI, PluginFailed, OUR_PLUGINS, REFERENCE_PLUGINS, reference_available
from .probes import icmp_echo, tcp_listener, tcp_connect, udp_echo_server, udp_exchange

__all__ = ["Netns", "cleanup_all", "CNI", "PluginFailed", "OUR_PLUGINS", "REFERENCE_PLUGINS",
           "reference_available", "icmp_echo", "tcp_listener", "tcp_connect", "udp_echo_server", "udp_exchange",
           "veth_link"]
