"""The claims table on hand-made records: each verdict, the cells it cites, the seed rule, timings, and
one-line errors for a bad claims file."""
import math

import pytest
import torch
from prunebench.api.errors import UsageError
from prunebench.metrics.uncertainty import seconds_ratio
from prunebench.report.claims import claims_table, load_claims

LABEL = "wikitext2-512x32"


def record(method, calib, seed, shift, seconds=10.0, contended=False, sparsity="0.5"):
    difficulty = 0.4 * torch.randn(32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    noise = 0.01 * torch.randn(32, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    source, shape = calib.split("-")
    windows, length = map(int, shape.split("x"))
    return {"name": f"model=m,method={method},sparsity={sparsity.replace(':', '-')},calib={calib},seed={seed}",
            "cell": {"model": "m", "method": method, "method_name": method, "sparsity": sparsity, "calibration_dataset": source,
                     "nsamples": windows, "seqlen": length, "seed": seed},
            "status": "ok", "seed": seed, "timings": {"total": seconds * (1 + 0.01 * seed)},
            "load": {"contended": contended},
            "perplexity": {LABEL: {"window_nlls": (3.0 + shift + difficulty + noise).tolist()}}}


def claim(id, a, b, expect="lower", measure="perplexity"):
    return (f"- {{id: {id}, paper: P, source: T1, claim: C, paper_number: '1.0', setting: S, measure: {measure}, "
            f"expect: {expect}, a: {{model: m, method: {a[0]}, sparsity: '0.5', calib: {a[1]}}}, "
            f"b: {{model: m, method: {b[0]}, sparsity: '0.5', calib: {b[1]}}}}}\n")


@pytest.fixture
def records():
    made = []
    for seed in range(3):
        made += [record("ace", "pydoc-16x16", seed, 0.0, seconds=4.0, contended=seed == 1),
                 record("wanda", "pydoc-16x16", seed, 0.1), record("wanda", "pydoc-16x1024", seed, 0.0, seconds=20.0),
                 record("ria", "pydoc-16x16", seed, -0.2)]
    diverged = dict(record("ace-varp", "pydoc-16x1024", 0, 0.0), status="diverged")
    return made + [record("sparsegpt", "pydoc-16x16", 0, -0.5), record("magnitude", "pydoc-16x16", 0, 0.5),
                   record("magnitude", "pydoc-16x128", 0, 0.5), diverged]


def rows(tmp_path, text, records):
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    return {row[0]: row for row in claims_table(load_claims(path), records).rows}


def test_each_verdict_from_the_interval_and_the_seeds(tmp_path, records):
    text = (claim("holds", ("ace", "pydoc-16x16"), ("wanda", "pydoc-16x16"))
            + claim("fails", ("ace", "pydoc-16x16"), ("ria", "pydoc-16x16"))
            + claim("ties", ("ace", "pydoc-16x16"), ("wanda", "pydoc-16x1024"), expect="not-worse")
            + claim("one-seed", ("sparsegpt", "pydoc-16x16"), ("magnitude", "pydoc-16x16"))
            + claim("one-vs-three", ("sparsegpt", "pydoc-16x16"), ("ace", "pydoc-16x16"))
            + claim("vs-magnitude", ("ace", "pydoc-16x16"), ("magnitude", "pydoc-16x128"))
            + claim("diverged", ("ace", "pydoc-16x16"), ("ace-varp", "pydoc-16x1024"))
            + claim("pending", ("ace", "pydoc-16x16"), ("ace-varp", "pydoc-16x16"))
            + claim("time", ("ace", "pydoc-16x16"), ("wanda", "pydoc-16x1024"), measure="pruning-seconds")
            + "- {id: out, paper: P, source: T, claim: C, paper_number: x, setting: S, untestable: no 70B here}\n")
    got = rows(tmp_path, text, records)
    verdict = {key: row[6] for key, row in got.items()}
    assert verdict == {"holds": "holds", "fails": "does not hold", "ties": "not shown to differ",
                       "one-seed": "not shown to differ", "one-vs-three": "not shown to differ", "vs-magnitude": "holds",
                       "diverged": "holds", "pending": "pending", "time": "holds",
                       "out": "not testable here"}
    assert got["holds"][4].startswith(f"{math.exp(-0.1):.3f} [") and "3 vs 3 seeds" in got["holds"][4]
    assert got["holds"][7] == "m: ace 0.5 pydoc-16x16 (seeds 0, 1, 2) vs wanda 0.5 pydoc-16x16 (seeds 0, 1, 2)"
    assert got["time"][4].startswith("0.200 [") and "1 of the timings taken on a loaded machine" in got["time"][4]
    assert got["out"][7] == "no 70B here"


def test_seconds_ratio_is_welchs_interval_on_log_seconds():
    from scipy.stats import t

    a, b = [2.0, 2.2, 2.1], [4.0, 4.4, 3.9]
    la, lb = torch.tensor(a).log().double(), torch.tensor(b).log().double()
    va, vb = la.var().item() / 3, lb.var().item() / 3
    df = (va + vb) ** 2 / (va * va / 2 + vb * vb / 2)
    half = t.ppf(0.975, df) * math.sqrt(va + vb)
    d = (la.mean() - lb.mean()).item()
    assert seconds_ratio(a, b) == pytest.approx((math.exp(d), math.exp(d - half), math.exp(d + half)))
    assert math.isnan(seconds_ratio([1.0], [2.0, 3.0])[1])


@pytest.mark.parametrize("text,message", [
    ("- {id: x}\n", "missing ['paper', 'source', 'claim', 'paper_number', 'setting']"),
    ("- {id: x, paper: P, source: T, claim: C, paper_number: '1', setting: S, measure: speed, expect: lower}\n",
     "give measure (perplexity, accuracy, pruning-seconds)"),
    ("{id: x}\n", "a claims file is a YAML list of claims"),
    ("- {id: x, paper: P, source: T, claim: C, paper_number: '1', setting: S, colour: red}\n", "unknown key(s) ['colour']"),
])
def test_a_bad_claims_file_is_one_line_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        load_claims(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_committed_claims_file_loads_and_names_cells_of_the_default_grid():
    from pathlib import Path

    from prunebench.grid.cells import expand
    from prunebench.grid.config import load_config

    root = Path(__file__).resolve().parents[1]
    claims = load_claims(root / "results" / "claims" / "claims.yaml")
    shapes = {(c.model.label, c.method_label, c.sparsity, f"{c.calibration_dataset}-{c.nsamples}x{c.seqlen}")
              for c in expand(load_config(root / "benchmarks.yaml")) if c.method is not None}
    for item in claims:
        for side in (item.a, item.b):
            if side is not None:
                wanted = (side.model, side.method, side.sparsity, side.calib)
                assert wanted in shapes, f"{item.id}: no grid cell {wanted}"


def test_the_committed_claims_table_is_what_the_committed_store_gives():
    from pathlib import Path

    from prunebench import ResultsStore

    root = Path(__file__).resolve().parents[1]
    table = claims_table(load_claims(root / "results" / "claims" / "claims.yaml"),
                         ResultsStore(root / "results" / "leaderboard-lengths").records())
    committed = (root / "results" / "claims" / "claims.md").read_text()
    assert committed == f"{table.title}\n\n{table.render('github')}\n", "rerun prunebench report ... --claims"
