"""The one line that attaches memstress to a locustfile: ``import memstress.plugin``.

Importing this module is the opt-in: it subscribes the suite's options and its
``init`` listener to Locust's events (:func:`memstress.attach.attach`), once
however often it is imported. It defines no User and no shape, so it can also be
given to Locust as a second file: ``locust -f mine.py,PATH/memstress/plugin.py``
(``python -m memstress.plugin`` prints PATH/memstress/plugin.py).
"""

from __future__ import annotations

from memstress.attach import attach

attach()

if __name__ == "__main__":
    print(__file__)
