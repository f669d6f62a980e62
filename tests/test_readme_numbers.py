"""Every number the README states (outside its code blocks and the report tables, which
test_readme_leaderboard checks against the report) appears verbatim in a committed file under
results/: every decimal and every comma-grouped count (plain integers are not checked: too many of
them are sizes and settings). The few numbers that quote no result are listed here with the reason."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINARY = {".png", ".svg", ".sqlite", ".pdf", ".safetensors", ".pt"}
# A decimal (not part of a version like 2.13.0) or a count grouped by commas.
NUMBER = re.compile(r"(?<![\w.,])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+)(?![\w]|\.\d)")
NOT_RESULTS = {
    "2412.15127": "an arXiv identifier",
    "13.5": "arithmetic on a public parameter count: 6.74 B parameters x 2 bytes",
    "69.0": "LLaMA-2-70B's public parameter count",
    "97.5": "the coverage bound the test asserts, not a measurement",
}


def prose() -> str:
    text = (ROOT / "README.md").read_text()
    text = re.sub(r"<!-- report .*?<!-- end report -->", "", text, flags=re.S)
    return re.sub(r"```.*?```", "", text, flags=re.S)


def committed_numbers() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "results").rglob("*"):
        if path.is_file() and path.suffix not in BINARY:
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            found.update(n.replace(",", "") for n in re.findall(r"-?\d[\d,]*\.?\d*(?:e-?\d+)?", text))
    return found


def quoted(text: str) -> list[str]:
    return NUMBER.findall(text)


def missing(text: str, numbers: set[str]) -> list[str]:
    return [n for n in quoted(text) if n not in NOT_RESULTS and n.replace(",", "") not in numbers]


def test_every_number_the_readme_quotes_is_in_a_committed_result():
    absent = missing(prose(), committed_numbers())
    assert not absent, f"README numbers found in no file under results/: {absent}"


def test_the_exemptions_are_still_in_the_readme():
    numbers = set(quoted(prose()))
    assert set(NOT_RESULTS) <= numbers, f"no longer quoted, remove from NOT_RESULTS: {set(NOT_RESULTS) - numbers}"


def test_a_number_without_a_result_is_caught():
    numbers = committed_numbers()
    assert missing("dense perplexity 28.133 and 4,065,726 groups", numbers) == []
    assert missing("a made-up perplexity of 28.1337 and 4,065,727 groups", numbers) == ["28.1337", "4,065,727"]
    assert missing("torch 2.13.0 at 127.0.0.1", numbers) == []  # versions and addresses are not numbers
