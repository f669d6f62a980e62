"""ACE (Mi et al. 2025): CosP, VarP and their product, as the README's method table defines them.

CosP: S = |W_ij| * ||X_j|| * f(L_ij), L_ij = W_ij * C_ij, C = mean_t a_t x_t^T / (||a_t||^2 + eps);
f is |.| ("abs"), max(., 0) ("clamp") or the identity ("signed"); "abs-token" takes |.| of each
token's term before averaging, C = mean_t |a_t| |x_t|^T / (||a_t||^2 + eps), so signs cannot cancel.
VarP, two readings of the paper's summary:
- "inverse": S = |W_ij| * E_s[1 / (1 - v_sj + eps)], v_sj = mean_t xhat_tj^2 over the tokens of
  calibration sequence s, with xhat_t = x_t / ||x_t|| (tokens normalised to unit length, so v < 1).
- "variance": S = |W_ij| * ||X_j|| * E_s[Var_t(x_tj)], the token variance inside each sequence
  (a Wanda-style score scaled by how much feature j varies from token to token).
VarP as a factor on other methods (the paper's later version: "Wanda+VarP", "RIA+VarP"): `wanda+varp`
and `ria+varp` score the base method's own score times F_j, VarP's per-input factor without |W|:
F_j = E_s[1 / (1 - v_sj + eps)] ("inverse") or E_s[Var_t(x_tj)] ("variance"). So wanda+varp with
"variance" is ace-varp's "variance" score, up to float rounding (the product is taken in another order).
Defaults: chosen on a tuning split disjoint from the leaderboard's test text, results/ace-ablation-tuning.
||X_j|| is taken as sqrt of Wanda's statistic, which differs from the norm over all tokens by one
constant per layer and so ranks identically.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from prunebench import Accumulator, PruningMethod, Statistic, UsageError, hookimpl
from prunebench.baselines.ria import RIA
from prunebench.baselines.wanda import Wanda

if TYPE_CHECKING:
    pass


SIGNS = ("abs", "clamp", "signed", "abs-token")
READINGS = ("inverse", "variance")


class _CosineLoss(Accumulator):
    def __init__(self, linear, device, eps, per_token_abs=False):
        import torch

        # float64 sums of float32 window sums, as RunningMean's: the batch size does not move the result.
        self.total = torch.zeros(linear.out_features, linear.in_features, dtype=torch.float64, device=device)
        self.tokens = 0
        self.eps = eps
        self.per_token_abs = per_token_abs

    def add(self, inputs, outputs, nsequences):
        # One float32 matrix product per window: sum_t (a_t / (||a_t||^2 + eps)) x_t^T (of |a_t|, |x_t|
        # if per token), added into the float64 total.
        weights = outputs / (outputs.square().sum(dim=1, keepdim=True) + self.eps)
        if self.per_token_abs:
            weights, inputs = weights.abs(), inputs.abs()
        width = inputs.shape[-1]
        for window_weights, window in zip(weights.reshape(nsequences, -1, weights.shape[-1]),
                                          inputs.reshape(nsequences, -1, width)):
            self.total.add_(window_weights.t().mm(window).double())
        self.tokens += inputs.shape[0]

    def result(self):
        return (self.total / max(self.tokens, 1)).float()


class CosineLossStatistic(Statistic):
    name = "ace_cos"
    description = "C = mean_t a_t x_t^T / (||a_t||^2 + eps) from each linear's input and output (ACE CosP)"
    needs_output = True

    def accumulator(self, linear, device, arguments):
        return _CosineLoss(linear, device, float(arguments.get("eps", 1e-6)))


class AbsoluteCosineLossStatistic(Statistic):
    name = "ace_cos_abs"
    description = "C = mean_t |a_t| |x_t|^T / (||a_t||^2 + eps): the cosine loss with |.| per token (ACE CosP, sign 'abs-token')"
    needs_output = True

    def accumulator(self, linear, device, arguments):
        return _CosineLoss(linear, device, float(arguments.get("eps", 1e-6)), per_token_abs=True)


class _PerSequence(Accumulator):
    """Mean over calibration sequences of a per-sequence, per-feature quantity."""

    def __init__(self, width, device, per_sequence):
        import torch

        self.total = torch.zeros(width, dtype=torch.float64, device=device)  # as RunningMean's: per window, then float64
        self.nsequences = 0
        self.per_sequence = per_sequence

    def add(self, inputs, outputs, nsequences):
        sequences = inputs.reshape(nsequences, -1, inputs.shape[-1])  # float32 per window, summed in float64
        self.total += self.per_sequence(sequences).double().sum(dim=0)
        self.nsequences += nsequences

    def result(self):
        return (self.total / max(self.nsequences, 1)).float()


class InverseNormStatistic(Statistic):
    name = "ace_inverse_norm"
    description = "E_s[1 / (1 - mean_t xhat_tj^2 + eps)], tokens normalised to unit length (ACE VarP, reading 'inverse')"

    def accumulator(self, linear, device, arguments):
        eps = float(arguments.get("eps", 1e-6))

        def per_sequence(x):
            unit = x / x.norm(dim=2, keepdim=True).clamp_min(1e-12)
            return 1.0 / (1.0 - unit.square().mean(dim=1) + eps)

        return _PerSequence(linear.in_features, device, per_sequence)


class TokenVarianceStatistic(Statistic):
    name = "ace_token_variance"
    description = "E_s[Var_t(x_tj)], the token variance of each input feature inside a sequence (ACE VarP, reading 'variance')"

    def accumulator(self, linear, device, arguments):
        return _PerSequence(linear.in_features, device, lambda x: x.var(dim=1, unbiased=False))


def _cosine_statistic(sign):
    return "ace_cos_abs" if sign == "abs-token" else "ace_cos"


def cosp_score(weight, input_sq_norm, cosine, sign):
    """`cosine` is the statistic named by _cosine_statistic(sign)."""
    loss = weight * cosine
    if sign in ("abs", "abs-token"):
        loss = loss.abs()
    elif sign == "clamp":
        loss = loss.clamp_min(0)
    return weight.abs() * input_sq_norm.sqrt().reshape(1, -1) * loss


def varp_score(weight, stats, reading):
    """|W| * F_j ('inverse'), or Wanda's score times F_j ('variance'); F_j is `varp_factor`."""
    if reading == "inverse":
        return weight.abs() * varp_factor(stats, reading)
    return weight.abs() * (stats["input_sq_norm"].sqrt().reshape(1, -1) * varp_factor(stats, reading))


def _check_choice(method, key, value, choices):
    if value not in choices:
        raise UsageError(f"Bad {method}.{key} '{value}': use one of {', '.join(choices)}.")


class _AceMethod(PruningMethod):
    version = "2"  # 2: statistics summed per window in float32, then in float64 (were float64 throughout)

    def resolve_arguments(self, given):
        resolved = super().resolve_arguments(given)
        if "sign" in resolved:
            _check_choice(self.name, "sign", resolved["sign"], SIGNS)
        if "reading" in resolved:
            _check_choice(self.name, "reading", resolved["reading"], READINGS)
        if resolved["eps"] <= 0:
            raise UsageError(f"Bad {self.name}.eps {resolved['eps']}: it must be positive, e.g. 1e-6.")
        return resolved

    @staticmethod
    def _varp_statistics(reading):
        return ("ace_inverse_norm",) if reading == "inverse" else ("input_sq_norm", "ace_token_variance")


class CosP(_AceMethod):
    name = "ace-cosp"
    description = "ACE CosP: |W| * ||X_j|| * f(W * C), C the token-aggregated cosine loss; per row"
    # Default chosen by results/ace-ablation-tuning: the per-token absolute loss is the only reading
    # within reach of Wanda; |aggregate| is 6x Wanda's perplexity, clamp and signed diverge.
    arguments = {"group": "row", "sign": "abs-token", "eps": 1e-6}

    def required_statistics(self, arguments):
        return ("input_sq_norm", _cosine_statistic(arguments["sign"]))

    def score(self, weight, stats, group="row", sign="abs-token", eps=1e-6):
        return cosp_score(weight, stats["input_sq_norm"], stats[_cosine_statistic(sign)], sign)


class VarP(_AceMethod):
    name = "ace-varp"
    description = "ACE VarP: |W| * E[1/(1-||X_j||^2)] ('inverse') or Wanda * token variance ('variance'); per row"
    arguments = {"group": "row", "reading": "variance", "eps": 1e-6}

    def required_statistics(self, arguments):
        return self._varp_statistics(arguments["reading"])

    def score(self, weight, stats, group="row", reading="variance", eps=1e-6):
        return varp_score(weight, stats, reading)


class Ace(_AceMethod):
    name = "ace"
    description = "ACE: the element-wise product of the CosP and VarP scores; per row"
    # Defaults chosen by results/ace-ablation-tuning: CosP's own reading (abs-token), and in the
    # product VarP's 'inverse' reading, which beats 'variance' there (though not alone).
    arguments = {"group": "row", "sign": "abs-token", "reading": "inverse", "eps": 1e-6}
    version = "3"  # 2: defaults were sign=abs, reading=variance; 3: float32 window sums, as _AceMethod's 2

    def required_statistics(self, arguments):
        return tuple(dict.fromkeys(("input_sq_norm", _cosine_statistic(arguments["sign"]))
                                   + self._varp_statistics(arguments["reading"])))

    def score(self, weight, stats, group="row", sign="abs-token", reading="inverse", eps=1e-6):
        cosine = stats[_cosine_statistic(sign)]
        return cosp_score(weight, stats["input_sq_norm"], cosine, sign) * varp_score(weight, stats, reading)


def varp_factor_statistics(reading):
    return ("ace_inverse_norm",) if reading == "inverse" else ("ace_token_variance",)


def varp_factor(stats, reading):
    """VarP's factor F_j (1 x in): E_s[1 / (1 - mean_t xhat_tj^2 + eps)] ('inverse') or E_s[Var_t(x_tj)] ('variance')."""
    return stats[varp_factor_statistics(reading)[0]].reshape(1, -1)


class _TimesVarP(_AceMethod):
    """Put before a base method's class: the base score times VarP's factor F_j (paper v2's "X+VarP")."""

    def required_statistics(self, arguments):
        return tuple(dict.fromkeys(super().required_statistics(arguments) + varp_factor_statistics(arguments["reading"])))

    def score(self, weight, stats, reading="inverse", eps=1e-6, **base_arguments):
        return super().score(weight, stats, **base_arguments) * varp_factor(stats, reading)


class WandaVarP(_TimesVarP, Wanda):
    name = "wanda+varp"
    description = ("Wanda+VarP: Wanda's |W_ij| * ||X_j|| times F_j = E_s[1/(1 - mean_t xhat_tj^2 + eps)] ('inverse') "
                   "or E_s[Var_t(x_tj)] ('variance'); per row")
    # 'inverse' by results/ace-ablation-tuning ('variance' is ace-varp's variance reading, 1.6x Wanda).
    arguments = {**Wanda.arguments, "reading": "inverse", "eps": 1e-6}


class RIAVarP(_TimesVarP, RIA):
    name = "ria+varp"
    description = ("RIA+VarP: RIA's (|W|/colsum + |W|/rowsum) * ||X_j||^a times VarP's factor F_j (as wanda+varp); "
                   "whole-matrix groups; N:M per row, optional reallocation")
    arguments = {**RIA.arguments, "reading": "inverse", "eps": 1e-6}


@hookimpl
def register_statistics(register):
    register(CosineLossStatistic())
    register(AbsoluteCosineLossStatistic())
    register(InverseNormStatistic())
    register(TokenVarianceStatistic())


@hookimpl
def register_methods(register):
    register(CosP())
    register(VarP())
    register(Ace())
    register(WandaVarP())
    register(RIAVarP())
