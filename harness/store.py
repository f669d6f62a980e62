"""The results store: one directory per cell with an atomically written record.json, plus an SQLite
leaderboard per results directory that is updated in the same step and rebuilt from the records."""
from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
import sqlite3
import sys
import tempfile
import time
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


def is_record(value: Any) -> bool:
    """Whether a parsed record.json is a cell record (a mapping with a name and a status)."""
    return isinstance(value, dict) and isinstance(value.get("name"), str) and isinstance(value.get("status"), str)


class ResultsStore:
    """A results directory: cells/<name>/record.json and leaderboard.sqlite.

    Only the records are data; store.json and the leaderboard are derived and rebuilt when damaged.
    Nothing is created until the first write or claim, so reading a store (status, report, a dry
    run) writes nothing, and a read-only results directory can be read.
    """

    def __init__(self, root: "str | Path"):
        self.root = Path(root)
        self.cells = self.root / "cells"
        self._prepared = False
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"The results directory {self.root} is a file; give a directory path (--results-dir).")
        marker = self.root / "store.json"
        is_store = marker.exists()
        if is_store:
            try:
                schema = json.loads(marker.read_text()).get("schema")
            except (ValueError, AttributeError, OSError):
                schema = SCHEMA  # derived data: a damaged marker is rewritten by the next write
                if self.writable():
                    marker.unlink(missing_ok=True)
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
        if is_store and self.writable():
            self.sync_database()  # heal the leaderboard of a store that exists (browse relies on it)

    def writable(self) -> bool:
        return os.access(self.root, os.W_OK | os.X_OK)

    def _prepare(self) -> None:
        """Create the directory, its marker and the leaderboard table: the first write's job."""
        if self._prepared:
            return
        try:
            self.cells.mkdir(parents=True, exist_ok=True)
            marker = self.root / "store.json"
            if not marker.exists():
                write_json_atomically(marker, {"schema": SCHEMA})
        except OSError as error:
            raise UsageError(f"Cannot write the results directory {self.root} ({error.strerror}); "
                             "give a writable --results-dir.") from None
        _remove_orphans(self.root, f".{marker.name}.*.tmp")
        self._prepared = True
        self._ensure_table()

    # -- records -----------------------------------------------------------------------------

    def record_path(self, name: str) -> Path:
        return self.cells / name / RECORD

    def read(self, name: str) -> dict | None:
        """The cell's record; None when absent, and when not a record (then quarantined, see `_load`)."""
        path = self.record_path(name)
        return self._load(path) if path.exists() else None

    def _load(self, path: Path) -> dict | None:
        try:
            record = json.loads(path.read_text())
        except (ValueError, OSError):
            record = None
        if is_record(record):
            return record
        # A torn write cannot happen (atomic rename), so this file was damaged some other way: move it
        # aside so the cell counts as pending and reruns, and say so.
        if os.access(path.parent, os.W_OK):
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            aside = path.with_name(f"{RECORD}.corrupt-{stamp}")
            try:
                os.replace(path, aside)
                print(f"prunebench: {path} is not a valid record; moved it to {aside.name}, the cell will rerun",
                      file=sys.stderr)
            except FileNotFoundError:  # another process moved it first
                pass
        else:
            print(f"prunebench: {path} is not a valid record; ignored (read-only, not moved)", file=sys.stderr)
        return None

    def is_finished(self, name: str, content_hash: str) -> bool:
        record = self.read(name)
        return bool(record and record.get("hash") == content_hash and record.get("status") in FINISHED)

    def write(self, record: dict) -> None:
        """Write the cell's record (last, atomically), then upsert its leaderboard row."""
        self._prepare()
        record = dict(record, schema=SCHEMA)
        write_json_atomically(self.record_path(record["name"]), record)
        with self._database() as db:
            self._upsert(db, _finite_or_none(record))

    def records(self) -> list[dict]:
        found = []
        for path in sorted(self.cells.glob(f"*/{RECORD}")):
            record = self._load(path)
            if record is not None:
                found.append(record)
        return found

    @contextmanager
    def claim(self, name: str):
        """Hold an exclusive lock on a cell; yields False when another process holds it.

        flock is released by the kernel when a process dies, even by SIGKILL, so no stale locks.
        """
        self._prepare()
        lock_path = self.cells / name / ".lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                # Only the lock holder writes this cell's record: a temporary file left here is an
                # orphan of a process killed between writing and renaming it.
                _remove_orphans(lock_path.parent, f".{RECORD}.*.tmp", min_age=0)
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
        """Create the leaderboard table; a database that is damaged is deleted and rebuilt from the records."""
        for attempt in (1, 2):
            try:
                with self._database() as db:
                    db.execute(
                        "CREATE TABLE IF NOT EXISTS cells (name TEXT PRIMARY KEY, hash TEXT, suite TEXT, model TEXT, "
                        "method TEXT, sparsity TEXT, seqlen INTEGER, seed INTEGER, status TEXT, perplexity TEXT, "
                        "total_seconds REAL, finished TEXT, record TEXT)"
                    )
                    db.execute("SELECT name, hash, status, record FROM cells LIMIT 1").fetchall()
                return
            except sqlite3.DatabaseError:
                if attempt == 2:
                    raise
                print(f"prunebench: {self.root / DATABASE} is damaged; rebuilding it from the records", file=sys.stderr)
                for suffix in ("", "-wal", "-shm"):
                    (self.root / (DATABASE + suffix)).unlink(missing_ok=True)

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
        """Make the leaderboard agree with the records (after a crash between the two writes, a deleted
        cell directory or a quarantined record)."""
        self._prepare()
        with self._database() as db:
            # Take the write lock before listing the records, so a row another runner upserts now
            # belongs to a record this listing already sees.
            db.execute("BEGIN IMMEDIATE")
            records = self.records()
            known = dict(db.execute("SELECT name, hash || ':' || status FROM cells"))
            for record in records:
                if known.get(record["name"]) != f"{record.get('hash')}:{record.get('status')}":
                    self._upsert(db, record)
            gone = set(known) - {record["name"] for record in records}
            db.executemany("DELETE FROM cells WHERE name = ?", [(name,) for name in gone])

    def leaderboard(self) -> list[dict]:
        """Every row of the leaderboard (read-only, and without the database file, from the records)."""
        path = self.root / DATABASE
        if not self.writable() or not path.exists():
            return sorted((_finite_or_none(r) for r in self.records()), key=lambda r: r["name"])
        self._prepare()
        with self._database() as db:
            return [json.loads(row[0]) for row in db.execute("SELECT record FROM cells ORDER BY name")]


def _remove_orphans(directory: Path, pattern: str, min_age: float = 3600) -> None:
    """Delete temporary files of atomic writes whose writer died before the rename. Outside a cell's
    lock another process may be mid-write, so only files older than `min_age` seconds go."""
    now = time.time()
    for path in directory.glob(pattern):
        try:
            if now - path.stat().st_mtime >= min_age:
                path.unlink()
        except FileNotFoundError:
            pass
