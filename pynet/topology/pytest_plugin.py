"""pytest fixture ``topology``: bring a YAML topology up for one test, down when the test ends (pass or fail).

    def test_web_reaches_db(topology):
        topo = topology("examples/topologies/three-tier-firewall.yaml")
        report = topo.check()
        assert report.ok, report.matrix()
        assert topo.address("web1").startswith("10.31.")

The argument is a path (absolute, relative to the test file's directory, or to the working directory),
a parsed ``Topology``, or a dict with the YAML's content. State files and CNI dataDirs live under the
test's tmp_path; plugins default to pynet's own (``cni_path=[...]`` picks others). pytest loads this module
through its pytest11 entry point (pyproject.toml).
"""

from __future__ import annotations

import os

import pytest

from .deploy import Deployment, up
from .model import Topology
from .parse import load, parse


def _resolve(source, request) -> Topology:
    if isinstance(source, Topology):
        return source
    if isinstance(source, dict):
        return parse(source, source="<dict>", base_dir=str(request.path.parent))
    path = os.fspath(source)
    if not os.path.isabs(path):
        beside = os.path.join(str(request.path.parent), path)
        path = beside if os.path.exists(beside) else os.path.abspath(path)
    return load(path)


@pytest.fixture
def topology(request, tmp_path):
    made: list[Deployment] = []

    def factory(source, cni_path: list[str] | None = None, state_dir: str | None = None,
                cni_runtime: str | None = None) -> Deployment:
        topo = _resolve(source, request)
        dep = up(topo, state_dir=state_dir or str(tmp_path / "topologies"), cni_path=cni_path,
                 cni_runtime=cni_runtime)
        made.append(dep)
        return dep

    yield factory
    errors = []
    for dep in reversed(made):
        try:
            report = dep.down()
        except Exception as exc:  # the others still come down
            errors.append(f"{dep.name}: {exc}")
            continue
        errors.extend(f"{dep.name}: {w}" for w in report["warnings"] if "cannot remove namespace" in w)
    if errors:
        pytest.fail("topology teardown left things behind: " + "; ".join(errors))
