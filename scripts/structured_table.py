"""Print the Markdown table of results/structured-smollm2/records/*.json (perplexity next to measured speed)."""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/structured-smollm2")
print("| method | removed (of prunable) | parameters | ppl (dense) | prefill speedup, median [min, max] | decode b1 | decode b4 | prune s |")
print("|---|---|---|---|---|---|---|---|")
for path in sorted((root / "records").glob("*.json")):
    r = json.loads(path.read_text())
    e, p, speed = r["evaluation"], r["parameters"], r.get("speed", {}).get("models", {}).get("pruned", {})

    def ratio(case):
        s = speed.get(case, {}).get("speedup")
        return f"{s['median']:.2f}x [{s['min']:.2f}, {s['max']:.2f}]" if s else "-"

    dense = f" ({e['dense_perplexity']:.2f})" if e.get("dense_perplexity") else ""
    print(f"| {r['method']} | {p['prunable_removed_fraction']:.3f} | {p['pruned']:,} / {p['dense']:,} | "
          f"{e['pruned_perplexity']:.2f}{dense} | {ratio('prefill')} | {ratio('decode_b1')} | {ratio('decode_b4')} | "
          f"{r['report']['timings']['total']:.0f} |")
