"""`prunebench browse`: datasette metadata that describes every column of the store's table, facets, canned
queries; the one-line error without datasette; and datasette itself, on loopback, queried over its JSON API."""
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from prunebench import browse
from prunebench.cli import main
from prunebench.store import DATABASE
from synthetic_leaderboard import LABEL, MODEL, write_results


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return write_results(tmp_path_factory.mktemp("results"))


def test_every_column_of_the_store_is_described_with_unit_and_direction(results):
    metadata = browse.metadata(results / DATABASE)
    table = metadata["databases"]["leaderboard"]["tables"]["cells"]
    columns = browse.table_columns(results / DATABASE)
    assert set(table["columns"]) == set(columns) and "total_seconds" in columns
    undescribed = [c for c in columns if c not in browse.COLUMNS]
    assert not undescribed, f"describe the store's new columns in prunebench.browse.COLUMNS: {undescribed}"
    for description in table["columns"].values():
        assert ". Unit: " in description and ". Better: " in description
    assert table["columns"]["total_seconds"].endswith("Unit: s. Better: lower.")
    assert table["facets"] == ["model", "method", "sparsity", "seqlen"] and table["units"] == {"total_seconds": "s"}
    assert "best_method_per_sparsity_and_length" in metadata["databases"]["leaderboard"]["queries"]
    assert len(json.dumps(metadata)) < 16384  # browse hands it over through a pipe, whose buffer holds 64 KiB


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
    server = subprocess.Popen([sys.executable, "-m", "prunebench.cli", "browse", str(results), "--port", str(port)],
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
        assert len(table["rows"]) == 18
        assert set(table["facet_results"]) == {"model", "method", "sparsity", "seqlen"}
        methods = {r["value"]: r["count"] for r in table["facet_results"]["method"]["results"]}
        assert methods == {"dense": 1, "magnitude": 4, "ria": 4, "sparsegpt": 4, "wanda": 5}

        best = _get(f"{base}/leaderboard/best_method_per_sparsity_and_length.json?_shape=array")
        settings = {(row["sparsity"], row["seqlen"]): row for row in best}
        assert set(settings) == {("0.5", 16), ("0.5", 128), ("2:4", 16), ("2:4", 128)}  # the failed L=1024 is left out
        assert all(row["model"] == MODEL and row["evaluation"] == LABEL for row in best)
        assert {settings[("0.5", 16)]["best_method"], settings[("0.5", 16)]["runner_up"]} == {"ria", "wanda"}  # tied
        assert settings[("0.5", 128)]["best_method"] == "wanda" and settings[("0.5", 128)]["runner_up"] == "ria"
        assert settings[("0.5", 128)]["perplexity"] == pytest.approx(90 * 2.718281828 ** -0.05, abs=0.01)

        failed = _get(f"{base}/leaderboard/failed_cells.json?_shape=array")
        assert [row["error"] for row in failed] == ["RuntimeError: out of memory"]
        described = _get(f"{base}/-/metadata.json")["databases"]["leaderboard"]["tables"]["cells"]["columns"]
        assert described["seqlen"].startswith("calibration window length L. Unit: tokens.")
    finally:
        server.terminate()
        server.wait(timeout=20)
