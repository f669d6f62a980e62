"""Structured methods in a grid, on tiny models: cells that prune a copy of the dense model, records
with parameters kept, their own report table and plots, N:M refused at validation, resume, and
metrics added to a finished structured cell without changing its numbers."""
import pytest
from prunebench.api.errors import UsageError
from prunebench.cli.main import main
from prunebench.grid.cells import content_hash, expand
from prunebench.grid.config import load_config
from prunebench.grid.runner import cell_status, run_grid, select_cells
from prunebench.report.tables import report_tables, write_report
from prunebench.store.results import ResultsStore
from tiny_grid import grid

# One quick repeat: these tests check what is recorded, not how fast it is.
SPEED = "{name: speed, repeats: 1, warmup: 0, decode_tokens: 1, decode_batches: [1]}"


def quiet_run(config, results):
    return run_grid(config, results, progress=False, echo=lambda line: None)


def test_a_mixed_grid_prunes_copies_and_reports_structured_cells_apart(tmp_path, one_thread):
    results = tmp_path / "results"
    # wanda first: the structured cells after it must start from the dense weights again.
    summary = quiet_run(load_config(grid(tmp_path, ["wanda", "{method: cfsp, sparsity: [0.2, 0.5]}"], f"[{SPEED}]")),
                        results)
    assert not summary.failed and len(summary.ran) == 4
    records = {r["cell"]["method"] + str(r["cell"]["sparsity"]): r for r in ResultsStore(results).records()}
    for key, target in (("cfsp0.2", 0.2), ("cfsp0.5", 0.5)):
        record = records[key]
        details = record["structured"]
        assert record["kind"] == "structured" and record["status"] == "ok"
        assert details["parameters_after"] < details["parameters_before"]
        assert len(details["kept"]) == 2  # tiny-llama's layers
        # The authors' CFSP: the sparsity is the fraction of FFN channels (attention stays whole).
        from prunebench import load_model

        width = load_model("tiny-llama")[0].config.intermediate_size
        removed_channels = 1 - sum(k["channels"] for k in details["kept"]) / (2 * width)
        assert abs(removed_channels - target) < 0.05 and details["removed_fraction"] < target
        assert record["timings"]["total"] > 0 and "measured_sparsity" not in record
        speed = record["metrics"]["speed"]
        assert speed["prefill_speedup"]["value"] > 0 and not any(k.startswith("csr_") for k in speed)  # no zeros
    assert "csr_prefill_speedup" in records["wanda0.5"]["metrics"]["speed"]
    assert records["wanda0.5"]["measured_sparsity"]["overall"] == pytest.approx(0.5, abs=0.01)

    # The same cfsp cell alone, with no unstructured cell before it, gives the same model.
    alone = tmp_path / "alone"
    quiet_run(load_config(grid(tmp_path, ["{method: cfsp, sparsity: [0.5]}"], name="alone.yaml")), alone)
    solo = next(r for r in ResultsStore(alone).records() if r["cell"]["method"] == "cfsp")
    assert solo["structured"]["kept"] == records["cfsp0.5"]["structured"]["kept"]
    label = "pydoc-32x2"
    assert solo["perplexity"][label]["window_nlls"] == records["cfsp0.5"]["perplexity"][label]["window_nlls"]

    tables = report_tables(ResultsStore(results).records(), resamples=50)
    structured = [t for t in tables if "structured pruning" in t.title]
    assert [t.title for t in structured] == ["tiny-llama, structured pruning (whole heads, channels or layers removed)"]
    assert all("cfsp" not in str(t.rows) for t in tables if t not in structured)  # never ranked with wanda
    rows = {(row[0], row[1]): row for row in structured[0].rows}
    assert set(rows) == {("dense", ""), ("cfsp", "20%"), ("cfsp", "50%")}
    kept = structured[0].headers.index("params kept %")
    assert rows[("dense", "")][kept].value == 1.0
    assert rows[("cfsp", "50%")][kept].value < rows[("cfsp", "20%")][kept].value
    protocol = [structured[0].headers.index(h) for h in ("prunes", "calibration", "propagation", "eval L")]
    assert [rows[("cfsp", "50%")][i] for i in protocol] == ["FFN channels", "pydoc 2x16", "dense", "32"]
    assert [rows[("dense", "")][i] for i in protocol] == ["", "", "", "32"]
    speedup = rows[("cfsp", "50%")][structured[0].headers.index("prefill speedup x ↑")]
    assert speedup.value == records["cfsp0.5"]["metrics"]["speed"]["prefill_speedup"]["value"]
    write_report(results, resamples=50)
    plots = {path.name for path in (results / "report").glob("*.png")}
    assert {"structured-ppl-vs-params_tiny-llama_pydoc-32x2.png",
            "structured-ppl-vs-speedup_tiny-llama_pydoc-32x2.png", "ppl-vs-sparsity_tiny-llama_pydoc-32x2.png"} <= plots
    assert "structured pruning" in (results / "report" / "tables.md").read_text()


def test_n_m_for_a_structured_method_is_refused_at_validation(tmp_path, capsys):
    own = grid(tmp_path, ["{method: cfsp, sparsity: [0.5, '2:4']}"])
    assert main(["validate", str(own)]) == 2
    error = capsys.readouterr().err
    assert "methods[0].sparsity[1]: 2:4 is N:M, but 'cfsp' is a structured method" in error
    assert len(error.strip().splitlines()) == 1
    inherited = tmp_path / "inherited.yaml"
    text = grid(tmp_path, ["wanda", "flap"]).read_text()
    inherited.write_text(text.replace("sparsity: [0.5]", 'sparsity: [0.5, "2:4"]'))
    assert main(["validate", str(inherited)]) == 2
    assert "2:4 is N:M, but structured method 'flap' takes a ratio" in capsys.readouterr().err
    with pytest.raises(UsageError, match="Unknown argument.*tempreature for method 'cfsp'"):
        load_config(grid(tmp_path, ["{method: cfsp, args: {tempreature: 2}}"]))
    with pytest.raises(UsageError, match="Unknown layer allocation 'globl'. Did you mean: global"):
        load_config(grid(tmp_path, ["{method: flap, args: {allocation: globl}}"]))
    with pytest.raises(UsageError, match="its layer allocation is an argument"):
        load_config(grid(tmp_path, ["{method: flap, allocation: owl}"]))


def test_structured_entries_leave_other_cells_hashes_alone_and_may_choose_their_tasks(tmp_path):
    base = load_config(grid(tmp_path, ["wanda"]))
    text = grid(tmp_path, ["wanda", "{method: shortgpt, sparsity: [0.25, 0.5], tasks: []}"]).read_text()
    path = tmp_path / "tasks.yaml"
    tasks = "  tasks: {names: [prunebench_lastword_wikitext2], limit: 4}\n"
    path.write_text(text.replace("  metrics: []\n", "  metrics: []\n" + tasks))
    mixed = load_config(path)
    cells = expand(mixed)
    assert [(c.method_label, c.sparsity) for c in cells if c.method] == [("wanda", "0.5"), ("shortgpt", "0.25"),
                                                                         ("shortgpt", "0.5")]
    wanda, shortgpt = mixed.methods
    model = mixed.models[0]
    assert mixed.tasks_for(model, shortgpt).names == () and mixed.tasks_for(model, wanda).names == mixed.tasks.names
    shortgpt_cell = next(c for c in cells if c.method_label == "shortgpt")
    assert [s.name for s in mixed.metric_specs(shortgpt_cell)] == ["perplexity"]
    # Adding a structured entry changes no other cell's hash (tasks aside, which the wanda cell now runs).
    plain = load_config(grid(tmp_path, ["wanda", "{method: shortgpt, sparsity: [0.25]}"], name="plain.yaml"))
    assert [content_hash(c, plain) for c in expand(plain)[:2]] == [content_hash(c, base) for c in expand(base)]


def test_resume_skips_structured_cells_and_added_metrics_keep_their_numbers(tmp_path, one_thread):
    results = tmp_path / "results"
    methods = ["{method: cfsp, sparsity: [0.5]}", "{method: shortgpt, sparsity: [0.5]}"]
    quiet_run(load_config(grid(tmp_path, methods)), results)
    store = ResultsStore(results)
    before = {r["name"]: r for r in store.records()}
    again = quiet_run(load_config(grid(tmp_path, methods)), results)
    assert not again.ran and sorted(again.skipped) == sorted(before)

    shortgpt = next(name for name in before if "shortgpt" in name)
    tampered = dict(before[shortgpt], structured=dict(before[shortgpt]["structured"], removed_layers=[0]))
    if before[shortgpt]["structured"]["removed_layers"] == [0]:
        tampered["structured"]["removed_layers"] = [1]
    store.write(tampered)
    config = load_config(grid(tmp_path, methods, "[size]"))
    summary = quiet_run(config, results)
    after = {r["name"]: r for r in store.records()}
    assert [name for name, _ in summary.failed] == [shortgpt]
    assert "kept heads, channels or layers" in summary.failed[0][1] and "size" not in after[shortgpt].get("metrics", {})
    cfsp = next(name for name in before if "cfsp" in name)
    extended = after[cfsp]
    assert extended["extensions"][-1]["metrics"] == ["size"]
    for key in ("perplexity", "structured", "timings", "started"):
        assert extended[key] == before[cfsp][key]
    assert extended["metrics"]["size"]["parameters"] == extended["structured"]["parameters_after"]
    statuses = {cell.name: cell_status(store, cell, config) for cell in select_cells(config, {})}
    assert statuses[cfsp] == "done" and statuses[shortgpt] == "done (metrics to add)"  # the record as it was


def test_records_of_a_renamed_reading_show_its_present_name():
    from prunebench.api.records import with_reading_names

    old = {"cell": {"method": "cfsp"}, "provenance": {"method_version": None}}
    authors = {"cell": {"method": "cfsp"}, "provenance": {"method_version": "2"}}
    saap = {"cell": {"method": "saap"}, "provenance": {"method_version": None}}
    shown = with_reading_names([old, authors, saap])
    assert [r["cell"]["method"] for r in shown] == ["cfsp-normalized", "cfsp", "saap-standin"]
    assert shown[0]["cell"]["recorded_as"] == "cfsp" and old["cell"]["method"] == "cfsp"  # the store's record untouched
