"""The results/cfsp-recovery table: perplexity of CFSP at 30% without recovery and after LoRA recovery
(capacity by importance, uniform), each with its window bootstrap interval, and the paired ratio of each
recovered model to the unrecovered one (same 32 windows), from the `prunebench prune --json` records."""
import ast
import json
from pathlib import Path

from prunebench import perplexity_estimate, perplexity_ratio

RECORDS = Path(__file__).resolve().parents[1] / "results" / "cfsp-recovery" / "records"


def nlls(name: str) -> list[float]:
    (result,) = json.loads((RECORDS / f"{name}.json").read_text())["pruned"]["perplexity"].values()
    return result["window_nlls"]


def recovery(name: str) -> dict:
    pruned = json.loads((RECORDS / f"{name}.json").read_text())["pruned"]
    note = next((n for n in pruned.get("notes", []) if n.startswith("recovery: ")), None)
    return ast.literal_eval(note.removeprefix("recovery: ")) if note else {}  # the engine writes the dict's repr


print("| recovery | perplexity [95%] | ratio to none [95%, paired] | trainable params | LoRA s | layer ranks |")
print("|---|---|---|---|---|---|")
for name in ("none", "importance", "uniform"):
    estimate = perplexity_estimate([nlls(name)])
    ratio = perplexity_ratio([nlls("none")], [nlls(name)]) if name != "none" else None
    details = recovery(name)
    ratio_text = f"{ratio.value:.3f} [{ratio.low:.3f}, {ratio.high:.3f}]" if ratio else ""
    ranks = details.get("layer_ranks")
    print(f"| {name} | {estimate.value:.2f} [{estimate.low:.2f}, {estimate.high:.2f}] | {ratio_text} | "
          f"{details.get('trainable', '')} | {details.get('seconds', '')} | "
          f"{'min ' + str(min(ranks)) + ', max ' + str(max(ranks)) if ranks else ('8 everywhere' if details else '')} |")
versus = perplexity_ratio([nlls("uniform")], [nlls("importance")])
print(f"\nimportance / uniform, paired over the same windows: {versus.value:.4f} [{versus.low:.4f}, {versus.high:.4f}]")
