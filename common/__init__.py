"""Helpers shared by the suite's packages: config, target client, run folders."""
