"""The command line: a full tiny run, `list`, and one-line errors with exit code 2."""
import json
import os
import re
import subprocess
import sys

import pytest
from prunebench.cli.main import main


def test_prune_on_a_tiny_model_prints_and_saves(tmp_path, capsys):
    report = tmp_path / "report.json"
    saved = tmp_path / "pruned"
    code = main(["prune", "--model", "tiny-opt", "--method", "wanda", "--sparsity", "2:4", "--nsamples", "4",
                 "--seqlen", "32", "--eval-dataset", "pydoc", "--eval-seqlen", "64", "--eval-windows", "3",
                 "--save", str(saved), "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0
    assert "pruned perplexity" in out
    assert re.search(r"measured sparsity\s+0.5000 ", out)
    output = json.loads(report.read_text())  # the grid's records: the dense cell and the pruned cell
    record, dense = output["pruned"], output["dense"]
    assert record["cell"]["sparsity"] == "2:4" and record["status"] == "ok" and record["hash"]
    evaluation = record["perplexity"]["pydoc-64x3"]
    assert evaluation["windows"] == 3 and evaluation["perplexity"] > dense["perplexity"]["pydoc-64x3"]["perplexity"] > 1
    assert record["measured_sparsity"]["overall"] == 0.5 and dense["cell"]["method"] == "dense"
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(saved)
    fc1 = reloaded.model.decoder.layers[0].fc1.weight
    assert (fc1 == 0).view(fc1.shape[0], -1, 4).sum(-1).eq(2).all()


def test_list_names_every_method_and_its_plugin(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "prunebench.baselines.wanda" in out and "prunebench.baselines.magnitude" in out and "pydoc" in out and "smollm2-135m" in out


@pytest.mark.parametrize("argv,message", [
    (["prune", "--method", "wandaa"], "Did you mean: wanda"),
    (["prune", "--model", "tiny-lama"], "Did you mean: tiny-llama"),
    (["prune", "--sparsity", "1.2"], "must lie in (0, 1)"),
    (["prune", "--sparsity", "4:2"], "0 < N < M"),
    (["prune", "--model", "tiny-llama", "--sparsity", "3:5"], "divide the input width"),
    (["prune", "--model", "tiny-llama", "--calib-dataset", "text:{short}", "--seqlen", "64"], "shorter than one window"),
    (["prune", "--calib-dataset", "text:/no/such.txt"], "File not found"),
    (["prune", "--model", "tiny-llama", "--calib-dataset", "wikitext2"], "not reachable on the hub"),
    (["prune", "--arg", "alpha=2"], "Unknown argument(s) alpha"),
    (["prune", "--nsamples", "0"], "must be at least 1"),
    (["prune", "--model", "./missing-dir"], "Model path not found"),
    (["prune", "--model", "missing.gguf"], "GGUF file not found"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_with_exit_code_2(argv, message, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    code = main([a.replace("{short}", str(short)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("prunebench: error: ")
    assert message in err


def test_console_script_exits_2_without_traceback():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "prunebench.cli.main", "prune", "--method", "sparsegtp"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
