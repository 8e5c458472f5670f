pytest_plugins = ["netns_fixtures.pytest_plugin"]
