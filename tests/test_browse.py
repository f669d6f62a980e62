"""`prunebench browse`: datasette metadata that describes every column of the store's table, facets, canned
queries; structured and unstructured cells ranked only within their kind; a metric plugin's values as
columns, described, ranked their way and on the cell page; the one-line error without datasette; and
datasette itself, on loopback, queried over its JSON API."""
import json
import math
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
import synthetic_leaderboard
from prunebench import Metric, Value, hookimpl, registry
from prunebench.cli.main import main
from prunebench.report import browse
from prunebench.report.html_record import record_page
from prunebench.store.results import DATABASE, ResultsStore
from synthetic_leaderboard import LABEL, MODEL, STRUCTURED, write_results


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The synthetic leaderboard with its two structured cells (flap, shortgpt at 50% L=16)."""
    return write_results(tmp_path_factory.mktemp("results"), structured=True)


def test_every_column_of_the_store_is_described_with_unit_and_direction(results):
    metadata = browse.metadata(results / DATABASE)
    table = metadata["databases"]["leaderboard"]["tables"]["cells"]
    columns = browse.table_columns(results / DATABASE)
    assert set(table["columns"]) == set(columns) and "total_seconds" in columns
    undescribed = [c for c, text in table["columns"].items() if text.startswith("not described")]
    assert not undescribed, f"describe the store's new columns in prunebench.report.browse.COLUMNS: {undescribed}"
    for description in table["columns"].values():
        assert ". Unit: " in description and ". Better: " in description
    assert table["columns"]["total_seconds"].endswith("Unit: s. Better: lower.")
    # The built-in metrics' values, each a column described from the registry, with its direction.
    assert table["columns"]["perplexity_wikitext2_512x40"].endswith("Unit: none. Better: lower.")
    assert table["columns"]["zero_shot_mean_acc"].startswith("mean accuracy, a value of metric zero-shot.")
    assert table["columns"]["zero_shot_mean_acc"].endswith("Better: higher.")
    assert table["facets"] == ["model", "kind", "method", "sparsity", "seqlen"]
    assert table["units"] == {"total_seconds": "s"}
    assert table["columns"]["kind"].startswith("unstructured (weights masked to zero, shapes kept), structured")
    view = metadata["databases"]["leaderboard"]["tables"]["metric_values"]
    assert set(view["columns"]) == set(browse.table_columns(results / DATABASE, "metric_values"))
    assert "best_method_per_sparsity_and_length" in metadata["databases"]["leaderboard"]["queries"]
    assert len(json.dumps(metadata)) < 16384  # browse hands it over through a pipe, whose buffer holds 64 KiB


def _query(results, name: str) -> list[dict]:
    """A canned query's rows, run by SQLite itself (datasette runs the same SQL)."""
    with sqlite3.connect(results / DATABASE) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(browse.QUERIES[name]["sql"])]


def test_structured_and_unstructured_cells_are_ranked_only_within_their_kind(tmp_path):
    """At 50% L=16 both kinds have cells. The structured ones are worse in perplexity but faster: ranked
    together they would take the prefill speedup and push a runner-up aside; ranked within kind each kind
    has its own best and runner-up. A failed structured cell (no "kind" in its record) is still structured."""
    made = synthetic_leaderboard.records() + synthetic_leaderboard.structured_records()
    for record in made:
        if record["status"] == "ok" and "kind" not in record and record["cell"]["method"] != "dense":
            rank = sorted(synthetic_leaderboard.SHIFTS).index(record["cell"]["method"])
            record["metrics"] = {"speed": {"prefill_speedup": {"value": 1.0 + rank / 100, "low": 0.9, "high": 1.1}}}
    failed = dict(made[-1], name=made[-1]["name"].replace("seed=0", "seed=1"), status="failed", error="OOM")
    failed["cell"] = dict(failed["cell"], method="flap", method_name="flap", seed=1)
    for key in ("kind", "structured", "perplexity", "tasks", "metrics", "timings"):
        failed.pop(key)
    root = tmp_path / "results"
    store = ResultsStore(root)
    for record in made + [failed]:
        store.write(record)
    with sqlite3.connect(root / DATABASE) as db:
        kinds = dict(db.execute("SELECT method || ' ' || coalesce(seed, ''), kind FROM cells WHERE seqlen = 16 "
                                "AND sparsity = '0.5' OR method = 'dense'"))
    assert kinds == {"dense ": "dense", "flap 0": "structured", "flap 1": "structured", "shortgpt 0": "structured",
                     "magnitude 0": "unstructured", "ria 0": "unstructured", "sparsegpt 0": "unstructured",
                     "wanda 0": "unstructured"}

    best = {(row["kind"], row["metric"], row["sparsity"], row["seqlen"]): row
            for row in _query(root, "best_method_per_sparsity_and_length")}
    assert {key for key in best if key[0] == "structured"} == {("structured", m, "0.5", 16)
                                                               for m in ("perplexity", "zero-shot", "speed", "memory")}
    perplexity, speed = best[("unstructured", "perplexity", "0.5", 16)], best[("unstructured", "speed", "0.5", 16)]
    assert {perplexity["best_method"], perplexity["runner_up"]} == {"ria", "wanda"}  # tied, as without structured
    assert speed["best_method"] == "wanda" and speed["runner_up"] == "sparsegpt"  # never flap's or shortgpt's 1.45, 1.9
    ours = best[("structured", "perplexity", "0.5", 16)]
    assert (ours["best_method"], ours["runner_up"]) == ("flap", "shortgpt")
    assert ours["best"] == pytest.approx(90 * math.exp(STRUCTURED["flap"][0]), rel=1e-3)
    fast = best[("structured", "speed", "0.5", 16)]
    assert (fast["best_method"], fast["best"], fast["runner_up"]) == ("shortgpt", 1.9, "flap")
    seconds = [(row["kind"], row["method"]) for row in _query(root, "fastest_method_per_sparsity_and_length")
               if row["sparsity"] == "0.5" and row["seqlen"] == 16]
    assert seconds == [("unstructured", m) for m in ("magnitude", "wanda", "ria", "sparsegpt")] + [
        ("structured", "flap"), ("structured", "shortgpt")]  # each kind fastest first, the kinds apart
    values = _query(root, "values_per_run")
    assert [row["kind"] for row in values if row["value"] == LABEL][:3] == ["dense", "unstructured", "unstructured"]

    removed = {row["method"]: row for row in _query(root, "structured_cells") if row["status"] == "ok"}
    assert set(removed) == {"flap", "shortgpt"} and len(_query(root, "structured_cells")) == 3  # the failed one too
    flap = synthetic_leaderboard.structured_records()[0]["structured"]
    assert removed["flap"]["parameters_after"] == flap["parameters_after"]
    assert removed["flap"]["removed_percent"] == round(100 * flap["removed_fraction"], 2)
    assert json.loads(removed["flap"]["kept_per_layer"]) == synthetic_leaderboard.FLAP_KEPT
    assert json.loads(removed["shortgpt"]["removed_layers"]) == synthetic_leaderboard.SHORTGPT_REMOVED
    assert {row["method"]: row["kind"] for row in _query(root, "failed_cells")} == {"wanda": "unstructured",
                                                                                   "flap": "structured"}


class Wobble(Metric):
    """A metric plugin of this test: a number per cell with a range, and a second value ranked the other way."""

    name = "wobble"
    description = "a test metric"
    higher_is_better = False
    values = (Value("spread", "wobble spread", False, "mB", 1e-3), Value("grip", "grip", True, "%", 100.0))

    def compute(self, context):
        raise AssertionError("records are written by hand here")


class WobblePlugin:
    @hookimpl
    def register_metrics(self, register):
        register(Wobble())


def test_a_metric_plugin_gets_a_column_a_description_a_ranking_and_a_page_row(register_plugin, tmp_path):
    """Registered by a test, a metric's values become columns of the SQLite leaderboard, are described in
    datasette's metadata, ranked their own way by the canned query and shown on the cell's page, with no
    host change; a store opened without the plugin drops its columns, and gets them back with it."""
    made = [r for r in synthetic_leaderboard.records() if r["status"] == "ok"]
    methods = sorted({r["cell"]["method"] for r in made} - {"dense"})
    for record in made:
        rank = methods.index(record["cell"]["method"]) if record["cell"]["method"] in methods else -1
        record["metrics"] = {"wobble": {"spread": {"value": 1000.0 + rank, "low": 900.0, "high": 1200.0},
                                        "grip": 0.5 + rank / 10}}
    root = tmp_path / "results"
    store = ResultsStore(root)
    store.write(made[0])  # the first record: no wobble column until the plugin is registered
    plugin = register_plugin(WobblePlugin())
    for record in made[1:]:
        store.write(record)
    with sqlite3.connect(root / DATABASE) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(cells)")]
        spread = dict(db.execute("SELECT method, wobble_spread FROM cells WHERE sparsity = '0.5' AND seqlen = 16"))
    assert columns.index("wobble_spread") < columns.index("wobble_grip") < columns.index("record")
    assert spread == {method: 1000.0 + i for i, method in enumerate(methods)}  # the record's number, unscaled
    described = browse.metadata(root / DATABASE)["databases"]["leaderboard"]["tables"]["cells"]["columns"]
    assert described["wobble_spread"] == ("wobble spread, a value of metric wobble. Unit: mB once multiplied by 0.001 "
                                          "(metric_values shows it so). Better: lower.")
    assert described["wobble_grip"].endswith("Better: higher.")
    best = {(row["value"], row["sparsity"], row["seqlen"]): row
            for row in _query(root, "best_method_per_sparsity_and_length") if row["metric"] == "wobble"}
    assert len(best) == 2 * len(synthetic_leaderboard.SPARSITIES) * len(synthetic_leaderboard.LENGTHS)
    # Lower spread is better: the first method; higher grip is better: the last. In the view's unit (mB, %).
    assert {row["best_method"] for key, row in best.items() if key[0] == "wobble spread"} == {methods[0]}
    assert {row["best_method"] for key, row in best.items() if key[0] == "grip"} == {methods[-1]}
    assert best[("wobble spread", "0.5", 16)]["best"] == 1.0 and best[("wobble spread", "0.5", 16)]["unit"] == "mB"
    assert best[("grip", "0.5", 16)]["best"] == pytest.approx(80.0)
    assert best[("grip", "0.5", 16)]["runner_up"] == methods[-2]

    page = record_page(next(r for r in made if r["cell"]["method"] == methods[1]), "benchmarks.yaml", resamples=50)
    assert '<h3 id="metric-wobble">wobble</h3>' in page
    assert re.search(r'wobble spread mB <span class="arrow" title="lower is better">↓</span></th>'
                     r'<td data-value="1.001">1.00<span class="interval">\[0.9, 1.2\]</span></td>', page)
    assert re.search(r'grip % <span class="arrow" title="higher is better">↑</span></th>'
                     r'<td data-value="60">60.00</td>', page)

    # Without the plugin the store's columns are the built-in metrics' again; with it, the wobble ones come back.
    registry.plugin_manager().unregister(plugin)
    ResultsStore(root)
    assert not [c for c in browse.table_columns(root / DATABASE) if c.startswith("wobble")]
    registry.plugin_manager().register(plugin)  # the fixture unregisters it after the test
    ResultsStore(root)
    assert "wobble_grip" in browse.table_columns(root / DATABASE)


def test_a_leaderboard_written_by_an_older_prunebench_is_rebuilt_with_metric_columns(tmp_path):
    root = write_results(tmp_path / "results", keep=3)
    with sqlite3.connect(root / DATABASE) as db:  # the table as prunebench wrote it before metric columns
        db.execute("DROP VIEW metric_values")
        db.execute("DROP TABLE cells")
        db.execute("CREATE TABLE cells (name TEXT PRIMARY KEY, hash TEXT, suite TEXT, model TEXT, method TEXT, "
                   "sparsity TEXT, seqlen INTEGER, seed INTEGER, status TEXT, perplexity TEXT, total_seconds REAL, "
                   "finished TEXT, record TEXT)")
        db.execute("INSERT INTO cells (name, hash, status, record) VALUES ('gone', 'x', 'ok', '{}')")
    ResultsStore(root)
    assert "perplexity" not in browse.table_columns(root / DATABASE)
    rows = _query(root, "values_per_run")
    assert len({row["name"] for row in rows}) == 3 and {row["metric"] for row in rows} == {"perplexity", "zero-shot"}


def test_a_leaderboard_without_the_kind_column_is_rebuilt_with_it(tmp_path):
    """A table written before `kind`: opening the store rebuilds it; a store opened earlier that writes a
    row into such a table rebuilds it too, instead of failing on the missing column."""
    root = write_results(tmp_path / "results", keep=2, structured=True)
    store = ResultsStore(root)

    def drop_kind():
        with sqlite3.connect(root / DATABASE) as db:
            db.execute("DROP VIEW metric_values")
            db.execute("ALTER TABLE cells DROP COLUMN kind")
            db.execute("CREATE VIEW metric_values AS SELECT name FROM cells")  # the view as good as gone
        assert "kind" not in browse.table_columns(root / DATABASE)

    drop_kind()
    ResultsStore(root)
    assert {row["kind"] for row in _query(root, "values_per_run")} == {"dense", "unstructured", "structured"}
    drop_kind()
    store.write(synthetic_leaderboard.records()[2])
    with sqlite3.connect(root / DATABASE) as db:
        assert dict(db.execute("SELECT method, kind FROM cells")) == {
            "dense": "dense", "magnitude": "unstructured", "ria": "unstructured", "flap": "structured",
            "shortgpt": "structured"}


def test_without_datasette_browse_says_what_to_install(results, monkeypatch, capsys):
    monkeypatch.setattr(browse, "find_spec", lambda name: None)
    assert main(["browse", str(results)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install prunebench[browse]" in error


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def test_datasette_serves_the_leaderboard_with_facets_and_the_canned_query(results):
    pytest.importorskip("datasette", reason="the browse extra: pip install prunebench[browse]")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "prunebench.cli.main", "browse", str(results), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/-/versions.json")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"datasette did not start: {server.stdout.read().decode()[-2000:]}")
                time.sleep(0.2)
        table = _get(f"{base}/leaderboard/cells.json?_shape=objects&_size=100")
        assert len(table["rows"]) == 20
        assert set(table["facet_results"]) == {"model", "kind", "method", "sparsity", "seqlen"}
        methods = {r["value"]: r["count"] for r in table["facet_results"]["method"]["results"]}
        assert methods == {"dense": 1, "magnitude": 4, "ria": 4, "sparsegpt": 4, "wanda": 5, "flap": 1, "shortgpt": 1}
        kinds = {r["value"]: r["count"] for r in table["facet_results"]["kind"]["results"]}
        assert kinds == {"dense": 1, "unstructured": 17, "structured": 2}

        best = _get(f"{base}/leaderboard/best_method_per_sparsity_and_length.json?_shape=array&_size=max")
        structured = [row for row in best if row["kind"] == "structured" and row["metric"] == "perplexity"]
        assert [(row["sparsity"], row["seqlen"], row["best_method"], row["runner_up"]) for row in structured] == [
            ("0.5", 16, "flap", "shortgpt")]  # ranked apart from the unstructured cells at 50% L=16
        best = [row for row in best if row["kind"] == "unstructured"]
        settings = {(row["sparsity"], row["seqlen"]): row for row in best if row["metric"] == "perplexity"}
        assert set(settings) == {("0.5", 16), ("0.5", 128), ("2:4", 16), ("2:4", 128)}  # the failed L=1024 is left out
        assert all(row["model"] == MODEL and row["value"] == LABEL and row["better"] == "lower"
                   for row in settings.values())
        assert {settings[("0.5", 16)]["best_method"], settings[("0.5", 16)]["runner_up"]} == {"ria", "wanda"}  # tied
        assert settings[("0.5", 128)]["best_method"] == "wanda" and settings[("0.5", 128)]["runner_up"] == "ria"
        assert settings[("0.5", 128)]["best"] == pytest.approx(90 * 2.718281828 ** -0.05, abs=0.01)
        # Accuracy is ranked the other way: magnitude's 40% is last, never best.
        accuracy = [row for row in best if row["value"] == "mean accuracy"]
        assert len(accuracy) == 4 and all(row["best"] == 60.0 and row["best_method"] != "magnitude" for row in accuracy)
        values = _get(f"{base}/leaderboard/metric_values.json?_shape=objects&_facet=metric")
        assert {r["value"]: r["count"] for r in values["facet_results"]["metric"]["results"]} == {
            "perplexity": 19, "zero-shot": 38, "memory": 4, "speed": 4}  # per ok cell: one evaluation; the mean
        # and the task's accuracy; the structured cells' memory and speed values, two each

        failed = _get(f"{base}/leaderboard/failed_cells.json?_shape=array")
        assert [row["error"] for row in failed] == ["RuntimeError: out of memory"]
        described = _get(f"{base}/-/metadata.json")["databases"]["leaderboard"]["tables"]["cells"]["columns"]
        assert described["seqlen"].startswith("calibration window length L. Unit: tokens.")
    finally:
        server.terminate()
        server.wait(timeout=20)
