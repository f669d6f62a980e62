"""ACE ablation on SmolLM2: CosP sign handling, VarP reading, and their product, against Wanda.

Each configuration prunes the same dense model (restored from memory between runs) at 50% and
2:4 with pydoc calibration of several lengths, and is scored by WikiText-2 test perplexity.
Records are appended one JSON line per run (a rerun skips what is there); the table is rebuilt
from the records at the end.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from tabulate import tabulate

CONFIGS = [
    ("wanda", {}),
    ("ace-cosp", {"sign": "abs"}), ("ace-cosp", {"sign": "clamp"}), ("ace-cosp", {"sign": "signed"}),
    ("ace-cosp", {"sign": "abs-token"}),
    ("ace-varp", {"reading": "inverse"}), ("ace-varp", {"reading": "variance"}),
    ("ace", {"sign": "abs", "reading": "inverse"}), ("ace", {"sign": "abs", "reading": "variance"}),
    ("ace", {"sign": "clamp", "reading": "inverse"}), ("ace", {"sign": "clamp", "reading": "variance"}),
]


def label(method: str, args: dict) -> str:
    return method + "".join(f" {k}={v}" for k, v in args.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="results/ace-ablation")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--lengths", default="16,128,1024")
    parser.add_argument("--sparsities", default="0.5,2:4")
    parser.add_argument("--eval-windows", type=int, default=8)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--table-only", action="store_true", help="rebuild table.md from the records, run nothing")
    args = parser.parse_args()
    out = Path(args.out)
    if args.table_only:
        write_table(out / "records.jsonl", out)
        return

    import torch

    import prunebench
    from prunebench.data import calibration_documents, evaluation_text, sample_calibration, tokenize_text
    from prunebench.evaluate import perplexity
    from prunebench.models import load_model

    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "records.jsonl"
    done = set()
    if records_path.exists():
        done = {(r["label"], r["sparsity"], r["seqlen"]) for r in map(json.loads, records_path.read_text().splitlines())}

    model, tokenizer = load_model("smollm2-135m")
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    eval_ids = tokenize_text(tokenizer, evaluation_text("wikitext2", args.data_dir))
    documents = calibration_documents("pydoc")
    dense_ppl = perplexity(model, eval_ids, 512, args.eval_windows).perplexity
    for seqlen in map(int, args.lengths.split(",")):
        calibration = sample_calibration(tokenizer, documents, args.nsamples, seqlen, seed=0)
        for sparsity in args.sparsities.split(","):
            for method, method_args in CONFIGS:
                key = (label(method, method_args), sparsity, seqlen)
                if key in done:
                    continue
                model.load_state_dict(dense)
                report = prunebench.prune(model, method, sparsity, calibration, progress=False, **method_args)
                ppl = perplexity(model, eval_ids, 512, args.eval_windows).perplexity
                record = {"label": key[0], "method": method, "arguments": report.arguments, "sparsity": sparsity,
                          "seqlen": seqlen, "nsamples": args.nsamples, "perplexity": ppl if math.isfinite(ppl) else None,
                          "dense_perplexity": dense_ppl, "eval_windows": args.eval_windows,
                          "prune_seconds": report.timings["total"], "torch_threads": torch.get_num_threads()}
                with records_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(json.dumps(record), flush=True)

    write_table(records_path, out)


def write_table(records_path: Path, out: Path) -> None:
    """The ablation table, rebuilt from every record (best ACE value per column in bold)."""
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    columns = sorted({(r["sparsity"], r["seqlen"]) for r in records}, key=lambda c: (":" in c[0], c[0], c[1]))
    values = {(r["label"], r["sparsity"], r["seqlen"]): r["perplexity"] for r in records}
    ace_labels = [label(m, a) for m, a in CONFIGS if m.startswith("ace")]
    best = {c: min(values[(l, *c)] for l in ace_labels if values.get((l, *c))) for c in columns}
    rows = []
    for method, method_args in CONFIGS:
        name = label(method, method_args)
        row = [name]
        for column in columns:
            value = values.get((name, *column))
            text = "diverged" if value is None else (f"{value:.2f}" if value < 1e5 else f"{value:.2e}")
            row.append(f"**{text}**" if value is not None and value == best[column] else text)
        rows.append(row)
    headers = ["method"] + [f"{s} L={l} ↓" for s, l in columns]
    first = records[0]
    (out / "table.md").write_text(
        f"WikiText-2 test perplexity (lower is better) of SmolLM2-135M pruned at 50% and 2:4, dense "
        f"{first['dense_perplexity']:.2f}; {first['nsamples']} pydoc calibration windows of length L, seed 0; the "
        f"first {first['eval_windows']} windows of 512 tokens. Best ACE variant per column in bold.\n\n"
        + tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True) + "\n"
    )


if __name__ == "__main__":
    main()
