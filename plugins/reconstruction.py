"""Per-linear reconstruction error of a pruned model: a metric plugin written against the public API only.

For every prunable linear of every decoder layer (the linears pruning touches, `prunebench.prunable_linears`)

    e = ||X (W - W0)^T||_F / ||X W0^T||_F

with W0 the dense weight (`context.dense_model()`), W the pruned weight (`context.model`, same module name)
and X the linear's input in the DENSE model on held-out windows: the first `windows` non-overlapping
`seqlen`-token windows of the dataset's evaluation text (pydoc's is its 1-in-5 held-out topics, disjoint
from pydoc calibration documents). X W0^T is the dense linear's own output without its bias. Both squared
norms are summed in float64 inside forward hooks on the dense copy (no activation is kept), the products
in the model's dtype, at least float32; the forward stops after the last decoder layer (no LM head).
A structured cell's model has fewer rows or columns: the per-weight formula does not apply, and the
result says so. With `directory`, a per-layer plot of each cell is kept as
`<directory>/<cell>/reconstruction.png` (also `plot_reconstruction(record_or_result, path)`).
"""
from __future__ import annotations

import math
from pathlib import Path

from prunebench import (
    PRUNED,
    Metric,
    MetricContext,
    Value,
    decoder_layers,
    evaluation_windows,
    hookimpl,
    on_device,
    prunable_linears,
    window_problems,
)

STRUCTURED_NOTE = ("structured cell: whole heads, channels or layers were removed, so the pruned weights have "
                   "other shapes than the dense ones and the per-weight error does not apply")
WINDOWS_PER_FORWARD = 8  # held-out windows run through the dense copy together


class _StopForward(Exception):
    """Raised after the last decoder layer: the rest of the forward (final norm, LM head) is not needed."""


class Reconstruction(Metric):
    """Per-linear normalised output error ||X (W - W0)^T|| / ||X W0^T|| on held-out inputs of the dense model."""

    name = "reconstruction"
    description = ("per-linear output error ||X (W - W0)^T||_F / ||X W0^T||_F, X the dense model's inputs on "
                   "held-out windows (pydoc's held-out topics by default): mean over linears and the worst")
    higher_is_better = False
    applies_to = (PRUNED,)
    needs_tokenizer = True
    settings = {"dataset": "pydoc", "windows": 8, "seqlen": 128, "directory": None}
    values = (Value("mean", "mean output error", False, decimals=4),
              Value("worst", "worst linear's output error", False, decimals=4))

    def check(self, settings: dict) -> list[str]:
        return window_problems(self.name, settings)

    def compute(self, context: MetricContext, dataset: str, windows: int, seqlen: int, directory: str | None) -> dict:
        if context.structured:
            return {"note": STRUCTURED_NOTE}
        dense = context.dense_model()
        pruned = dict(context.model.named_modules())
        names = {id(module): name for name, module in dense.named_modules()}
        layers = decoder_layers(dense)
        linears = [(index, relative, names[id(linear)], linear) for index, layer in enumerate(layers)
                   for relative, linear in prunable_linears(layer).items()]
        if any(pruned.get(name) is None or pruned[name].weight.shape != linear.weight.shape
               for _, _, name, linear in linears):
            return {"note": STRUCTURED_NOTE}
        sums = self._squared_norms(context, dense, layers, linears, pruned,
                                   evaluation_windows(context, dataset, windows, seqlen))
        per_linear = {name: math.sqrt(sums[name][0] / sums[name][1]) if sums[name][1] > 0 else 0.0
                      for _, _, name, _ in linears}
        per_layer: dict[str, list] = {}
        for index, relative, name, _ in linears:
            per_layer.setdefault(relative, [None] * len(layers))[index] = per_linear[name]
        worst = max(per_linear, key=per_linear.get)
        result = {"mean": sum(per_linear.values()) / len(per_linear), "worst": per_linear[worst], "worst_linear": worst,
                  "per_linear": per_linear, "per_layer": per_layer, "windows": windows, "seqlen": seqlen,
                  "dataset": dataset}
        if directory is not None:
            cell = context.cell or f"{context.method}-{context.sparsity}"
            result["plot"] = str(plot_reconstruction(result, Path(directory) / cell / "reconstruction.png"))
        return result

    @staticmethod
    def _squared_norms(context, dense, layers, linears, pruned, batch) -> dict:
        """{linear name: [||X (W - W0)^T||^2, ||X W0^T||^2]} summed in float64 over the windows."""
        import torch

        sums = {name: [0.0, 0.0] for _, _, name, _ in linears}
        device = torch.device(context.device)

        def hook(name, linear):
            def accumulate(module, args, output):
                x = args[0].reshape(-1, args[0].shape[-1])
                dtype = torch.promote_types(x.dtype, torch.float32)
                x = x.to(dtype)
                w0 = linear.weight.to(dtype)
                w = pruned[name].weight.to(device=x.device, dtype=dtype)
                sums[name][0] += float((x @ (w - w0).T).double().pow(2).sum())
                sums[name][1] += float((x @ w0.T).double().pow(2).sum())
            return accumulate

        def stop(module, args, output):
            raise _StopForward

        handles = [linear.register_forward_hook(hook(name, linear)) for _, _, name, linear in linears]
        handles.append(layers[-1].register_forward_hook(stop))
        try:
            with torch.no_grad(), on_device(dense, device):
                for first in range(0, batch.shape[0], WINDOWS_PER_FORWARD):
                    try:
                        dense(batch[first:first + WINDOWS_PER_FORWARD].to(device), use_cache=False)
                    except _StopForward:
                        pass
        finally:
            for handle in handles:
                handle.remove()
        return sums


def plot_reconstruction(record_or_result: dict, path: str | Path) -> Path:
    """A PNG of one cell's per-layer errors (decoder layer index on x, error on y, one line per linear kind
    such as q_proj or down_proj) from its reconstruction result or its whole record; the path written."""
    result = record_or_result
    if "per_layer" not in result and "note" not in result:  # a whole record
        result = (record_or_result.get("metrics") or {}).get(Reconstruction.name) or {}
    if "per_layer" not in result:
        raise ValueError(f"no per-layer reconstruction errors to plot ({result.get('note', 'no result')})")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    short = {relative: relative.rsplit(".", 1)[-1] for relative in result["per_layer"]}
    if len(set(short.values())) < len(short):  # two kinds share a last name: label by the whole name
        short = {relative: relative for relative in short}
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for relative, errors in result["per_layer"].items():
        points = [(index, e) for index, e in enumerate(errors) if e is not None and math.isfinite(e)]
        axes.plot([i for i, _ in points], [e for _, e in points], marker="o", markersize=3, label=short[relative])
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("decoder layer")
    axes.set_ylabel("||X (W - W0)^T|| / ||X W0^T||")
    axes.set_title(f"reconstruction error per layer (mean {result['mean']:.4f})")
    axes.legend(fontsize="small", ncol=2)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


@hookimpl
def register_metrics(register):
    register(Reconstruction())
