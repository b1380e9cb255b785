"""The pytest side: hooks and options, the xdist controller, progress, plan, one test's body."""
