"""The reference memory-management service: the target the suite is tried on.

Run it as ``python -m memstress.service --port P --data-dir D``. RAM is a cache over a
durable SQLite store; a memory manager scores pressure against a budget and
trims, compacts and spills the in-RAM tiers when the pressure rises.
"""
