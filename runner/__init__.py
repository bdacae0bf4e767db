"""The orchestration behind ``run_stress_test.py``: service, Locust runs, progress, reports."""
