"""The target API as the scenarios speak it, and their test data.

Each :class:`Endpoint` knows its Locust request name, so every user reports a
request under the same name (``POST /agents/[id]/messages``, never one row
per agent id), and the reports can find them.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

_PLACEHOLDERS = {"{id}": "[id]", "{ns}": "[ns]"}


@dataclass(frozen=True)
class Endpoint:
    """A method and a path template; ``{id}`` is an agent id, ``{ns}`` a namespace."""

    method: str
    path: str

    @functools.cached_property
    def name(self) -> str:
        """The Locust request name, e.g. ``GET /agents/[id]/context`` (made once: every
        request of a run reads it, bench ``loadgen_cpu_per_request_ratio``)."""
        path = self.path
        for template, shown in _PLACEHOLDERS.items():
            path = path.replace(template, shown)
        return f"{self.method} {path}"

    def url(self, **parts: str) -> str:
        """The path with its placeholders filled in (URL-quoted)."""
        if not parts:
            return self.path
        return self.path.format(**{k: quote(v, safe="") for k, v in parts.items()})

    def __str__(self) -> str:
        return self.name


CYCLE = Endpoint("POST", "/memory/cycle")
OPTIMIZE = Endpoint("POST", "/memory/optimize")
STATS = Endpoint("GET", "/memory/stats")
MESSAGE_ADD = Endpoint("POST", "/agents/{id}/messages")
MESSAGES = Endpoint("GET", "/agents/{id}/messages")
CONTEXT = Endpoint("GET", "/agents/{id}/context")
AGENT_DELETE = Endpoint("DELETE", "/agents/{id}")
DOCUMENT_ADD = Endpoint("POST", "/vectors/documents")
SEARCH = Endpoint("POST", "/vectors/search")
NAMESPACE_DELETE = Endpoint("DELETE", "/vectors/namespaces/{ns}")
LEAK = Endpoint("POST", "/faults/leak")
BALLAST = Endpoint("POST", "/faults/ballast")
RESET = Endpoint("POST", "/faults/reset")

ALL = (
    CYCLE,
    OPTIMIZE,
    STATS,
    MESSAGE_ADD,
    MESSAGES,
    CONTEXT,
    AGENT_DELETE,
    DOCUMENT_ADD,
    SEARCH,
    NAMESPACE_DELETE,
    LEAK,
    BALLAST,
    RESET,
)

AGENT_TRAFFIC = (MESSAGE_ADD, MESSAGES, CONTEXT, SEARCH, DOCUMENT_ADD)
"""What :class:`scenarios.base.AgentTrafficUser` sends."""

CLEANUP = (AGENT_DELETE, NAMESPACE_DELETE)
"""What the conductor sends in the cleanup stage (plus RESET where faults were used)."""

PRIORITIES = ("low", "normal", "high", "critical")
PRIORITY_WEIGHTS = (4, 3, 2, 1)
"""Mix of optimization request priorities: mostly low, some critical."""

SHED_STATUSES = frozenset({429, 503})
"""Answers that shed load; with a Retry-After header they are not failures."""

SHED_TYPE = "SHED"
"""Request type of the extra event fired for each shed answer (reports count it apart)."""


WORDS = tuple(
    """
    account agent answer archive assistant billing cache cancel charge chat
    checkout claim client context contract credit customer database delay delivery
    device discount document email embedding error escalate export feature feedback
    file forecast gateway history invoice issue journal knowledge language latency
    ledger license limit login memory message migration mobile model network notice
    order outage package password payment plan policy portal pressure priority
    product profile query queue quota receipt record refund region release renewal
    replica report request reset response retry review route schedule search
    security server session settings shipment signal storage subscription summary
    support system ticket timeout token trace transfer update upgrade usage user
    vector vendor version warranty webhook window workflow
    """.split()  # noqa: SIM905 - a block of words reads better than 110 list items
)


def text_of(rng: random.Random, n_bytes: int) -> str:
    """About ``n_bytes`` of plain words (ASCII, so characters are bytes)."""
    if n_bytes <= 0:
        return ""
    words = rng.choices(WORDS, k=n_bytes // 6 + 2)
    text = " ".join(words)
    while len(text) < n_bytes:
        text += " " + " ".join(rng.choices(WORDS, k=n_bytes // 6 + 2))
    return text[:n_bytes]


_RAW_DECODE = json.JSONDecoder().raw_decode


def parse_json(content: bytes | None) -> tuple[Any, bool]:
    """An answer's body parsed (None when empty), and whether it failed to parse.

    It accepts what ``json.loads`` of the bytes accepts (JSON is UTF-8, RFC 8259;
    ``loads`` also takes UTF-16/32 and a BOM), in two steps: the UTF-8 text through
    ``JSONDecoder.raw_decode``, which takes a plain answer in one call, then ``json.loads``
    of the bytes for anything else (whitespace around it, another encoding, bad JSON),
    which decides. ``loads`` of bytes alone costs about 2 us more an answer (encoding
    detection, two whitespace regexes; bench ``loadgen_cpu_per_request_ratio``), and
    Locust's ``resp.json()`` more again (its ``text`` looks up a charset in the headers).
    An undecodable body is a ValueError too."""
    if not content:
        return None, False
    try:
        text = content.decode()
        data, end = _RAW_DECODE(text)
        if end == len(text):
            return data, False
    except ValueError:
        pass
    try:
        return json.loads(content), False
    except ValueError:
        return None, True
