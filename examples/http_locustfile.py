"""A plain HTTP locustfile: no memstress import at all (tests/test_own_load.py runs it)."""

from locust import HttpUser, constant, task


class Visitor(HttpUser):
    wait_time = constant(0.1)

    @task
    def page(self) -> None:
        self.client.get("/")
