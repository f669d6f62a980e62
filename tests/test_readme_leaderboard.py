"""The README's leaderboard tables are exactly what `prunebench report` renders from the committed
store (the tables are marked in README.md; scripts/readme_tables.py rewrites them)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_tables)

MARKED = list(readme_tables.MARKED.finditer((ROOT / "README.md").read_text()))


def test_the_readme_quotes_the_default_leaderboard():
    quoted = [m["title"] for m in MARKED if m["results"] == "results/leaderboard"]
    assert any("smollm2-135m" in t and "perplexity" in t for t in quoted)
    assert any("gemma3-270m" in t and "perplexity" in t for t in quoted)
    assert any("accuracy" in t for t in quoted)


@pytest.mark.parametrize("match", MARKED, ids=lambda m: m["title"][:70])
def test_readme_table_equals_the_report(match):
    tables = readme_tables.rendered(match["results"])
    assert match["title"] in tables, f"no table titled {match['title']!r}; the report has {sorted(tables)}"
    assert match["body"] == tables[match["title"]]


def test_a_changed_number_is_caught(tmp_path):
    match = MARKED[0]
    text = match.group(0)
    changed = text.replace(match["body"], match["body"].replace("1", "7", 1))
    assert changed != text and readme_tables.updated(changed) == text


def test_the_readme_claims_table_is_what_the_store_and_the_claims_file_give():
    text = (ROOT / "README.md").read_text()
    [match] = list(readme_tables.CLAIMS.finditer(text))
    assert match["results"] == "results/leaderboard-lengths" and match["claims"] == "results/claims/claims.yaml"
    assert readme_tables.updated(match.group(0)) == match.group(0)
    changed = match.group(0).replace("pending", "holds", 1) if "pending" in match["body"] else \
        match.group(0).replace("| holds", "| does not hold", 1)
    assert changed != match.group(0) and readme_tables.updated(changed) == match.group(0)
