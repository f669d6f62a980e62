"""Bad input and damaged state met at run time (by `prune` and `run`, past what `validate` can see): a
one-line error naming the problem and the fix, exit code 2, no traceback, nothing half-written."""
import errno
import gzip
import os
import re
import signal
import time
from pathlib import Path

import pytest
from prunebench import PruningMethod, StructuredMethod, hookimpl
from prunebench.cli.main import main
from prunebench.store.results import RECORD, ResultsStore
from test_bad_input import GOOD, config_file, one_line_error

TINY_PRUNE = ["prune", "--model", "tiny-llama", "--nsamples", "2", "--seqlen", "16"]
LATIN1 = b"caf\xe9 " + b"text long enough to give windows of sixteen bytes and more " * 4


def error_after_work(argv, capsys) -> str:
    """Like `one_line_error`, for failures after work began: stderr may hold progress bars before the
    one error line (exit 2, no traceback); return that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("prunebench:") == 1, err
    line = re.split(r"[\r\n]", err.rstrip("\n"))[-1]
    assert line.startswith("prunebench: error: "), err
    return line


# -- non-UTF-8 corpora where prune and run read them ----------------------------------------------

@pytest.mark.parametrize("spec,name,data,message", [
    ("text:{}", "latin1.txt", LATIN1, "latin1.txt: not UTF-8 text (byte 3: b'\\xe9'); re-encode it as UTF-8"),
    ("jsonl:{}", "latin1.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n',
     "latin1.jsonl: not UTF-8 text (byte 28: b'\\xe9'); re-encode it as UTF-8"),
])
def test_non_utf8_calibration_corpus_at_prune_time(tmp_path, capsys, spec, name, data, message):
    (tmp_path / name).write_bytes(data)
    err = one_line_error([*TINY_PRUNE, "--calib-dataset", spec.format(tmp_path / name)], capsys)
    assert message in err


@pytest.mark.parametrize("dataset,name,data,message", [
    ("wikitext2", "wiki.test.raw", LATIN1, "wiki.test.raw: not UTF-8 text (byte 3: b'\\xe9')"),
    ("ptb", "ptb.test.txt", LATIN1, "ptb.test.txt: not UTF-8 text (byte 3: b'\\xe9')"),
    ("c4", "c4-validation.00000-of-00008.json.gz", gzip.compress(b'{"text": "ok"}\n{"text": "caf\xe9"}\n'),
     "c4-validation.00000-of-00008.json.gz: not UTF-8 text (byte 28 of the decompressed text: b'\\xe9')"),
])
def test_non_utf8_local_dataset_file_at_prune_time(tmp_path, capsys, dataset, name, data, message):
    (tmp_path / name).write_bytes(data)
    err = one_line_error([*TINY_PRUNE, "--eval-dataset", dataset, "--data-dir", tmp_path], capsys)
    assert message in err and "re-encode it as UTF-8" in err


def test_non_utf8_text_for_the_lastword_task(tmp_path, capsys, monkeypatch):
    (tmp_path / "latin1.txt").write_bytes(LATIN1)
    monkeypatch.setenv("PRUNEBENCH_LASTWORD_TEXT", str(tmp_path / "latin1.txt"))
    # Was lm-eval's "cannot load its data ('utf-8' codec can't decode ...)" with advice about the hub.
    err = error_after_work([*TINY_PRUNE, "--tasks", "prunebench_lastword_text", "--limit", "1"], capsys)
    assert "latin1.txt: not UTF-8 text (byte 3: b'\\xe9'); re-encode it as UTF-8" in err


def test_lm_eval_warnings_only_with_verbose(tmp_path, capsys, caplog, monkeypatch):
    import logging
    from pydoc_data.topics import topics

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(text.split()) for text in topics.values()))
    monkeypatch.setenv("PRUNEBENCH_LASTWORD_TEXT", str(corpus))
    argv = [*TINY_PRUNE, "--tasks", "prunebench_lastword_text", "--limit", "1", "--tasks-batch-size", "1",
            "--no-dense-eval"]

    def lm_eval_warnings() -> list[str]:
        found = [r.getMessage() for r in caplog.records if r.name.startswith("lm_eval") and r.levelno == logging.WARNING]
        caplog.clear()
        return found

    assert main(argv) == 0
    assert lm_eval_warnings() == []  # e.g. "Overwriting default num_fewshot ...": as prunebench means it
    assert main([*argv, "--verbose"]) == 0
    assert any("Overwriting default num_fewshot" in w for w in lm_eval_warnings())
    assert "PRUNEBENCH_VERBOSE" not in os.environ  # --verbose is for that command only
    assert "--verbose" in main_help("run") and "show lm-eval's warnings" in main_help("prune")


def main_help(command: str) -> str:
    from prunebench.cli.main import build_parser

    parser = build_parser()
    return parser._subparsers._group_actions[0].choices[command].format_help()


def test_truncated_gzip_corpus(tmp_path, capsys):
    (tmp_path / "c4-validation.00000-of-00008.json.gz").write_bytes(gzip.compress(b'{"text": "ok"}\n' * 50)[:30])
    err = one_line_error([*TINY_PRUNE, "--eval-dataset", "c4", "--data-dir", tmp_path], capsys)
    assert "is not a complete gzip file" in err


def test_non_utf8_local_dataset_fails_the_cell_of_a_run_with_one_line(tmp_path, capsys):
    (tmp_path / "wiki.test.raw").write_bytes(LATIN1)
    text = GOOD.replace("{dataset: pydoc, seqlen: 32", "{dataset: wikitext2, seqlen: 32") + f"  data_dir: {tmp_path}\n"
    results = tmp_path / "results"
    assert main(["run", str(config_file(tmp_path, text)), "--results-dir", str(results)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and all("wiki.test.raw: not UTF-8 text (byte 3" in line for line in failed)


# -- models that cannot be loaded ------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_tiny_llama(tmp_path_factory):
    from prunebench.models.loading import load_model

    directory = tmp_path_factory.mktemp("model") / "tiny"
    model, tokenizer = load_model("tiny-llama")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _damage(directory: Path, how: str) -> None:
    weights = directory / "model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "garbage":
        weights.write_bytes(b"not safetensors" * 64)
    elif how == "no weights":
        weights.unlink()
    elif how == "no tokenizer":
        for file in directory.glob("tokenizer*"):
            file.unlink()


@pytest.mark.parametrize("how,message", [
    ("truncated", "Cannot read the weights in {dir} (Error while deserializing"),
    ("garbage", "Cannot read the weights in {dir} (Error while deserializing"),
    ("no weights", "Cannot read the weights in {dir} (Error no file named model.safetensors"),
    ("no tokenizer", "Cannot load a tokenizer from {dir} ("),
])
def test_damaged_model_directory(tmp_path, capsys, saved_tiny_llama, how, message):
    import shutil

    directory = tmp_path / "model"
    shutil.copytree(saved_tiny_llama, directory)
    _damage(directory, how)
    err = one_line_error(["prune", "--model", directory], capsys)
    assert message.format(dir=directory) in err


def test_directory_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model")
    err = one_line_error(["prune", "--model", tmp_path], capsys)
    assert f"{tmp_path} is not a model directory (no config.json)" in err


@pytest.mark.parametrize("content,message", [
    (b"PK\x03\x04 a zip file", "is not a GGUF file (it does not start with the bytes 'GGUF')"),
    (b"GGUF\x03\x00\x00\x00\x05", "the GGUF file is damaged, truncated"),  # the magic, then the header cut short
])
def test_file_that_is_not_gguf(tmp_path, capsys, monkeypatch, content, message):
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "model.gguf").write_bytes(content)
    err = one_line_error(["prune", "--model", tmp_path / "model.gguf"], capsys)
    assert message in err
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # no half-converted model left in the cache


# -- lengths beyond the model's context ------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["--model", "tiny-opt", "--seqlen", "1025"], "--seqlen 1025 is longer than model 'tiny-opt''s context (1024 tokens); "
                                                  "use at most 1024."),
    (["--model", "tiny-llama", "--seqlen", "2048"], "--seqlen 2048 is longer than model 'tiny-llama''s context"),
    (["--model", "tiny-llama", "--eval-dataset", "pydoc", "--eval-seqlen", "1100"],
     "--eval-seqlen 1100 is longer than model 'tiny-llama''s context (1024 tokens)"),
])
def test_prune_refuses_lengths_beyond_the_context(capsys, argv, message):
    # Today's failures without the check: OPT's position table raises IndexError, LLaMA runs on silently.
    err = one_line_error(["prune", "--nsamples", "1", *argv], capsys)
    assert message in err


def test_prune_refuses_lengths_beyond_the_context_of_a_model_read_only_once_loaded(capsys, monkeypatch):
    from prunebench.grid import config as config_module

    # A hub id or a GGUF file: no config.json to read before loading, so the loaded model says.
    monkeypatch.setattr(config_module, "model_facts", lambda source: None)
    err = error_after_work(["prune", "--model", "tiny-opt", "--nsamples", "1", "--seqlen", "1025"], capsys)
    assert "--seqlen 1025 is longer than model 'tiny-opt''s context (1024 tokens)" in err


def test_structured_prune_refuses_lengths_beyond_the_context(capsys):
    err = one_line_error(["prune", "--model", "tiny-llama", "--method", "magnitude-sp", "--sparsity", "0.25",
                          "--nsamples", "1", "--seqlen", "2048"], capsys)
    assert "--seqlen 2048 is longer than model 'tiny-llama''s context (1024 tokens)" in err


def test_structured_prune_refuses_lengths_beyond_the_context_of_a_model_read_only_once_loaded(capsys, monkeypatch):
    from prunebench.grid import config as config_module

    # A hub id or a GGUF file: structured prune checks the loaded model too (it ran on silently on LLaMA).
    monkeypatch.setattr(config_module, "model_facts", lambda source: None)
    err = error_after_work(["prune", "--model", "tiny-opt", "--method", "magnitude-sp", "--sparsity", "0.25",
                            "--nsamples", "1", "--seqlen", "1025"], capsys)
    assert "--seqlen 1025 is longer than model 'tiny-opt''s context (1024 tokens)" in err


@pytest.mark.parametrize("argv,message", [
    (["--seqlen", "1025"], "--seqlen 1025 is longer than model 'tiny-opt''s context (1024 tokens); use at most 1024."),
    (["--eval-seqlen", "1100"], "--eval-seqlen 1100 is longer than model 'tiny-opt''s context (1024 tokens)"),
])
def test_bench_refuses_lengths_beyond_the_context(capsys, argv, message):
    # Without the check: OPT's position table raises an IndexError in the calibration forward.
    err = error_after_work(["bench", "--model", "tiny-opt", "--nsamples", "1", "--eval-windows", "1", *argv], capsys)
    assert message in err


def test_model_config_that_is_not_a_json_object(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("[1, 2]")  # valid JSON, not a config: was an AttributeError
    err = one_line_error(["prune", "--model", model, "--nsamples", "1"], capsys)
    assert f"{model / 'config.json'} is not a model config (it holds an array, not a JSON object); " in err
    text = GOOD.replace("alias: tiny-llama", f"path: {model}")
    assert "is not a model config (it holds an array" in one_line_error(["validate", config_file(tmp_path, text)], capsys)


def test_run_refuses_lengths_beyond_the_context_of_a_model_validate_cannot_read(tmp_path, capsys, monkeypatch):
    from prunebench.grid import config as config_module

    # A hub id or a GGUF file: validate has no config.json to read, so only the loaded model can say.
    monkeypatch.setattr(config_module, "model_facts", lambda source: None)
    text = GOOD.replace("lengths: [16]", "lengths: [1100]")
    assert main(["run", str(config_file(tmp_path, text)), "--results-dir", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "calibration length 1100 is longer than model 'tiny-llama''s context (1024 tokens); use at most 1024." in err


# -- devices ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["prune", "bench"])
def test_unknown_device_on_the_command_line(capsys, command):
    err = one_line_error([command, "--model", "tiny-llama", "--device", "foo"], capsys)
    assert "argument --device: 'foo' is not a device; use cpu, cuda or cuda:N" in err


@pytest.mark.parametrize("device", ["foo", "cudafoo", "cpu0"])
def test_unknown_device_in_a_config(tmp_path, capsys, device):
    err = one_line_error(["validate", config_file(tmp_path, GOOD + f"device: {device}\n")], capsys)
    assert f"unknown device '{device}'; use auto, cpu or cuda[:N]." in err


# -- a method plugin that raises ---------------------------------------------------------------------

class _Exploding(PruningMethod):
    name = "exploding"
    description = "raises inside score, as a buggy plugin would"
    statistics = ("input_sq_norm",)
    arguments = {"group": "row"}

    def score(self, weight, stats, group):
        raise RuntimeError("kaboom in layer code\nsecond line")


class _ExplodingPlugin:
    @hookimpl
    def register_methods(self, register):
        register(_Exploding())


def test_method_plugin_that_raises_is_one_line_naming_the_plugin(register_plugin, capsys):
    register_plugin(_ExplodingPlugin(), name="exploding-plugin")
    err = error_after_work([*TINY_PRUNE, "--method", "exploding"], capsys)
    assert ("Pruning with method 'exploding' failed in plugin exploding-plugin (RuntimeError: kaboom in layer code); "
            "rerun with --debug for the traceback.") in err


def test_debug_shows_the_plugins_traceback(register_plugin):
    register_plugin(_ExplodingPlugin(), name="exploding-plugin")
    with pytest.raises(RuntimeError, match="kaboom"):
        main([*TINY_PRUNE, "--method", "exploding", "--debug"])


class _ExplodingStructured(StructuredMethod):
    name = "exploding-sp"
    description = "raises inside score_layer, as a buggy structured plugin would"

    def score_layer(self, evidence, **args):
        raise RuntimeError("kaboom in structured code\nsecond line")


class _ExplodingStructuredPlugin:
    @hookimpl
    def register_structured_methods(self, register):
        register(_ExplodingStructured())


def test_structured_method_plugin_that_raises_is_one_line_naming_the_plugin(register_plugin, capsys):
    register_plugin(_ExplodingStructuredPlugin(), name="exploding-sp-plugin")
    argv = [*TINY_PRUNE, "--method", "exploding-sp", "--sparsity", "0.25"]
    err = error_after_work(argv, capsys)
    assert ("Pruning with method 'exploding-sp' failed in plugin exploding-sp-plugin (RuntimeError: kaboom in "
            "structured code); rerun with --debug for the traceback.") in err
    with pytest.raises(RuntimeError, match="kaboom"):
        main([*argv, "--debug"])


# -- disk full --------------------------------------------------------------------------------------

class _FullDisk:
    """A file handle on a disk with `free` bytes left: writing past them raises ENOSPC, as the OS does."""

    def __init__(self, handle, free: int):
        self.handle, self.free = handle, free

    def write(self, text):
        self.free -= len(text)
        if self.free < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.handle.write(text)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.fixture
def disk_with(monkeypatch):
    """Make every JSON file prunebench writes see a disk with only `free` bytes left."""
    real = os.fdopen

    def fill(free: int):
        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k), free))

    return fill


def test_disk_full_while_writing_a_record(tmp_path, capsys, disk_with):
    results = tmp_path / "results"
    ResultsStore(results)._prepare()  # the store exists; then the disk fills up
    disk_with(1500)  # room for a failure record, not for a full one with its provenance
    err = error_after_work(["run", config_file(tmp_path), "--results-dir", results], capsys)
    assert "No space left on device" in err and "nothing was half-written; free some disk space" in err
    assert "is recorded as failed" in err
    records = list(results.glob(f"cells/*/{RECORD}"))
    assert len(records) == 1  # the first cell; the grid stopped there
    store = ResultsStore(results)
    record = store.read(records[0].parent.name)
    assert record["status"] == "failed" and "No space left on device" in record["error"]
    assert not list(results.rglob("*.tmp"))
    with store.claim(records[0].parent.name) as claimed:  # its lock was released
        assert claimed


def test_disk_full_keeps_a_finished_record(tmp_path, capsys, disk_with):
    results = tmp_path / "results"
    assert main(["run", str(config_file(tmp_path)), "--results-dir", str(results), "--only", "method=wanda"]) == 0
    before = {p: p.read_bytes() for p in results.glob(f"cells/*/{RECORD}")}
    disk_with(100)  # not even a failure record fits
    err = error_after_work(["run", config_file(tmp_path), "--results-dir", results, "--force"], capsys)
    assert "keeps its previous record" in err
    assert {p: p.read_bytes() for p in results.glob(f"cells/*/{RECORD}")} == before
    assert not list(results.rglob("*.tmp"))


def test_disk_full_while_writing_prune_json(tmp_path, capsys, disk_with):
    disk_with(200)
    report = tmp_path / "report.json"
    err = error_after_work([*TINY_PRUNE, "--json", report], capsys)
    assert f"Cannot write {report} (No space left on device); nothing was half-written" in err
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_saving_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    from prunebench.api.errors import WriteError
    from prunebench.models.loading import load_model, save_pruned

    model, tokenizer = load_model("tiny-llama")

    def full(directory, *args, **kwargs):
        (Path(directory) / "tokenizer.json").write_text("{\"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tokenizer, "save_pretrained", full)
    with pytest.raises(WriteError, match="No space left on device"):
        save_pruned(model, tokenizer, tmp_path / "pruned")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the staging directory


# -- two runners, --force, a holder that died ---------------------------------------------------------

def _quiet_run(path, results, **kwargs):
    from prunebench.grid.config import load_config
    from prunebench.grid.runner import run_grid

    return run_grid(load_config(path), results, progress=False, **kwargs)


def test_force_does_not_recompute_a_cell_another_runner_finished_meanwhile(tmp_path):
    path, results = config_file(tmp_path), tmp_path / "results"
    dense, wanda = _cell_names(path)
    assert _quiet_run(path, results).ran == [dense, wanda]
    store = ResultsStore(results)

    def other_runner_finishes_wanda(line):
        # While this runner did the dense cell, another --force runner recomputed wanda's cell.
        if dense in line:
            store.write(dict(store.read(wanda), finished="by the other runner"))

    forced = _quiet_run(path, results, force=True, echo=other_runner_finishes_wanda)
    assert forced.ran == [dense] and forced.skipped == [wanda]
    assert store.read(wanda)["finished"] == "by the other runner"


def _cell_names(path) -> list[str]:
    from prunebench.grid.cells import expand
    from prunebench.grid.config import load_config

    return [cell.name for cell in expand(load_config(path))]


def test_a_cell_whose_lock_holder_died_is_run_at_the_end(tmp_path):
    import fcntl

    path, results = config_file(tmp_path), tmp_path / "results"
    dense, wanda = _cell_names(path)
    ResultsStore(results)._prepare()
    lock = results / "cells" / dense / ".lock"
    lock.parent.mkdir(parents=True)
    holder = open(lock, "w")
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another runner is on the dense cell

    def holder_dies(line):
        if wanda in line:
            holder.close()  # the kernel drops a dead process's flock

    summary = _quiet_run(path, results, echo=holder_dies)
    assert summary.ran == [wanda, dense] and summary.busy == []
    assert ResultsStore(results).read(dense)["status"] == "ok"


def test_a_cell_still_held_at_the_end_is_reported_busy(tmp_path):
    import fcntl

    path, results = config_file(tmp_path), tmp_path / "results"
    dense = _cell_names(path)[0]
    ResultsStore(results)._prepare()
    lock = results / "cells" / dense / ".lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        summary = _quiet_run(path, results)
    assert summary.busy == [dense] and len(summary.ran) == 1


# -- SIGTERM ---------------------------------------------------------------------------------------

def test_sigterm_is_one_line_exit_143_and_leaves_the_store_clean(tmp_path, capsys, monkeypatch):
    from prunebench.grid import runner

    def terminated_mid_cell(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the cell")

    monkeypatch.setattr(runner, "_run_cell", terminated_mid_cell)
    results = tmp_path / "results"
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    assert main(["run", str(config_file(tmp_path)), "--results-dir", str(results)]) == 143
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err
    assert err.endswith("\nprunebench: terminated (SIGTERM)\n") and "Traceback" not in err  # after the progress bar
    assert signal.getsignal(signal.SIGTERM) == before
    store = ResultsStore(results)
    assert store.records() == [] and not list(results.rglob("*.tmp"))
    for cell in (results / "cells").iterdir():
        with store.claim(cell.name) as claimed:
            assert claimed


# -- the README -------------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_grids_pass_validate_and_do_not_reuse_a_committed_suite(tmp_path, capsys, install_plugin):
    import re

    import yaml

    # The README's grids may name the README's example plugins: install them as their readers would.
    for kind, module in (("plugin", "readme_example_plugin"), ("metric", "readme_example_metric")):
        source = re.search(rf"<!-- example-{kind} -->\s*```python\n(.*?)```", README.read_text(), re.S).group(1)
        name = re.search(r'^    name = "([^"]+)"', source, re.M).group(1)
        install_plugin(source, module, name)
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)]
    grids = [block for block in blocks if "suite" in block]
    assert grids, "README lost its example grid"
    committed = {p.name for p in (README.parent / "results").iterdir() if p.is_dir()}
    # A fragment (e.g. only `evaluation:`) is shown as part of a grid: validate it inside the first one.
    for i, block in enumerate(grids + [dict(grids[0], **block) for block in blocks if "suite" not in block]):
        path = config_file(tmp_path, yaml.safe_dump(block, sort_keys=False), f"readme{i}.yaml")
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err
        assert block["suite"] not in committed, f"the README's grid would write into results/{block['suite']}"


def _readme_commands() -> list[list[str]]:
    """Each `prunebench ...` command of the README's bash blocks, optional parts ([...]) included with the
    first of their alternatives (a|b)."""
    import re
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#")[0].split("&&"):
                words = shlex.split(part.replace("[", " ").replace("]", " "))
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # HF_HUB_OFFLINE=1 prunebench ...
                    words.pop(0)
                if words[:1] == ["prunebench"]:
                    commands.append([w.split("|")[0] for w in words[1:]])
    return commands


def test_readme_commands_parse_and_name_known_methods_and_arguments():
    from prunebench import registry
    from prunebench.cli.main import _method_args, build_parser

    commands = _readme_commands()
    assert {c[0] for c in commands} >= {"prune", "list", "bench", "validate", "run", "status", "report", "browse"}
    for command in commands:
        args = build_parser().parse_args(command)  # a stale option raises UsageError
        if args.command == "prune":
            structured = registry.is_structured(args.method)
            method = registry.get_structured_method(args.method) if structured else registry.get_method(args.method)
            method.resolve_arguments(_method_args(args.arg))


# -- outputs that cannot be written, and the note that nothing is kept --------------------------------

@pytest.mark.parametrize("option,where,message", [
    ("--json", "{file}/report.json", "--json {tmp}/a-file/report.json cannot be created: {tmp}/a-file is a file"),
    ("--json", "{dir}", "--json {tmp}/a-dir is a directory; give a file path."),
    ("--save", "{file}", "--save {tmp}/a-file is a file; give a directory path."),
    ("--save", "{file}/model", "--save {tmp}/a-file/model cannot be created: {tmp}/a-file is a file"),
    ("--save", "{readonly}/model", "--save {tmp}/read-only/model cannot be written: {tmp}/read-only is not writable"),
])
def test_prune_outputs_that_cannot_be_written_fail_before_any_work(tmp_path, capsys, monkeypatch, option, where, message):
    from test_bad_input import _read_only

    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "read-only").mkdir()
    _read_only(monkeypatch, tmp_path / "read-only")
    target = where.format(file=tmp_path / "a-file", dir=tmp_path / "a-dir", readonly=tmp_path / "read-only")
    # A model that does not exist: the output check must come first, before anything loads.
    err = one_line_error(["prune", "--model", tmp_path / "no-model", option, target], capsys)
    assert message.format(tmp=tmp_path) in err


def test_report_out_that_cannot_be_written(tmp_path, capsys):
    from synthetic_leaderboard import write_results

    root = write_results(tmp_path / "results")
    (tmp_path / "a-file").write_text("x")
    err = one_line_error(["report", root, "--out", tmp_path / "a-file" / "tables"], capsys)
    assert f"--out {tmp_path}/a-file/tables cannot be created: {tmp_path}/a-file is a file" in err


def test_nothing_kept_note_comes_after_the_cheap_checks(capsys):
    # A typo gets its error alone: the note is for a run that is about to do work.
    assert main(["prune", "--model", "tiny-llama", "--method", "wandaa"]) == 2
    captured = capsys.readouterr()
    assert "Did you mean: wanda" in captured.err and "note:" not in captured.out


def test_every_test_named_in_the_reliability_table_exists():
    import ast

    root = Path(__file__).resolve().parents[1]
    table = (root / "docs" / "reliability.md").read_text()
    files = {"bad_input": "tests/test_bad_input.py", "runtime": "tests/test_bad_input_runtime.py"}
    named = re.findall(r"`(?:(bad_input|runtime)|(tests/[\w/]+\.py))::(test_\w+)`", table)
    assert len(named) > 40
    defined: dict[str, set[str]] = {}
    for short, path, test in named:
        file = files[short] if short else path
        if file not in defined:
            tree = ast.parse((root / file).read_text())
            defined[file] = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert test in defined[file], f"docs/reliability.md names {file}::{test}, which does not exist"
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| Class")]
    assert all("::test_" in row for row in rows), [row for row in rows if "::test_" not in row]


def test_disk_full_for_the_leaderboard_keeps_records_and_reading(tmp_path, capsys, monkeypatch):
    import sqlite3

    from prunebench.api.errors import WriteError

    store = ResultsStore(tmp_path / "results")
    store.write({"name": "cell0", "hash": "h", "status": "ok", "cell": {"method": "wanda"}})
    real = sqlite3.connect

    class FullDatabase:
        """SQLite on a full disk: reads work, the first write fails as SQLite says it."""

        def __init__(self, *args, **kwargs):
            self.db = real(*args, **kwargs)

        def execute(self, sql, *args):
            if sql.split()[0].upper() in ("INSERT", "BEGIN", "CREATE", "DELETE"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)

        def __enter__(self):
            return self.db.__enter__()

        def __exit__(self, *exc):
            return self.db.__exit__(*exc)

    monkeypatch.setattr(sqlite3, "connect", FullDatabase)
    reopened = ResultsStore(store.root)  # status and report open the store: a note, not a failure
    assert "database or disk is full" in capsys.readouterr().err
    assert reopened.read("cell0")["status"] == "ok"
    with pytest.raises(WriteError, match="the records are written and the leaderboard is rebuilt from them"):
        reopened.write({"name": "cell1", "hash": "h", "status": "ok", "cell": {"method": "wanda"}})
    assert reopened.read("cell1")["status"] == "ok"  # the record, the data, is kept
    assert (store.root / "leaderboard.sqlite").exists()  # not mistaken for damage and deleted
