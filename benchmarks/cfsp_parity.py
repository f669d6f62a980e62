"""CFSP parity: the FFN channels prunebench's `cfsp` keeps against those the authors' own `prune_cfsp`
keeps, on the same model and the same calibration tokens, on CPU.

The authors' code is imported from a checkout of github.com/wyxscir/CFSP (`--authors DIR`, the folder
holding lib/prune.py) and run as it is, with start.sh's settings (three_w_one_wa, angular, a = b = c = 1,
`--cuda_friendly` when --round-to 128). Three adapters, none of which touches their arithmetic: their
`get_loaders` returns our calibration windows (the same tokens for both), `model.seqlen` is set, and each
decoder layer's forward computes the rotary position embeddings that transformers >= 4.48 expects the
caller to pass (their loop calls layers with attention_mask and position_ids only).

Run as it is, their code stops on SmolLM2 (pydoc 16 x 128): in block_influence a cosine that rounds
above 1 gives arccos NaN (their nan_to_num(0.5) acts on the cosine before arccos), the layer's summed
importance is NaN (layers 12, 13, 14 and 17 here) and int(NaN) raises in the threshold step. Our
`cfsp` reads such a cosine as 1; `--clamp` (the default) lets theirs do the same by clamping arccos's
argument to [-1, 1] while their code runs, and `--no-clamp` shows the failure.

    git clone https://github.com/wyxscir/CFSP /tmp/cfsp-authors
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/cfsp_parity.py --authors /tmp/cfsp-authors \
        [--sparsity 0.3] [--nsamples 16] [--seqlen 128] [--round-to 128]

Prints, per layer, the kept counts of both and the Jaccard index of the kept channel sets, then the
minimum and mean Jaccard (issue 25's criterion: every layer >= 0.98)."""
from __future__ import annotations

import argparse
import copy
from types import SimpleNamespace

import torch
from authors_code import import_authors, with_position_embeddings

import prunebench

parser = argparse.ArgumentParser()
parser.add_argument("--authors", required=True, help="a checkout of github.com/wyxscir/CFSP")
parser.add_argument("--model", default="smollm2-135m")
parser.add_argument("--calib", default="pydoc")
parser.add_argument("--nsamples", type=int, default=16)
parser.add_argument("--seqlen", type=int, default=128)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--sparsity", type=float, default=0.3)
parser.add_argument("--round-to", type=int, default=128, choices=(1, 128))
parser.add_argument("--data-dir", default="../shared/data")
parser.add_argument("--clamp", action=argparse.BooleanOptionalAction, default=True,
                    help="clamp arccos's argument to [-1, 1] while their code runs (see the docstring)")
args = parser.parse_args()


def kept_channels(dense: torch.nn.Module, pruned: torch.nn.Module) -> list[set[int]]:
    """Which of the dense model's FFN channels each pruned layer kept: its up_proj rows matched to the dense rows."""
    kept = []
    for before, after in zip(prunebench.decoder_layers(dense), prunebench.decoder_layers(pruned)):
        index = {row.numpy().tobytes(): i for i, row in enumerate(before.mlp.up_proj.weight.detach())}
        kept.append({index[row.numpy().tobytes()] for row in after.mlp.up_proj.weight.detach()})
    return kept


def authors_cfsp(model, calibration: torch.Tensor) -> None:
    prune = import_authors(args.authors, "lib.prune")
    prune.get_loaders = lambda *a, **k: ([(window.unsqueeze(0), None) for window in calibration], None)
    model.seqlen = calibration.shape[1]
    with_position_embeddings(model)
    settings = SimpleNamespace(nsamples=calibration.shape[0], seed=args.seed, pruning_ratio=args.sparsity, a=1, b=1,
                               c=1, global_metrics="angular", local_metrics="three_w_one_wa",
                               cuda_friendly=args.round_to == 128)
    arccos = torch.arccos
    if args.clamp:
        torch.arccos = lambda x: arccos(x.clamp(-1.0, 1.0))
    try:
        prune.prune_cfsp(settings, model, None, device=torch.device("cpu"))
    finally:
        torch.arccos = arccos


def main() -> None:
    torch.manual_seed(0)
    dense, tokenizer = prunebench.load_model(args.model)
    dense.eval()
    calibration = prunebench.calibration_windows(tokenizer, args.calib, args.nsamples, args.seqlen, args.seed,
                                                 data_dir=args.data_dir)
    ours = copy.deepcopy(dense)
    prunebench.structured_prune(ours, "cfsp", args.sparsity, calibration, batch_size=1, device="cpu",
                                round_to=args.round_to)
    theirs = copy.deepcopy(dense)
    with torch.no_grad():
        authors_cfsp(theirs, calibration)
    ours_kept, theirs_kept = kept_channels(dense, ours), kept_channels(dense, theirs)
    print(f"{args.model}, {args.calib} {args.nsamples}x{args.seqlen} seed {args.seed}, sparsity {args.sparsity}, "
          f"round_to {args.round_to}, authors' arccos argument clamped: {args.clamp}")
    print("layer  ours  theirs  jaccard")
    scores = []
    for layer, (a, b) in enumerate(zip(ours_kept, theirs_kept)):
        scores.append(len(a & b) / len(a | b))
        print(f"{layer:5d} {len(a):5d} {len(b):7d}  {scores[-1]:.4f}")
    print(f"min jaccard {min(scores):.4f}, mean {sum(scores) / len(scores):.4f}, "
          f"identical layers {sum(a == b for a, b in zip(ours_kept, theirs_kept))}/{len(scores)}")


if __name__ == "__main__":
    main()
