"""End to end on the real SmolLM2-135M: Wanda at 50% beats magnitude at 50%; saves reload with zeros."""
import copy
import math
from pathlib import Path

import prunebench
import pytest
import torch
from prunebench.data.datasets import calibration_documents, evaluation_text, sample_calibration, tokenize_text
from prunebench.metrics.perplexity import perplexity
from prunebench.models.loading import load_model, save_pruned
from prunebench.models.walk import decoder_layers, prunable_linears

pytestmark = pytest.mark.smollm2
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def evaluation_ids(smollm2):
    if (SHARED_DATA / "wikitext-2-raw" / "wiki.test.raw").exists():
        return tokenize_text(smollm2[1], evaluation_text("wikitext2", SHARED_DATA))
    return tokenize_text(smollm2[1], evaluation_text("pydoc"))


@pytest.fixture(scope="module")
def pruned(smollm2):
    model, tokenizer = smollm2
    calibration = sample_calibration(tokenizer, calibration_documents("pydoc"), nsamples=8, seqlen=128, seed=0)
    results = {}
    for method in ("magnitude", "wanda"):
        copy_ = copy.deepcopy(model)
        report = prunebench.prune(copy_, method, 0.5, calibration, progress=False)
        results[method] = (copy_, report)
    return results


def test_the_alias_loads_the_real_model(smollm2):
    model, _ = smollm2
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert len(decoder_layers(model)) == 30


def test_wanda_beats_magnitude_at_half_sparsity(smollm2, pruned, evaluation_ids):
    dense = perplexity(smollm2[0], evaluation_ids, 512, max_windows=4).perplexity
    magnitude = perplexity(pruned["magnitude"][0], evaluation_ids, 512, max_windows=4).perplexity
    wanda = perplexity(pruned["wanda"][0], evaluation_ids, 512, max_windows=4).perplexity
    print(f"SmolLM2 perplexity, 4 x 512 windows: dense {dense:.2f}, magnitude {magnitude:.2f}, wanda {wanda:.2f}")
    assert math.isfinite(dense) and dense < 60
    assert dense < wanda < magnitude
    for _, report in pruned.values():
        assert report.overall_sparsity == pytest.approx(0.5, abs=1e-3)


def test_saved_model_reloads_with_the_same_zeros(pruned, smollm2, tmp_path):
    from transformers import AutoModelForCausalLM

    model = pruned["wanda"][0]
    save_pruned(model, smollm2[1], tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    for ours, theirs in zip(decoder_layers(model), decoder_layers(reloaded)):
        for name, linear in prunable_linears(ours).items():
            assert torch.equal(linear.weight == 0, prunable_linears(theirs)[name].weight == 0)
