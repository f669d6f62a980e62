"""SparseGPT (Frantar and Alistarh 2023): OBS reconstruction with a Hessian of the layer inputs."""
from __future__ import annotations

from typing import TYPE_CHECKING

from prunebench import PruningMethod, RunningMean, SparsityTarget, Statistic, UsageError, hookimpl

if TYPE_CHECKING:
    import torch


class _RunningHessian(RunningMean):
    scale = 2.0

    def fold(self, inputs, outputs):
        # SparseGPT's add_batch: H = (2/n) sum X X^T over sequences; each window's X_w^T X_w in float32,
        # added in float64 (the reference's float32 running sum over a batch depends on the batch
        # size; see RunningMean).
        for window in self.windows(inputs):
            self.total += window.t().mm(window).double()


class InputHessian(Statistic):
    name = "hessian"
    description = "H = (2/n) sum_t x_t x_t^T, running mean over sequences; float32 per window, summed in float64 (SparseGPT)"

    def accumulator(self, linear, device, arguments):
        return _RunningHessian((linear.in_features, linear.in_features), device)


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float, retries: int, note) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp I)^-1; on failure retry with 10x the damping."""
    import torch

    damp = percdamp * torch.mean(torch.diag(hessian))
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for attempt in range(retries + 1):
        try:
            lower = torch.linalg.cholesky(hessian + damp * eye)
            return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)
        except torch.linalg.LinAlgError:
            if attempt == retries:
                raise UsageError(
                    f"SparseGPT: the Hessian is not positive definite even at damping {damp.item():.3g}; "
                    "raise --arg percdamp or damping_retries, or use more calibration samples."
                ) from None
            note(f"Cholesky failed at damping {damp.item():.3g}; retrying at 10x")
            damp = damp * 10
    raise AssertionError("unreachable")


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, target: SparsityTarget, make_mask,
                    blocksize: int = 128, percdamp: float = 0.01, damping_retries: int = 4,
                    note=lambda message: None) -> torch.Tensor:
    """Prune `weight` in place by SparseGPT's blockwise OBS updates; return the prune mask."""
    import torch

    rows, columns = weight.shape
    if target.is_n_m and blocksize % target.m:
        raise UsageError(f"SparseGPT: blocksize {blocksize} must be a multiple of M={target.m}; set --arg blocksize.")
    W = weight.float().clone()
    H = hessian.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Hinv = inverse_hessian_factor(H, percdamp, damping_retries, note)
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        diag = torch.diag(Hinv1)
        if target.is_n_m:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            # Adaptive mask: the lowest fraction s of the whole block by w^2 / [H^-1]_qq^2.
            mask1 = make_mask(W1.square() / diag.square().reshape(1, -1), target, "layer")
        for i in range(i2 - i1):
            if target.is_n_m and i % target.m == 0:
                window = W1[:, i : i + target.m].square() / diag[i : i + target.m].square().reshape(1, -1)
                mask1[:, i : i + target.m] = make_mask(window, target, "row")
            w = W1[:, i]
            d = Hinv1[i, i]
            q = w.masked_fill(mask1[:, i], 0)  # not q[mask] = 0: boolean indexing syncs a GPU every column
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        mask[:, i1:i2] = mask1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    weight.copy_(W.to(weight.dtype))
    return mask


class SparseGPT(PruningMethod):
    name = "sparsegpt"
    description = "OBS reconstruction: blockwise adaptive mask by w^2/[H^-1]_qq^2, updates the kept weights"
    version = "3"  # 2: the Hessian is summed in float64; 3: per-window float32 products, summed in float64
    statistics = ("hessian",)
    arguments = {"blocksize": 128, "percdamp": 0.01, "damping_retries": 4}

    def resolve_arguments(self, given):
        resolved = super().resolve_arguments(given)
        if resolved["blocksize"] < 1 or resolved["percdamp"] <= 0 or resolved["damping_retries"] < 0:
            raise UsageError("SparseGPT: blocksize must be >= 1, percdamp > 0 and damping_retries >= 0.")
        return resolved

    def select(self, weight, stats, context, **args):
        return None  # the mask is chosen block by block during the update

    def update(self, weight, mask, stats, context, **args):
        return sparsegpt_prune(weight, stats["hessian"], context.target, context.make_mask, note=context.note, **args)


@hookimpl
def register_statistics(register):
    register(InputHessian())


@hookimpl
def register_methods(register):
    register(SparseGPT())
