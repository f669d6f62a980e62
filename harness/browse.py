"""`prunebench browse DIR`: the results store's SQLite leaderboard opened in datasette, with metadata
that describes every column (its unit and which way is better), facets and canned queries."""
from __future__ import annotations

import json
import os
import sqlite3
from importlib.util import find_spec
from pathlib import Path

from prunebench.errors import UsageError
from prunebench.store import DATABASE, ResultsStore

TABLE = "cells"
# Every column of the store's table: (what it is, unit, which way is better). A column the store gains
# must be added here; tests/test_browse.py checks that none is left undescribed.
COLUMNS = {
    "name": ("the cell's directory under cells/: model, method, sparsity, calibration and seed", None, None),
    "hash": ("content hash of everything that changes the numbers (config, method arguments, versions); "
             "a rerun with the same hash is skipped", None, None),
    "suite": ("the grid's suite name", None, None),
    "model": ("the model's label in the grid", None, None),
    "method": ("the method's label in the grid; dense is the unpruned baseline", None, None),
    "sparsity": ("target sparsity: a ratio such as 0.5, or N:M (N zeros in every M consecutive weights)", "fraction or N:M",
                 None),
    "seqlen": ("calibration window length L", "tokens", None),
    "seed": ("calibration sampling seed", None, None),
    "status": ("ok, diverged (a non-finite perplexity) or failed (the record's error says why)", None, None),
    "perplexity": ("JSON, per evaluation label: perplexity (lower is better), mean_nll (nats per token), windows, "
                   "window_length and tokens (tokens), seconds (s), window_nlls", "JSON", "lower (perplexity)"),
    "total_seconds": ("pruning time: calibration forwards, scores, masks and weight updates", "s", "lower"),
    "finished": ("when the record was written, UTC, ISO 8601", None, None),
    "record": ("the whole record.json: configuration, environment, timings, per-layer sparsity, tasks", "JSON", None),
}
UNITS = {"total_seconds": "s"}  # datasette shows these with their unit (Pint names only)
FACETS = ["model", "method", "sparsity", "seqlen"]

# One row per finished pruned run and evaluation, from the JSON column; the canned queries start here.
_RUNS = """runs AS (
  SELECT c.name, c.model, c.method, c.sparsity, c.seqlen, c.seed, c.total_seconds, e.key AS evaluation,
         json_extract(e.value, '$.perplexity') AS perplexity, json_extract(e.value, '$.windows') AS windows
  FROM cells AS c, json_each(c.perplexity) AS e
  WHERE c.status IN ('ok', 'diverged') AND c.method != 'dense'
)"""
# Seeds pooled: the mean over seeds, null when any seed diverged (so a diverged seed is never averaged away).
_SETTINGS = """settings AS (
  SELECT model, evaluation, sparsity, seqlen, method, COUNT(*) AS seeds,
         CASE WHEN COUNT(perplexity) = COUNT(*) THEN AVG(perplexity) END AS perplexity,
         AVG(total_seconds) AS total_seconds
  FROM runs GROUP BY model, evaluation, sparsity, seqlen, method
)"""
QUERIES = {
    "best_method_per_sparsity_and_length": {
        "title": "Best method per sparsity and calibration length",
        "description": "For each model, evaluation, sparsity and calibration length L: the method with the lowest "
                       "perplexity (mean over seeds; lower is better) and the runner-up. Not tested for significance: "
                       "the HTML report's tables show which differences their 95% intervals support.",
        "sql": f"""WITH {_RUNS}, {_SETTINGS},
ranked AS (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY model, evaluation, sparsity, seqlen ORDER BY perplexity, method) AS place
  FROM settings WHERE perplexity IS NOT NULL
)
SELECT best.model, best.evaluation, best.sparsity, best.seqlen, best.method AS best_method,
       round(best.perplexity, 2) AS perplexity, runner_up.method AS runner_up,
       round(runner_up.perplexity, 2) AS runner_up_perplexity, best.seeds
FROM ranked AS best LEFT JOIN ranked AS runner_up
  ON runner_up.model = best.model AND runner_up.evaluation = best.evaluation AND runner_up.sparsity = best.sparsity
 AND runner_up.seqlen = best.seqlen AND runner_up.place = 2
WHERE best.place = 1
ORDER BY best.model, best.evaluation, best.sparsity, best.seqlen""",
    },
    "perplexity_per_run": {
        "title": "Perplexity of every run",
        "description": "One row per finished run and evaluation: perplexity (lower is better; null: diverged), "
                       "evaluation windows, pruning time in s (lower is better).",
        "sql": f"""WITH {_RUNS}
SELECT name, model, method, sparsity, seqlen, seed, evaluation, round(perplexity, 2) AS perplexity, windows,
       round(total_seconds, 2) AS total_seconds
FROM runs ORDER BY model, evaluation, sparsity, seqlen, perplexity IS NULL, perplexity""",
    },
    "fastest_method_per_sparsity_and_length": {
        "title": "Pruning time per method, sparsity and calibration length",
        "description": "Mean pruning time over seeds in s (lower is better) beside the perplexity (lower is better), "
                       "fastest first in each setting.",
        "sql": f"""WITH {_RUNS}, {_SETTINGS}
SELECT model, evaluation, sparsity, seqlen, method, round(total_seconds, 2) AS total_seconds,
       round(perplexity, 2) AS perplexity, seeds
FROM settings ORDER BY model, evaluation, sparsity, seqlen, total_seconds""",
    },
    "zero_shot_accuracy": {
        "title": "Zero-shot accuracy",
        "description": "Mean lm-eval accuracy over the grid's tasks, in percent (higher is better), per run.",
        "sql": """SELECT name, model, method, sparsity, seqlen, seed,
       round(100 * json_extract(record, '$.tasks.mean_acc'), 2) AS mean_acc_percent
FROM cells WHERE json_extract(record, '$.tasks.mean_acc') IS NOT NULL
ORDER BY model, sparsity, seqlen, mean_acc_percent DESC""",
    },
    "failed_cells": {
        "title": "Failed cells",
        "description": "Cells whose run failed, with the error; rerun them with prunebench run (failed cells are retried).",
        "sql": """SELECT name, model, method, sparsity, seqlen, seed, json_extract(record, '$.error') AS error, finished
FROM cells WHERE status = 'failed' ORDER BY name""",
    },
}


def column_description(column: str) -> str:
    """`what it is. Unit: …. Better: ….`, the text datasette shows for a column."""
    what, unit, better = COLUMNS.get(column, ("not described (a column newer than prunebench.browse)", None, None))
    return f"{what}. Unit: {unit or 'none'}. Better: {better or 'neither (not a score)'}."


def table_columns(database: Path) -> list[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")]


def metadata(database: Path) -> dict:
    """datasette metadata for the leaderboard: column descriptions and units, facets, canned queries."""
    columns = {column: column_description(column) for column in table_columns(database)}
    return {
        "title": "prunebench leaderboard",
        "description": "One row per benchmark cell (model x method x sparsity x calibration length x seed). "
                       "See the canned queries for the best method per sparsity and length.",
        "databases": {Path(database).stem: {
            "tables": {TABLE: {"description": "Every cell of the grid, as the results store wrote it.",
                               "columns": columns, "units": UNITS, "facets": FACETS, "label_column": "name"}},
            "queries": QUERIES,
        }},
    }


def serve(results_dir: "str | Path", host: str = "127.0.0.1", port: int = 8001, open_browser: bool = False) -> int:
    """Run datasette on the results directory's leaderboard until interrupted."""
    if find_spec("datasette") is None:
        raise UsageError("prunebench browse needs datasette: pip install prunebench[browse]")
    root = Path(results_dir)
    if not (root / "cells").is_dir():
        raise UsageError(f"No results in {root}; run 'prunebench run' first.")
    database = ResultsStore(root).root / DATABASE  # opening the store brings the database up to date
    from datasette.cli import cli

    # The metadata reaches datasette through a pipe, not a temporary file: datasette's server ends on
    # SIGTERM by re-raising it, so nothing after it runs to delete a file. A few KiB fit the pipe's buffer.
    text = json.dumps(metadata(database))
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as pipe:
        pipe.write(text)
    arguments = ["serve", str(database), "--metadata", f"/dev/fd/{read_end}", "--host", host, "--port", str(port)]
    try:
        cli.main(args=arguments + (["--open"] if open_browser else []), prog_name="datasette", standalone_mode=False)
    finally:
        os.close(read_end)
    return 0
