"""Perplexity protocol (REFERENCE.md section 4) on a model with known outputs; memory measurement."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
from prunebench.api.errors import UsageError
from prunebench.metrics.perplexity import evaluation_windows, measured_sparsity, perplexity
from torch import nn


class FixedLogits(nn.Module):
    """Logits that put probability p on token (previous + 1) mod V and share the rest uniformly."""

    def __init__(self, vocab: int, p: float):
        super().__init__()
        self.vocab, self.p = vocab, p
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False):
        probs = torch.full((*input_ids.shape, self.vocab), (1 - self.p) / (self.vocab - 1))
        probs.scatter_(2, ((input_ids + 1) % self.vocab).unsqueeze(-1), self.p)
        return SimpleNamespace(logits=probs.log())


def test_uniform_model_has_perplexity_equal_to_vocabulary():
    model = FixedLogits(vocab=10, p=0.1)
    result = perplexity(model, torch.randint(0, 10, (1000,)), window_length=50)
    assert result.perplexity == pytest.approx(10.0)
    assert (result.windows, result.tokens) == (20, 1000)


def test_perplexity_is_exp_of_the_mean_of_window_means():
    model = FixedLogits(vocab=4, p=0.7)
    # Window 1 always follows the rule, window 2 never: NLLs -log 0.7 and -log 0.1.
    ids = torch.tensor([0, 1, 2, 3, 0, 0, 0, 0, 0, 0])
    result = perplexity(model, ids, window_length=5)
    expected = math.exp((-math.log(0.7) - math.log(0.1)) / 2)
    assert result.perplexity == pytest.approx(expected)


def test_windows_drop_the_tail_and_respect_the_cap():
    ids = torch.arange(23)
    assert evaluation_windows(ids, 5).shape == (4, 5)
    assert torch.equal(evaluation_windows(ids, 5, max_windows=2), torch.arange(10).view(2, 5))
    with pytest.raises(UsageError, match="fewer than one window"):
        evaluation_windows(ids, 50)


def test_measured_sparsity_counts_zeros(tiny_llama):
    model = tiny_llama[0]
    from prunebench.models.walk import decoder_layers

    decoder_layers(model)[1].mlp.down_proj.weight.data.zero_()
    measured = measured_sparsity(model)
    assert measured["per_layer"][0] == 0.0
    down = decoder_layers(model)[1].mlp.down_proj.weight.numel()
    total_layer = sum(p.numel() for n, p in decoder_layers(model)[1].named_parameters() if n.endswith("proj.weight"))
    assert measured["per_layer"][1] == pytest.approx(down / total_layer)


def test_peak_memory_sees_a_temporary_allocation():
    # In a fresh process: after other tests the allocator may serve the block from memory that is
    # already resident, which (rightly) is no growth of the resident peak.
    import subprocess
    import sys

    code = ("import torch\nfrom prunebench.pruning.measure import measure_peak_memory\n"
            "with measure_peak_memory(torch.device('cpu')) as memory:\n"
            "    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched\n    del block\n"
            "print(memory.growth_bytes)")
    growth = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=120).stdout.split()[-1])
    assert growth >= 48 * 2**20


def test_window_nlls_are_kept_and_a_non_finite_one_is_null_in_json(tmp_path):
    from prunebench.store.results import write_json_atomically

    # Window 1 follows the rule (NLL -log 0.7), window 2 never does (-log 0.1).
    ids = torch.tensor([0, 1, 2, 3, 0, 0, 0, 0, 0, 0])
    result = perplexity(FixedLogits(vocab=4, p=0.7), ids, window_length=5)
    assert result.to_dict()["window_nlls"] == pytest.approx([-math.log(0.7), -math.log(0.1)])
    assert result.mean_nll == pytest.approx(sum(result.window_nlls) / 2)
    # p = 1 leaves probability 0 (NLL infinity) for every other token: window 2 diverges.
    diverged = perplexity(FixedLogits(vocab=4, p=1.0), ids, window_length=5)
    assert diverged.window_nlls[0] == pytest.approx(0.0, abs=1e-6) and math.isinf(diverged.window_nlls[1])
    path = tmp_path / "record.json"
    write_json_atomically(path, diverged.to_dict())
    stored = json.loads(path.read_text())
    assert stored["window_nlls"][1] is None and stored["perplexity"] is None
