"""memstress benchmarks (docs/design.md, Benchmarks): ratios measured side by side in one run.

``python -m bench`` (``make bench``) runs them all; ``python -m bench NAME`` one
of ``load``, ``monitor``, ``report``, ``leak``, ``service``; ``--small`` a short
smoke run of each. Results: ``bench/results.json`` and ``bench/RESULTS.md``.
"""
