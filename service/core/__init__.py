"""Runtime configuration, logging and CPU accounting."""
