"""The results store: one directory per cell with an atomically written record.json, plus an SQLite
leaderboard per results directory that is updated in the same step and rebuilt from the records (its
metric columns come from the metric registry, `prunebench.store.leaderboard`)."""
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

from ..api.errors import UsageError, WriteError, cannot_write
from ..api.records import FINISHED
from .leaderboard import VIEW, metric_columns, record_columns, record_kind, view_sql

SCHEMA = 1
RECORD = "record.json"
DATABASE = "leaderboard.sqlite"
TABLE = "cells"
# The leaderboard's own columns; each metric value the records hold gets a column between these and
# `record` (the whole record.json), so the table changes shape when a metric is added.
# `kind` (unstructured, structured, dense) keeps the two kinds of pruning apart in rankings.
CELL_COLUMNS = {"name": "TEXT PRIMARY KEY", "hash": "TEXT", "suite": "TEXT", "model": "TEXT", "method": "TEXT",
                "kind": "TEXT", "sparsity": "TEXT", "seqlen": "INTEGER", "seed": "INTEGER", "status": "TEXT",
                "total_seconds": "REAL", "finished": "TEXT"}
RESERVED = frozenset(CELL_COLUMNS) | {"record"}


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
    """Write `path` whole or not at all (a temporary file renamed over it); an OSError (disk full, no
    permission) becomes a one-line WriteError, with the temporary file removed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise cannot_write(path, error) from error
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(_finite_or_none(data), handle, indent=2, allow_nan=False, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise cannot_write(path, error) from error
        raise


def check_writable(path: "str | Path", option: str, *, directory: bool) -> None:
    """Refuse, before any work, an output path that cannot be written: a file where a directory is
    wanted (or the other way round), a file on the way to it, or a place without write permission.
    Outputs are written beside their target first and renamed, so its parent must be writable too."""
    path = Path(path).expanduser().absolute()
    kind = "directory" if directory else "file"
    if path.exists():
        if path.is_dir() != directory:
            raise UsageError(f"{option} {path} is a {'file' if directory else 'directory'}; give a {kind} path.")
        places = [path.parent, path] if directory else [path.parent]
    else:
        nearest = next(p for p in path.parents if p.exists())
        if not nearest.is_dir():
            raise UsageError(f"{option} {path} cannot be created: {nearest} is a file; give another {kind} path.")
        places = [nearest]
    for place in places:
        if not os.access(place, os.W_OK | os.X_OK):
            raise UsageError(f"{option} {path} cannot be written: {place} is not writable; give another {kind} path.")


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
            try:
                self.sync_database()  # heal the leaderboard of a store that exists (browse relies on it)
            except WriteError as error:  # a full disk must not stop status or report from reading
                print(f"prunebench: {error}", file=sys.stderr)

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
        except OSError as error:  # a WriteError (the marker could not be written) says so itself
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

    def record_stamp(self, name: str) -> tuple[int, int] | None:
        """Identity of the cell's record file (inode, modification time), None when it has none; every
        write renames a new file into place, so a changed stamp means the record was written again."""
        try:
            stat = self.record_path(name).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def is_finished(self, name: str, content_hash: str) -> bool:
        record = self.read(name)
        return bool(record and record.get("hash") == content_hash and record.get("status") in FINISHED)

    def is_done(self, name: str, content_hash: str, *, force: bool = False, stamp_at_start=None) -> bool:
        """Whether a claimed cell needs no run: finished with this content hash, and under --force
        finished by a record written after this run began (`stamp_at_start`, from `record_stamp`):
        another runner computed it meanwhile, and --force must not compute a cell twice."""
        if not self.is_finished(name, content_hash):
            return False
        return not force or self.record_stamp(name) != stamp_at_start

    def write(self, record: dict) -> None:
        """Write the cell's record (last, atomically), then upsert its leaderboard row.

        A write that fails (disk full) raises a one-line WriteError and leaves no partial file; the
        cell is then recorded as failed with a small record when that still fits, so `status` shows it.
        """
        self._prepare()
        record = dict(record, schema=SCHEMA)
        try:
            write_json_atomically(self.record_path(record["name"]), record)
        except WriteError as error:
            raise WriteError(f"{error} {self._record_write_failure(record, error)}") from error
        try:
            with self._database() as db:
                self._upsert(db, _finite_or_none(record))
        except sqlite3.OperationalError as error:
            if not _disk_full(error):
                raise
            raise self._leaderboard_full(error) from error

    def _leaderboard_full(self, error: sqlite3.Error) -> WriteError:
        return WriteError(f"Cannot update {self.root / DATABASE} ({error}); the records are written and the "
                          "leaderboard is rebuilt from them by the next command; free some disk space and rerun.")

    def _record_write_failure(self, record: dict, error: WriteError) -> str:
        """Record a cell whose record could not be written as failed (a few hundred bytes may still fit);
        a finished record already there is kept, never replaced by a failure. Says what happened."""
        name = record["name"]
        previous = self.read(name)
        if previous is not None and previous.get("status") in FINISHED:
            return f"Cell {name} keeps its previous record."
        failed = {key: record[key] for key in ("name", "hash", "cell", "seed", "started", "schema") if key in record}
        failed.update(status="failed", error=f"WriteError: {error}", finished=record.get("finished"))
        try:
            write_json_atomically(self.record_path(name), failed)
        except WriteError:
            return f"Cell {name} has no record (it stays pending)."
        try:
            with self._database() as db:
                self._upsert(db, failed)
        except sqlite3.OperationalError:
            pass  # the leaderboard is derived: the next sync adds the row
        return f"Cell {name} is recorded as failed."

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
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "w")
        except OSError as error:
            raise cannot_write(lock_path, error) from error
        with handle:
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
                    if not _table_columns(db):
                        db.execute("BEGIN IMMEDIATE")
                        if not _table_columns(db):  # another process may have made it meanwhile
                            _create_table(db, [])
                    db.execute(f"SELECT name, hash, status, record FROM {TABLE} LIMIT 1").fetchall()
                return
            except sqlite3.DatabaseError as error:
                if _disk_full(error):  # not damage: deleting the database would not help
                    raise self._leaderboard_full(error) from error
                if attempt == 2:
                    raise
                print(f"prunebench: {self.root / DATABASE} is damaged; rebuilding it from the records", file=sys.stderr)
                for suffix in ("", "-wal", "-shm"):
                    (self.root / (DATABASE + suffix)).unlink(missing_ok=True)

    def _upsert(self, db: sqlite3.Connection, record: dict) -> None:
        """Insert or replace the record's row; a record with a metric value the table has no column for
        yet has the table rebuilt from every record (the record is on disk before its row is written)."""
        db.execute("BEGIN IMMEDIATE")  # the table's shape is read and used in one transaction
        values = {name: number for name, (_, number) in record_columns(record, RESERVED).items()}
        if not set(values) | set(CELL_COLUMNS) <= set(_table_columns(db)):  # a new metric, or an older table
            self._rebuild(db, self.records())
            return
        _insert(db, record, values)

    def _rebuild(self, db: sqlite3.Connection, records: list[dict]) -> None:
        """The table made anew from the records: a column per metric value they hold."""
        _create_table(db, list(metric_columns(records, RESERVED).values()))
        for record in records:
            record = _finite_or_none(record)
            _insert(db, record, {name: number for name, (_, number) in record_columns(record, RESERVED).items()})

    def sync_database(self) -> None:
        """Make the leaderboard agree with the records (after a crash between the two writes, a deleted
        cell directory or a quarantined record), and its columns with the registered metrics (a metric
        plugin installed or removed, a table written by an older prunebench)."""
        self._prepare()
        try:
            with self._database() as db:
                # Take the write lock before listing the records, so a row another runner upserts now
                # belongs to a record this listing already sees.
                db.execute("BEGIN IMMEDIATE")
                records = [_finite_or_none(record) for record in self.records()]
                wanted = set(CELL_COLUMNS) | {"record"} | set(metric_columns(records, RESERVED))
                if set(_table_columns(db)) != wanted:
                    self._rebuild(db, records)
                    return
                known = dict(db.execute(f"SELECT name, hash || ':' || status FROM {TABLE}"))
                for record in records:
                    if known.get(record["name"]) != f"{record.get('hash')}:{record.get('status')}":
                        _insert(db, record, {name: number for name, (_, number)
                                             in record_columns(record, RESERVED).items()})
                gone = set(known) - {record["name"] for record in records}
                db.executemany(f"DELETE FROM {TABLE} WHERE name = ?", [(name,) for name in gone])
        except sqlite3.OperationalError as error:
            if not _disk_full(error):
                raise
            raise self._leaderboard_full(error) from error

    def leaderboard(self) -> list[dict]:
        """Every row of the leaderboard (read-only, and without the database file, from the records)."""
        path = self.root / DATABASE
        if not self.writable() or not path.exists():
            return sorted((_finite_or_none(r) for r in self.records()), key=lambda r: r["name"])
        self._prepare()
        with self._database() as db:
            return [json.loads(row[0]) for row in db.execute(f"SELECT record FROM {TABLE} ORDER BY name")]


def _table_columns(db: sqlite3.Connection) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")]


def _create_table(db: sqlite3.Connection, metric_columns: list) -> None:
    """(Re)create the table with the cell columns, one REAL column per metric value, then the record;
    and the view of the metric values (`prunebench.store.leaderboard.view_sql`)."""
    db.execute(f"DROP VIEW IF EXISTS {VIEW}")
    db.execute(f"DROP TABLE IF EXISTS {TABLE}")
    columns = [f"{name} {kind}" for name, kind in CELL_COLUMNS.items()]
    columns += [f'"{column.name}" REAL' for column in metric_columns] + ["record TEXT"]
    db.execute(f"CREATE TABLE {TABLE} ({', '.join(columns)})")
    db.execute(view_sql(TABLE, metric_columns))


def _insert(db: sqlite3.Connection, record: dict, metric_values: dict) -> None:
    cell = record.get("cell", {})
    row = {"name": record["name"], "hash": record.get("hash"), "suite": cell.get("suite"), "model": cell.get("model"),
           "method": cell.get("method"), "kind": record_kind(record), "sparsity": cell.get("sparsity"),
           "seqlen": cell.get("seqlen"), "seed": cell.get("seed"), "status": record.get("status"),
           "total_seconds": (record.get("timings") or {}).get("total"), "finished": record.get("finished"),
           **metric_values, "record": json.dumps(record)}
    names = ", ".join(f'"{name}"' for name in row)
    db.execute(f"INSERT OR REPLACE INTO {TABLE} ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values()))


def _disk_full(error: Exception) -> bool:
    """SQLite reports a full disk as its own error ("database or disk is full"), not as an OSError."""
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error)


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
