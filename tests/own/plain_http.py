"""A plain Locust file of the tests' own: no memstress import at all."""

from locust import HttpUser, constant, task


class Visitor(HttpUser):
    wait_time = constant(0.1)

    @task
    def page(self) -> None:
        self.client.get("/")
