"""Report tables with uncertainty, on hand-made records: intervals, seeds, bold only when significant,
daggers for ties, footnotes, old records without per-window data, contended timings, all formats."""
import csv
import io
import math
import re

import torch
from prunebench.report.quality_tables import perplexity_tables, task_tables
from prunebench.report.tables import timing_tables, write_report
from prunebench.store.results import ResultsStore

LABEL = "text-32x50"


def nlls(shift: float = 0.0, noise: float = 0.0, seed: int = 0, count: int = 50) -> list[float]:
    """Per-window NLLs: shared window difficulty (the same text for every method) plus a method's own
    noise, both centred, so the perplexity is exactly 90 e^shift."""
    difficulty = 0.4 * torch.randn(count, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    own = noise * torch.randn(count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (math.log(90) + shift + difficulty - difficulty.mean() + own - own.mean()).tolist()


def record(method: str, windows: list | None, *, sparsity="0.5", seqlen=16, seed=0, correct=None, timings=None,
           load=None) -> dict:
    dense = method == "dense"
    finite = windows and all(w is not None for w in windows)
    result = {"perplexity": math.exp(sum(windows) / len(windows)) if finite else None}
    if windows is not None:
        result["window_nlls"] = windows
    made = {"name": f"{method}-{sparsity}-{seqlen}-{seed}", "status": "ok" if result["perplexity"] else "diverged",
            "cell": {"model": "m", "model_source": "m", "method": method, "sparsity": None if dense else sparsity,
                     "seqlen": None if dense else seqlen, "seed": None if dense else seed},
            "perplexity": {LABEL: result}}
    if correct is not None:
        made["tasks"] = {"task": {"acc": sum(correct) / len(correct), "correct": {"acc": correct}},
                         "mean_acc": sum(correct) / len(correct)}
    if timings is not None:
        made["timings"] = timings
    if load is not None:
        made["load"] = load
    return made


def seeded(method: str, shift: float = 0.0, noise: float = 0.0, seed: int = 0) -> list[dict]:
    """Three calibration seeds of one method: the same windows, a seed's own tiny offset (marks need 3 seeds)."""
    return [record(method, [w + jitter for w in nlls(shift, noise, seed)], seed=s)
            for s, jitter in enumerate((0.0, 1e-4, -1e-4))]


def rows_of(table: str) -> dict[str, list[str]]:
    """A github table's rows: the label, then the cells."""
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines}


def test_a_significantly_best_cell_is_bold_with_its_interval():
    records = [record("dense", nlls(-1.0)), *seeded("wanda"), *seeded("magnitude", 0.5, 0.05, 1),
               *seeded("ria", 0.2, 0.05, 2)]
    [(title, table), (ratio_title, ratios)] = perplexity_tables(records)
    rows = rows_of(table)
    assert re.fullmatch(r"\*\*90\.00\*\* ± [\d.]+ \[[\d.]+, [\d.]+\]", rows["wanda"][0])
    assert "†" not in table and "**bold**: best in its column" in table
    low, high = map(float, re.search(r"\[([\d.]+), ([\d.]+)\]", rows["wanda"][0]).groups())
    assert low < 90 < high
    assert re.fullmatch(r"33\.\d\d \[[\d.]+, [\d.]+\]", rows["dense"][0])  # dense has its interval, never ranked
    # The ratio table: magnitude's perplexity is e^0.5 times wanda's, significantly.
    assert "relative to wanda" in ratio_title
    ratio = rows_of(ratios)["magnitude"][0]
    assert ratio.startswith(f"{math.exp(0.5):.3f}*") and "significant difference" in ratios
    assert "wanda" not in rows_of(ratios)


def test_cells_tied_with_the_best_get_daggers_and_nothing_is_bold():
    # ria equals wanda up to window noise: not shown to differ, so both carry daggers.
    records = [*seeded("wanda"), *seeded("ria", 0.0, 0.05, 3), *seeded("magnitude", 0.5, 0.05, 1)]
    [(_, table), _] = perplexity_tables(records)
    rows = rows_of(table)
    assert "†" in rows["wanda"][0] and "†" in rows["ria"][0] and "†" not in rows["magnitude"][0]
    assert "**" not in "".join(c for cells in rows.values() for c in cells)
    assert "†: the best in its column and the cells statistically tied with it" in table
    # Two identical methods are tied, never bold.
    [(_, same), _] = perplexity_tables([*seeded("wanda"), *seeded("ria")])
    assert rows_of(same)["wanda"][0].startswith("90.00†") and rows_of(same)["ria"][0].startswith("90.00†")
    # One calibration seed each: too few to say anything is best or tied, so nothing is marked.
    [(_, single), (_, ratios)] = perplexity_tables([record("wanda", nlls()), record("magnitude", nlls(0.5, 0.05, 1))])
    assert "†" not in single and "**" not in single and "*" not in rows_of(ratios)["magnitude"][0]


def test_several_seeds_show_mean_std_and_a_two_level_interval():
    records = [record("wanda", nlls(0.1 * (seed - 1), 0.05, seed), seed=seed) for seed in range(3)]
    records += [record("magnitude", nlls(0.5, 0.05, 7))]
    [(_, table), _] = perplexity_tables(records)
    cell = rows_of(table)["wanda"][0]
    values = [r["perplexity"][LABEL]["perplexity"] for r in records[:3]]
    mean = sum(values) / 3
    std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
    assert re.fullmatch(rf"(\*\*)?{mean:.2f}(\*\*|†)? ± {std:.1f} \[[\d.]+, [\d.]+\]", cell)
    assert "± std over 3 calibration seeds" in table and "t interval over the seeds and the windows" in table


def test_old_records_without_window_nlls_render_without_interval_and_never_bold():
    records = [record("wanda", nlls()), record("magnitude", nlls(0.5, 0.05, 1))]
    for r in records:
        del r["perplexity"][LABEL]["window_nlls"]
    [(_, table), (_, ratios)] = perplexity_tables(records)
    rows = rows_of(table)
    assert rows["wanda"][0] == "90.00†" and rows["magnitude"][0] == f"{90 * math.exp(0.5):.2f}"
    assert "[" not in "".join(rows["wanda"] + rows["magnitude"])
    assert "no interval: 2 cell(s)" in table and "**" not in table.split("\n\n")[0]
    assert rows_of(ratios)["magnitude"][0] == f"{math.exp(0.5):.3f}"  # the ratio alone, untested
    # A mix: the new record gets its interval; the old one, though better, cannot be bold.
    mixed = [record("wanda", nlls(0.3)), dict(record("ria", None), perplexity={LABEL: {"perplexity": 50.0}})]
    [(_, table), _] = perplexity_tables(mixed)
    assert rows_of(table)["ria"][0] == "50.00†" and "[" in rows_of(table)["wanda"][0]


def test_a_diverged_cell_says_so():
    records = [record("wanda", nlls()), record("nan-maker", [None] * 50)]  # the store's nulls for infinities
    [(_, table), (_, ratios)] = perplexity_tables(records)
    assert rows_of(table)["nan-maker"][0] == "diverged" and rows_of(ratios)["nan-maker"][0] == "diverged"


def test_latex_and_csv_carry_the_same_marks_and_intervals():
    records = [*seeded("wanda"), *seeded("ria", 0.0, 0.05, 3), *seeded("magnitude", 0.5, 0.05, 1)]
    [(_, latex), _] = perplexity_tables(records, "latex")
    assert "$^\\dagger$" in latex and "\\begin{tabular}" in latex and "\\footnotesize" in latex
    assert re.search(r"90\.00\$\^\\dagger\$ \$\\pm\$ [\d.]+ \[[\d.]+, [\d.]+\]", latex)
    [(_, text), (_, ratio_text)] = perplexity_tables(records, "csv")
    rows = {row["method"]: row for row in csv.DictReader(io.StringIO(text))}
    assert rows["wanda"]["50% L=16 mark"] == "tied" and rows["magnitude"]["50% L=16 mark"] == ""
    assert float(rows["wanda"]["50% L=16 low"]) < float(rows["wanda"]["50% L=16"]) < float(rows["wanda"]["50% L=16 high"])
    assert float(rows["wanda"]["50% L=16 std"]) > 0
    ratio = {row["method"]: row for row in csv.DictReader(io.StringIO(ratio_text))}["magnitude"]
    assert ratio["50% L=16 mark"] == "significant" and float(ratio["50% L=16 low"]) > 1


def test_accuracy_tables_bold_only_a_significant_best_and_compare_with_the_reference():
    generator = torch.Generator().manual_seed(5)
    good = (torch.rand(300, generator=generator) < 0.6).int().tolist()
    bad = [c if i % 3 else 0 for i, c in enumerate(good)]  # a third of the items lost

    def three_seeds(method, window_nlls, correct):
        return [record(method, window_nlls, correct=correct, seed=s) for s in range(3)]

    records = [*three_seeds("wanda", nlls(), good), *three_seeds("magnitude", nlls(0.5, 0.05, 1), bad),
               *three_seeds("ria", nlls(0.0, 0.05, 2), good)]
    [(_, table), (difference_title, differences)] = task_tables(records)
    rows = rows_of(table)
    # wanda and ria answer the same items: tied. Both beat magnitude, but a tie at the top means no bold.
    assert rows["wanda 0.5 L=16"][1].startswith(f"{sum(good) / 3:.2f}†")
    assert "**" not in rows["magnitude 0.5 L=16"][1] and "t interval over the seeds and the items" in table
    assert "minus wanda's" in difference_title
    difference = rows_of(differences)["magnitude 0.5 L=16"][1]
    lost = -100 * sum(good[0::3]) / 300
    assert difference.startswith(f"{lost:.2f}*") and rows_of(differences)["ria 0.5 L=16"][1].startswith("0.00 [")
    [(_, alone), _] = task_tables(records[:6])
    assert rows_of(alone)["wanda 0.5 L=16"][1].startswith(f"**{sum(good) / 3:.2f}**")
    # One calibration seed each: the Wilson interval, and too few seeds to mark anything.
    [(_, single), (_, single_differences)] = task_tables([records[0], records[3]])
    assert "Wilson" in single and "**" not in single and "†" not in single
    assert "*" not in rows_of(single_differences)["magnitude 0.5 L=16"][1]


def test_timings_mark_contention_never_bold_it_and_add_up():
    def timings(forward, score, update, total):
        return {"calibration_forward": forward, "score_mask": score, "weight_update": update, "total": total}

    busy = {"start": {"loadavg1": 3.5, "busy_cpu_share": 0.9}, "end": {"loadavg1": 4.0, "busy_cpu_share": 0.8},
            "contended": True}
    quiet = {"start": {"loadavg1": 0.1, "busy_cpu_share": 0.05}, "end": {"loadavg1": 0.2, "busy_cpu_share": 0.04},
             "contended": False}
    records = [record("wanda", nlls(), timings=timings(1.0, 0.5, 0.1, 1.8), load=busy),
               record("ria", nlls(), timings=timings(1.5, 0.5, 0.1, 2.5), load=quiet)]
    [(_, totals), (_, parts)] = timing_tables(records)
    rows = rows_of(totals)
    assert rows["m / wanda"] == ["1.80*"] and rows["m / ria"] == ["**2.50**"]
    assert "never bold" in totals
    part_rows = rows_of(parts)
    assert part_rows["m / wanda / 50% L=16"][:5] == ["1.00", "0.50", "0.10", "0.20", "1.80*"]
    assert part_rows["m / wanda / 50% L=16"][5:] == ["3.50→4.00", "90%→80%"]


def test_write_report_puts_the_reading_guide_first_and_csv_notes_beside(tmp_path):
    store = ResultsStore(tmp_path / "results")
    for made in [record("dense", nlls(-1.0)), record("wanda", nlls()), record("magnitude", nlls(0.5, 0.05, 1))]:
        store.write(made)
    text = write_report(tmp_path / "results", out=tmp_path / "report")
    assert text.startswith("How to read these tables") and (tmp_path / "report" / "tables.md").read_text() == text
    write_report(tmp_path / "results", "csv", tmp_path / "csv")
    notes = (tmp_path / "csv" / "notes.md").read_text()
    assert notes.startswith("How to read these tables") and "table-1.csv: m, text-32x50 perplexity" in notes
    assert "[low, high]: 95% interval" in notes


def test_plots_are_byte_stable(tmp_path):
    from prunebench.report.plots import write_plots

    records = [record("dense", nlls(-1.0)), record("wanda", nlls(), timings={"total": 1.0}),
               record("wanda", nlls(0.4), sparsity="2:4", timings={"total": 1.0})]
    first = sorted(write_plots(records, tmp_path / "a", resamples=200))
    second = sorted(write_plots(records, tmp_path / "b", resamples=200))
    assert [p.name for p in first] == [p.name for p in second]
    assert {"ppl-vs-sparsity_m_text-32x50.svg", "time-vs-ppl_m_text-32x50.png"} <= {p.name for p in first}
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert b"Matplotlib v" not in (tmp_path / "a" / "ppl-vs-sparsity_m_text-32x50.svg").read_bytes()


def test_window_counts_at_one_length_are_separate_columns_and_lines(tmp_path):
    from prunebench.report.plots import write_plots

    def shaped(method, windows, seqlen, seed, shift):
        made = record(method, nlls(shift, 0.05, seed), seqlen=seqlen, seed=seed)
        made["cell"]["nsamples"] = windows
        made["name"] += f"-{windows}"
        return made

    records = [record("dense", nlls(-1.0))]
    for seed in range(3):
        records += [shaped("wanda", 16, 16, seed, 0.3), shaped("wanda", 128, 16, seed, 0.1),
                    shaped("wanda", 16, 128, seed, 0.0), shaped("wanda", 2, 1024, seed, 0.05),
                    shaped("wanda", 16, 1024, seed, -0.1)]
    [(_, table), _] = perplexity_tables(records)
    header = table.splitlines()[0]
    assert "50% L=16, 16 windows" in header and "50% L=16, 128 windows" in header and "50% L=128, 16 windows" in header
    columns = [c.strip().rstrip(" ↓") for c in header.split("|")[2:-1]]
    assert rows_of(table)["wanda"][columns.index("50% L=16, 128 windows")].startswith(f"{90 * math.exp(0.1):.2f}")
    written = write_plots(records, tmp_path)
    assert any(p.name.startswith("ppl-vs-length") for p in written)
    # Without varied counts the columns keep their old names.
    single = [r for r in records if r["cell"].get("nsamples") in (None, 16)]
    assert "50% L=16 " in perplexity_tables(single)[0][1].splitlines()[0] + " "


def test_recovery_arrows_join_each_method_to_its_lora_twin():
    from types import SimpleNamespace

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from prunebench.report.plots import _recovery_arrows

    def point(method, sparsity, x, value):
        return (method, sparsity, 128, (x, None, None), SimpleNamespace(value=value))

    points = [point("cfsp", "0.4", 1.3, 80.0), point("cfsp+lora", "0.4", 1.3, 60.0), point("cfsp", "0.6667", 1.6, 200.0),
              point("flap", "0.3", 1.2, 90.0)]
    style = {m: {"color": "black"} for m in ("cfsp", "cfsp+lora", "flap")}
    figure, axes = plt.subplots()
    assert _recovery_arrows(axes, points, 1.0, style) == 1
    [arrow] = axes.texts
    assert arrow.xy == (1.3, 60.0) and arrow.xyann == (1.3, 80.0)
    plt.close(figure)
