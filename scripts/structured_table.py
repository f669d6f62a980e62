"""Print the Markdown table of results/structured-smollm2/records/*.json (perplexity next to measured speed).

Reads `prunebench prune --json` output: {"dense": record, "pruned": record} in the grid's record shape,
and the flat records of prunebench before 0.x's one-cell prune (the committed cfsp record is one)."""
import json
import sys
from pathlib import Path


def flat(output: dict) -> dict:
    """method, removed fraction, parameters, perplexities, speedups (median, min, max) and prune seconds."""
    if "pruned" not in output:  # the earlier flat record
        e, p = output["evaluation"], output["parameters"]
        speed = output.get("speed", {}).get("models", {}).get("pruned", {})
        return {"method": output["method"], "removed": p["prunable_removed_fraction"], "dense": p["dense"],
                "pruned": p["pruned"], "ppl": e["pruned_perplexity"], "dense_ppl": e.get("dense_perplexity"),
                "speedups": {case: (s["speedup"]["median"], s["speedup"]["min"], s["speedup"]["max"])
                             for case, s in speed.items()}, "seconds": output["report"]["timings"]["total"]}
    record, dense = output["pruned"], output.get("dense") or {}
    details = record["structured"]
    label, evaluation = next(iter(record["perplexity"].items()))
    speed = (record.get("metrics") or {}).get("speed") or {}
    return {"method": record["cell"]["method"], "removed": details["removed_fraction"],
            "dense": details["parameters_before"], "pruned": details["parameters_after"],
            "ppl": evaluation["perplexity"],
            "dense_ppl": ((dense.get("perplexity") or {}).get(label) or {}).get("perplexity"),
            "speedups": {key[: -len("_speedup")]: (v["value"], v["low"], v["high"]) for key, v in speed.items()
                         if key.endswith("_speedup") and not key.startswith(("csr_", "semi_"))},
            "seconds": record["timings"]["total"]}


root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/structured-smollm2")
rows = [flat(json.loads(path.read_text())) for path in sorted((root / "records").glob("*.json"))]
cases = sorted({case for row in rows for case in row["speedups"]}, key=lambda c: (c != "prefill", c))
print(f"| method | removed (of prunable) | parameters | ppl (dense) | "
      f"{' | '.join(f'{case} speedup, median [min, max]' for case in cases)} | prune s |")
print("|---|---|---|---|" + "---|" * len(cases) + "---|")
for r in rows:
    ratios = [f"{s[0]:.2f}x [{s[1]:.2f}, {s[2]:.2f}]" if (s := r["speedups"].get(case)) else "-" for case in cases]
    dense = f" ({r['dense_ppl']:.2f})" if r["dense_ppl"] else ""
    print(f"| {r['method']} | {r['removed']:.3f} | {r['pruned']:,} / {r['dense']:,} | {r['ppl']:.2f}{dense} | "
          f"{' | '.join(ratios)} | {r['seconds']:.0f} |")
