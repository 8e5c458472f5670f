"""The suite gets its fixtures the way a user's own tests do: from the pytest11 entry points in
pyproject.toml (netns_fixtures.pytest_plugin, pynet.topology.pytest_plugin). Naming them in
``pytest_plugins`` as well would register each a second time, which pytest refuses."""

import pytest

ENTRY_POINT_PLUGINS = ("netns_fixtures.pytest_plugin", "pynet.topology.pytest_plugin")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):   # the controller (or a run without xdist)
        from pynet.oci.runtime import default_cgroup_parents

        config.pynet_oci_parent_existed = bool(default_cgroup_parents())
    loaded = {getattr(plugin, "__name__", "") for plugin in config.pluginmanager.get_plugins()}
    missing = [name for name in ENTRY_POINT_PLUGINS if name not in loaded]
    if missing:
        raise pytest.UsageError(f"pytest plugins {', '.join(missing)} are not loaded: their entry points come "
                                "with installing pynet (make install-test)")


def pytest_unconfigure(config):
    """pynet-oci keeps its default cgroup parent between containers, as runc keeps an engine's; the suite
    removes it once every worker is done, when the run made it."""
    if hasattr(config, "workerinput") or getattr(config, "pynet_oci_parent_existed", True):
        return
    from pynet.oci.runtime import remove_default_cgroup_parents

    remove_default_cgroup_parents()
