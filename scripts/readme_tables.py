"""Rewrite (or check) the report tables quoted in a Markdown file from the committed results.

A quoted table is marked by its results directory and the title of the `prunebench report` table:

    <!-- report results/leaderboard: smollm2-135m, wikitext2-512x64 perplexity (lower is better) -->
    | method | ... |
    <!-- end report -->

The claims table is marked by its results directory and claims file:

    <!-- claims results/leaderboard-lengths results/claims/claims.yaml -->
    | id | ... |
    <!-- end claims -->

    python scripts/readme_tables.py            # rewrite README.md's marked tables
    python scripts/readme_tables.py --check    # exit 1 when one differs (tests/test_readme_leaderboard.py)
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = re.compile(r"(?P<open><!-- claims (?P<results>\S+) (?P<claims>\S+) -->\n)(?P<body>.*?)(?P<close><!-- end claims -->)", re.S)
MARKED = re.compile(r"(?P<open><!-- report (?P<results>\S+): (?P<title>.+?) -->\n)(?P<body>.*?)(?P<close><!-- end report -->)", re.S)


@functools.lru_cache(maxsize=None)
def rendered(results: str) -> dict[str, str]:
    """{title: github Markdown} of every table `prunebench report` makes from ROOT/results."""
    from prunebench import ResultsStore, report_tables

    records = ResultsStore(ROOT / results).records()
    return {table.title: table.render("github").strip() + "\n" for table in report_tables(records)}


def updated(text: str) -> str:
    """`text` with every marked table replaced by the report's; a title the report lacks is an error."""
    def replace(match: re.Match) -> str:
        tables = rendered(match["results"])
        if match["title"] not in tables:
            sys.exit(f"No table titled {match['title']!r} in the report of {match['results']}; it has: "
                     + "; ".join(sorted(tables)))
        return match["open"] + tables[match["title"]] + match["close"]

    def claims(match: re.Match) -> str:
        from prunebench import ResultsStore, claims_table

        table = claims_table(ROOT / match["claims"], ResultsStore(ROOT / match["results"]).records())
        return match["open"] + table.render("github").strip() + "\n" + match["close"]

    return CLAIMS.sub(claims, MARKED.sub(replace, text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("markdown", nargs="?", default=str(ROOT / "README.md"))
    parser.add_argument("--check", action="store_true", help="only say whether the tables are current (exit 1 if not)")
    args = parser.parse_args()
    path = Path(args.markdown)
    text = path.read_text()
    new = updated(text)
    if args.check:
        sys.exit(0 if new == text else f"{path}: quoted report tables differ from the results; "
                 "run python scripts/readme_tables.py")
    path.write_text(new)


if __name__ == "__main__":
    main()
