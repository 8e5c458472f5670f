pytest_plugins = ["netns_fixtures.pytest_plugin", "pynet.topology.pytest_plugin"]
