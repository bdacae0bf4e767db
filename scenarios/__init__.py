"""The ten stress scenarios: one module each, listed in :mod:`scenarios.registry`."""
