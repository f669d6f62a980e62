"""End to end on the real SmolLM2-135M: CFSP at 30% removes about 30% of the prunable parameters,
stays far better than removing the same share by group magnitude... and saves, reloads, same logits."""
import math

import pytest
import torch
from prunebench import register_pruned_models
from prunebench.data.datasets import calibration_documents, sample_calibration
from prunebench.metrics.perplexity import perplexity
from prunebench.models.checkpoints import save_structured
from prunebench.models.loading import load_model
from prunebench.pruning.structured_engine import structured_prune

pytestmark = pytest.mark.smollm2


def test_cfsp_normalized_on_smollm2_is_smaller_reloads_and_beats_magnitude(tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_model("smollm2-135m")
    calibration = sample_calibration(tokenizer, calibration_documents("pydoc"), nsamples=8, seqlen=128, seed=0)
    held_out = sample_calibration(tokenizer, calibration_documents("pydoc"), nsamples=4, seqlen=256, seed=1).flatten()
    report = structured_prune(model, "cfsp-normalized", 0.3, calibration, device="cpu")
    assert report.removed_fraction == pytest.approx(0.3, abs=0.01)
    assert report.parameters_after < 0.8 * report.parameters_before
    cfsp = perplexity(model, held_out, 256).perplexity
    magnitude_model, _ = load_model("smollm2-135m")
    structured_prune(magnitude_model, "magnitude-sp", 0.3, calibration, device="cpu", allocation="uniform")
    magnitude = perplexity(magnitude_model, held_out, 256).perplexity
    print(f"SmolLM2 30% structured, held-out pydoc ppl: cfsp {cfsp:.2f}, magnitude-sp {magnitude:.2f}")
    assert math.isfinite(cfsp) and cfsp < magnitude
    saved = save_structured(model, tokenizer, tmp_path)
    assert saved["format"] == "prunebench"  # the z-scored sigmoid gives every layer its own FFN width
    register_pruned_models()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(held_out[None, :64]).logits, model(held_out[None, :64]).logits, atol=1e-4)


def test_the_authors_cfsp_on_smollm2_removes_ffn_channels_only_almost_uniformly():
    """At 8 x 128 tokens the authors' (I - mean I) / 1e4 leaves every layer near 1 - s of its FFN channels."""
    model, tokenizer = load_model("smollm2-135m")
    calibration = sample_calibration(tokenizer, calibration_documents("pydoc"), nsamples=8, seqlen=128, seed=0)
    heads = model.config.num_key_value_heads
    report = structured_prune(model, "cfsp", 0.3, calibration, device="cpu")
    kept = [k["channels"] for k in report.kept]
    width = 1536  # SmolLM2-135M's intermediate size
    assert all(k["heads"] == heads for k in report.kept) and not report.removed_layers  # attention whole
    assert 1 - sum(kept) / (width * len(kept)) == pytest.approx(0.3, abs=0.002)
    # Nearly uniform: importance sums over 1024 tokens differ by at most ~1024, i.e. x by 0.1, so keep
    # ratios by at most 0.1 / 4 / 0.5 x 0.7 = 0.035 (54 channels); measured 1073..1097.
    assert max(kept) - min(kept) <= 54
