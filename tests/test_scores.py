"""Known-answer tests for the magnitude and Wanda scores and Wanda's calibration statistic."""
import torch
from prunebench.baselines.magnitude import Magnitude
from prunebench.baselines.wanda import Wanda
from prunebench.pruning.statistics import InputSquaredNorm


def test_magnitude_score_is_absolute_weight():
    weight = torch.tensor([[1.0, -2.0], [-0.5, 3.0]])
    assert torch.equal(Magnitude().score(weight, {}), torch.tensor([[1.0, 2.0], [0.5, 3.0]]))


def test_wanda_score_is_weight_times_input_norm():
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    stats = {"input_sq_norm": torch.tensor([4.0, 9.0])}
    expected = torch.tensor([[2.0, 6.0], [6.0, 12.0]])
    assert torch.equal(Wanda().score(weight, stats, group="row"), expected)


def test_input_squared_norm_is_wandas_running_mean_over_sequences():
    linear = torch.nn.Linear(3, 2)
    accumulator = InputSquaredNorm().accumulator(linear, torch.device("cpu"), {})
    first = torch.tensor([[[1.0, 0.0, 2.0], [1.0, 1.0, 0.0]], [[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]]])  # 2 sequences
    second = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]]])  # 1 sequence
    for batch in (first, second):
        accumulator.add(batch.reshape(-1, 3), None, nsequences=batch.shape[0])
    # By hand: per-feature sum of squares over all tokens, divided by 3 sequences.
    expected = torch.tensor([1 + 1 + 0 + 4 + 1 + 0, 0 + 1 + 9 + 0 + 1 + 4, 4 + 0 + 1 + 0 + 1 + 0]) / 3.0
    assert torch.allclose(accumulator.result(), expected)


def test_wanda_prunes_the_weight_with_the_weak_input_not_the_small_weight():
    # Column 1 has large weights but a tiny input; column 0 small weights but a strong input.
    weight = torch.tensor([[0.5, 2.0], [0.4, 3.0]])
    stats = {"input_sq_norm": torch.tensor([100.0, 0.01])}
    from prunebench.pruning.masks import lowest_per_row

    mask = lowest_per_row(Wanda().score(weight, stats), 0.5)
    assert torch.equal(mask, torch.tensor([[False, True], [False, True]]))
    assert torch.equal(lowest_per_row(Magnitude().score(weight, {}), 0.5), torch.tensor([[True, False], [True, False]]))
