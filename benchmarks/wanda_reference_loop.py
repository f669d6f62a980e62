"""Wanda end to end: prunebench's pass against the Wanda authors' pruning loop, on the same tokens.

The authors' loop (locuslab/wanda, lib/prune.py `prune_wanda` with lib/layerwrapper.py `WrappedGPT`),
written here in its structure: calibration inputs captured once; per decoder layer, forward hooks on
every linear feed a float32 running mean of ||X_j||^2 (`scaler_row`), every sample runs through the
layer one at a time, each linear is pruned per output row by a stable sort of |W| sqrt(scaler_row),
and every sample runs through the pruned layer again to feed the next layer. Both runs start from the
same dense weights and the same calibration windows, and the masks are compared.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/wanda_reference_loop.py [--nsamples 32] [--seqlen 128]

Prints both times (best of --repeats, interleaved), their ratio and the share of weights whose
pruned/kept state agrees. Time it on a quiet machine."""
from __future__ import annotations

import argparse
import time

import torch

import prunebench
from prunebench.models.walk import capture_inputs, layer_output

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--nsamples", type=int, default=32)
parser.add_argument("--seqlen", type=int, default=128)
parser.add_argument("--sparsity", type=float, default=0.5)
parser.add_argument("--repeats", type=int, default=2)
args = parser.parse_args()


class ScalerRow:
    """The authors' WrappedGPT statistic: scaler_row *= n/(n+b); n += b; scaler_row += ||X_j||^2 / n, float32."""

    def __init__(self, linear: torch.nn.Linear):
        self.scaler_row = torch.zeros(linear.in_features)
        self.nsamples = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        batch = inp.shape[0] if inp.dim() == 3 else 1
        inp = inp.reshape(-1, inp.shape[-1]).t().float()
        self.scaler_row *= self.nsamples / (self.nsamples + batch)
        self.nsamples += batch
        self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / self.nsamples


@torch.no_grad()
def authors_loop(model, calibration, sparsity):
    captured = capture_inputs(model, calibration, 1, torch.device("cpu"))  # one sample per forward, as theirs
    inps = captured.hidden
    for index, layer in enumerate(prunebench.decoder_layers(model)):
        linears = prunebench.prunable_linears(layer)
        wrapped = {name: ScalerRow(linear) for name, linear in linears.items()}
        handles = [linear.register_forward_hook(lambda m, i, o, name=name: wrapped[name].add_batch(i[0].data))
                   for name, linear in linears.items()]
        calls = captured.calls[index]
        for j, hidden in enumerate(inps):
            layer_output(layer(hidden, *calls[j].args, **calls[j].kwargs))
        for handle in handles:
            handle.remove()
        for name, linear in linears.items():
            metric = linear.weight.data.abs() * torch.sqrt(wrapped[name].scaler_row.reshape(1, -1))
            mask = torch.zeros_like(metric, dtype=torch.bool)
            indices = torch.sort(metric, dim=-1, stable=True)[1][:, :int(metric.shape[1] * sparsity)]
            mask.scatter_(1, indices, True)
            linear.weight.data[mask] = 0
        inps = [layer_output(layer(hidden, *calls[j].args, **calls[j].kwargs)) for j, hidden in enumerate(inps)]


def zeros(model):
    return torch.cat([linear.weight.detach().flatten() == 0 for layer in prunebench.decoder_layers(model)
                      for linear in prunebench.prunable_linears(layer).values()])


model, tokenizer = prunebench.load_model(args.model)
model.eval()
calibration = prunebench.sample_calibration(tokenizer, prunebench.calibration_documents("pydoc"), args.nsamples,
                                            args.seqlen)
dense = [p.detach().clone() for p in model.parameters()]


def restore():
    with torch.no_grad():
        for p, d in zip(model.parameters(), dense):
            p.copy_(d)


model(input_ids=calibration[:1, :16], use_cache=False)  # warm-up
times = {"prunebench": [], "authors' loop": []}
masks = {}
for _ in range(args.repeats):
    for name in times:
        restore()
        start = time.perf_counter()
        if name == "prunebench":
            prunebench.prune(model, "wanda", args.sparsity, calibration, progress=False, device="cpu")
        else:
            authors_loop(model, calibration, args.sparsity)
        times[name].append(time.perf_counter() - start)
        masks[name] = zeros(model)
ours, theirs = min(times["prunebench"]), min(times["authors' loop"])
agree = (masks["prunebench"] == masks["authors' loop"]).double().mean().item()
print(f"{args.model}, wanda {args.sparsity}, {args.nsamples} x {args.seqlen}, {torch.get_num_threads()} threads, "
      f"best of {args.repeats}")
print(f"prunebench {ours:.2f} s, authors' loop {theirs:.2f} s: ratio {ours / theirs:.3f} (target <= 0.6)")
differ = int((masks["prunebench"] != masks["authors' loop"]).sum())
print(f"masks agree on {agree:.6%} of the weights ({differ} differ)")
