"""The HTTP layer: app factory, routes, dependencies, error mapping, metrics."""
