"""Known answers for RIA, SparseGPT, ACE and OWL, each computed independently in the test."""
import math

import prunebench
import pytest
import torch
from prunebench.api.errors import UsageError
from prunebench.api.method import LinearContext
from prunebench.api.sparsity import parse_sparsity
from prunebench.baselines.ria import RIA, relative_importance, snake_permutation
from prunebench.baselines.sparsegpt import InputHessian, sparsegpt_prune
from prunebench.plugins.ace import Ace, CosineLossStatistic, CosP, InverseNormStatistic, TokenVarianceStatistic, VarP
from prunebench.pruning.masks import lowest_n_of_m, lowest_per_layer, make_mask
from prunebench.pruning.owl import outlier_share, owl_sparsities

# --- RIA -------------------------------------------------------------------------------------

def test_ria_score_known_answer():
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    stats = {"input_sq_norm": torch.tensor([4.0, 9.0])}
    col = [1 + 3, 2 + 4]
    row = [1 + 2, 3 + 4]
    expected = [[(abs(weight[i, j].item()) / col[j] + abs(weight[i, j].item()) / row[i]) * math.sqrt(math.sqrt([4, 9][j]))
                 for j in range(2)] for i in range(2)]
    assert torch.allclose(RIA().score(weight, stats), torch.tensor(expected))
    assert torch.allclose(RIA().score(weight, stats, a=1.0), relative_importance(weight) * torch.tensor([2.0, 3.0]))


def test_snake_permutation_deals_one_channel_of_each_tier_to_every_group():
    importance = torch.tensor([10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0])
    assert snake_permutation(importance, 4).tolist() == [0, 3, 4, 7, 1, 2, 5, 6]


def test_ria_reallocation_is_n_m_in_permuted_order():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 16, generator=generator)
    stats = {"input_sq_norm": torch.rand(16, generator=generator)}
    target = parse_sparsity("2:4")
    context = LinearContext(target, make_mask, 0, "w")
    method = RIA()
    args = method.resolve_arguments({"reallocation": True})
    mask = method.select(weight, stats, context, **args)
    scores = method.score(weight, stats, **args)
    perm = snake_permutation(scores.sum(dim=0), 4)
    assert torch.equal(mask[:, perm], lowest_n_of_m(scores[:, perm], 2, 4))
    assert (mask[:, perm].view(6, 4, 4).sum(-1) == 2).all()


# --- SparseGPT ---------------------------------------------------------------------------------

def slow_obs(W, H, ratio=None, n_m=None, blocksize=8, percdamp=0.01):
    """SparseGPT without Cholesky or lazy batching: explicit inverses of the remaining Hessian."""
    W = W.double().clone()
    H = H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=H.dtype)
    columns = W.shape[1]
    inverse_rows = [torch.linalg.inv(H[q:, q:])[0] for q in range(columns)]  # row q of the remaining inverse
    mask = torch.zeros_like(W, dtype=torch.bool)
    for q in range(columns):
        if ratio is not None and q % blocksize == 0:
            block = slice(q, min(q + blocksize, columns))
            curvature = torch.tensor([inverse_rows[c][0] for c in range(block.start, block.stop)], dtype=W.dtype)
            mask[:, block] = lowest_per_layer(W[:, block] ** 2 / curvature, ratio)
        if n_m is not None and q % n_m[1] == 0:
            n, m = n_m
            curvature = torch.tensor([inverse_rows[c][0] for c in range(q, q + m)], dtype=W.dtype)
            mask[:, q : q + m] = lowest_n_of_m(W[:, q : q + m] ** 2 / curvature, n, m)
        w = W[:, q].clone()
        kept = torch.where(mask[:, q], torch.zeros_like(w), w)
        W[:, q:] -= torch.outer((w - kept) / inverse_rows[q][0], inverse_rows[q])
        W[:, q] = kept
    return W, mask


def _hessian(X, batches=(3, 2)):
    linear = torch.nn.Linear(X.shape[-1], 1)
    accumulator = InputHessian().accumulator(linear, torch.device("cpu"), {})
    start = 0
    for size in batches:
        part = X[start : start + size]
        accumulator.add(part.reshape(-1, X.shape[-1]), None, size)
        start += size
    return accumulator.result()


def test_hessian_is_the_running_mean_of_2_x_xt():
    X = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(0))
    flat = X.reshape(-1, 6).double()
    assert torch.allclose(_hessian(X).double(), 2 / 5 * flat.t() @ flat, atol=1e-5)


@pytest.mark.parametrize("sparsity", ["0.5", "0.3", "2:4", "4:8"])
def test_sparsegpt_equals_a_direct_obs_implementation(sparsity):
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(5, 12, 16, generator=generator)
    X[..., 5] = 0  # a dead input
    W = torch.randn(8, 16, generator=generator)
    H = _hessian(X)
    target = parse_sparsity(sparsity)
    weight = W.clone()
    mask = sparsegpt_prune(weight, H, target, make_mask, blocksize=8)
    expected_W, expected_mask = slow_obs(W, H, None if target.is_n_m else target.ratio,
                                         (target.n, target.m) if target.is_n_m else None, blocksize=8)
    assert torch.equal(mask, expected_mask)
    assert torch.allclose(weight.double(), expected_W, atol=1e-4, rtol=1e-4)
    assert (weight[:, 5] == 0).all()
    assert not torch.equal(weight[~mask], W[~mask])  # kept weights were updated


def test_sparsegpt_retries_damping_and_reports_it():
    H = -torch.eye(4)  # never positive definite: every retry fails, then a one-line error
    notes = []
    with pytest.raises(UsageError, match="percdamp"):
        sparsegpt_prune(torch.randn(2, 4), H, parse_sparsity(0.5), make_mask, damping_retries=2, note=notes.append)
    assert len(notes) == 2 and "retrying" in notes[0]


def test_sparsegpt_blocksize_must_hold_whole_n_m_groups():
    with pytest.raises(UsageError, match="multiple of M"):
        sparsegpt_prune(torch.randn(2, 8), torch.eye(8), parse_sparsity("2:4"), make_mask, blocksize=6)


# --- ACE -------------------------------------------------------------------------------------

def _accumulate(statistic, X, W, eps=1e-6):
    linear = torch.nn.Linear(X.shape[-1], W.shape[0], bias=False)
    accumulator = statistic.accumulator(linear, torch.device("cpu"), {"eps": eps})
    for batch in (X[:2], X[2:]):
        flat = batch.reshape(-1, X.shape[-1])
        accumulator.add(flat, flat @ W.t(), batch.shape[0])
    return accumulator.result()


@pytest.fixture
def ace_inputs():
    generator = torch.Generator().manual_seed(2)
    return torch.randn(3, 5, 4, generator=generator), torch.randn(3, 4, generator=generator)


def test_cosine_loss_statistic_by_a_per_token_loop(ace_inputs):
    X, W = ace_inputs
    tokens = X.reshape(-1, 4).double()
    expected = torch.zeros(3, 4, dtype=torch.float64)
    for x in tokens:
        a = W.double() @ x
        expected += torch.outer(a, x) / (a @ a + 1e-6)
    expected /= tokens.shape[0]
    assert torch.allclose(_accumulate(CosineLossStatistic(), X, W).double(), expected, atol=1e-6)


@pytest.mark.parametrize("sign", ["abs", "clamp", "signed"])
def test_cosp_score_known_answer(ace_inputs, sign):
    X, W = ace_inputs
    C = _accumulate(CosineLossStatistic(), X, W)
    r = X.reshape(-1, 4).square().sum(0) / 3
    loss = W * C
    f = {"abs": loss.abs(), "clamp": loss.clamp(min=0), "signed": loss}[sign]
    expected = W.abs() * r.sqrt() * f
    assert torch.allclose(CosP().score(W, {"input_sq_norm": r, "ace_cos": C}, sign=sign), expected)


def test_varp_inverse_reading_by_hand(ace_inputs):
    X, W = ace_inputs
    expected = torch.zeros(4, dtype=torch.float64)
    for sequence in X.double():
        unit = torch.stack([t / t.norm() for t in sequence])
        v = (unit ** 2).mean(dim=0)
        expected += 1 / (1 - v + 1e-6)
    expected /= X.shape[0]
    statistic = _accumulate(InverseNormStatistic(), X, W)
    assert torch.allclose(statistic.double(), expected, atol=1e-6)
    assert torch.allclose(VarP().score(W, {"ace_inverse_norm": statistic}, reading="inverse"), W.abs() * statistic)


def test_varp_variance_reading_by_hand(ace_inputs):
    X, W = ace_inputs
    expected = sum(((s ** 2).mean(0) - s.mean(0) ** 2) for s in X.double()) / X.shape[0]
    variance = _accumulate(TokenVarianceStatistic(), X, W)
    assert torch.allclose(variance.double(), expected, atol=1e-6)
    r = torch.rand(4)
    score = VarP().score(W, {"input_sq_norm": r, "ace_token_variance": variance}, reading="variance")
    assert torch.allclose(score, W.abs() * r.sqrt() * variance)


def test_ace_is_the_product_of_cosp_and_varp(ace_inputs):
    X, W = ace_inputs
    stats = {
        "input_sq_norm": torch.rand(4), "ace_cos": _accumulate(CosineLossStatistic(), X, W),
        "ace_token_variance": _accumulate(TokenVarianceStatistic(), X, W),
        "ace_inverse_norm": _accumulate(InverseNormStatistic(), X, W),
    }
    for reading in ("variance", "inverse"):
        product = CosP().score(W, stats, sign="clamp") * VarP().score(W, stats, reading=reading)
        assert torch.allclose(Ace().score(W, stats, sign="clamp", reading=reading), product)


def test_ace_statistics_follow_the_reading():
    assert Ace().required_statistics(Ace().resolve_arguments({"sign": "abs", "reading": "inverse"})) == (
        "input_sq_norm", "ace_cos", "ace_inverse_norm")
    assert VarP().required_statistics(VarP().resolve_arguments({})) == ("input_sq_norm", "ace_token_variance")


@pytest.mark.parametrize("args,message", [({"sign": "both"}, "abs, clamp, signed"), ({"reading": "x"}, "inverse, variance"),
                                          ({"eps": "0"}, "positive")])
def test_ace_bad_arguments(args, message):
    with pytest.raises(UsageError, match=message):
        Ace().resolve_arguments(args)


# --- OWL ---------------------------------------------------------------------------------------

def test_outlier_share_known_answer():
    assert outlier_share(torch.tensor([1.0, 1.0, 1.0, 1.0, 10.0]), 2.0) == pytest.approx(20.0)


def test_owl_sparsities_follow_the_formula():
    sparsities = owl_sparsities([1.0, 2.0, 3.0], sparsity=0.5, lam=0.08)
    assert sparsities == pytest.approx([0.58, 0.5, 0.42])
    assert sum(sparsities) / 3 == pytest.approx(0.5)
    assert owl_sparsities([2.0, 2.0], 0.6, 0.08) == pytest.approx([0.6, 0.6])


def test_owl_allocation_on_a_model_keeps_the_mean(tiny_llama, tiny_calibration):
    report = prunebench.prune(tiny_llama[0], "wanda", 0.5, tiny_calibration, progress=False, allocation="owl",
                              allocation_settings={"lambda": 0.1})
    assert report.allocation.startswith("owl")
    assert sum(report.layer_targets) / len(report.layer_targets) == pytest.approx(0.5)
    assert max(report.layer_targets) - min(report.layer_targets) == pytest.approx(0.2)
    assert report.layer_sparsity == pytest.approx(report.layer_targets, abs=0.01)


def test_owl_refuses_n_m(tiny_llama, tiny_calibration):
    with pytest.raises(UsageError, match="not N:M"):
        prunebench.prune(tiny_llama[0], "wanda", "2:4", tiny_calibration, allocation="owl")


def test_per_token_absolute_cosine_loss_by_a_loop(ace_inputs):
    from prunebench.plugins.ace import AbsoluteCosineLossStatistic

    X, W = ace_inputs
    tokens = X.reshape(-1, 4).double()
    expected = torch.zeros(3, 4, dtype=torch.float64)
    for x in tokens:
        a = W.double() @ x
        expected += torch.outer(a.abs(), x.abs()) / (a @ a + 1e-6)
    expected /= tokens.shape[0]
    C = _accumulate(AbsoluteCosineLossStatistic(), X, W)
    assert torch.allclose(C.double(), expected, atol=1e-6)
    r = torch.rand(4)
    score = CosP().score(W, {"input_sq_norm": r, "ace_cos_abs": C}, sign="abs-token")
    assert torch.allclose(score, W.abs() * r.sqrt() * (W * C).abs())
    assert CosP().required_statistics({"sign": "abs-token"}) == ("input_sq_norm", "ace_cos_abs")
