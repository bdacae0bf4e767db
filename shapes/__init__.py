"""Load shapes: a stage plan in, Locust ticks out (see :mod:`shapes.plan`, :mod:`shapes.staged`)."""
