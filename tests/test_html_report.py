"""The static HTML report: deterministic bytes, nothing fetched from the network, a page per cell with the
command that reproduces it, structured cells listed apart with what they removed; and in headless
Chromium: a screenshot, sorting, filtering, the efficiency metrics' columns in view at laptop width,
following a link."""
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from prunebench.cli.main import build_parser, main
from prunebench.grid.config import load_config
from prunebench.grid.runner import parse_filters, select_cells
from prunebench.report.html_record import reproduce_command
from prunebench.report.site import write_site
from prunebench.store.results import ResultsStore
from synthetic_leaderboard import FLAP_KEPT, SHORTGPT_REMOVED, records, structured_records, write_results

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "smollm2-leaderboard"


def with_efficiency(made: list[dict]) -> list[dict]:
    """The records with size (every finished cell), memory and speed (pruned cells) results, shaped as the
    built-in efficiency metrics write them: the index gains their columns, the site their tables. Structured
    records keep their own (memory and speed)."""
    for index, record in enumerate(made):
        if record["status"] != "ok" or record.get("kind") == "structured":
            continue
        pruned = record["cell"]["method"] != "dense"
        record["metrics"] = {"size": {"sparse_bytes": 7.1e9 if pruned else 14.2e9, "dense_bytes": 13.5e9,
                                      "sparse_to_dense": 7.1 / 13.5 if pruned else 14.2 / 13.5,
                                      "nonzero_parameters": 3.4e9 if pruned else 6.7e9, "linears_2_4": 0}}
        if pruned:
            record["metrics"]["memory"] = {"peak_bytes": 14.0e9, "peak_to_dense": 1.0, "csr_peak_to_dense": 1.12}
            record["metrics"]["speed"] = {"prefill_speedup": {"value": 0.95 + index / 100, "low": 0.9, "high": 1.2},
                                          "decode_b1_speedup": {"value": 1.01, "low": 0.98, "high": 1.04}}
    return made


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The synthetic leaderboard's site, efficiency metrics and two structured cells included, written once
    for every test here (the bootstrap takes seconds)."""
    results = tmp_path_factory.mktemp("results")
    store = ResultsStore(results)
    for record in with_efficiency(records() + structured_records()):
        store.write(record)
    index = write_site(results, resamples=200)
    return index.parent


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_same_records_give_the_same_bytes_and_nothing_is_fetched(site, tmp_path):
    again = write_site(site.parents[1], tmp_path / "again", resamples=200).parent
    assert _files(again) == _files(site)
    files = _files(site)
    assert {"index.html", "assets/report.css", "assets/report.js"} <= set(files)
    assert len([name for name in files if name.startswith("cells/")]) == 20
    assert any(name.startswith("plots/ppl-vs-length_") and name.endswith(".svg") for name in files)
    for name, data in files.items():
        if name.endswith((".html", ".css", ".js")):
            # No CDN, no web font, no remote script: the site opens offline.
            assert not re.search(rb"""(src|href)=["']?(https?:)?//|url\(["']?(https?:)?//|@import""", data), name


def test_index_has_intervals_marks_published_columns_and_a_link_per_cell(site):
    index = (site / "index.html").read_text()
    first = index.split('<table class="board" id="table-1-data">')[1].split("</table>")[0]
    # One calibration seed per cell: intervals, but no best or tied marks (too few seeds to rank).
    assert re.search(r'<span class="interval">\[[\d.]+, [\d.]+\]</span></td>', first)
    assert "<strong>" not in first and 'class="mark"' not in first
    assert "published 0.5" in first and "published 2:4" in first and ">6.42<" in first
    assert 'data-better="lower"' in first and '<tr data-method="sparsegpt">' in first
    assert '<option value="sparsegpt">sparsegpt</option>' in index
    assert 'href="cells/model_llama-2-7b_method_wanda_sparsity_2-4_calib_pydoc-16x16_seed_0.html"' in index
    assert "How to read these tables" in index and "<img src=\"plots/" in index


def test_a_cell_page_has_its_record_and_the_command_that_reproduces_it(site):
    page = (site / "cells" / "model_llama-2-7b_method_sparsegpt_sparsity_2-4_calib_pydoc-16x128_seed_0.html").read_text()
    command = ("prunebench run benchmarks.yaml --only model=llama-2-7b --only method=sparsegpt --only sparsity=2:4 "
               "--only seqlen=128 --only seed=0")
    assert f"<code>{command}</code>" in page
    for section in ("Results", "Configuration", "Timings", "Per-layer sparsity", "Provenance"):
        assert f"<h2>{section}</h2>" in page
    assert re.search(r"<td data-value=\"[\d.]+\">[\d.]+</td><td data-value=\"0\.485\">0\.4850</td>", page)
    assert "meta-llama/Llama-2-7b-hf" in page and "total" in page and "wikitext2-512x40" in page
    # Every metric of the record through the registry, with its interval (perplexity: bootstrap over the
    # windows) or the range it reports (speed: over repeats), its unit and direction.
    assert re.search(r'wikitext2-512x40 <span class="arrow" title="lower is better">↓</span></th>'
                     r'<td data-value="[\d.]+">[\d.]+<span class="interval">\[[\d.]+, [\d.]+\]</span></td>', page)
    assert re.search(r'prefill speedup x <span class="arrow" title="higher is better">↑</span></th>'
                     r'<td data-value="[\d.]+">[\d.]+<span class="interval">\[0.9, 1.2\]</span></td>', page)
    assert '<th scope="row">sparse checkpoint MB <span class="arrow" title="lower is better">↓</span></th>' \
           '<td data-value="7100">7100.00</td>' in page
    assert '<h3 id="metric-memory">memory</h3>' in page
    failed = (site / "cells" / "model_llama-2-7b_method_wanda_sparsity_0.5_calib_pydoc-16x1024_seed_0.html").read_text()
    assert "<h2>Error</h2>" in failed and "RuntimeError: out of memory" in failed
    assert "Structure removed" not in page + failed


def _rows(html: str, table_id: str) -> list[str]:
    """The body rows of a table of the page."""
    return re.findall(r"<tr[ >].*?</tr>", html.split(f'id="{table_id}"')[1].split("<tbody>")[1].split("</tbody>")[0])


def test_structured_cells_are_listed_apart_and_their_pages_show_what_was_removed(site):
    index = (site / "index.html").read_text()
    # The masked cells' list has no structured row; the model's structured list has them with the baseline.
    unstructured, structured = _rows(index, "runs-data"), _rows(index, "structured-runs-llama-2-7b-data")
    assert len(unstructured) == len(records())
    assert not [row for row in unstructured if "flap" in row or "shortgpt" in row]
    assert [re.search(r'data-method="(\w+)"', row).group(1) for row in structured] == ["dense", "flap", "shortgpt"]
    assert "<h2>llama-2-7b: every structured cell (a page each)</h2>" in index
    headers = re.findall(r"<button[^>]*>(.*?)</button>", index.split('id="structured-runs-llama-2-7b-data"')[1]
                         .split("</thead>")[0])
    assert "params kept %" in headers and "target" in headers and not [h for h in headers if "checkpoint" in h]
    assert 'data-value="51.72' in structured[1] and 'data-value="100"' in structured[0]  # params kept, dense 100
    assert "2 of them structured" in index and "never ranked together" in index
    table = index.split("structured pruning (whole heads, channels or layers removed)</h2>")[1].split("</table>")[0]
    assert "flap" in table and "wanda" not in table  # the report's own structured table, its ranking apart

    flap = (site / "cells" / "model_llama-2-7b_method_flap_sparsity_0.5_calib_pydoc-16x16_seed_0.html").read_text()
    structure = flap.split('<section id="structure">')[1].split("</section>")[0]
    assert "<h2>Structure removed</h2>" in structure and ">structured</span>" in flap
    assert '<td data-value="50">50 %</td>' in structure and ">50.23 %</td>" in structure
    assert ">6,738,415,616</td>" in structure and ">3,485,392,896</td>" in structure and ">51.72 %</td>" in structure
    assert "No decoder layer removed." in structure and "heads kept</th>" in structure
    layers = re.findall(r'<tr><th scope="row">(\d+)</th><td data-value="(\d+)">\d+</td><td data-value="(\d+)">',
                        structure)
    assert [(int(h), int(c)) for _, h, c in layers] == [(k["heads"], k["channels"]) for k in FLAP_KEPT]
    assert [int(i) for i, _, _ in layers] == list(range(32))
    assert "Per-layer sparsity" not in flap  # nothing is masked

    shortgpt = (site / "cells" / "model_llama-2-7b_method_shortgpt_sparsity_0.5_calib_pydoc-16x16_seed_0.html"
                ).read_text()
    structure = shortgpt.split('<section id="structure">')[1].split("</section>")[0]
    assert f"Removed decoder layers (16): {', '.join(map(str, SHORTGPT_REMOVED))}." in structure
    fates = re.findall(r'<tr><th scope="row">(\d+)</th><td>(kept|removed)</td><td data-value', structure)
    assert [int(i) for i, fate in fates if fate == "removed"] == SHORTGPT_REMOVED and len(fates) == 32


def test_every_committed_cell_is_reproduced_by_its_command_alone():
    """The command on each page, run against the grid that made the committed results, selects that cell
    (and its dense baseline)."""
    config = load_config(COMMITTED / "benchmarks.yaml")
    for record in ResultsStore(COMMITTED).records():
        argv = shlex.split(reproduce_command(record))
        assert argv[:3] == ["prunebench", "run", "benchmarks.yaml"]
        args = build_parser().parse_args(argv[1:])
        chosen = {cell.name for cell in select_cells(config, parse_filters(args.only))}
        dense = "model=smollm2-135m,method=dense"
        assert chosen == {record["name"], dense}, record["name"]


def test_stale_pages_go_and_the_cli_writes_the_site(tmp_path, capsys):
    results = write_results(tmp_path / "results", keep=4)  # dense, then magnitude, ria, sparsegpt at 50% L=16
    out = tmp_path / "site"
    assert main(["report", str(results), "--format", "html", "--out", str(out), "--reference", "none"]) == 0
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    assert len(list((out / "cells").glob("*.html"))) == 4
    shutil.rmtree(next((results / "cells").glob("*method=magnitude,*")))
    write_site(results, out, resamples=50)
    assert not list((out / "cells").glob("*magnitude*")) and len(list((out / "cells").glob("*.html"))) == 3
    assert "magnitude" not in (out / "index.html").read_text()


# -- in a real browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from headless_chromium import Chromium, find_chromium

    pytest.importorskip("websocket", reason="websocket-client (the test extra) drives Chromium")
    binary = find_chromium()
    if binary is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it as root)")
    chromium = Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def _column(browser, table: str, index: int) -> list:
    """The visible rows of a table: (row label, sort key of column `index`)."""
    return browser.evaluate(f"""Array.from(document.querySelectorAll("#{table} tbody tr"))
        .filter((row) => !row.hidden)
        .map((row) => [row.cells[0].textContent, parseFloat(row.cells[{index}].dataset.value)])""")


def _filter(browser, method: str, text: str) -> None:
    """Set both filters, as a reader choosing a method and typing into the field would."""
    browser.evaluate(f"""(() => {{ const select = document.getElementById("method-filter");
        select.value = {json.dumps(method)}; select.dispatchEvent(new Event("change"));
        const field = document.getElementById("text-filter");
        field.value = {json.dumps(text)}; field.dispatchEvent(new Event("input")); }})()""")


def test_in_chromium_the_page_sorts_filters_and_links(site, browser, tmp_path):
    browser.open((site / "index.html").as_uri())
    shots = Path(os.environ.get("PRUNEBENCH_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    shot = browser.screenshot(shots / "report-index.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(shot.read_bytes()[16:20], "big") == 1366  # the PNG's width: a laptop screen
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1366  # no sideways scrolling of the page

    # Sort "50% L=128" (column 2, lower is better): the first click puts the best first, the next reverses.
    header = "#table-1-data thead th:nth-child(3)"
    browser.click(header)
    values = [value for _, value in _column(browser, "table-1-data", 2)]
    assert values == sorted(values) and _column(browser, "table-1-data", 2)[0][0] == "dense"
    assert browser.evaluate(f"document.querySelector('{header}').getAttribute('aria-sort')") == "ascending"
    browser.click(header)
    values = [value for _, value in _column(browser, "table-1-data", 2)]
    assert values == sorted(values, reverse=True) and len(values) == 5
    browser.screenshot(shots / "report-sorted.png")

    # Filter by method: sparsegpt's rows stay, with the dense baseline, in every table.
    browser.evaluate("""(() => { const select = document.getElementById("method-filter");
        select.value = "sparsegpt"; select.dispatchEvent(new Event("change")); })()""")
    assert [label for label, _ in _column(browser, "table-1-data", 1)] == ["sparsegpt", "dense"]
    runs = [label for label, _ in _column(browser, "runs-data", 5)]
    assert runs == ["dense"] + [f"sparsegpt {s} L={n} seed 0" for s in ("0.5", "2:4") for n in (128, 16)]
    browser.type("#text-filter", "2:4 L=16")
    assert [label for label, _ in _column(browser, "runs-data", 5)] == ["sparsegpt 2:4 L=16 seed 0"]
    assert browser.evaluate("document.getElementById('filter-status').textContent").startswith("showing ")
    browser.screenshot(shots / "report-filtered.png")

    # The one-row-per-cell table has a column per metric from the registry, efficiency ones included: each
    # sorts best first by its own direction, and on a laptop screen they are all in view, no header overflowing.
    _filter(browser, "", "")
    headers = browser.evaluate("Array.from(document.querySelectorAll('#runs-data thead th')).map((th) => th.textContent)")
    for header, better in (("sparse checkpoint MB ↓", "ascending"), ("prefill speedup x ↑", "descending")):
        column = headers.index(header)
        browser.click(f"#runs-data thead th:nth-child({column + 1})")
        values = [value for _, value in _column(browser, "runs-data", column) if value is not None]  # None: empty
        assert values == sorted(values, reverse=better == "descending") and len(values) >= 16, header
    browser.evaluate("document.getElementById('runs').scrollIntoView()")
    browser.screenshot(shots / "report-runs.png")
    placed = browser.evaluate("""(() => { const box = document.querySelector('#runs .scroll').getBoundingClientRect();
        return Array.from(document.querySelectorAll('#runs-data thead th')).map((th) => [th.textContent,
            th.getBoundingClientRect().right <= box.right + 1, th.scrollWidth <= th.clientWidth]); })()""")
    metric_headers = headers[headers.index("seed") + 1:headers.index("pruning s ↓")]
    assert len(metric_headers) == 5  # perplexity, zero-shot, size, memory, speed: each metric's first value
    assert all(in_view and fits for header, in_view, fits in placed if header in metric_headers), placed
    assert all(fits for _, _, fits in placed), placed

    # The structured cells' list, one per model: every column in view too, and the method filter reaches it.
    browser.evaluate("document.getElementById('structured-runs-llama-2-7b').scrollIntoView()")
    browser.screenshot(shots / "report-structured.png")
    placed = browser.evaluate("""(() => { const table = document.getElementById('structured-runs-llama-2-7b-data');
        const box = table.parentElement.getBoundingClientRect();
        return Array.from(table.tHead.rows[0].cells).map((th) => [th.textContent,
            th.getBoundingClientRect().right <= box.right + 1, th.scrollWidth <= th.clientWidth]); })()""")
    assert len(placed) == 12 and all(in_view and fits for _, in_view, fits in placed), placed
    _filter(browser, "flap", "")
    assert [label for label, _ in _column(browser, "structured-runs-llama-2-7b-data", 1)] == ["dense",
                                                                                             "flap 0.5 L=16 seed 0"]
    assert [label for label, _ in _column(browser, "runs-data", 5)] == ["dense"]

    # Follow the remaining run's link to its page.
    _filter(browser, "sparsegpt", "2:4 L=16")
    browser.click("#runs-data tbody tr:not([hidden]) a")
    browser.wait_for("location.pathname.endsWith('_sparsity_2-4_calib_pydoc-16x16_seed_0.html') "
                     "&& document.readyState === 'complete'", "the cell's page")
    assert browser.evaluate("document.querySelector('h1').textContent") == "sparsegpt 2:4 L=16 seed 0"
    assert "--only method=sparsegpt" in browser.evaluate("document.querySelector('#reproduce code').textContent")
    assert browser.evaluate("document.styleSheets.length") == 1  # the shared stylesheet loaded from ../assets
    browser.screenshot(shots / "report-cell.png")
    assert browser.exceptions == []
