"""Provenance in grid records, `prune --json` and the content hash; machine load around each cell."""
import json
import shutil
import subprocess
import sys
import time

import pytest
from prunebench.cli.main import main
from prunebench.grid import provenance
from prunebench.grid.cells import content_hash, expand
from prunebench.grid.config import load_config
from prunebench.grid.runner import run_grid
from prunebench.metrics import machine_load

GRID = """\
suite: prov
models: [tiny-llama]
methods: [magnitude]
sparsity: ["2:4"]
calibration: {{dataset: "text:{corpus}", nsamples: 2, lengths: [16]}}
evaluation:
  perplexity: [{{dataset: wikitext2, seqlen: 32, max_windows: 2}}]
  data_dir: {data}
device: cpu
batch_size: {batch_size}
"""


@pytest.fixture
def data(tmp_path):
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "wiki.test.raw").write_text("".join(f" Sentence number {i} of the test split . \n" for i in range(40)))
    (tmp_path / "corpus.txt").write_text("A calibration corpus of one document, long enough for windows. " * 20)
    return directory


def config_for(tmp_path, data, batch_size=8):
    path = tmp_path / f"grid{batch_size}.yaml"
    path.write_text(GRID.format(corpus=tmp_path / "corpus.txt", data=data, batch_size=batch_size))
    return load_config(path)


def hashes(config):
    return [content_hash(cell, config) for cell in expand(config)]


def test_grid_records_carry_provenance_load_and_diagnostics(tmp_path, data):
    config = config_for(tmp_path, data)
    summary = run_grid(config, tmp_path / "results", progress=False, echo=lambda line: None)
    assert len(summary.ran) == 2 and not summary.failed
    records = {r["cell"]["method"]: r for r in
               (json.loads(p.read_text()) for p in (tmp_path / "results" / "cells").glob("*/record.json"))}
    pruned = records["magnitude"]["provenance"]
    assert pruned["numerics_version"] == provenance.NUMERICS_VERSION and pruned["method_version"] == "1"
    assert pruned["batch_size"] == 8 and pruned["device"] == "cpu" and pruned["torch_threads"] >= 1
    assert pruned["torch"] and pruned["transformers"] and "lm_eval" in pruned and "git_revision" in pruned
    assert pruned["calibration_data"]["source"] == str((tmp_path / "corpus.txt").resolve())
    assert len(pruned["calibration_data"]["sha256"]) == 64
    assert pruned["evaluation_data"][0]["source"] == str((data / "wiki.test.raw").resolve())
    dense = records["dense"]["provenance"]
    assert dense["calibration_data"] is None and dense["batch_size"] is None
    assert dense["evaluation_data"] == pruned["evaluation_data"]
    for record in records.values():
        load = record["load"]
        assert isinstance(load["contended"], bool)
        for point in ("start", "end"):
            assert isinstance(load[point]["loadavg1"], float) and 0 <= load[point]["busy_cpu_share"] <= 1
    tied = records["magnitude"]["diagnostics"]["tied_at_cut"]
    assert 0 <= tied["fraction"] <= 1 and tied["total"] > 0


def test_content_hash_follows_versions_data_and_settings_but_not_the_git_revision(tmp_path, data, monkeypatch):
    from prunebench.baselines.magnitude import Magnitude

    config = config_for(tmp_path, data)
    base = hashes(config)
    assert hashes(config_for(tmp_path, data, batch_size=2))[1] != base[1]  # batch size: pruned cells only
    assert hashes(config_for(tmp_path, data, batch_size=2))[0] == base[0]
    provenance.git_revision.cache_clear()
    monkeypatch.setattr(provenance, "git_revision", lambda: "0" * 40)
    assert hashes(config) == base
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)  # the same file elsewhere: the same numbers
    assert hashes(config_for(tmp_path, moved)) == base
    with monkeypatch.context() as patch:
        patch.setattr(Magnitude, "version", "2")
        changed = hashes(config)
        assert changed[0] == base[0] and changed[1] != base[1]
    with monkeypatch.context() as patch:
        patch.setattr(provenance, "NUMERICS_VERSION", provenance.NUMERICS_VERSION + 1)
        assert all(a != b for a, b in zip(hashes(config), base))
    time.sleep(0.01)  # a new modification time, so the cached file hash is not reused
    (data / "wiki.test.raw").write_text("Different test text . \n" * 40)
    assert all(a != b for a, b in zip(hashes(config), base))


def test_prune_json_records_the_same_provenance_as_grid_cells(tmp_path, data):
    report = tmp_path / "report.json"
    corpus = tmp_path / "corpus.txt"
    code = main(["prune", "--model", "tiny-llama", "--method", "magnitude", "--sparsity", "2:4", "--nsamples", "2",
                 "--seqlen", "16", "--calib-dataset", f"text:{corpus}", "--eval-dataset", "wikitext2",
                 "--data-dir", str(data), "--eval-seqlen", "32", "--eval-windows", "2", "--batch-size", "8",
                 "--device", "cpu", "--no-dense-eval", "--json", str(report)])
    assert code == 0
    output = json.loads(report.read_text())
    assert output["dense"] is None  # --no-dense-eval: no dense cell ran
    recorded = output["pruned"]["provenance"]
    cell = next(c for c in expand(config_for(tmp_path, data)) if c.method is not None)
    from prunebench.grid.cells import cell_provenance

    assert recorded == json.loads(json.dumps(cell_provenance(cell, config_for(tmp_path, data))))
    assert output["pruned"]["diagnostics"]["tied_at_cut"]["total"] > 0
    assert output["pruned"]["hash"] == content_hash(cell, config_for(tmp_path, data))  # the grid's own cell


# --- machine load -----------------------------------------------------------------------------------

def test_busy_share_counts_other_processes_only(monkeypatch):
    # Machine: 200 ticks pass on all CPUs, 120 of them busy; this process used 20 of those.
    machine = iter([(1000, 5000), (1120, 5200)])
    own = iter([300, 320])
    monkeypatch.setattr(machine_load, "_machine_ticks", lambda: next(machine))
    monkeypatch.setattr(machine_load, "_own_ticks", lambda: next(own))
    sample = machine_load.sample_load(window=0)
    assert sample["busy_cpu_share"] == pytest.approx(0.5)


@pytest.mark.parametrize("sample,contended", [
    ({"loadavg1": 0.5, "busy_cpu_share": 0.05}, False),  # 0.1 of a core elsewhere
    ({"loadavg1": 0.5, "busy_cpu_share": 0.2}, True),    # 0.4 of a core elsewhere
    ({"loadavg1": 4.0, "busy_cpu_share": 0.0}, True),    # load far above this run's 2 threads
    ({"loadavg1": 2.5, "busy_cpu_share": None}, False),
])
def test_contention_rule(sample, contended):
    assert machine_load.is_contended(sample, own_load=2, cpus=2) is contended


@pytest.mark.skipif(not machine_load.PROC_STAT.exists(), reason="needs /proc")
def test_a_busy_process_beside_this_one_is_seen():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        start = machine_load.sample_load(window=0.5)
        end = machine_load.sample_load(window=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    record = machine_load.load_record(start, end, own_load=1)
    # The spinner alone keeps most of one core busy (less only if other work competes with it).
    assert max(start["busy_cpu_share"], end["busy_cpu_share"]) * machine_load.os.cpu_count() > 0.5
    assert record["contended"] is True


def test_structured_cells_carry_their_method_version_in_the_hash(tmp_path, data, monkeypatch):
    """A structured method's version is in its cells' provenance and content hash (was null)."""
    from prunebench import registry

    path = tmp_path / "structured.yaml"
    path.write_text(GRID.format(corpus=tmp_path / "corpus.txt", data=data, batch_size=8)
                    .replace("methods: [magnitude]", "methods: [{method: wanda-sp, sparsity: [0.3]}]"))
    config = load_config(path)
    from prunebench.grid.cells import cell_provenance

    cell = next(c for c in expand(config) if c.method is not None)
    assert cell_provenance(cell, config)["method_version"] == "1"
    before = content_hash(cell, config)
    method = type(registry.get_structured_method("wanda-sp"))
    monkeypatch.setattr(method, "version", "2")
    assert cell_provenance(cell, config)["method_version"] == "2" and content_hash(cell, config) != before
