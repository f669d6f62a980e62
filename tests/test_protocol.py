"""Protocol fixes: statistics independent of the batch size (also where linears see flattened
tokens), single-document calibration as Wanda's get_wikitext2, C4's 256-window cap, OWL's exact
mean sparsity, and magnitude's ties at the cut."""
import gzip
import json
import random
from pathlib import Path

import prunebench
import pytest
import torch
from prunebench import registry
from prunebench.api.sparsity import parse_sparsity
from prunebench.data.datasets import calibration_windows, evaluation_window_cap, read_raw_rows, sample_calibration
from prunebench.models.loading import byte_tokenizer
from prunebench.models.walk import capture_inputs, decoder_layers, prunable_linears, walk_layers
from prunebench.pruning.accumulate import collect_statistics
from prunebench.pruning.masks import lowest_per_row, tied_at_cut
from prunebench.pruning.owl import owl_layer_targets, owl_sparsities

STATISTICS = ("input_sq_norm", "ace_inverse_norm", "ace_token_variance")


def layer_statistics(model, calibration, batch_size):
    """Every statistic above for every linear of every layer, dense propagation."""
    device = torch.device("cpu")
    statistics = [registry.get_statistic(name) for name in STATISTICS]
    captured = capture_inputs(model, calibration, batch_size, device)
    collected = []
    for step in walk_layers(model, captured, device):
        stats, outputs = collect_statistics(step.layer, step.inputs, prunable_linears(step.layer), statistics, device,
                                            {"eps": 1e-6}, keep_outputs=True)
        collected.append(stats)
        step.propagate(outputs)
    return collected


def test_opt_statistics_and_owl_targets_do_not_depend_on_the_batch_size(tiny_opt, pydoc_documents):
    # OPT flattens the tokens before fc1/fc2, so only the layer input shows the number of sequences.
    model, tokenizer = tiny_opt
    calibration = sample_calibration(tokenizer, pydoc_documents, nsamples=8, seqlen=32, seed=0)
    reference = layer_statistics(model, calibration, batch_size=1)
    assert "fc1" in reference[0] and "fc2" in reference[0]
    target = parse_sparsity(0.5)
    owl_reference = owl_layer_targets(model, calibration, target, lam=0.1, batch_size=1)
    for batch_size in (3, 8):  # 3: batches of 3, 3 and 2 sequences
        for layer, expected in zip(layer_statistics(model, calibration, batch_size), reference):
            for linear, stats in expected.items():
                for name, value in stats.items():
                    assert torch.allclose(layer[linear][name], value, rtol=1e-6, atol=0), (linear, name, batch_size)
        targets = owl_layer_targets(model, calibration, target, lam=0.1, batch_size=batch_size)
        assert [t.ratio for t in targets] == pytest.approx([t.ratio for t in owl_reference], abs=1e-12)


# --- single-document calibration (Wanda's get_wikitext2) -------------------------------------------

def wanda_get_wikitext2(text, tokenizer, nsamples, seqlen, seed):
    """Wanda's get_wikitext2 loop as in its code: the whole text tokenized once, window starts only."""
    trainenc = tokenizer(text, return_tensors="pt")
    random.seed(seed)
    windows = []
    for _ in range(nsamples):
        i = random.randint(0, trainenc.input_ids.shape[1] - seqlen - 1)
        windows.append(trainenc.input_ids[:, i : i + seqlen])
    return torch.cat(windows, dim=0)


@pytest.mark.parametrize("seed,seqlen", [(0, 16), (5, 100)])
def test_single_document_corpora_draw_windows_as_wandas_get_wikitext2(tmp_path, seed, seqlen):
    tokenizer = byte_tokenizer()
    train = tmp_path / "wiki.train.raw"
    train.write_text("".join(f" = Heading {i} = \n Paragraph {i} of the article , with words . \n" for i in range(60)))
    joined = " ".join(read_raw_rows(train))  # what Wanda's " ".join(traindata['text']) gives for these rows
    ours = calibration_windows(tokenizer, "wikitext2", 6, seqlen, seed, data_dir=tmp_path)
    assert torch.equal(ours, wanda_get_wikitext2(joined, tokenizer, 6, seqlen, seed))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(joined)
    assert torch.equal(calibration_windows(tokenizer, f"text:{corpus}", 6, seqlen, seed), ours)


def test_multi_document_corpora_keep_the_c4_loop(pydoc_documents):
    from test_data import wanda_get_loader  # the C4 loop as in Wanda's code

    tokenizer = byte_tokenizer()
    assert torch.equal(calibration_windows(tokenizer, "pydoc", 5, 24, 3), wanda_get_loader(pydoc_documents, tokenizer, 5, 24, 3))


# --- C4 perplexity: 256 windows -------------------------------------------------------------------

def test_c4_evaluation_is_capped_at_256_windows_unless_a_smaller_cap_is_given():
    assert evaluation_window_cap("c4", None) == 256
    assert evaluation_window_cap("c4", 100) == 100
    assert evaluation_window_cap("c4", 1000) == 256
    assert evaluation_window_cap("wikitext2", None) is None
    assert evaluation_window_cap("pydoc", 7) == 7


def test_a_grid_evaluates_c4_on_256_windows(tmp_path):
    from prunebench.grid.config import load_config
    from prunebench.grid.runner import run_grid

    with gzip.open(tmp_path / "c4-validation.00000-of-00008.json.gz", "wt") as shard:
        shard.write("\n".join(json.dumps({"text": f"validation document number {i}."}) for i in range(1200)))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"""\
suite: c4cap
models: [tiny-llama]
methods: [magnitude]
sparsity: [0.5]
calibration: {{dataset: pydoc, nsamples: 2, lengths: [16]}}
evaluation:
  perplexity: [{{dataset: c4, seqlen: 16}}, {{dataset: c4, seqlen: 16, max_windows: 10}}]
  data_dir: {tmp_path}
device: cpu
""")
    summary = run_grid(load_config(grid), tmp_path / "results", filters={"method": {"dense"}}, progress=False,
                       echo=lambda line: None)
    assert summary.ran == ["model=tiny-llama,method=dense"]
    record = json.loads((tmp_path / "results" / "cells" / summary.ran[0] / "record.json").read_text())
    assert record["perplexity"]["c4-16"]["windows"] == 256
    assert record["perplexity"]["c4-16x10"]["windows"] == 10


# --- OWL: the mean sparsity is the target ---------------------------------------------------------

def test_owl_floor_keeps_the_mean():
    # Keep ratios [0, 0, 0.16] - 0.0533 + 0.95: the third layer would be at -0.0467; held at the
    # floor 0.01, the other two move from 0.1033 to 0.07 so that the mean stays 0.05.
    sparsities = owl_sparsities([0.0, 0.0, 10.0], sparsity=0.05, lam=0.08)
    assert sparsities == pytest.approx([0.07, 0.07, 0.01], abs=1e-12)


def test_exact_count_spreads_the_remainder_over_the_rows_with_the_lowest_next_score():
    scores = torch.tensor([[1.0, 2.0, 9.0, 9.0], [1.0, 2.0, 3.0, 9.0], [1.0, 2.0, 5.0, 9.0]])
    # 12 * 0.6 = 7.2 -> 7 zeros: int(4 * 0.6) = 2 per row, and one more where the third score is lowest.
    mask = lowest_per_row(scores, 0.6, exact_count=True)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, False], [True, True, False, False]]
    assert lowest_per_row(scores, 0.6).sum() == 6  # Wanda's own per-row count


def test_owl_on_a_tiny_model_hits_the_target_to_one_weight_per_linear(tiny_llama, tiny_calibration):
    model = tiny_llama[0]
    report = prunebench.prune(model, "wanda", 0.5, tiny_calibration, progress=False, allocation="owl",
                              allocation_settings={"lambda": 0.1})
    assert sum(report.layer_targets) / len(report.layer_targets) == pytest.approx(0.5, abs=1e-12)
    assert len(set(report.layer_targets)) > 1  # a real allocation, not the uniform one
    total = zeros = 0
    for layer, ratio in zip(decoder_layers(model), report.layer_targets):
        for linear in prunable_linears(layer).values():
            count = int((linear.weight == 0).sum())
            assert abs(count - linear.weight.numel() * ratio) <= 0.5 + 1e-6
            zeros, total = zeros + count, total + linear.weight.numel()
    linears = len(decoder_layers(model)) * len(prunable_linears(decoder_layers(model)[0]))
    assert abs(zeros - total * 0.5) <= 0.5 * linears
    assert report.overall_sparsity == pytest.approx(zeros / total)


# --- magnitude: ties at the cut -------------------------------------------------------------------

def test_tied_at_cut_known_answers():
    scores = torch.tensor([[1.0, 1.0, 2.0, 3.0, 1.0, 2.0, 2.0, 5.0]])
    assert tied_at_cut(scores, parse_sparsity("2:4"), "row") == (1, 2)  # group 2: 2nd and 3rd lowest are 2 and 2
    assert tied_at_cut(scores, parse_sparsity("1:4"), "row") == (1, 2)  # group 1: 1 and 1
    # Unstructured 0.5 of 8: the 4th and 5th lowest are both 2; the three 2s are tied at the cut.
    assert tied_at_cut(scores, parse_sparsity(0.5), "layer") == (3, 8)
    assert tied_at_cut(torch.arange(8.0).reshape(1, -1), parse_sparsity(0.5), "layer") == (0, 8)


def test_magnitude_records_the_share_of_groups_tied_at_the_cut(tiny_llama):
    model = tiny_llama[0]
    with torch.no_grad():
        for layer in decoder_layers(model):
            for linear in prunable_linears(layer).values():
                linear.weight.copy_((linear.weight / linear.weight.abs().max() * 8).round())  # many ties
    expected = [tied_at_cut(linear.weight.abs(), parse_sparsity("2:4"), "row")
                for layer in decoder_layers(model) for linear in prunable_linears(layer).values()]
    report = prunebench.prune(model, "magnitude", "2:4", torch.zeros(1, 4, dtype=torch.long), progress=False)
    tied, groups = sum(e[0] for e in expected), sum(e[1] for e in expected)
    assert report.diagnostics["tied_at_cut"] == {"count": tied, "total": groups, "fraction": tied / groups}
    assert 0 < tied < groups


WIKITEXT_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"


@pytest.mark.skipif(not WIKITEXT_TEST.is_file(), reason="WikiText-2 test split not in ../shared/data")
def test_a_corpus_of_one_document_is_sampled_by_wandas_loop_whatever_its_format(tmp_path):
    """WikiText-2 test text joined as Wanda joins rows, given as text:, as a one-line jsonl and as a list
    of one document: every route draws Wanda's get_wikitext2 windows (no document draw)."""
    tokenizer = byte_tokenizer()
    joined = " ".join(read_raw_rows(WIKITEXT_TEST))[:200_000]
    expected = wanda_get_wikitext2(joined, tokenizer, 8, 128, 3)
    (tmp_path / "one.txt").write_text(joined)
    (tmp_path / "one.jsonl").write_text(json.dumps({"text": joined}) + "\n")
    for spec in (f"text:{tmp_path / 'one.txt'}", f"jsonl:{tmp_path / 'one.jsonl'}"):
        assert torch.equal(calibration_windows(tokenizer, spec, 8, 128, 3), expected), spec
    assert torch.equal(sample_calibration(tokenizer, [joined], 8, 128, 3), expected)
    # Two documents take the multi-document (C4) loop, whose document draw moves the windows.
    assert not torch.equal(sample_calibration(tokenizer, [joined, joined], 8, 128, 3), expected)
