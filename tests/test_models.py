"""Model loading: code shipped with a checkpoint never runs."""
import json

import pytest
from prunebench.api.errors import UsageError
from prunebench.models.loading import load_model, save_pruned


def test_a_model_that_needs_remote_code_is_refused_without_running_it(tmp_path, tiny_llama):
    save_pruned(*tiny_llama, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(model_type="x-custom", auto_map={"AutoConfig": "configuration_x.XConfig",
                                                    "AutoModelForCausalLM": "modeling_x.XModel"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (tmp_path / "configuration_x.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(UsageError, match="needs code shipped with it .trust_remote_code., which prunebench never runs"):
        load_model(str(tmp_path))
    assert not marker.exists()
