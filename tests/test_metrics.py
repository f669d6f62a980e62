"""Metrics as plugins: the README's example metric through its entry point, settings validation, a
raising metric failing only its cell, compressed-tensors round trips, the speed metric's structure."""
import re
from pathlib import Path

import prunebench
import pytest
import torch
from prunebench import Metric, hookimpl, registry
from prunebench.api.errors import UsageError
from prunebench.grid.config import load_config
from prunebench.grid.runner import run_grid
from prunebench.store.results import ResultsStore
from tiny_grid import grid

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example_metric() -> str:
    block = re.search(r"<!-- example-metric -->\s*```python\n(.*?)```\s*<!-- /example-metric -->", README.read_text(), re.S)
    assert block, "README lost its example metric"
    assert len(block.group(1).strip().splitlines()) <= 30
    return block.group(1)


def test_readme_example_metric_from_its_entry_point_adds_a_column(install_plugin, tmp_path):
    install_plugin(readme_example_metric(), "zero_share_example", "zero-share")
    assert "zero-share" in registry.registered("register_metrics")
    config = load_config(grid(tmp_path, ["magnitude"], f"[zero-share, {{name: size, directory: {tmp_path / 'ckpt'}}}]"))
    summary = run_grid(config, tmp_path / "results", progress=False, echo=lambda line: None)
    assert not summary.failed
    records = {r["cell"]["method"]: r for r in ResultsStore(tmp_path / "results").records()}
    # The size metric kept each cell's checkpoints under the cell's name.
    assert all((tmp_path / "ckpt" / r["name"] / "model-sparse.safetensors").exists() for r in records.values())
    # Known answer: magnitude at 50% per row zeroes exactly half of each (even-width) row; the random dense model none.
    assert records["magnitude"]["metrics"]["zero-share"]["zero_share"] == 0.5
    assert records["dense"]["metrics"]["zero-share"]["zero_share"] == 0.0
    from prunebench.report.tables import report_tables

    table = next(t for t in report_tables(ResultsStore(tmp_path / "results").records()) if "zero-share" in t.title)
    assert table.headers == ["method", "zero weights % ↑"]
    assert "50.00" in table.render("github") and "0.00" in table.render("github")


def test_unknown_metrics_and_settings_are_refused_with_did_you_mean(tmp_path):
    with pytest.raises(UsageError, match="Did you mean: speed"):
        load_config(grid(tmp_path, ["wanda"], "[sped]"))
    with pytest.raises(UsageError, match="Did you mean: repeats"):
        load_config(grid(tmp_path, ["wanda"], "[{name: speed, repets: 3}]"))
    with pytest.raises(UsageError, match="repeats must be at least 1"):
        load_config(grid(tmp_path, ["wanda"], "[{name: speed, repeats: 0}]"))
    config = load_config(grid(tmp_path, ["wanda"], "[size, {name: speed, repeats: 3}]"))
    assert [(s.name, s.settings.get("repeats")) for s in config.metric_specs()] == [
        ("perplexity", None), ("size", None), ("speed", 3)]


class Fragile(Metric):
    name = "fragile"
    description = "raises on magnitude's cells"
    settings = {}

    def compute(self, context):
        if context.method == "magnitude":
            raise RuntimeError("metric bug")
        return {"ok": 1.0}


class FragilePlugin:
    @hookimpl
    def register_metrics(self, register):
        register(Fragile())


def test_a_raising_metric_fails_only_its_cell(register_plugin, tmp_path):
    register_plugin(FragilePlugin())
    config = load_config(grid(tmp_path, ["wanda", "magnitude"], "[fragile]"))
    summary = run_grid(config, tmp_path / "results", progress=False, echo=lambda line: None)
    records = {r["cell"]["method"]: r for r in ResultsStore(tmp_path / "results").records()}
    assert [name for name, _ in summary.failed] == [records["magnitude"]["name"]]
    assert records["magnitude"]["status"] == "failed" and "metric bug" in records["magnitude"]["error"]
    assert records["wanda"]["status"] == records["dense"]["status"] == "ok"
    assert records["wanda"]["metrics"]["fragile"] == {"ok": 1.0}


def test_compressed_tensors_round_trip_keeps_every_weight(tiny_llama, tiny_calibration, tmp_path):
    from prunebench.models.sparse_checkpoint import (
        BITMASK,
        SPARSE_24,
        checkpoint_sizes,
        compress_state,
        decompress_state,
        prunable_weight_names,
        shared_free_state,
    )

    model, _ = tiny_llama
    prunebench.prune(model, "magnitude", "2:4", tiny_calibration)
    sizes = checkpoint_sizes(model, "2:4", tmp_path / "ckpt")
    names = prunable_weight_names(model)
    assert sizes["reloaded_equal"] and sizes["layers_not_2_4"] == [] and sizes["linears_2_4"] == len(names)
    assert sizes["sparse_bytes"] < sizes["dense_bytes"]
    assert (tmp_path / "ckpt" / "model-sparse.safetensors").exists()
    # A linear that is not 2:4 as stored (RIA's reallocation) is listed and kept as bitmask, losslessly.
    with torch.no_grad():
        first = dict(model.named_parameters())[names[0]]
        first[0, :4] = torch.tensor([1.0, 2.0, 3.0, 0.0])
    sizes = checkpoint_sizes(model, "2:4")
    assert sizes["layers_not_2_4"] == [names[0].removesuffix(".weight")]
    # Each format by hand: every tensor comes back bit for bit.
    state = shared_free_state(model)
    for fmt in (BITMASK, SPARSE_24):
        chosen = {n: fmt for n in names[1:]}
        back = decompress_state(compress_state(state, chosen), chosen)
        assert set(back) == set(state) and all(torch.equal(state[k], back[k]) for k in state)


class Recorder(torch.nn.Module):
    """A model that logs which model ran which call before running it."""

    def __init__(self, tag, inner, log):
        super().__init__()
        self.tag, self.inner, self.log = tag, inner, log

    def forward(self, **kwargs):
        self.log.append((self.tag, "prefill" if not kwargs.get("use_cache") else "decode"))
        return self.inner(**kwargs)


def test_speed_interleaves_models_after_warmup_with_repeats(tiny_llama):
    import copy

    from prunebench.metrics.measurements import measure_speed

    model, _ = tiny_llama
    log = []
    models = {"dense": Recorder("dense", model, log), "pruned": Recorder("pruned", copy.deepcopy(model), log)}
    tokens = torch.arange(32)
    result = measure_speed(models, tokens, repeats=3, warmup=2, decode_tokens=2, decode_batches=(1, 8), prompt_length=4)
    prefills = [tag for tag, kind in log if kind == "prefill"]
    # warm-up + repeats rounds; in each round every case runs each model in turn (interleaved), each
    # timed run right after an untimed one of the same model (no timing follows another model's run).
    assert prefills == ["dense", "dense", "pruned", "pruned"] * 5
    decode_calls = [tag for tag, kind in log if kind == "decode"]
    assert len(decode_calls) == 5 * 2 * 2 * 2 * (1 + 2)  # rounds x cases x models x runs x (prompt + tokens)
    assert decode_calls[:12] == ["dense"] * 6 + ["pruned"] * 6
    unsettled = []
    models = {"dense": Recorder("dense", model, unsettled), "pruned": Recorder("pruned", copy.deepcopy(model), unsettled)}
    measure_speed(models, tokens, repeats=1, warmup=0, decode_batches=(1,), prompt_length=4, settle=False)
    assert [tag for tag, kind in unsettled if kind == "prefill"] == ["dense", "pruned"]
    entry = result["models"]["pruned"]
    assert set(entry) == {"prefill", "decode_b1", "decode_b8"}
    assert all(len(case["seconds"]["samples"]) == 3 and len(case["speedup"]["samples"]) == 3 for case in entry.values())
    assert result["warmup"] == 2 and result["repeats"] == 3
    assert all(s == 1.0 for s in result["models"]["dense"]["prefill"]["speedup"]["samples"])


def test_speed_memory_and_size_metrics_on_a_tiny_model(tiny_llama, tiny_calibration):
    from prunebench.api.metric import MetricContext

    model, tokenizer = tiny_llama
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    prunebench.prune(model, "wanda", 0.5, tiny_calibration)

    def dense_model():
        import copy

        twin = copy.deepcopy(model)
        twin.load_state_dict(dense)
        return twin

    context = MetricContext(model=model, tokenizer=tokenizer, device=torch.device("cpu"), sparsity="0.5",
                            method="wanda", eval_seqlen=32, dense_model=dense_model)
    speed = registry.get_metric("speed").compute(context, repeats=2, warmup=1, decode_tokens=2, decode_batches=[1, 8],
                                                 prompt_length=4, seqlen=0, csr=True, semi_structured=True)
    # Whether the figures are right is test_speed_metric_detects_a_planted_slowdown's job; here: all are there.
    assert {"prefill_speedup", "decode_b1_speedup", "decode_b8_speedup", "csr_prefill_speedup"} <= set(speed)
    assert speed["measurement"]["prefill_length"] == 32 and set(speed["measurement"]["models"]) == {"dense", "pruned", "csr"}
    assert set(speed["fastest_path"]) == {"prefill", "decode_b1", "decode_b8"}
    assert all(speed["fastest_path"][case] in ("pruned", "csr") for case in speed["fastest_path"])
    memory = registry.get_metric("memory").compute(context, seqlen=0, csr=True)
    # Same shapes, dense format: the same peak; CSR holds values and indices of half the weights.
    assert memory["peak_bytes"] == memory["dense_peak_bytes"] > 0 and memory["seqlen"] == 32
    assert memory["csr_peak_bytes"] > 0
    sizes = registry.get_metric("size").compute(context, directory=None)
    assert sizes["nonzero_parameters"] < sizes["parameters"] and sizes["sparse_format"] == "sparse-bitmask"


def test_cpu_peak_memory_keeps_the_references_to_none(tiny_llama, capfd):
    """torch's memory profile drops references to None it never took (6 a call here); repeated over a
    long grid that aborted the interpreter at exit ("none_dealloc"). The measurement gives them back,
    and kineto's "USDT: ... profiler_start" lines stay off stderr."""
    import gc
    import sys

    from prunebench.metrics.measurements import peak_forward_bytes

    model, _ = tiny_llama
    tokens = torch.arange(1, 33).view(1, 32)
    peak_forward_bytes(model, tokens)  # first-use imports and caches
    gc.collect()
    before = sys.getrefcount(None)
    peaks = {peak_forward_bytes(model, tokens) for _ in range(10)}
    gc.collect()
    assert len(peaks) == 1 and sys.getrefcount(None) - before >= -10  # unguarded: -60
    assert "USDT" not in capfd.readouterr().err


def test_list_shows_metrics_with_their_arrows(capsys):
    from prunebench.cli.commands import run_list

    run_list()
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0] in ("perplexity", "zero-shot", "size", "memory", "speed")}
    assert set(rows) == {"perplexity", "zero-shot", "size", "memory", "speed"}
    assert all("↓" in rows[m] for m in ("perplexity", "size", "memory"))
    assert all("↑" in rows[m] for m in ("zero-shot", "speed"))
    assert "dataset=(required)" in rows["perplexity"]


def test_pareto_front_known_answer():
    from prunebench.report.plots import pareto_front

    # (size, perplexity), both lower is better: (1, 9) and (2, 5) and (4, 4) are the front; (3, 6) is beaten
    # by (2, 5), (5, 4) by (4, 4) (equal perplexity, smaller).
    points = [(3, 6), (1, 9), (4, 4), (2, 5), (5, 4)]
    assert pareto_front(points, x_higher_better=False, y_higher_better=False) == [1, 3, 2]
    # (speedup, perplexity): higher speedup is better: (5, 4) beats every other point.
    assert pareto_front(points, x_higher_better=True, y_higher_better=False) == [4]


def test_efficiency_columns_and_pareto_plots_from_records(tmp_path):
    import synthetic_leaderboard
    from prunebench.report.site import write_site
    from prunebench.report.tables import write_report

    made = synthetic_leaderboard.records()
    for index, record in enumerate(made):
        if record["status"] != "ok":
            continue
        pruned = record["cell"]["method"] != "dense"
        record["metrics"] = {"size": {"sparse_bytes": 6e6 if pruned else 14e6, "dense_bytes": 13e6,
                                      "sparse_to_dense": 6 / 13 if pruned else 14 / 13,
                                      "nonzero_parameters": 1.6e6 if pruned else 3.2e6, "linears_2_4": 0}}
        if pruned:
            record["metrics"]["speed"] = {"prefill_speedup": {"value": 1.0 + index / 100, "low": 0.9, "high": 1.3}}
    store = ResultsStore(tmp_path / "results")
    for record in made:
        store.write(record)
    text = write_report(tmp_path / "results")
    assert "llama-2-7b, size (lower is better)" in text and "| sparse checkpoint MB ↓" in text
    assert "llama-2-7b, speed (higher is better)" in text and "prefill speedup x ↑" in text
    report = tmp_path / "results" / "report"
    assert (report / f"ppl-vs-size_llama-2-7b_{synthetic_leaderboard.LABEL}.svg").exists()
    assert (report / f"ppl-vs-speed_llama-2-7b_{synthetic_leaderboard.LABEL}.png").exists()
    index = write_site(tmp_path / "results", tmp_path / "site").read_text()
    assert "Perplexity against sparse checkpoint (Pareto front marked)" in index
    # The one-row-per-cell table has each efficiency metric's headline column, with its direction.
    assert 'data-better="lower" title="lower is better" aria-sort="none"><button type="button">sparse checkpoint MB' in index
    assert 'data-better="higher" title="higher is better" aria-sort="none"><button type="button">prefill speedup x' in index


def test_figures_of_an_older_metric_version_are_labelled_in_tables():
    """Records whose speed an earlier version measured get the version in the table's title and a note
    saying what that version's figures mean; records of the current version get neither."""
    from prunebench.report.generic import generic_tables

    speed = registry.get_metric("speed")
    records = []
    for index, version in enumerate(("1", "1", speed.version)):
        record = {"cell": {"model": "m", "method": f"method{index}", "sparsity": "0.5", "seqlen": 16}, "seed": 0,
                  "status": "ok", "metrics": {"speed": {"prefill_speedup": {"value": 1.0, "low": 0.9, "high": 1.1}}},
                  "evaluation_metrics": [{"name": "speed", "settings": {}, "version": version}]}
        records.append(record)
    assert speed.older_versions(records) == {"1": 2}
    table = generic_tables(speed, records)[0]
    assert table.title == "m, speed (higher is better, speed version 1)"
    assert any(n.startswith("speed figures here come from version 1 (2 of 3 records): the models ran back to back")
               for n in table.notes)
    assert "version" not in generic_tables(speed, records[2:])[0].title


def test_validate_with_metrics_loads_no_torch_and_checks_each_metric(tmp_path):
    import subprocess
    import sys

    # What validate does with evaluation.metrics (the registry, each metric's settings), in a fresh process.
    code = ("import sys\nfrom prunebench.grid.config import _metrics\nfrom prunebench.api.metric import check_settings\n"
            "class E:\n    def add(self, where, message):\n        print('PROBLEM', message)\n"
            "specs = _metrics(E(), ['size', 'memory', {'name': 'speed', 'repeats': 2}])\n"
            "print('SPECS', [s.name for s in specs])\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout
    assert "SPECS ['size', 'memory', 'speed']" in out and "PROBLEM" not in out and "HEAVY []" in out, out
    # Settings are checked as the shorthand is: an unknown dataset and an unknown lm-eval task are named.
    with pytest.raises(UsageError, match="wikitxt2"):
        load_config(grid(tmp_path, ["wanda"], "[{name: perplexity, dataset: wikitxt2}]"))
    with pytest.raises(UsageError, match="unknown lm-eval task 'prunebench_lastword_wikitxt2'"):
        load_config(grid(tmp_path, ["wanda"], "[{name: zero-shot, names: [prunebench_lastword_wikitxt2]}]"))


def test_a_finished_grid_gains_new_metrics_without_rerunning_its_numbers(tmp_path):
    """Naming a metric in a finished grid re-prunes each cell, checks it is the model its record
    measured, runs only the new metric and keeps every number already there; a cell whose model is
    not reproduced keeps its record untouched and fails only that extension."""
    from prunebench.grid.runner import cell_status, select_cells

    results = tmp_path / "results"
    run_grid(load_config(grid(tmp_path, ["magnitude", "wanda"], "[]")), results, progress=False, echo=lambda line: None)
    store = ResultsStore(results)
    before = {r["name"]: r for r in store.records()}
    wanda = next(name for name in before if "wanda" in name)
    # Tamper with one record's first evaluation window: that cell can no longer be reproduced.
    tampered = dict(before[wanda])
    label = next(iter(tampered["perplexity"]))
    tampered["perplexity"] = {label: dict(tampered["perplexity"][label],
                                          window_nlls=[9.0] + tampered["perplexity"][label]["window_nlls"][1:])}
    store.write(tampered)

    config = load_config(grid(tmp_path, ["magnitude", "wanda"], "[size]"))
    lines = []
    summary = run_grid(config, results, progress=False, echo=lines.append)
    after = {r["name"]: r for r in store.records()}
    assert [name for name, _ in summary.failed] == [wanda] and "first-window NLL" in summary.failed[0][1]
    assert after[wanda]["perplexity"] == tampered["perplexity"] and "size" not in after[wanda].get("metrics", {})
    assert "error" in after[wanda]["extensions"][-1]
    for name, record in after.items():
        if name == wanda:
            continue
        assert record["perplexity"] == before[name]["perplexity"] and record["started"] == before[name]["started"]
        assert record["metrics"]["size"]["dense_bytes"] > 0
        assert record["extensions"][-1]["metrics"] == ["size"]
        assert any(line.startswith("extended") and name in line for line in lines)
    statuses = {cell.name: cell_status(store, cell, config) for cell in select_cells(config, {})}
    assert statuses[wanda] == "done (metrics to add)" and all(s == "done" for n, s in statuses.items() if n != wanda)
    # A second run computes nothing more for the extended cells.
    again = run_grid(config, results, progress=False, echo=lambda line: None)
    assert sorted(again.skipped) == sorted(n for n in after if n != wanda)


PRUNE = ["prune", "--model", "tiny-llama", "--method", "magnitude", "--sparsity", "0.5", "--nsamples", "2",
         "--seqlen", "16", "--device", "cpu"]


SPEED = "[{name: speed, repeats: 2, warmup: 1, decode_tokens: 2, decode_batches: [1], prompt_length: 4, csr: false}]"


def test_remeasure_measures_contended_timings_again_and_keeps_the_old(tmp_path, monkeypatch, capsys):
    """`--remeasure speed` re-prunes only the finished cells whose speed was timed on a loaded machine,
    replaces that speed (the extension keeps the old) and leaves every other number and cell alone."""
    import prunebench.grid.runner as runner
    from prunebench.api.records import measured_contended
    from prunebench.cli.main import main

    monkeypatch.setattr(runner, "load_record", lambda *args, **kwargs: {"contended": False})
    path = grid(tmp_path, ["magnitude", "wanda"], SPEED)
    results = tmp_path / "results"
    run_grid(load_config(path), results, progress=False, echo=lambda line: None)
    store = ResultsStore(results)
    before = {r["name"]: r for r in store.records()}
    wanda = next(name for name in before if "wanda" in name)
    store.write(dict(before[wanda], load={"contended": True}))  # as if measured beside another job

    lines = []
    summary = run_grid(load_config(path), results, progress=False, echo=lines.append, remeasure=("speed",))
    after = {r["name"]: r for r in store.records()}
    assert summary.ran == [wanda] and len(summary.skipped) == len(before) - 1 and not summary.failed
    extension = after[wanda]["extensions"][-1]
    assert extension["metrics"] == ["speed"] and extension["remeasured"] == {"speed": before[wanda]["metrics"]["speed"]}
    assert not measured_contended(after[wanda], "speed") and "re-measured speed" in lines[0]
    assert after[wanda]["perplexity"] == before[wanda]["perplexity"] and after[wanda]["hash"] == before[wanda]["hash"]
    assert all(after[name] == before[name] for name in before if name != wanda)
    # Measured quietly now: nothing more to do.
    assert run_grid(load_config(path), results, progress=False, echo=lambda line: None, remeasure=("speed",)).ran == []
    # Only a timed metric of the grid can be re-measured: a one-line error, exit 2.
    assert main(["run", str(path), "--results-dir", str(results), "--remeasure", "size"]) == 2
    assert "--remeasure size: not a timed metric of this grid; name one of speed" in capsys.readouterr().err


def test_prune_measures_named_metrics_of_one_pruned_model(install_plugin, tmp_path, capsys):
    """`prunebench prune --metric`: built-in and plugin metrics from the registry, printed in the summary
    with their direction and range and written to --json, for the one pruned model."""
    import json

    from prunebench.cli.main import main

    install_plugin(readme_example_metric(), "zero_share_example", "zero-share")
    speed = "speed:repeats=2,warmup=0,decode_tokens=2,decode_batches=[1],prompt_length=8,seqlen=16"
    assert main(PRUNE + ["--metric", "size", "--metric", "zero-share", "--metric", "memory:seqlen=16,csr=false",
                         "--metric", speed, "--json", str(tmp_path / "prune.json")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "prune.json").read_text())["pruned"]["metrics"]
    assert list(metrics) == ["size", "zero-share", "memory", "speed"]
    # Known answer: magnitude at 50% per layer zeroes exactly half of the decoder linears' weights.
    assert metrics["zero-share"] == {"zero_share": 0.5}
    assert re.search(r"zero-share: zero weights ↑\s+50\.00 %", out)
    assert 0 < metrics["size"]["sparse_bytes"] < metrics["size"]["dense_bytes"]
    assert re.search(r"size: sparse checkpoint ↓\s+[\d.]+ MB", out)
    assert "csr_peak_bytes" not in metrics["memory"] and metrics["memory"]["seqlen"] == 16  # its settings reached it
    measured = metrics["speed"]["measurement"]
    assert measured["repeats"] == 2 and measured["decode_tokens"] == 2 and set(measured["models"]) == {
        "dense", "pruned", "csr"}  # its settings reached it, and the dense twin ran beside the pruned model
    assert re.search(r"speed: prefill speedup ↑\s+[\d.]+ x \[[\d.]+, [\d.]+\]", out)


@pytest.mark.parametrize("option, message", [
    ("sped", "Unknown metric 'sped'. Did you mean: speed"),
    ("speed:repets=3", "Unknown setting of metric speed 'repets'. Did you mean: repeats"),
    ("speed:repeats=0", "speed's repeats must be at least 1"),
    ("speed:repeats", "write NAME:KEY=VALUE"),
])
def test_prune_refuses_an_unknown_metric_or_setting_before_loading(option, message, capsys, monkeypatch):
    from prunebench.cli.main import main
    from prunebench.models import loading as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded a model for a bad --metric"))
    assert main(PRUNE + ["--metric", option]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"--metric {option}: {message}" in error


def test_speed_metric_detects_a_planted_slowdown(tiny_llama, one_thread):
    """A 'pruned' model whose decoder layers each wait 4 ms more than the dense one's must report speedups
    below 1, interval included, for prefill and decode."""
    import copy

    from planted_cost import sleeping_layers
    from prunebench.api.metric import MetricContext

    model, tokenizer = tiny_llama
    slowed = sleeping_layers(copy.deepcopy(model), 0.004)
    context = MetricContext(model=slowed, tokenizer=tokenizer, device=torch.device("cpu"), sparsity="0.5",
                            method="wanda", eval_seqlen=32, dense_model=lambda: copy.deepcopy(model))
    speed = registry.get_metric("speed").compute(context, repeats=3, warmup=1, decode_tokens=2, decode_batches=[1],
                                                 prompt_length=4, seqlen=0, csr=False, semi_structured=False)
    for key in ("prefill_speedup", "decode_b1_speedup"):
        assert speed[key]["high"] < 1 and speed[key]["value"] < 0.8, (key, speed[key])
