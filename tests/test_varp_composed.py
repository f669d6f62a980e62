"""Wanda+VarP and RIA+VarP: the base method's score times VarP's per-input factor (known answers)."""
import prunebench
import pytest
import torch
from prunebench import UsageError
from prunebench.models.loading import load_model
from prunebench.plugins.ace import RIAVarP, VarP, WandaVarP

W = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
# input_sq_norm r (sqrt: 2, 3); 'inverse' factor E_s[1/(1 - v + eps)]; 'variance' factor E_s[Var_t(x_tj)].
STATS = {"input_sq_norm": torch.tensor([4.0, 9.0]), "ace_inverse_norm": torch.tensor([0.5, 2.0]),
         "ace_token_variance": torch.tensor([3.0, 0.25])}


@pytest.mark.parametrize("reading,expected", [
    ("inverse", [[1.0, 12.0], [3.0, 24.0]]),    # Wanda [[2, 6], [6, 12]] * [0.5, 2]
    ("variance", [[6.0, 1.5], [18.0, 3.0]]),    # Wanda [[2, 6], [6, 12]] * [3, 0.25]
])
def test_wanda_varp_known_answer(reading, expected):
    assert torch.allclose(WandaVarP().score(W, STATS, group="row", reading=reading, eps=1e-6), torch.tensor(expected))


@pytest.mark.parametrize("reading,factor", [("inverse", [0.5, 2.0]), ("variance", [3.0, 0.25])])
def test_ria_varp_known_answer(reading, factor):
    # |W| column sums 4, 6; row sums 3, 7; a = 1 so the activation term is sqrt(r) = [2, 3].
    ria = torch.tensor([[(1 / 4 + 1 / 3) * 2, (2 / 6 + 2 / 3) * 3], [(3 / 4 + 3 / 7) * 2, (4 / 6 + 4 / 7) * 3]])
    score = RIAVarP().score(W, STATS, group="layer", a=1.0, reallocation=False, reading=reading, eps=1e-6)
    assert torch.allclose(score, ria * torch.tensor([factor]))


def test_statistics_are_the_base_methods_plus_the_factor():
    for method in (WandaVarP(), RIAVarP()):
        assert method.required_statistics(method.resolve_arguments({"reading": "inverse"})) == (
            "input_sq_norm", "ace_inverse_norm")
        assert method.required_statistics(method.resolve_arguments({"reading": "variance"})) == (
            "input_sq_norm", "ace_token_variance")


@pytest.mark.parametrize("method", [WandaVarP(), RIAVarP()])
def test_bad_reading_and_eps_are_refused(method):
    with pytest.raises(UsageError, match="inverse, variance"):
        method.resolve_arguments({"reading": "both"})
    with pytest.raises(UsageError, match="positive"):
        method.resolve_arguments({"eps": "0"})


def _pruned(method, sparsity, calibration, **args):
    model, _ = load_model("tiny-llama")
    prunebench.prune(model, method, sparsity, calibration, progress=False, **args)
    return model.state_dict()


def test_wanda_varp_variance_is_ace_varp_variance():
    # ACE's VarP 'variance' reading is Wanda's score times the token variance: the same score up to
    # rounding (the product is taken in another order, which can flip near-tied weights of a real model).
    score = WandaVarP().score(W, STATS, group="row", reading="variance", eps=1e-6)
    assert torch.allclose(score, VarP().score(W, STATS, group="row", reading="variance", eps=1e-6))


def test_the_factor_changes_the_masks(tiny_calibration):
    wanda = _pruned("wanda", 0.5, tiny_calibration)
    composed = _pruned("wanda+varp", 0.5, tiny_calibration, reading="inverse")
    assert any(not torch.equal(wanda[k], composed[k]) for k in wanda)


def test_ria_varp_reallocation_keeps_n_m_per_row(tiny_calibration):
    state = _pruned("ria+varp", "2:4", tiny_calibration, reading="inverse", reallocation=True)
    for key, weight in state.items():
        if key.endswith("proj.weight"):
            assert ((weight == 0).sum(dim=1) == weight.shape[1] // 2).all()
