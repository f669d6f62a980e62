"""The grid runner and results store on tiny models: resume, crashes, failures, concurrency, NaN,
tables that equal the records, plots."""
import json
import os
import re
import sqlite3
import subprocess
import sys

import pytest
from prunebench.api.errors import UsageError
from prunebench.cli.main import main
from prunebench.grid.config import load_config
from prunebench.grid.runner import run_grid
from prunebench.report.quality_tables import perplexity_tables
from prunebench.report.tables import write_report
from prunebench.store.results import ResultsStore

TEST_METHODS = '''
import os, signal
from prunebench import PruningMethod, hookimpl


class Killer(PruningMethod):
    name = "killer"
    description = "magnitude, but SIGKILLs its own process while scoring when PRUNEBENCH_TEST_KILL is set"
    arguments = {"group": "row"}

    def score(self, weight, stats, **args):
        if os.environ.get("PRUNEBENCH_TEST_KILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        return weight.abs()


class Raiser(PruningMethod):
    name = "raiser"
    description = "a plugin with a bug"

    def score(self, weight, stats, **args):
        raise RuntimeError("plugin bug")


class NanMaker(PruningMethod):
    name = "nan-maker"
    description = "destroys the weights"

    def score(self, weight, stats, **args):
        return weight.abs()

    def update(self, weight, mask, stats, context, **args):
        weight.fill_(float("nan"))
        return mask


@hookimpl
def register_methods(register):
    register(Killer())
    register(Raiser())
    register(NanMaker())
'''

GRID = """\
suite: tiny
models: [tiny-llama]
methods: [{methods}]
sparsity: [0.5]
calibration: {{dataset: pydoc, nsamples: 2, lengths: [16, 32]}}
evaluation:
  perplexity:
    - {{dataset: pydoc, seqlen: 32, max_windows: 2}}
device: cpu
"""


@pytest.fixture
def plugin_dir(install_plugin):
    return install_plugin(TEST_METHODS, "runner_test_methods", "runner-test-methods")


def grid(tmp_path, methods):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(methods=", ".join(methods)))
    return path


def quiet_run(config, results, **kwargs):
    return run_grid(config, results, progress=False, echo=lambda line: None, **kwargs)


def test_resume_skips_finished_cells_and_reruns_missing_ones(tmp_path):
    config = load_config(grid(tmp_path, ["wanda", "magnitude"]))
    results = tmp_path / "results"
    first = quiet_run(config, results)
    assert len(first.ran) == 5 and not first.failed
    again = quiet_run(config, results)
    assert again.ran == [] and len(again.skipped) == 5
    # A crash before a record was written leaves the cell without one: only it runs again.
    victim = first.ran[2]
    (results / "cells" / victim / "record.json").unlink()
    third = quiet_run(config, results)
    assert third.ran == [victim]
    forced = quiet_run(config, results, force=True)
    assert len(forced.ran) == 5


def test_sigkill_mid_cell_loses_and_repeats_nothing_finished(tmp_path, plugin_dir):
    path = grid(tmp_path, ["wanda", "killer"])
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=f"{plugin_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               PRUNEBENCH_TEST_KILL="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "prunebench.cli.main", "run", str(path), "--results-dir", str(results)]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9
    store = ResultsStore(results)
    finished = {r["name"] for r in store.records()}
    assert len(finished) == 3 and not any("killer" in name for name in finished)
    mtimes = {name: store.record_path(name).stat().st_mtime_ns for name in finished}
    env.pop("PRUNEBENCH_TEST_KILL")
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 ran, 3 already finished" in resumed.stdout
    assert all(store.record_path(name).stat().st_mtime_ns == mtimes[name] for name in finished)
    assert len(store.leaderboard()) == 5


def test_a_raising_plugin_fails_only_its_cells(tmp_path, plugin_dir, capsys):
    path = grid(tmp_path, ["raiser", "wanda"])
    results = tmp_path / "results"
    code = main(["run", str(path), "--results-dir", str(results)])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 failed" in captured.out and "RuntimeError: plugin bug" in captured.err
    records = {r["cell"]["method"] + str(r["cell"]["seqlen"]): r for r in ResultsStore(results).records()}
    assert records["raiser16"]["status"] == "failed" and "Traceback" in records["raiser16"]["traceback"]
    assert records["wanda16"]["status"] == records["wanda32"]["status"] == "ok"
    # -x stops at the first failure.
    fail_fast = quiet_run(load_config(path), tmp_path / "again", fail_fast=True)
    assert len(fail_fast.failed) == 1 and len(fail_fast.ran) == 2


def test_non_finite_perplexity_is_diverged_and_never_nan_in_json(tmp_path, plugin_dir):
    results = tmp_path / "results"
    quiet_run(load_config(grid(tmp_path, ["nan-maker"])), results)
    store = ResultsStore(results)
    record = next(r for r in store.records() if r["cell"]["method"] == "nan-maker")
    assert record["status"] == "diverged"
    text = store.record_path(record["name"]).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["perplexity"]["pydoc-32x2"]["perplexity"] is None
    assert "diverged" in perplexity_tables(store.records())[0][1]


def test_two_processes_on_one_results_directory(tmp_path):
    path = grid(tmp_path, ["wanda", "magnitude", "ria"])
    results = tmp_path / "results"
    command = [sys.executable, "-m", "prunebench.cli.main", "run", str(path), "--results-dir", str(results)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    ran = [int(re.search(r"(\d+) ran", out).group(1)) for out, _ in outputs]
    store = ResultsStore(results)
    records = store.records()
    assert len(records) == 7 and all(r["status"] == "ok" for r in records)
    assert sum(ran) == 7  # every cell ran exactly once: a cell finished by one is skipped by the other
    with sqlite3.connect(results / "leaderboard.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM cells WHERE status = 'ok'").fetchone()[0] == 7


def test_tables_equal_the_records_and_plots_are_written(tmp_path):
    results = tmp_path / "results"
    config = load_config(grid(tmp_path, ["wanda", "magnitude"]))
    quiet_run(config, results)
    text = write_report(results, "github", tmp_path / "report")
    records = ResultsStore(results).records()
    assert text.startswith("How to read these tables")
    table = text.split("pydoc-32x2 perplexity (lower is better)\n\n")[1].split("\n\n")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines()[2:]}
    for record in records:
        method, seqlen = record["cell"]["method"], record["cell"]["seqlen"]
        value = f"{record['perplexity']['pydoc-32x2']['perplexity']:.2f}"
        column = 0 if method == "dense" or seqlen == 16 else 1
        # The record's value, bold or with a dagger when it is the best, then its 95% interval.
        assert re.fullmatch(rf"(\*\*)?{re.escape(value)}(\*\*|†)? \[[0-9.]+, [0-9.]+\]", rows[method][column])
    # One calibration seed: no best or tied marks.
    assert "†" not in table and "**" not in "".join(c for cells in rows.values() for c in cells)
    pictures = sorted(p.name for p in (tmp_path / "report").iterdir())
    for stem in ("ppl-vs-length_tiny-llama_pydoc-32x2_0.5", "ppl-vs-sparsity_tiny-llama_pydoc-32x2",
                 "time-vs-ppl_tiny-llama_pydoc-32x2"):
        for suffix in (".png", ".svg"):
            assert stem + suffix in pictures and (tmp_path / "report" / (stem + suffix)).stat().st_size > 1000
    latex = write_report(results, "latex", tmp_path / "latex")
    assert "\\textbf{" in latex and "$\\downarrow$" in latex and "\\begin{itemize}" in latex
    csv_text = write_report(results, "csv", tmp_path / "csv")
    assert "method,50% L=16,50% L=16 low,50% L=16 high,50% L=16 std,50% L=16 mark,50% L=32" in csv_text


def test_the_leaderboard_is_rebuilt_from_records(tmp_path):
    results = tmp_path / "results"
    quiet_run(load_config(grid(tmp_path, ["magnitude"])), results)
    (results / "leaderboard.sqlite").unlink()
    assert len(ResultsStore(results).leaderboard()) == 3


def test_results_of_another_schema_are_refused(tmp_path):
    old = tmp_path / "old"
    (old / "cells" / "x").mkdir(parents=True)
    (old / "cells" / "x" / "record.json").write_text("{}")
    with pytest.raises(UsageError, match="older prunebench"):
        ResultsStore(old)
    (old / "store.json").write_text('{"schema": 0}')
    with pytest.raises(UsageError, match="schema 0"):
        ResultsStore(old)


def test_dry_run_status_and_validate(tmp_path, capsys):
    path = grid(tmp_path, ["wanda"])
    results = tmp_path / "results"
    assert main(["validate", str(path)]) == 0
    assert "valid; suite 'tiny', 3 cells" in capsys.readouterr().out
    assert main(["run", str(path), "--results-dir", str(results), "--dry-run"]) == 0
    assert "3 pending" in capsys.readouterr().out
    assert main(["run", str(path), "--results-dir", str(results), "--only", "seqlen=16"]) == 0
    capsys.readouterr()
    assert main(["status", str(path), "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "2 done, 1 pending" in out
    assert main(["run", str(path), "--only", "colour=red"]) == 2
