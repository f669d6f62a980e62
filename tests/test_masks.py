"""Known-answer tests for the shared mask step (True = prune)."""
import pytest
import torch
from prunebench import registry
from prunebench.api.errors import UsageError
from prunebench.api.sparsity import parse_sparsity
from prunebench.pruning.masks import kth_smallest, lowest_k, lowest_n_of_m, lowest_per_layer, lowest_per_row, make_mask


def test_per_row_prunes_the_lowest_of_each_row():
    scores = torch.tensor([[3.0, 1.0, 2.0, 4.0], [0.5, 0.2, 0.9, 0.1]])
    expected = torch.tensor([[False, True, True, False], [False, True, False, True]])
    assert torch.equal(lowest_per_row(scores, 0.5), expected)


def test_per_row_count_is_int_of_width_times_ratio():
    scores = torch.arange(10.0).repeat(3, 1)
    mask = lowest_per_row(scores, 0.35)  # int(10 * 0.35) = 3
    assert mask.sum(dim=1).tolist() == [3, 3, 3]
    assert mask[:, :3].all() and not mask[:, 3:].any()


def test_ties_go_to_the_lower_index_as_in_a_stable_sort():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 1.0, 0.0]])
    expected = torch.tensor([[True, True, False, False], [False, True, False, True]])
    assert torch.equal(lowest_per_row(scores, 0.5), expected)


def test_per_layer_uses_one_threshold_for_the_whole_matrix():
    scores = torch.tensor([[1.0, 2.0], [3.0, 0.5], [6.0, 5.0]])
    expected = torch.tensor([[True, True], [False, True], [False, False]])
    assert torch.equal(lowest_per_layer(scores, 0.5), expected)


def test_per_layer_hits_the_exact_count_with_many_ties():
    scores = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 1.0]])
    mask = lowest_per_layer(scores, 0.5)
    assert int(mask.sum()) == 3
    assert torch.equal(mask, torch.tensor([[True, True, True], [False, False, False]]))


def test_n_of_m_known_answer():
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.1, 0.4, 0.3, 0.2]])
    expected = torch.tensor([[False, False, True, True, True, False, False, True]])
    assert torch.equal(lowest_n_of_m(scores, 2, 4), expected)


@pytest.mark.parametrize("n,m", [(1, 2), (2, 4), (4, 8), (3, 4)])
def test_n_of_m_structure_is_exact(n, m):
    scores = torch.rand(16, 64, generator=torch.Generator().manual_seed(1))
    groups = lowest_n_of_m(scores, n, m).view(16, 64 // m, m)
    assert (groups.sum(dim=2) == n).all()


def test_n_of_m_refuses_a_width_m_does_not_divide():
    with pytest.raises(UsageError, match="divide"):
        lowest_n_of_m(torch.rand(2, 6), 2, 4)


@pytest.mark.parametrize("seed", range(5))
def test_selection_equals_stable_sort_on_random_scores_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (7, 33), generator=generator).float()
    k = int(torch.randint(0, 34, (1,), generator=generator))
    reference = torch.zeros_like(scores, dtype=torch.bool)
    reference.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :k], True)
    assert torch.equal(lowest_k(scores, k), reference)


@pytest.mark.parametrize("shape", [(1, 10_000), (7, 300)])
def test_kth_smallest_by_sort_equals_kthvalue(shape):
    """The GPU's way (a sort) and the CPU's (kthvalue) give the same k-th values, ties included:
    a single long row is the whole-matrix selection."""
    scores = torch.randint(0, 50, shape, generator=torch.Generator().manual_seed(0)).float()
    for k in (1, shape[1] // 2, shape[1] - 1):
        by_sort = kth_smallest(scores, k, count=2, by_sort=True)
        assert torch.equal(by_sort, kth_smallest(scores, k, count=2, by_sort=False))
        assert torch.equal(by_sort[:, 0], torch.sort(scores, dim=1).values[:, k - 1])


def test_selection_with_nan_falls_back_to_sort_order():
    scores = torch.tensor([[float("nan"), 1.0, 0.0, 2.0]])
    assert torch.equal(lowest_k(scores, 2), torch.tensor([[False, True, True, False]]))


def test_hook_dispatch_and_an_overriding_plugin(register_plugin):
    scores = torch.tensor([[3.0, 1.0, 2.0, 4.0]])
    assert torch.equal(registry.make_mask(scores, parse_sparsity(0.5), "row"), make_mask(scores, parse_sparsity(0.5), "row"))

    class KeepEverything:
        from prunebench import hookimpl

        @hookimpl
        def make_mask(self, scores, target, group):
            return torch.zeros_like(scores, dtype=torch.bool)

    register_plugin(KeepEverything())
    assert not registry.make_mask(scores, parse_sparsity(0.5), "row").any()


def test_unknown_group_is_refused():
    with pytest.raises(UsageError, match="row, layer"):
        make_mask(torch.rand(2, 4), parse_sparsity(0.5), "column")


@pytest.mark.parametrize("text,ratio,n_m", [("0.5", 0.5, None), (0.25, 0.25, None), ("2:4", 0.5, (2, 4)), ("4:8", 0.5, (4, 8))])
def test_parse_sparsity(text, ratio, n_m):
    target = parse_sparsity(text)
    assert target.ratio == ratio
    assert (target.n, target.m) == (n_m or (None, None))


@pytest.mark.parametrize("text", ["0", "1", "1.5", "-0.1", "4:4", "5:4", "0:4", "a:b", "half"])
def test_parse_sparsity_refuses_bad_values(text):
    with pytest.raises(UsageError):
        parse_sparsity(text)
