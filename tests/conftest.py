"""The suite gets its fixtures the way a user's own tests do: from the pytest11 entry points in
pyproject.toml (netns_fixtures.pytest_plugin, pynet.topology.pytest_plugin). Naming them in
``pytest_plugins`` as well would register each a second time, which pytest refuses."""

import pytest

ENTRY_POINT_PLUGINS = ("netns_fixtures.pytest_plugin", "pynet.topology.pytest_plugin")


def _default_oci_cgroup_parents() -> list:
    import glob

    from pynet.oci.runtime import DEFAULT_CGROUP_PARENT

    return glob.glob(f"/sys/fs/cgroup/*/{DEFAULT_CGROUP_PARENT}")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):   # the controller (or a run without xdist)
        config.pynet_oci_parent_existed = bool(_default_oci_cgroup_parents())
    loaded = {getattr(plugin, "__name__", "") for plugin in config.pluginmanager.get_plugins()}
    missing = [name for name in ENTRY_POINT_PLUGINS if name not in loaded]
    if missing:
        raise pytest.UsageError(f"pytest plugins {', '.join(missing)} are not loaded: their entry points come "
                                "with installing pynet (make install-test)")


def pytest_unconfigure(config):
    """pynet-oci keeps its default cgroup parent between containers, as runc keeps an engine's; the suite
    removes it once every worker is done, when the run made it."""
    import os

    if hasattr(config, "workerinput") or getattr(config, "pynet_oci_parent_existed", True):
        return
    for path in _default_oci_cgroup_parents():
        try:
            os.rmdir(path)
        except OSError:
            pass   # not empty: a container of someone else's
