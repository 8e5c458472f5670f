"""Network topologies from YAML: validated model, build/teardown in real namespaces, checks, pictures.

    topo = load("examples/topologies/two-hosts-routed.yaml")
    with up(topo, state_dir=tmp) as dep:      # down() on exit, also when a check raises
        report = dep.check()
        print(report.matrix())
        assert report.ok

The pytest fixture ``topology`` (pynet.topology.pytest_plugin) wraps this for tests.
"""

from .model import Check, Topology, TopologyError, load, parse
from .deploy import Deployment, DeployError, down, up
from .checks import CheckReport, CheckResult
from .state import StateStore, default_state_dir
from . import render

__all__ = ["Check", "Topology", "TopologyError", "load", "parse", "Deployment", "DeployError", "down", "up",
           "CheckReport", "CheckResult", "StateStore", "default_state_dir", "render", "attach"]


def attach(topo: Topology, state_dir: str | None = None) -> Deployment:
    """The running deployment of ``topo`` (from its state file), for check/show after a separate ``up``."""
    store = StateStore(state_dir)
    state = store.read(topo.name)
    if state is None or state.get("corrupt"):
        raise DeployError(f"topology {topo.name!r} is not up (no state in {store.path(topo.name)})")
    if state.get("phase") != "up":
        raise DeployError(f"topology {topo.name!r} is not up (phase {state.get('phase')!r}: "
                          f"{state.get('error', 'up did not finish')}); run down, then up again")
    if set(state.get("namespaces", {})) != set(topo.nodes):
        raise DeployError(f"topology {topo.name!r} was brought up from a file with other nodes "
                          f"({', '.join(sorted(state.get('namespaces', {})))}); take it down and up again")
    return Deployment(topo, state, store)
