"""Known answers for the authors' CFSP (plugins/cfsp.py, read from github.com/wyxscir/CFSP lib/prune.py)."""
import math

import pytest
import torch
from prunebench.plugins.cfsp import authors_keep_ratios, authors_kept_count, three_w_one_wa


@pytest.mark.parametrize("b, c", [(1.0, 1.0), (3.0, 1.0), (1.0, 2.0)])
def test_the_fine_score_is_three_a_to_the_c_over_h(b, c):
    """Every term is normalised by its own sum over the hidden rows, so the mean over them is 3 a_k^c / H."""
    generator = torch.Generator().manual_seed(0)
    hidden, channels = 12, 20
    gate, up = torch.randn(channels, hidden, generator=generator), torch.randn(channels, hidden, generator=generator)
    down = torch.randn(hidden, channels, generator=generator)
    a = torch.rand(channels, generator=generator) + 0.1
    score = three_w_one_wa(a, gate, up, down, b, c)
    torch.testing.assert_close(score, 3 * a ** c / hidden, rtol=1e-5, atol=0)
    assert torch.equal(torch.argsort(score, descending=True, stable=True)[:5], torch.argsort(a, descending=True)[:5])


def test_keep_ratios_are_the_sigmoid_of_the_centred_sum_over_1e4():
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # x = (I - mean I) / 1e4 = 1, 0, -1; at s = 0.5 the cap does not apply (sigmoid(1)/0.5 * 0.5 < 1).
    keep = authors_keep_ratios([1e4 + 7, 7, -1e4 + 7], 0.5, 1.0)
    assert keep == pytest.approx([sigmoid(1), 0.5, sigmoid(-1)], rel=1e-12)
    assert authors_keep_ratios([2e4, 0, -2e4], 0.5, 0.5) == pytest.approx(keep, rel=1e-12)  # a scales x
    # The same importance at s = 0.2: 0.8 sigmoid(1)/0.5 >= 1, so deviations shrink until the most
    # important layer keeps (1 - s) + s / 1.05 and the mean keep stays 1 - s.
    capped = authors_keep_ratios([1e4, 0, -1e4], 0.2, 1.0)
    assert max(capped) == pytest.approx(0.8 + 0.2 / 1.05, rel=1e-12)
    assert sum(capped) / 3 == pytest.approx(0.8, rel=1e-12) and capped[1] == pytest.approx(0.8, rel=1e-12)


def test_a_thousandfold_smaller_importance_spread_is_almost_uniform():
    """The fixed 1e4: sums over few tokens differ by far less than 1e4, so every layer keeps about 1 - s."""
    keep = authors_keep_ratios([120.0, 95.0, 80.0, 140.0], 0.3, 1.0)
    # x spans 60 / 1e4; sigmoid's slope at 0 is 1/4 and keep = k / mean(k) (1 - s): 0.006 / 4 / 0.5 x 0.7.
    assert max(keep) - min(keep) == pytest.approx(0.006 / 4 / 0.5 * 0.7, rel=1e-3)


def test_kept_counts_follow_the_threshold_rule_and_keep_ties():
    scores = torch.arange(1024, 0, -1, dtype=torch.float64)  # descending, distinct
    assert authors_kept_count(scores, 0.3, 1) == int(1024 * 0.3) + 1  # threshold sorted_desc[int(K keep)]
    # cuda_friendly: int((307.2 + 64) / 128) * 128 = 256 kept, threshold sorted_desc[255].
    assert authors_kept_count(scores, 0.3, 128) == 256
    tied = scores.clone()
    tied[250:260] = tied[255]  # ten channels tie at the threshold: all stay
    assert authors_kept_count(tied[torch.randperm(1024)], 0.3, 128) == 260
    assert authors_kept_count(scores, 0.36, 128) == 384  # 368.6 + 64 rounds to three blocks


def test_angular_importance_sums_tokens_reads_nan_as_half_and_never_returns_nan():
    from prunebench.plugins.cfsp import angular_importance_sum

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    y = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # 90 degrees, 0 degrees, a zero-norm token (NaN)
    assert angular_importance_sum([x[None]], [y[None]]) == pytest.approx(0.5 + 0.0 + math.acos(0.5) / math.pi)
    generator = torch.Generator().manual_seed(0)
    same = torch.randn(1, 64, 576, generator=generator) * torch.logspace(0, 3, 576)
    # 19 of these 64 cosines of a token with itself round above 1 in float32 (arccos: NaN).
    assert math.isfinite(angular_importance_sum([same], [same.clone()]))


def test_lora_capacity_follows_importance_at_the_uniform_budget():
    from prunebench import capacity_ranks
    from prunebench.api.errors import UsageError

    # Equal layer widths: ranks 4 x [1, 2, 3] x 3 / 6 = [2, 4, 6], the same 12 rank units as 4 everywhere.
    assert capacity_ranks([1.0, 2.0, 3.0], 4, [10, 10, 10]) == [2, 4, 6]
    # A wider layer costs more per rank: budget 4 x (10 + 30) = 160 = r0 x 10 + r1 x 30 with r1 = r0:
    # scale = 4 x 40 / (1 x 10 + 1 x 30) = 4, so both keep 4; with importances 1 and 3, scale = 160 / 100.
    assert capacity_ranks([1.0, 1.0], 4, [10, 30]) == [4, 4]
    assert capacity_ranks([1.0, 3.0], 4, [10, 30]) == [2, 5]  # 1.6 -> 2, 4.8 -> 5
    assert capacity_ranks([0.0, 1.0], 1, [10, 10]) == [1, 2]  # never below rank 1
    with pytest.raises(UsageError, match="use lora_capacity=uniform"):
        capacity_ranks([0.0, 0.0], 4, [10, 10])


@pytest.mark.parametrize("capacity", ["importance", "uniform"])
def test_cfsp_recovery_gives_each_layer_its_rank_and_merges(capacity, tiny_calibration):
    pytest.importorskip("peft")
    from prunebench import load_model, structured_prune

    model, _ = load_model("tiny-llama")
    report = structured_prune(model, "cfsp", 0.3, tiny_calibration, batch_size=2, recover_tokens=64, lora_rank=4,
                              lora_capacity=capacity)
    note = next(n for n in report.notes if n.startswith("recovery:"))
    assert f"'capacity': '{capacity}'" in note and "recovery" in report.timings
    assert ("layer_ranks" in note) == (capacity == "importance")
    assert not any("lora" in name for name, _ in model.named_parameters())
