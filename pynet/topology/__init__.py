"""`pynet topology`: the command line over netns_fixtures.topology (the engine lives in the library)."""
