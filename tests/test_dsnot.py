"""DSnoT by hand: one row's prune-and-grow cycles on hand-made tensors (unstructured and N:M, with the
hand-computed masks in the comments), its statistics, the refusals, and a run on a tiny model."""
import pytest
import torch
from prunebench import prune
from prunebench.api.errors import UsageError
from prunebench.baselines.dsnot import (DSnoT, InputSum, InputVariance, _prune_order, grow_and_prune,
                                        grow_and_prune_n_m)
from prunebench.registry import get_method

W = torch.tensor([[1.0, -0.5, 2.0, 0.3, -1.5, 0.8]])  # inputs with S_j = 1, var_j = 1, ||x_j|| = 1: D = W


def test_unstructured_cycles_by_hand():
    # Wanda prunes the 3 lowest |W|: columns 3, 1, 5; e = 0.3 - 0.5 + 0.8 = 0.6.
    mask = torch.tensor([[False, True, False, True, False, True]])
    # Regrow order by D over pruned (kept count 0): 1 (-0.5), 0, 2, 4 (0), 3 (0.3), 5 (0.8).
    # Prune order over kept: D < 0 by ascending score: 4; then D >= 0 by descending score: 2, 0.
    # Cycle 1, e = 0.6 > 0: regrow 5 (back), prune 4 (front): e = 0.6 - 1.5 - 0.8 = -1.7.
    # Cycle 2, e < 0: regrow 1 (front), prune 0 (back): e = -1.7 + 1.0 + 0.5 = -0.2.
    # Cycle 3, |e| = 0.2 > 0.1: regrow 0 (front), prune 2 (back): e = -0.2 + 2.0 - 1.0 = 0.8.
    ones = torch.ones(1, 6)
    after = {cycles: grow_and_prune(mask, W, ones, W.abs(), cycles, 0.1)[0].nonzero().flatten().tolist()
             for cycles in (0, 1, 2, 3)}
    assert after == {0: [1, 3, 5], 1: [1, 3, 4], 2: [0, 3, 4], 3: [2, 3, 4]}
    # A threshold of 0.3 stops the row before cycle 3 (|e| = 0.2), and a row already within it never moves.
    assert grow_and_prune(mask, W, ones, W.abs(), 50, 0.3)[0].nonzero().flatten().tolist() == [0, 3, 4]
    assert torch.equal(grow_and_prune(mask, W, ones, W.abs(), 50, 0.7), mask)
    # The variance scales the regrowing choice only: var 10 on column 5 makes 3 (0.3) beat 5 (0.08).
    variance = torch.tensor([[1.0, 1, 1, 1, 1, 10]])
    assert grow_and_prune(mask, W, variance, W.abs(), 1, 0.1)[0].nonzero().flatten().tolist() == [1, 4, 5]


def test_prune_order_follows_the_authors_list_with_ties_and_zeros():
    # Kept: columns 0..5 (6, 7 pruned). D: -1, 2, 0, 3, -4, 5; Wanda scores 1, 2, 2, 2, 3, 2.
    # Ascending by score (stable): 0, 1, 2, 3, 5, 4. D < 0 in that order: 0, 4. D > 0 reversed: 5, 3, 1
    # (scores 2 tie: the last-indexed first). D == 0 (column 2) holds the lowest-score kept weight, 0.
    mask = torch.tensor([[False] * 6 + [True, True]])
    metric = torch.tensor([[-1.0, 2, 0, 3, -4, 5, 1, 1]])
    wanda = torch.tensor([[1.0, 2, 2, 2, 3, 2, 0, 0]])
    assert _prune_order(mask, metric, wanda)[0, :6].tolist() == [0, 4, 0, 5, 3, 1]


def test_n_m_swaps_stay_in_the_block_and_stop_at_a_sign_flip():
    weight = torch.tensor([[1.0, 0.6, -2.0, 0.3, -1.5, 0.8, 0.2, 0.1]])
    # 2:4 by |W|: block 0 prunes 3 and 1, block 1 prunes 7 and 6; e = 0.6 + 0.3 + 0.2 + 0.1 = 1.2.
    mask = torch.tensor([[False, True, False, True, False, False, True, True]])
    # Cycle 1: regrow 1 (largest D pruned), prune the lowest-score kept weight of its block, 0:
    # e = 1.2 + 1.0 - 0.6 = 1.6, same sign: swapped. Cycle 2: regrow 3, prune 2 (the block's only other kept
    # weight): e would be 1.6 - 2.0 - 0.3 = -0.7, a sign flip: the row stops with 0 and 3 pruned.
    ones = torch.ones(1, 8)
    result = grow_and_prune_n_m(mask, weight, ones, weight.abs(), 4, 50, 0.1)
    assert result[0].nonzero().flatten().tolist() == [0, 3, 6, 7]
    assert (result.view(-1, 4).sum(dim=1) == 2).all()


def test_statistics_by_hand():
    linear = torch.nn.Linear(2, 1)
    windows = torch.tensor([[[1.0, 0.0], [3.0, 2.0]], [[2.0, 2.0], [2.0, 6.0]]])  # 2 windows x 2 tokens x 2 inputs
    for statistic, expected in ((InputSum(), [4.0, 5.0]), (InputVariance(), [0.5, 2.5])):
        state = statistic.accumulator(linear, torch.device("cpu"), {})
        state.add(windows.reshape(-1, 2), None, 2)
        # sums per window (4, 2), (4, 8) -> mean (4, 5); variances (1, 1), (0, 4) -> mean (0.5, 2.5)
        assert state.result().tolist() == expected


def test_bad_bases_are_refused_with_one_line():
    method = get_method("dsnot")
    with pytest.raises(UsageError, match="dsnot cannot start from 'sparsegpt': it changes the kept weights"):
        method.resolve_arguments({"base": "sparsegpt"})
    with pytest.raises(UsageError, match="dsnot.base cannot be dsnot"):
        method.resolve_arguments({"base": "dsnot"})
    with pytest.raises(UsageError, match="wandaa"):
        method.resolve_arguments({"base": "wandaa"})


@pytest.mark.parametrize("sparsity", [0.5, "2:4"])
def test_dsnot_on_a_tiny_model_keeps_the_budget_and_changes_the_mask(tiny_llama, tiny_calibration, sparsity):
    import copy

    model, _ = tiny_llama
    wanda, dsnot = copy.deepcopy(model), copy.deepcopy(model)
    prune(wanda, "wanda", sparsity, tiny_calibration)
    report = prune(dsnot, "dsnot", sparsity, tiny_calibration, skip_layer="none", update_threshold=0.0,
                   max_cycle_time=4)
    assert report.overall_sparsity == pytest.approx(0.5, abs=1e-6)
    changed = 0
    for (name, a), (_, b) in zip(wanda.named_parameters(), dsnot.named_parameters()):
        if name.endswith("proj.weight"):
            changed += int(((a == 0) != (b == 0)).sum())
            kept = b != 0
            assert torch.equal(b[kept], model.get_parameter(name)[kept])  # kept weights keep their dense values
    assert changed > 0
    assert isinstance(get_method("dsnot"), DSnoT)
