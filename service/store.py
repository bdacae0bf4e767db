"""The durable store: SQLite in WAL mode, the truth that RAM only caches.

``synchronous=NORMAL`` in WAL mode makes every committed transaction survive a
crash of the process (``kill -9``): the commit is in the WAL file before the
call returns. Only an OS crash or power loss could drop the last commits, which
``synchronous=FULL`` would also cover at the cost of an fsync per write.

Every write is one transaction, so a failed request leaves nothing behind.
The connection belongs to the event-loop thread that opened it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memstress.service.embedding import DIMS

DB_NAME = "memstress.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks (
    namespace TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    chunk_no INTEGER NOT NULL,
    text TEXT NOT NULL,
    vec BLOB NOT NULL,
    UNIQUE (namespace, doc_id, chunk_no)
);
"""


@dataclass(frozen=True)
class Message:
    seq: int
    role: str
    content: str
    ts: float

    def as_json(self) -> dict[str, object]:
        return {"seq": self.seq, "role": self.role, "content": self.content, "ts": self.ts}


class Store:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_NAME
        # isolation_level=None: no implicit transactions; each write says BEGIN itself.
        self._db: sqlite3.Connection | None = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("the store is closed")
        return self._db

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close (the -wal file goes away)."""
        if self._db is None:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()
            self._db = None

    # --- conversations ---------------------------------------------------------

    def add_message(self, agent_id: str, role: str, content: str) -> Message:
        """Append one turn; returns it with its sequence number once committed."""
        db = self.db
        ts = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM messages WHERE agent_id = ?", (agent_id,)
            ).fetchone()
            seq = int(row[0])
            db.execute(
                "INSERT INTO messages (agent_id, seq, role, content, ts) VALUES (?, ?, ?, ?, ?)",
                (agent_id, seq, role, content, ts),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Message(seq, role, content, ts)

    def message_total(self, agent_id: str) -> int:
        """Turns stored for an agent (sequence numbers are dense from 0)."""
        row = self.db.execute(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM messages WHERE agent_id = ?", (agent_id,)
        ).fetchone()
        return int(row[0])

    def messages(self, agent_id: str, offset: int, limit: int) -> list[Message]:
        """Turns ``offset`` .. ``offset + limit``, oldest first."""
        rows = self.db.execute(
            "SELECT seq, role, content, ts FROM messages WHERE agent_id = ? AND seq >= ? "
            "ORDER BY seq LIMIT ?",
            (agent_id, offset, limit),
        ).fetchall()
        return [Message(*r) for r in rows]

    def recent_messages(self, agent_id: str, n: int) -> list[Message]:
        """The last ``n`` turns, oldest first."""
        rows = self.db.execute(
            "SELECT seq, role, content, ts FROM messages WHERE agent_id = ? "
            "ORDER BY seq DESC LIMIT ?",
            (agent_id, n),
        ).fetchall()
        return [Message(*r) for r in reversed(rows)]

    def messages_by_seq(self, agent_id: str, seqs: Sequence[int]) -> dict[int, Message]:
        if not seqs:
            return {}
        marks = ",".join("?" * len(seqs))
        rows = self.db.execute(
            f"SELECT seq, role, content, ts FROM messages WHERE agent_id = ? AND seq IN ({marks})",
            (agent_id, *seqs),
        ).fetchall()
        return {int(r[0]): Message(*r) for r in rows}

    def delete_agent(self, agent_id: str) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            n = db.execute("DELETE FROM messages WHERE agent_id = ?", (agent_id,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(n)

    # --- vectors ---------------------------------------------------------------

    def put_document(
        self, namespace: str, doc_id: str, chunks: Sequence[str], vecs: np.ndarray
    ) -> int:
        """Replace a document's chunks in one transaction; returns how many were replaced."""
        db = self.db
        rows = [(namespace, doc_id, i, text, vecs[i].tobytes()) for i, text in enumerate(chunks)]
        db.execute("BEGIN IMMEDIATE")
        try:
            old = db.execute(
                "DELETE FROM chunks WHERE namespace = ? AND doc_id = ?", (namespace, doc_id)
            ).rowcount
            db.executemany(
                "INSERT INTO chunks (namespace, doc_id, chunk_no, text, vec) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(old)

    def namespace_counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT namespace, COUNT(*) FROM chunks GROUP BY namespace")
        return {str(ns): int(n) for ns, n in rows}

    def iter_vectors(
        self, namespace: str, batch: int = 4096
    ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        """A namespace's vectors in batches: (doc ids, chunk numbers, float32 matrix)."""
        cur = self.db.execute(
            "SELECT doc_id, chunk_no, vec FROM chunks WHERE namespace = ?", (namespace,)
        )
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                return
            docs = [r[0] for r in rows]
            nos = np.fromiter((r[1] for r in rows), dtype=np.int32, count=len(rows))
            mat = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32)
            yield docs, nos, mat.reshape(len(rows), DIMS)

    def chunk_texts(
        self, namespace: str, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], str]:
        out: dict[tuple[str, int], str] = {}
        for doc_id, chunk_no in keys:
            row = self.db.execute(
                "SELECT text FROM chunks WHERE namespace = ? AND doc_id = ? AND chunk_no = ?",
                (namespace, doc_id, chunk_no),
            ).fetchone()
            if row is not None:
                out[(doc_id, chunk_no)] = str(row[0])
        return out

    def delete_namespace(self, namespace: str) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            n = db.execute("DELETE FROM chunks WHERE namespace = ?", (namespace,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(n)
