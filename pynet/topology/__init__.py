"""Network topologies from YAML: validated model, build/teardown in real namespaces, checks, pictures.

    topo = load("examples/topologies/two-hosts-routed.yaml")
    with up(topo, state_dir=tmp) as dep:      # down() on exit, also when a check raises
        report = dep.check()
        print(report.matrix())
        assert report.ok

``attach(topo)`` finds a deployment brought up earlier (by ``pynet topology up``). The pytest fixture
``topology`` (pynet.topology.pytest_plugin) wraps this for tests.
"""

import importlib

# Bound here, before anything can import the submodule parse.py: importing a submodule sets the
# package attribute of its name, and ``pynet.topology.parse`` must stay the function.
from .model import Check, Topology, TopologyError
from .parse import load, parse

# name -> the module that defines it, imported on first use. Every `pynet` command imports
# pynet.topology.cli to register its sub-command; the engine (netlink, probes, rendering) waits until a
# topology command runs.
_LATER = {
    "Deployment": "deploy", "DeployError": "deploy", "up": "deploy", "down": "deploy", "attach": "deploy",
    "NamespaceGone": "deploy",
    "CheckReport": "checks", "CheckResult": "checks",
    "StateStore": "state", "default_state_dir": "state",
    "render": "render", "services": "services",
}

__all__ = ["Check", "Topology", "TopologyError", "load", "parse", *_LATER]


def __getattr__(name: str):
    if name not in _LATER:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LATER[name]}")
    value = module if _LATER[name] == name else getattr(module, name)
    globals()[name] = value
    return value
