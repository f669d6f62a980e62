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
    record = json.loads(out.read_text())
    provenance = record["provenance"]
    assert provenance["method_version"] is not None or method == "wanda-sp"
    assert provenance["calibration_data"]["dataset"] == "pydoc" and provenance["torch_threads"] >= 1
    size = record["metrics"]["size"]
    assert size and all(v is not None for v in size.values() if not isinstance(v, (dict, list)))
