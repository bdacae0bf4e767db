"""The ``http-map`` adapter: your own HTTP API, described in YAML (``--adapter-config``).

::

    health: /healthz                 # GET, any 2xx while the service is healthy
    operations:
      remember:
        method: POST
        path: /v1/sessions/{agent}/turns
        body: {speaker: "{role}", text: "{content}"}
      context:
        method: GET
        path: /v1/sessions/{agent}/recall?q={query}&n={k}
        result: recall.items        # where in the JSON answer the result lies
      ...

Each operation has a ``method``, a ``path`` template (placeholders are
URL-quoted), an optional JSON ``body`` template (a string that is exactly one
placeholder takes the value with its type, ``"{k}"`` -> 5) and an optional
``result``: a dotted path into the answer (``a.b.0``); an answer without it is a
failure naming the path. ``stats`` may name its figures under ``fields``
(``pressure``, ``budget_bytes``: dotted paths under ``result``).

The capabilities are the groups mapped in full (:data:`GROUPS`); a group mapped
in part is an error, so whatever the users write, the cleanup can delete. The
request names are the method and the path template with ``[placeholder]``s.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import yaml

from memstress.common.config import ConfigError
from memstress.common.target import TargetError
from memstress.scenarios import target
from memstress.scenarios.spec import agent_id, namespace
from memstress.scenarios.target import Reply

PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "remember": ("agent", "role", "content"),
    "context": ("agent", "query", "k"),
    "history": ("agent", "offset", "limit"),
    "forget": ("agent",),
    "add_document": ("namespace", "doc_id", "text"),
    "search": ("namespace", "query", "k"),
    "drop_namespace": ("namespace",),
    "optimize": ("priority", "reason"),
    "cycle": (),
    "stats": (),
    "leak": ("bytes",),
    "ballast": ("bytes", "ttl_s"),
    "reset_faults": (),
}
"""Each operation and the placeholders its path and body may use."""

GROUPS: dict[str, tuple[str, ...]] = {
    target.CONVERSATION: ("remember", "context", "history", "forget"),
    target.VECTORS: ("add_document", "search", "drop_namespace"),
    target.OPTIMIZE: ("optimize",),
    target.CYCLE: ("cycle",),
    target.STATS: ("stats",),
    target.FAULTS: ("leak", "ballast", "reset_faults"),
    target.PRESSURE: ("ballast", "reset_faults"),
}
"""A capability and the operations it takes, all of them (pressure is part of faults: a
mapping with ballast and reset_faults but no leak gives pressure only)."""

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
OPERATION_KEYS = ("method", "path", "body", "result", "fields")
STATS_FIELDS = ("pressure", "budget_bytes")
_FIELD = re.compile(r"\{(\w+)\}")
_PATH = re.compile(r"^[\w-]+(\.[\w-]+)*$")


@dataclass(frozen=True)
class Operation:
    op: str
    method: str
    path: str
    body: Any = None
    result: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``POST /v1/sessions/[agent]/turns``: stable whatever the values."""
        shown = _FIELD.sub(r"[\1]", self.path.split("?", 1)[0])
        return f"{self.method} {shown}"

    def url(self, values: Mapping[str, Any]) -> str:
        return _FIELD.sub(lambda m: quote(str(values[m.group(1)]), safe=""), self.path)

    def body_of(self, values: Mapping[str, Any]) -> Any:
        return _fill(self.body, values)

    def pick(self, data: Any) -> Any:
        """The result (and for stats its named figures) out of the JSON answer."""
        found = dig(data, self.result) if self.result else data
        if not self.fields:
            return found
        return {name: dig(found, where) for name, where in self.fields.items()}


def dig(data: Any, path: str) -> Any:
    """``a.b.0`` into nested JSON; a KeyError naming the path where it is not there."""
    here = data
    for part in path.split("."):
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and part.isdigit() and int(part) < len(here):
            here = here[int(part)]
        else:
            raise KeyError(f"the answer has no {path!r}")
    return here


def _fill(template: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        whole = _FIELD.fullmatch(template)
        if whole:
            return values[whole.group(1)]
        return _FIELD.sub(lambda m: str(values[m.group(1)]), template)
    if isinstance(template, list):
        return [_fill(v, values) for v in template]
    if isinstance(template, dict):
        return {k: _fill(v, values) for k, v in template.items()}
    return template


def _fields_in(template: Any) -> set[str]:
    if isinstance(template, str):
        return set(_FIELD.findall(template))
    if isinstance(template, list):
        return {f for v in template for f in _fields_in(v)}
    if isinstance(template, dict):
        return {f for v in template.values() for f in _fields_in(v)}
    return set()


@dataclass(frozen=True)
class ApiMap:
    health: str
    operations: dict[str, Operation]
    capabilities: frozenset[str]


def load_mapping(path: str | Path) -> ApiMap:
    """Read and check a mapping file; a one-line ConfigError naming the key otherwise."""
    where = Path(path)
    try:
        data = yaml.safe_load(where.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"--adapter-config: cannot read {str(where)!r} ({exc.strerror})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where.name}: not valid YAML{at}") from None
    try:
        return _check(data)
    except ValueError as exc:
        raise ConfigError(f"{where.name}: {exc}") from None


def _check(data: Any) -> ApiMap:
    if not isinstance(data, dict):
        raise ValueError("expected a mapping with the keys health and operations")
    for key in data:
        if key not in ("health", "operations"):
            raise ValueError(f"{key}: unknown key (valid: health, operations)")
    health = data.get("health")
    if not isinstance(health, str) or not health.startswith("/"):
        raise ValueError(f"health: {health!r} is not valid (valid: a path such as /healthz)")
    ops = data.get("operations")
    if not isinstance(ops, dict) or not ops:
        raise ValueError(
            f"operations: expected a mapping of operations (valid: {', '.join(PLACEHOLDERS)})"
        )
    operations = {str(op): _operation(str(op), spec) for op, spec in ops.items()}
    capabilities = {c for c, needed in GROUPS.items() if all(op in operations for op in needed)}
    covered = {op for c in capabilities for op in GROUPS[c]}
    for capability, needed in GROUPS.items():
        have = [op for op in needed if op in operations]
        if have and capability not in capabilities and not set(have) <= covered:
            missing = ", ".join(op for op in needed if op not in operations)
            raise ValueError(
                f"operations: {capability} takes {', '.join(needed)} (missing: {missing})"
            )
    if target.CONVERSATION not in capabilities and target.VECTORS not in capabilities:
        raise ValueError("operations: map the conversation or the vector operations (or both)")
    return ApiMap(health, operations, frozenset(capabilities))


def _operation(op: str, spec: Any) -> Operation:
    key = f"operations.{op}"
    if op not in PLACEHOLDERS:
        raise ValueError(f"{key}: unknown operation (valid: {', '.join(PLACEHOLDERS)})")
    if not isinstance(spec, dict):
        raise ValueError(f"{key}: expected a mapping with method and path")
    for k in spec:
        if k not in OPERATION_KEYS:
            raise ValueError(f"{key}.{k}: unknown key (valid: {', '.join(OPERATION_KEYS)})")
    method = str(spec.get("method", "")).upper()
    if method not in METHODS:
        raise ValueError(f"{key}.method: {spec.get('method')!r} (valid: {', '.join(METHODS)})")
    path = spec.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{key}.path: {path!r} (valid: a path such as /v1/items/{{agent}})")
    valid = PLACEHOLDERS[op]
    for part, found in (("path", _fields_in(path)), ("body", _fields_in(spec.get("body")))):
        unknown = sorted(found - set(valid))
        if unknown:
            allowed = ", ".join("{" + v + "}" for v in valid) or "none"
            raise ValueError(
                f"{key}.{part}: unknown placeholder {{{unknown[0]}}} (valid: {allowed})"
            )
    result = spec.get("result")
    if result is not None and not (isinstance(result, str) and _PATH.match(result)):
        raise ValueError(f"{key}.result: {result!r} (valid: a dotted path such as data.items)")
    fields = spec.get("fields") or {}
    if fields and op != "stats":
        raise ValueError(f"{key}.fields: only stats has fields")
    if not isinstance(fields, dict):
        raise ValueError(
            f"{key}.fields: expected a mapping (valid keys: {', '.join(STATS_FIELDS)})"
        )
    for name, where in fields.items():
        if name not in STATS_FIELDS:
            raise ValueError(
                f"{key}.fields.{name}: unknown figure (valid: {', '.join(STATS_FIELDS)})"
            )
        if not (isinstance(where, str) and _PATH.match(where)):
            raise ValueError(f"{key}.fields.{name}: {where!r} (valid: a dotted path)")
    return Operation(op, method, path, spec.get("body"), result, dict(fields))


class HttpMapTarget:
    def __init__(self, user: Any, mapping: ApiMap) -> None:
        self.user = user
        self.mapping = mapping
        self.capabilities = mapping.capabilities

    def _send(self, op: str, allow: tuple[int, ...] = (), **values: Any) -> Reply:
        o = self.mapping.operations.get(op)
        if o is None:  # never: the scenarios check capabilities first
            raise NotImplementedError(f"http-map: operation {op} is not mapped")
        body = None if o.body is None else o.body_of(values)
        pick = o.pick if (o.result or o.fields) else None
        reply: Reply = self.user.request(
            o.method, o.url(values), o.name, body, allow=allow, pick=pick
        )
        return reply

    def remember(self, agent: str, role: str, content: str) -> Reply:
        return self._send("remember", agent=agent, role=role, content=content)

    def context(self, agent: str, query: str, k: int) -> Reply:
        return self._send("context", agent=agent, query=query, k=k)

    def history(self, agent: str, offset: int, limit: int) -> Reply:
        return self._send("history", agent=agent, offset=offset, limit=limit)

    def forget(self, agent: str) -> Reply:
        return self._send("forget", (404,), agent=agent)

    def add_document(self, namespace: str, doc_id: str, text: str) -> Reply:
        return self._send("add_document", namespace=namespace, doc_id=doc_id, text=text)

    def search(self, namespace: str, query: str, k: int) -> Reply:
        return self._send("search", namespace=namespace, query=query, k=k)

    def drop_namespace(self, namespace: str) -> Reply:
        return self._send("drop_namespace", (404,), namespace=namespace)

    def optimize(self, priority: str, reason: str) -> Reply:
        return self._send("optimize", priority=priority, reason=reason)

    def cycle(self) -> Reply:
        return self._send("cycle")

    def stats(self) -> Reply:
        return self._send("stats")

    def leak(self, n_bytes: int) -> Reply:
        return self._send("leak", bytes=n_bytes)

    def ballast(self, n_bytes: int, ttl_s: float) -> Reply:
        return self._send("ballast", bytes=n_bytes, ttl_s=ttl_s)

    def reset_faults(self) -> Reply:
        return self._send("reset_faults")


class HttpMapAdapter:
    name = "http-map"
    schemes = ("http", "https")

    def __init__(self, config_path: str | None = None) -> None:
        if not config_path:
            raise ConfigError("--adapter http-map needs --adapter-config FILE (the YAML mapping)")
        self.mapping = load_mapping(config_path)
        self.capabilities = self.mapping.capabilities
        self.health_path: str | None = self.mapping.health
        self.request_names = {op: o.name for op, o in self.mapping.operations.items()}

    def connect(self, user: Any) -> HttpMapTarget:
        return HttpMapTarget(user, self.mapping)

    def wait_ready(self, host: str, deadline_s: float) -> None:
        url = f"{host.rstrip('/')}{self.mapping.health}"
        end, last = time.monotonic() + deadline_s, "no answer"
        with requests.Session() as session:
            while time.monotonic() < end:
                try:
                    r = session.get(url, timeout=2.0)
                    if 200 <= r.status_code < 300:
                        return
                    last = f"HTTP {r.status_code}"
                except requests.RequestException as exc:
                    last = type(exc).__name__
                time.sleep(0.1)
        raise TargetError(f"GET {url} did not answer 2xx in {deadline_s:g} s ({last})")

    def sweep(
        self, host: str, run_id: str, params: Mapping[str, Any], *, deadline_s: float = 10.0
    ) -> dict[str, Any]:
        """Forget the run's agents and drop its namespaces once more (a 404 is gone already)."""
        done: dict[str, Any] = {"agents": 0, "namespaces": 0, "complete": False}
        ops = self.mapping.operations
        todo: list[tuple[str, Operation, dict[str, Any]]] = []
        if "forget" in ops:
            n = int(params.get("agents", 0))
            todo += [("agents", ops["forget"], {"agent": agent_id(run_id, k)}) for k in range(n)]
        if "drop_namespace" in ops:
            n = int(params.get("namespaces", 0))
            drop = ops["drop_namespace"]
            todo += [("namespaces", drop, {"namespace": namespace(run_id, k)}) for k in range(n)]
        end = time.monotonic() + deadline_s
        with requests.Session() as session:
            try:
                for kind, o, values in todo:
                    if time.monotonic() > end:
                        return done
                    body = None if o.body is None else o.body_of(values)
                    r = session.request(
                        o.method, f"{host.rstrip('/')}{o.url(values)}", json=body, timeout=2.0
                    )
                    if r.status_code < 300:
                        done[kind] += 1
                done["complete"] = True
            except requests.RequestException as exc:
                done["error"] = type(exc).__name__
        return done
