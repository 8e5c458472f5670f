"""pytest fixtures over netns_fixtures. Every namespace made here is removed when its test ends, pass or fail.

- ``host_ns``: a sandbox "host" netns; plugins run inside it, never in the machine's root netns.
- ``make_netns``: factory for more namespaces ("containers"), removed at test end.
- ``container_ns``: one container netns.
- ``cni``: runner of pynet's plugins inside ``host_ns``; ``ref_cni``: the reference Go plugins (skips when
  absent); ``make_cni(*dirs)`` for mixed CNI_PATHs.
"""

from __future__ import annotations


import pytest

from .daemon import start_daemon, stop_daemon
from .namespaces import Netns
from .runner import CNI, OUR_PLUGINS, REFERENCE_PLUGINS, reference_available


@pytest.fixture
def make_netns():
    made: list[Netns] = []

    def factory(prefix: str = "pynt-c") -> Netns:
        ns = Netns.create(prefix)
        made.append(ns)
        return ns

    yield factory
    for ns in reversed(made):
        ns.remove()


@pytest.fixture
def host_ns(make_netns) -> Netns:
    host = make_netns("pynt-h")
    # A container host forwards; the sandbox is where that switch is flipped, never the root netns.
    return host


@pytest.fixture
def container_ns(make_netns) -> Netns:
    return make_netns("pynt-c")


@pytest.fixture
def cni(host_ns) -> CNI:
    return CNI(host_ns, OUR_PLUGINS)


@pytest.fixture
def ref_cni(host_ns) -> CNI:
    if not reference_available():
        pytest.skip("reference plugins (containernetworking-plugins) not installed in /usr/lib/cni")
    return CNI(host_ns, REFERENCE_PLUGINS)


@pytest.fixture
def make_cni(host_ns):
    def factory(*dirs: str) -> CNI:
        return CNI(host_ns, *dirs)
    return factory


@pytest.fixture
def pynet_daemon_args() -> list[str]:
    """Extra `pynet daemon` options for ``pynet_daemon``; a test module overrides this to add some."""
    return []


@pytest.fixture
def pynet_daemon(host_ns, tmp_path, pynet_daemon_args):
    """A pynet daemon running inside ``host_ns``; yields its socket path. Stopped by PID at test end."""
    socket_path = str(tmp_path / "pynetd.sock")
    proc = start_daemon(host_ns, socket_path, *pynet_daemon_args)
    yield socket_path
    stop_daemon(proc)


@pytest.fixture
def daemon_cni(host_ns, pynet_daemon) -> CNI:
    """Runner of our plugins that reach the test's daemon (the thin-client fast path)."""
    return CNI(host_ns, OUR_PLUGINS, extra_env={"PYNET_SOCKET": pynet_daemon})
