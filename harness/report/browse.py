"""`prunebench browse DIR`: the results store's SQLite leaderboard opened in datasette, with metadata
that describes every column (its unit and which way is better), facets and canned queries. The queries
rank cells only against cells of their own kind: structured (whole heads, channels or layers removed) and
unstructured (weights masked to zero) cells at the same sparsity are different things."""
from __future__ import annotations

import json
import os
import sqlite3
from importlib.util import find_spec
from pathlib import Path

from ..api.errors import UsageError
from ..api.records import STRUCTURED
from ..store.leaderboard import VIEW, metric_columns
from ..store.results import DATABASE, RESERVED, TABLE, ResultsStore

# The table's own columns: (what it is, unit, which way is better). Every metric value the records hold
# has a column too, described from the metric registry (`prunebench.store.leaderboard`).
COLUMNS = {
    "name": ("the cell's directory under cells/: model, method, sparsity, calibration and seed", None, None),
    "hash": ("content hash of everything that changes the numbers (config, method arguments, versions); "
             "a rerun with the same hash is skipped", None, None),
    "suite": ("the grid's suite name", None, None),
    "model": ("the model's label in the grid", None, None),
    "method": ("the method's label in the grid; dense is the unpruned baseline", None, None),
    "kind": ("unstructured (weights masked to zero, shapes kept), structured (whole attention heads, FFN channels or "
             "decoder layers removed, the model smaller) or dense (the baseline); the canned queries never rank one "
             "kind against another", None, None),
    "sparsity": ("target sparsity: a ratio such as 0.5, or N:M (N zeros in every M consecutive weights); for a "
                 "structured cell the share of the prunable (decoder linear) parameters to remove", "fraction or N:M",
                 None),
    "seqlen": ("calibration window length L", "tokens", None),
    "seed": ("calibration sampling seed", None, None),
    "status": ("ok, diverged (a metric found the model diverged, e.g. a non-finite perplexity) or failed (the "
               "record's error says why)", None, None),
    "total_seconds": ("pruning time: calibration forwards, scores, masks and weight updates", "s", "lower"),
    "finished": ("when the record was written, UTC, ISO 8601", None, None),
    "record": ("the whole record.json: configuration, environment, timings, per-layer sparsity, every metric's "
               "result", "JSON", None),
}
VIEW_COLUMNS = {
    "metric": ("the registered metric (prunebench list)", None, None),
    "value": ("which of the metric's values", None, None),
    "unit": ("the unit of number", None, None),
    "better": ("which way is better for this value: higher or lower", None, None),
    "number": ("the value in its unit; null when the cell diverged", "the row's unit", "the row's better"),
    "column_name": ("the column of the cells table that holds the record's number", None, None),
}
UNITS = {"total_seconds": "s"}  # datasette shows these with their unit (Pint names only)
FACETS = ["model", "kind", "method", "sparsity", "seqlen"]
VIEW_FACETS = ["metric", "value", "model", "kind", "method", "sparsity", "seqlen"]

# Seeds pooled: the mean over seeds, null when any seed diverged (so a diverged seed is never averaged away).
# Each value is ranked its own way: `better` comes from the metric's registered direction; and only
# within its kind (a structured and an unstructured cell at the same sparsity are never compared).
_SETTINGS = f"""settings AS (
  SELECT model, kind, metric, value, unit, better, sparsity, seqlen, method, COUNT(*) AS seeds,
         CASE WHEN COUNT(number) = COUNT(*) THEN AVG(number) END AS mean
  FROM {VIEW} WHERE status IN ('ok', 'diverged') AND kind != 'dense'
  GROUP BY model, kind, metric, value, unit, better, sparsity, seqlen, method
)"""
_BEST_FIRST = "CASE better WHEN 'higher' THEN -{0} ELSE {0} END"
QUERIES = {
    "best_method_per_sparsity_and_length": {
        "title": "Best method per sparsity and calibration length, for every metric value",
        "description": "For each model, kind (unstructured or structured: never ranked against each other), "
                       "metric value, sparsity and calibration length L: the method with the best mean over seeds "
                       "(lowest or highest, as the metric says in the better column) and the runner-up. Not tested "
                       "for significance: the HTML report's tables show which differences their 95% intervals support.",
        "sql": f"""WITH {_SETTINGS},
ranked AS (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY model, kind, metric, value, sparsity, seqlen
                               ORDER BY {_BEST_FIRST.format('mean')}, method) AS place
  FROM settings WHERE mean IS NOT NULL
)
SELECT best.model, best.kind, best.metric, best.value, best.unit, best.better, best.sparsity, best.seqlen,
       best.method AS best_method, round(best.mean, 4) AS best, runner_up.method AS runner_up,
       round(runner_up.mean, 4) AS runner_up_value, best.seeds
FROM ranked AS best LEFT JOIN ranked AS runner_up
  ON runner_up.model = best.model AND runner_up.kind = best.kind AND runner_up.metric = best.metric
 AND runner_up.value = best.value AND runner_up.sparsity = best.sparsity AND runner_up.seqlen = best.seqlen
 AND runner_up.place = 2
WHERE best.place = 1
ORDER BY best.model, best.kind DESC, best.metric, best.value, best.sparsity, best.seqlen""",
    },
    "values_per_run": {
        "title": "Every metric value of every run",
        "description": "One row per finished cell (the dense baseline included) and metric value, in its unit "
                       "(null: diverged), best first within each model, kind, value, sparsity and length.",
        "sql": f"""SELECT name, model, kind, method, sparsity, seqlen, seed, metric, value, unit, better,
       round(number, 4) AS number
FROM {VIEW} WHERE status IN ('ok', 'diverged')
ORDER BY model, kind = 'dense' DESC, kind DESC, metric, value, sparsity, seqlen, number IS NULL,
         {_BEST_FIRST.format('number')}""",
    },
    "fastest_method_per_sparsity_and_length": {
        "title": "Pruning time per method, sparsity and calibration length",
        "description": "Mean pruning time over seeds in s (lower is better), fastest first in each kind and setting.",
        "sql": f"""SELECT model, kind, sparsity, seqlen, method, COUNT(*) AS seeds,
       round(AVG(total_seconds), 2) AS total_seconds
FROM {TABLE} WHERE status IN ('ok', 'diverged') AND kind != 'dense'
GROUP BY model, kind, sparsity, seqlen, method ORDER BY model, kind DESC, sparsity, seqlen, total_seconds""",
    },
    "structured_cells": {
        "title": "What each structured cell removed",
        "description": "Structured cells only: the share of the prunable (decoder linear) parameters removed, the "
                       "model's parameters before and after and the share kept, the decoder layers removed and the "
                       "heads and FFN channels kept per remaining layer (JSON).",
        "sql": f"""SELECT name, model, method, sparsity, seqlen, seed, status,
       round(100 * json_extract(record, '$.structured.removed_fraction'), 2) AS removed_percent,
       json_extract(record, '$.structured.parameters_before') AS parameters_before,
       json_extract(record, '$.structured.parameters_after') AS parameters_after,
       round(100.0 * json_extract(record, '$.structured.parameters_after')
             / json_extract(record, '$.structured.parameters_before'), 2) AS parameters_kept_percent,
       json_extract(record, '$.structured.removed_layers') AS removed_layers,
       json_extract(record, '$.structured.kept') AS kept_per_layer
FROM {TABLE} WHERE kind = '{STRUCTURED}' ORDER BY model, sparsity, seqlen, method, seed""",
    },
    "failed_cells": {
        "title": "Failed cells",
        "description": "Cells whose run failed, with the error; rerun them with prunebench run (failed cells are retried).",
        "sql": f"""SELECT name, model, kind, method, sparsity, seqlen, seed, json_extract(record, '$.error') AS error,
       finished
FROM {TABLE} WHERE status = 'failed' ORDER BY name""",
    },
}


def _described(what: str, unit: str | None, better: str | None) -> str:
    return f"{what}. Unit: {unit or 'none'}. Better: {better or 'neither (not a score)'}."


def column_descriptions(columns: list[str], records: list[dict]) -> dict[str, str]:
    """`what it is. Unit: …. Better: ….` for each column: the table's own from COLUMNS, a metric value's
    from its registered metric."""
    metrics = metric_columns(records, RESERVED)
    described = {}
    for column in columns:
        if column in metrics:
            described[column] = metrics[column].description()
        else:
            described[column] = _described(*COLUMNS.get(column, ("not described (a column newer than "
                                                                  "prunebench.report.browse)", None, None)))
    return described


def table_columns(database: Path, table: str = TABLE) -> list[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def metadata(database: Path, records: list[dict] | None = None) -> dict:
    """datasette metadata for the leaderboard: column descriptions and units, facets, canned queries.
    `records`: the store's (read from the database's folder when not given)."""
    if records is None:
        records = ResultsStore(Path(database).parent).records()
    metrics = {column.metric: column.metric_description for column in metric_columns(records, RESERVED).values()}
    described = "".join(f" {name}: {description}." for name, description in metrics.items())
    return {
        "title": "prunebench leaderboard",
        "description": "One row per benchmark cell (model x method x sparsity x calibration length x seed), a "
                       f"column per metric value; {VIEW}: a row per cell and metric value. See the canned queries "
                       "for the best method per sparsity and length, ranked within each kind (unstructured, "
                       "structured).",
        "databases": {Path(database).stem: {
            "tables": {
                TABLE: {"description": "Every cell of the grid, as the results store wrote it, with a column per "
                                       f"metric value.{described}",
                        "columns": column_descriptions(table_columns(database), records), "units": UNITS,
                        "facets": FACETS, "label_column": "name"},
                VIEW: {"description": "A row per cell and metric value (the registered metrics' values, in their "
                                      "unit, with which way is better).",
                       "columns": {column: _described(*VIEW_COLUMNS[column]) if column in VIEW_COLUMNS
                                   else column_descriptions([column], [])[column]
                                   for column in table_columns(database, VIEW)},
                       "facets": VIEW_FACETS},
            },
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
    store = ResultsStore(root)  # opening the store brings the database up to date
    database = store.root / DATABASE
    from datasette.cli import cli

    # The metadata reaches datasette through a pipe, not a temporary file: datasette's server ends on
    # SIGTERM by re-raising it, so nothing after it runs to delete a file. A few KiB fit the pipe's buffer.
    text = json.dumps(metadata(database, store.records()))
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as pipe:
        pipe.write(text)
    arguments = ["serve", str(database), "--metadata", f"/dev/fd/{read_end}", "--host", host, "--port", str(port)]
    try:
        cli.main(args=arguments + (["--open"] if open_browser else []), prog_name="datasette", standalone_mode=False)
    finally:
        os.close(read_end)
    return 0
