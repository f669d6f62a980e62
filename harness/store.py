"""The results store: one directory per cell with an atomically written record.json, plus an SQLite
leaderboard per results directory that is updated in the same step and rebuilt from the records."""
from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prunebench.errors import UsageError

SCHEMA = 1
RECORD = "record.json"
DATABASE = "leaderboard.sqlite"
FINISHED = ("ok", "diverged")


def safe_name(text: str) -> str:
    """`text` made safe for a file or directory name in the results tree."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


def _finite_or_none(value: Any) -> Any:
    """JSON never gets NaN or infinity: non-finite floats become null (the status says why)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def write_json_atomically(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(_finite_or_none(data), handle, indent=2, allow_nan=False, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ResultsStore:
    """A results directory: cells/<name>/record.json and leaderboard.sqlite."""

    def __init__(self, root: "str | Path"):
        self.root = Path(root)
        self.cells = self.root / "cells"
        marker = self.root / "store.json"
        if marker.exists():
            schema = json.loads(marker.read_text()).get("schema")
            if schema != SCHEMA:
                raise UsageError(
                    f"{self.root} holds results of schema {schema}, this prunebench writes schema {SCHEMA}; "
                    "use another --results-dir (or move the old one away) and rerun."
                )
        elif self.root.exists() and any(self.root.glob(f"cells/*/{RECORD}")):
            raise UsageError(
                f"{self.root} holds results from an older prunebench (no store.json); "
                "use another --results-dir (or move the old one away) and rerun."
            )
        self.cells.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            write_json_atomically(marker, {"schema": SCHEMA})
        self._ensure_table()
        self.sync_database()

    # -- records -----------------------------------------------------------------------------

    def record_path(self, name: str) -> Path:
        return self.cells / name / RECORD

    def read(self, name: str) -> dict | None:
        path = self.record_path(name)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # a torn write cannot happen (atomic rename); treat anything else as absent

    def is_finished(self, name: str, content_hash: str) -> bool:
        record = self.read(name)
        return bool(record and record.get("hash") == content_hash and record.get("status") in FINISHED)

    def write(self, record: dict) -> None:
        """Write the cell's record (last, atomically), then upsert its leaderboard row."""
        record = dict(record, schema=SCHEMA)
        write_json_atomically(self.record_path(record["name"]), record)
        with self._database() as db:
            self._upsert(db, _finite_or_none(record))

    def records(self) -> list[dict]:
        found = []
        for path in sorted(self.cells.glob(f"*/{RECORD}")):
            try:
                found.append(json.loads(path.read_text()))
            except json.JSONDecodeError:
                continue
        return found

    @contextmanager
    def claim(self, name: str):
        """Hold an exclusive lock on a cell; yields False when another process holds it.

        flock is released by the kernel when a process dies, even by SIGKILL, so no stale locks.
        """
        lock_path = self.cells / name / ".lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- leaderboard -------------------------------------------------------------------------

    @contextmanager
    def _database(self):
        db = sqlite3.connect(self.root / DATABASE, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                yield db
        finally:
            db.close()

    def _ensure_table(self) -> None:
        with self._database() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS cells (name TEXT PRIMARY KEY, hash TEXT, suite TEXT, model TEXT, "
                "method TEXT, sparsity TEXT, seqlen INTEGER, seed INTEGER, status TEXT, perplexity TEXT, "
                "total_seconds REAL, finished TEXT, record TEXT)"
            )

    @staticmethod
    def _upsert(db: sqlite3.Connection, record: dict) -> None:
        cell = record.get("cell", {})
        db.execute(
            "INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record["name"], record.get("hash"), cell.get("suite"), cell.get("model"), cell.get("method"),
             cell.get("sparsity"), cell.get("seqlen"), cell.get("seed"), record.get("status"),
             json.dumps(record.get("perplexity", {})), (record.get("timings") or {}).get("total"),
             record.get("finished"), json.dumps(record)),
        )

    def sync_database(self) -> None:
        """Make the leaderboard agree with the records (after a crash between the two writes)."""
        records = self.records()
        with self._database() as db:
            known = dict(db.execute("SELECT name, hash || ':' || status FROM cells"))
            for record in records:
                if known.get(record["name"]) != f"{record.get('hash')}:{record.get('status')}":
                    self._upsert(db, record)

    def leaderboard(self) -> list[dict]:
        with self._database() as db:
            return [json.loads(row[0]) for row in db.execute("SELECT record FROM cells ORDER BY name")]
