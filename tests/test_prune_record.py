"""One `prunebench prune` module for both kinds: each record carries its provenance, and --metric measures
the pruned model of an unstructured and of a structured method alike."""
import json

import pytest
from prunebench.cli.main import main


@pytest.mark.parametrize("method", ["wanda", "wanda-sp"])
def test_prune_records_provenance_and_metrics_for_both_kinds(method, tmp_path):
    out = tmp_path / "record.json"
    code = main(["prune", "--model", "tiny-llama", "--method", method, "--sparsity", "0.3", "--nsamples", "2",
                 "--seqlen", "16", "--calib-dataset", "pydoc", "--metric", "size", "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())["pruned"]
    provenance = record["provenance"]
    assert provenance["method_version"] is not None or method == "wanda-sp"
    assert provenance["calibration_data"]["dataset"] == "pydoc" and provenance["torch_threads"] >= 1
    size = record["metrics"]["size"]
    assert size and all(v is not None for v in size.values() if not isinstance(v, (dict, list)))


def test_structured_prune_draws_the_calibration_windows_an_unstructured_run_draws(tmp_path, monkeypatch):
    """A one-document corpus (text:PATH) gives Wanda's get_wikitext2 windows to both kinds (the structured
    front end used to draw them as from a corpus of many documents)."""
    import torch
    from prunebench import calibration_windows, load_model
    from prunebench.grid import structured_cells

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"word{i % 97} sentence{i % 13}." for i in range(3000)))
    seen = {}
    real = structured_cells.structured_prune

    def spy(model, method, sparsity, calibration, **kwargs):
        seen["calibration"] = calibration.clone()
        return real(model, method, sparsity, calibration, **kwargs)

    monkeypatch.setattr(structured_cells, "structured_prune", spy)
    assert main(["prune", "--model", "tiny-llama", "--method", "wanda-sp", "--sparsity", "0.3", "--nsamples", "3",
                 "--seqlen", "16", "--seed", "5", "--calib-dataset", f"text:{corpus}"]) == 0
    _, tokenizer = load_model("tiny-llama")
    assert torch.equal(seen["calibration"], calibration_windows(tokenizer, f"text:{corpus}", 3, 16, 5))
