"""The memory monitor: sampler, sources, leak detector, safety guard, live view.

Modules (importing any of them registers nothing, and only ``monitor`` and
``webui`` import Locust, which monkey-patches the process with gevent):

- :mod:`monitors.monitor`: :class:`~monitors.monitor.MemoryMonitor`, the listener
  object the locustfile creates in its ``init`` listener;
- :mod:`monitors.options`: the monitor's Locust options, and what it may assume of the target;
- :mod:`monitors.assembly`: which sources a run's sampler reads, within which time;
- :mod:`monitors.upkeep`: health checks and cleanup cycles against the target;
- :mod:`monitors.snapshot`: what the monitor remembers, and the snapshot its readers get;
- :mod:`monitors.sources`: where sample figures come from;
- :mod:`monitors.exporter`: the target's RSS from Prometheus text at ``--metrics-url``;
- :mod:`monitors.sampler`: one sample from the sources, and its CPU meter;
- :mod:`monitors.leak`: the online leak detector (pure);
- :mod:`monitors.safety`: when to stop a run, and with which exit code (pure);
- :mod:`monitors.webui`, :mod:`monitors.page`: the Memory tab and chart page.
"""
