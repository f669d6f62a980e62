"""Bad input, one class per test: a one-line error (or one line per problem from `validate`) that names
the problem and the fix, exit code 2, no traceback, and nothing already computed lost."""
from pathlib import Path

import pytest
from prunebench.cli.main import main

GOOD = """\
suite: tiny
models:
  - alias: tiny-llama
methods:
  - wanda
sparsity: [0.5]
calibration: {dataset: pydoc, nsamples: 4, lengths: [16], seeds: [0]}
evaluation:
  perplexity:
    - {dataset: pydoc, seqlen: 32, max_windows: 2}
"""


def config_file(tmp_path: Path, text: str = GOOD, name: str = "bench.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(argv, capsys) -> str:
    """Run the CLI; it must exit 2 with `prunebench: error:` and no traceback; return stderr."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("prunebench: error: ") and "Traceback" not in err
    return err


def one_line_error(argv, capsys) -> str:
    err = error_of(argv, capsys)
    assert err.count("\n") == 1, err
    return err


def test_validate_prints_one_problem_per_line_in_file_order(tmp_path, capsys):
    text = GOOD.replace("device", "x").replace("  - wanda\n", "  - wandaa\n") + "device: tpu\n"
    text = text.replace("suite: tiny\n", "suite: tiny\nmodles: []\n")
    err = error_of(["validate", config_file(tmp_path, text)], capsys)
    lines = err.strip().splitlines()
    assert lines[0] == "prunebench: error: 3 problems in the config:"
    numbers = [int(line.split(":")[1]) for line in lines[1:]]
    assert numbers == sorted(numbers) and len(numbers) == 3
    assert "modles" in lines[1] and "wandaa" in lines[2] and "tpu" in lines[3]


@pytest.mark.parametrize("old,new,message", [
    ("lengths: [16]", "lengths: []", "calibration.lengths: must not be empty"),
    ("seeds: [0]", "seeds: []", "calibration.seeds: must not be empty"),
    ("lengths: [16]", "lengths: [16, 16]", "calibration.lengths[1]: 16 is listed twice"),
    ("seeds: [0]", "seeds: [0, 0]", "calibration.seeds[1]: 0 is listed twice"),
    ("sparsity: [0.5]", "sparsity: [0.5, '0.50']", "sparsity 0.5 is listed twice"),
    ("  - alias: tiny-llama\n", "  - alias: tiny-llama\n  - alias: tiny-llama\n", "model 'tiny-llama' is listed twice"),
    ("  - wanda\n", "  - wanda\n  - wanda\n", "label 'wanda' is used twice"),
    ("suite: tiny\n", "suite: tiny\nsuite: other\n", "bench.yaml:2: suite: key 'suite' is given twice (lines 1 and 2)"),
    ("suite: tiny", "suite: ../escape", "suite '../escape' is not a plain name"),
    ("suite: tiny", "suite: /tmp/abs", "suite '/tmp/abs' is not a plain name"),
    ("suite: tiny", "suite: a/b", "without '/' or '..'"),
    ("  - wanda\n", "  - {method: ria, args: {a: .nan}}\n", "Bad value nan for ria.a: expected a finite number"),
    ("  - wanda\n", "  - {method: ria, args: {a: .inf}}\n", "Bad value inf for ria.a: expected a finite number"),
    ("  - wanda\n", "  - {method: ria, args: {a: [1, 2]}}\n", "Bad value [1, 2] for ria.a: expected float"),
    ("  - wanda\n", "  - {method: wanda, allocation: 5}\n", "allocation must be a name"),
    ("  - wanda\n", "  - {method: wanda, allocation: {name: owl, m: .nan}}\n", "allocation: Bad value nan for owl.m: expected a finite number"),
    ("    - {dataset: pydoc, seqlen: 32, max_windows: 2}\n",
     "    - {dataset: pydoc, seqlen: 32, max_windows: 2}\n  tasks: 3\n", "tasks must be a list of lm-eval task names"),
])
def test_config_values_that_would_be_accepted_silently_or_crash(tmp_path, capsys, old, new, message):
    assert old in GOOD
    err = one_line_error(["validate", config_file(tmp_path, GOOD.replace(old, new))], capsys)
    assert message in err


def test_non_utf8_config_names_the_file_and_byte(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_bytes(GOOD.encode().replace(b"suite: tiny", b"suite: t\xe9ny"))
    err = one_line_error(["validate", path], capsys)
    assert f"{path}: not UTF-8 text (byte {GOOD.index('suite: t') + 8}" in err and "re-encode it as UTF-8" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_method_argument_on_the_command_line(capsys, value):
    err = one_line_error(["prune", "--model", "tiny-llama", "--method", "ria", "--arg", f"a={value}"], capsys)
    assert "expected a finite number" in err


@pytest.mark.parametrize("old,new,message", [
    ("alias: tiny-llama", "id: nosuchmodel", "unknown model alias 'nosuchmodel'. Known:"),
    ("alias: tiny-llama", "id: ./no/such/dir", "path not found: ./no/such/dir"),
    ("alias: tiny-llama", "path: {empty_dir}", "is not a model directory (no config.json)"),
    ("sparsity: [0.5]", "sparsity: ['3:5']", "3:5 needs M=5 to divide model 'tiny-llama''s linear input widths (64, 128)"),
    ("lengths: [16]", "lengths: [2048]", "calibration length 2048 is longer than model 'tiny-llama''s context (1024"),
    ("seqlen: 32", "seqlen: 4096", "perplexity[0].seqlen: seqlen 4096 is longer than model 'tiny-llama''s context"),
    ("dataset: pydoc, nsamples", "dataset: 'text:{empty_file}', nsamples", "is empty; give a corpus with text in it"),
    ("{dataset: pydoc, seqlen", "{dataset: 'jsonl:{latin1_file}', seqlen", "latin1.jsonl: not UTF-8 text (byte 13: b'\\xe9'); re-encode"),
])
def test_validate_catches_what_run_would_fail_on_without_loading_weights(tmp_path, capsys, old, new, message):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    places = {"{empty_dir}": tmp_path / "empty_dir", "{empty_file}": tmp_path / "empty.txt",
              "{latin1_file}": tmp_path / "latin1.jsonl"}
    for key, value in places.items():
        new = new.replace(key, str(value))
    assert old in GOOD
    err = one_line_error(["validate", config_file(tmp_path, GOOD.replace(old, new))], capsys)
    assert message in err


def test_validate_reads_a_local_models_config_json(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 60, "intermediate_size": 120, "num_attention_heads": 4, '
                                       '"max_position_embeddings": 64}')
    text = GOOD.replace("alias: tiny-llama", f"path: {model}").replace("sparsity: [0.5]", "sparsity: ['2:8']")
    err = error_of(["validate", config_file(tmp_path, text)], capsys)
    assert "2:8 needs M=8 to divide" in err and "(60, 120)" in err
    ok = GOOD.replace("alias: tiny-llama", f"path: {model}")
    assert main(["validate", str(config_file(tmp_path, ok))]) == 0


@pytest.mark.parametrize("command", [["run", "--dry-run"], ["status"], ["run"]])
def test_only_that_matches_nothing_is_refused(tmp_path, capsys, command):
    results = tmp_path / "results"
    err = one_line_error([*command, config_file(tmp_path), "--results-dir", results, "--only", "method=nosuch"], capsys)
    assert "--only method=nosuch matches no cell" in err and "method is one of: wanda." in err
    assert not results.exists()


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("command", [["status"], ["run", "--dry-run"]])
def test_read_only_commands_create_nothing(tmp_path, capsys, command):
    results = tmp_path / "results"
    assert main([*command, str(config_file(tmp_path)), "--results-dir", str(results)]) == 0
    assert "2 pending; results in" in capsys.readouterr().out
    assert not results.exists()


def test_results_directory_that_is_a_file(tmp_path, capsys):
    (tmp_path / "results").write_text("not a directory")
    err = one_line_error(["status", config_file(tmp_path), "--results-dir", tmp_path / "results"], capsys)
    assert "is a file; give a directory path" in err


def _read_only(monkeypatch, root: Path):
    """Make `root` look read-only to prunebench (the tests may run as root, which chmod does not stop)."""
    import os

    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).resolve().is_relative_to(root.resolve()):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_report_and_status_on_a_read_only_results_directory(tmp_path, capsys, monkeypatch):
    from synthetic_leaderboard import write_results

    root = write_results(tmp_path / "results")
    before = tree(root)
    _read_only(monkeypatch, root)
    assert main(["report", str(root)]) == 0
    captured = capsys.readouterr()
    assert "|" in captured.out and "read-only: tables printed only" in captured.err
    text = GOOD.replace("suite: tiny", "suite: results")
    assert main(["status", str(config_file(tmp_path, text)), "--results-dir", str(root)]) == 0
    assert tree(root) == before


def _store_with_records(tmp_path, count=2):
    from prunebench.store.results import ResultsStore

    store = ResultsStore(tmp_path / "results")
    for i in range(count):
        store.write({"name": f"cell{i}", "hash": "h", "status": "ok", "cell": {"method": "wanda"}})
    return store


def test_damaged_derived_files_are_rebuilt_and_bad_records_quarantined(tmp_path, capsys):
    from prunebench.store.results import DATABASE, ResultsStore

    store = _store_with_records(tmp_path, 3)
    root = store.root
    (root / DATABASE).write_bytes(b"this is not an SQLite database" * 100)
    for suffix in ("-wal", "-shm"):
        (root / (DATABASE + suffix)).unlink(missing_ok=True)
    (root / "store.json").write_text("{not json")
    (root / "cells" / "cell1" / "record.json").write_text('["not", "a", "record"]')
    store = ResultsStore(root)
    err = capsys.readouterr().err
    assert "is damaged; rebuilding it from the records" in err
    assert "cell1/record.json is not a valid record; moved it to record.json.corrupt-" in err
    assert [r["name"] for r in store.leaderboard()] == ["cell0", "cell2"]
    assert store.read("cell1") is None and list((root / "cells" / "cell1").glob("record.json.corrupt-*"))
    assert '"schema"' in (root / "store.json").read_text()


def test_orphan_temporary_files_and_rows_of_deleted_cells_are_cleaned(tmp_path):
    import shutil

    from prunebench.store.results import ResultsStore

    store = _store_with_records(tmp_path, 2)
    orphan = store.cells / "cell0" / ".record.json.abc123.tmp"
    orphan.write_text("{half")
    with store.claim("cell0") as claimed:
        assert claimed
    assert not orphan.exists()
    shutil.rmtree(store.cells / "cell1")
    assert [r["name"] for r in ResultsStore(store.root).leaderboard()] == ["cell0"]


def test_every_option_has_help_showing_its_default():
    import argparse

    from prunebench.cli.main import build_parser

    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        assert sub.formatter_class is argparse.ArgumentDefaultsHelpFormatter, name
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"{name} {action.option_strings or action.dest}"
    prune_help = parser._subparsers._group_actions[0].choices["prune"].format_help()
    assert "(default: 128)" in prune_help and "!function" in prune_help


def test_prune_without_evaluation_or_save_says_so(capsys):
    assert main(["prune", "--model", "tiny-llama", "--nsamples", "2", "--seqlen", "16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: no --eval-dataset, --tasks, --save or --json: the pruned model will be neither")


def test_unknown_lm_eval_task_error_is_short(monkeypatch):
    from types import SimpleNamespace

    from prunebench.api.errors import UsageError
    from prunebench.metrics import zeroshot
    from prunebench.metrics.zeroshot import TaskSpec

    known = [f"task_{i:05d}" for i in range(20000)] + ["lambada_openai"]
    monkeypatch.setattr(zeroshot, "task_manager", lambda spec, data_dir=None: SimpleNamespace(all_tasks=known))
    with pytest.raises(UsageError) as caught:
        zeroshot.load_tasks(TaskSpec(("lambada_opena",)))
    message = str(caught.value)
    assert "Did you mean: lambada_openai?" in message and "and 19991 more (list them all with: lm-eval ls tasks)" in message
    assert len(message) < 400
