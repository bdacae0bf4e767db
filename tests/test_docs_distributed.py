"""docs/distributed.md: its Compose file and Kubernetes example say what the code reads.

The YAML blocks are parsed as written; every ``LOCUST_*`` variable must be one
of Locust's, every ``MEMSTRESS_*`` one an option of the locustfile's; workers
must point at the master's name and port. Where ``docker compose`` is
installed, it validates the Compose file too (``config`` only: nothing is
started).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

DOC = ROOT / "docs" / "distributed.md"


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)


def compose() -> dict[str, Any]:
    (block,) = [b for b in yaml_blocks() if b.startswith("name: memstress")]
    data: dict[str, Any] = yaml.safe_load(block)
    return data


def kubernetes() -> list[dict[str, Any]]:
    (block,) = [b for b in yaml_blocks() if "apiVersion:" in b]
    return [d for d in yaml.safe_load_all(block) if d]


def known_env_vars() -> set[str]:
    """Every env var Locust's parser and the suite's options read (from their sources)."""
    spec = importlib.util.find_spec("locust")
    assert spec is not None and spec.origin is not None
    texts = [(Path(spec.origin).parent / "argument_parser.py").read_text()]
    texts += [(ROOT / f).read_text() for f in ("locustfile.py", "monitors/options.py")]
    return {v for t in texts for v in re.findall(r'env_var="([A-Z_]+)"', t)}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    env = container.get("environment") or container.get("env") or {}
    if isinstance(env, list):
        return {e["name"]: str(e["value"]) for e in env}
    return {k: str(v) for k, v in env.items()}


def test_every_variable_of_both_recipes_is_one_the_code_reads() -> None:
    known = known_env_vars()
    assert {"LOCUST_MODE_WORKER", "MEMSTRESS_METRICS_URL", "MEMSTRESS_SCENARIO"} <= known
    services = compose()["services"]
    containers = [c for d in kubernetes() for c in _containers(d)]
    used = {k for c in [*services.values(), *containers] for k in env_of(c)}
    assert used, "the recipes set variables"
    assert used <= known, used - known


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    containers: list[dict[str, Any]] = spec.get("containers", [])
    return containers


def test_compose_workers_reach_the_master_on_its_port_with_its_image() -> None:
    services = compose()["services"]
    master, worker = env_of(services["master"]), env_of(services["worker"])
    assert master["LOCUST_MODE_MASTER"] == "true" and worker["LOCUST_MODE_WORKER"] == "true"
    assert worker["LOCUST_MASTER_NODE_HOST"] == "master"
    assert worker["LOCUST_MASTER_NODE_PORT"] == master["LOCUST_MASTER_BIND_PORT"]
    assert services["master"]["image"] == services["worker"]["image"]  # one version
    assert master["MEMSTRESS_ALLOW_REMOTE_TARGET"] == "true"
    host = master["LOCUST_HOST"].split("//")[1].split(":")[0]
    assert host in services, "the target is a service of the file"
    exporter = master["MEMSTRESS_METRICS_URL"].split("//")[1].split(":")[0]
    assert exporter in services
    name = master["MEMSTRESS_METRICS_LABELS"].removeprefix("name=")
    assert services[host]["container_name"] == name, "the label picks the target's container"
    assert services["worker"]["deploy"]["replicas"] == int(master["LOCUST_EXPECT_WORKERS"])


def test_kubernetes_workers_reach_the_master_service_with_the_same_image() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in kubernetes()}
    service = docs[("Service", "memstress-master")]
    (master,) = _containers(docs[("Job", "memstress-master")])
    (worker,) = _containers(docs[("Deployment", "memstress-worker")])
    assert master["image"] == worker["image"]
    assert env_of(worker)["LOCUST_MASTER_NODE_HOST"] == service["metadata"]["name"]
    port = int(env_of(worker)["LOCUST_MASTER_NODE_PORT"])
    assert port == service["spec"]["ports"][0]["port"] == master["ports"][0]["containerPort"]
    labels = docs[("Job", "memstress-master")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    replicas = docs[("Deployment", "memstress-worker")]["spec"]["replicas"]
    assert replicas == int(env_of(master)["LOCUST_EXPECT_WORKERS"])


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    has_compose = docker is not None and (
        subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    if not has_compose:
        pytest.skip("docker compose is not installed here: the YAML checks above still ran")
    (block,) = [b for b in yaml_blocks() if b.startswith("name: memstress")]
    path = tmp_path / "compose.yaml"
    path.write_text(block)
    done = subprocess.run(
        [str(docker), "compose", "-f", str(path), "--project-directory", str(ROOT), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
