"""The suite gets its fixtures the way a user's own tests do: from the pytest11 entry points in
pyproject.toml (netns_fixtures.pytest_plugin, pynet.topology.pytest_plugin). Naming them in
``pytest_plugins`` as well would register each a second time, which pytest refuses."""

import pytest

ENTRY_POINT_PLUGINS = ("netns_fixtures.pytest_plugin", "pynet.topology.pytest_plugin")


def pytest_configure(config):
    loaded = {getattr(plugin, "__name__", "") for plugin in config.pluginmanager.get_plugins()}
    missing = [name for name in ENTRY_POINT_PLUGINS if name not in loaded]
    if missing:
        raise pytest.UsageError(f"pytest plugins {', '.join(missing)} are not loaded: their entry points come "
                                "with installing pynet (make install-test)")
