"""On the real SmolLM2-135M: the calibration batch size does not change any unstructured method's masks
(batch sizes 1, 4 and 8; benchmarks/batch_invariance.py checks all 30 layers at 2:4 and 50%)."""
import copy

import prunebench
import pytest
import torch
from prunebench.data.datasets import calibration_windows
from prunebench.models.loading import load_model
from prunebench.models.walk import decoder_layers, prunable_linears

pytestmark = pytest.mark.smollm2
LAYERS = 6
METHODS = sorted(prunebench.registry.registered("register_methods"))


@pytest.fixture(scope="module")
def first_layers():
    """SmolLM2 cut to its first LAYERS decoder layers (the rest cannot change their masks)."""
    model, tokenizer = load_model("smollm2-135m")
    del decoder_layers(model)[LAYERS:]
    model.config.num_hidden_layers = LAYERS
    return model, calibration_windows(tokenizer, "pydoc", nsamples=16, seqlen=128, seed=0)


def masks(model):
    return {f"{i}.{name}": linear.weight == 0
            for i, layer in enumerate(decoder_layers(model)) for name, linear in prunable_linears(layer).items()}


@pytest.mark.parametrize("method,sparsity", [(m, "2:4") for m in METHODS] + [("sparsegpt", "0.5")])
def test_masks_agree_for_batch_sizes_1_4_and_8(first_layers, one_thread, method, sparsity):
    model, calibration = first_layers
    found = {}
    for batch_size in (1, 4, 8):
        pruned = copy.deepcopy(model)
        prunebench.prune(pruned, method, sparsity, calibration, batch_size=batch_size, device="cpu", progress=False)
        found[batch_size] = masks(pruned)
    assert len(found[1]) == LAYERS * 7
    for batch_size in (4, 8):
        differing = [name for name, mask in found[1].items() if not torch.equal(mask, found[batch_size][name])]
        assert differing == [], f"batch {batch_size}: masks differ first in {differing[0]}" if differing else ""
