"""Unstructured layer allocation through the register_allocations hook: a third-party allocation is
used by `prune` with its settings, OWL through the hook gives OWL's own numbers, bad names and bad
plugin answers are one-line errors, and `prunebench list` says which track each allocation serves."""
import prunebench
import pytest
import torch
from prunebench.api.allocation import LayerAllocation
from prunebench.api.errors import UsageError
from prunebench.api.sparsity import parse_sparsity
from prunebench.cli.main import main
from prunebench.models.loading import load_model
from prunebench.models.walk import decoder_layers, prunable_linears
from prunebench.pruning.owl import owl_layer_targets


class LowThenHigh(LayerAllocation):
    """Layer 0 at `low`, every later layer at 2 x target - low (two layers: the mean stays the target)."""

    name = "low-then-high"
    description = "test: layer 0 sparser-kept, the rest pay for it"
    tracks = ("unstructured",)
    settings = {"low": 0.1}

    def layer_sparsities(self, model, calibration, target, settings, *, batch_size, device, progress):
        layers = len(decoder_layers(model))
        return [settings["low"]] + [2 * target.ratio - settings["low"]] * (layers - 1)


class Plugin:
    def __init__(self, allocation):
        self.allocation = allocation

    @prunebench.hookimpl
    def register_allocations(self, register):
        register(self.allocation)


def measured_layer_sparsity(model) -> list[float]:
    """Share of zero weights over each decoder layer's linears, read from the model itself."""
    result = []
    for layer in decoder_layers(model):
        weights = [linear.weight for linear in prunable_linears(layer).values()]
        result.append(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))
    return result


def test_a_registered_unstructured_allocation_sets_each_layers_sparsity(register_plugin, tiny_llama, tiny_calibration):
    register_plugin(Plugin(LowThenHigh()))
    model = tiny_llama[0]
    report = prunebench.prune(model, "magnitude", 0.5, tiny_calibration, progress=False, allocation="low-then-high",
                              allocation_settings={"low": 0.25})
    assert report.layer_targets == pytest.approx([0.25, 0.75])
    assert measured_layer_sparsity(model) == pytest.approx([0.25, 0.75], abs=1e-3)
    assert report.layer_sparsity == pytest.approx([0.25, 0.75], abs=1e-3)
    assert report.allocation == "low-then-high(low=0.25)"


def test_owl_through_the_hook_gives_owls_own_targets(tiny_calibration):
    reference_model, _ = load_model("tiny-llama")
    expected = [t.ratio for t in owl_layer_targets(reference_model, tiny_calibration, parse_sparsity(0.5), m=4.0, lam=0.1)]
    assert max(expected) - min(expected) == pytest.approx(0.2)  # a real spread, not the uniform one
    model, _ = load_model("tiny-llama")
    report = prunebench.prune(model, "wanda", 0.5, tiny_calibration, progress=False, allocation="owl",
                              allocation_settings={"m": 4, "lambda": 0.1})
    assert report.layer_targets == expected
    assert report.allocation == "owl(m=4, lambda=0.1)"


def test_owl_is_an_allocation_with_settings_everywhere():
    """One spelling: the engine takes no owl_m/owl_lambda, prune's CLI reads --allocation owl:KEY=VALUE."""
    import inspect

    from prunebench.cli.prune import parse_allocation_option
    from prunebench.pruning.engine import prune

    assert not [p for p in inspect.signature(prune).parameters if p.startswith("owl")]
    assert parse_allocation_option("owl:lambda=0.1") == ("owl", {"m": 5.0, "lambda": 0.1})
    with pytest.raises(UsageError, match="Unknown setting"):
        parse_allocation_option("owl:lam=0.1")


@pytest.mark.parametrize("keywords,message", [
    ({"allocation": "owll"}, "Unknown allocation 'owll'. Did you mean: owl?"),
    ({"allocation": "global"}, "Allocation 'global' serves structured pruning, not unstructured"),
    ({"allocation": "owl", "allocation_settings": {"mm": 4}}, "Unknown setting(s) mm for allocation 'owl'"),
    ({"allocation": "owl", "allocation_settings": {"m": "many"}}, "Bad value"),
    ({"allocation": "low-then-high", "sparsity": "2:4"}, "not N:M 2:4"),
])
def test_bad_allocation_input_is_one_line(register_plugin, tiny_llama, tiny_calibration, keywords, message):
    register_plugin(Plugin(LowThenHigh()))
    sparsity = keywords.pop("sparsity", 0.5)
    with pytest.raises(UsageError) as error:
        prunebench.prune(tiny_llama[0], "magnitude", sparsity, tiny_calibration, progress=False, **keywords)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("answer,message", [
    ([0.5], "gave 1 layer sparsities for 2 decoder layers"),
    ([0.5, 1.0], "gave layer 1 the sparsity 1.0"),
    ([0.5, "half"], "gave layer 1 the sparsity 'half'"),
])
def test_a_plugin_answer_that_does_not_fit_the_model_is_refused(register_plugin, tiny_llama, tiny_calibration,
                                                                answer, message):
    class Fixed(LayerAllocation):
        name = "fixed"
        description = "test: a fixed answer"
        tracks = ("unstructured",)

        def layer_sparsities(self, model, calibration, target, settings, **run):
            return answer

    register_plugin(Plugin(Fixed()))
    before = {k: v.clone() for k, v in tiny_llama[0].state_dict().items()}
    with pytest.raises(UsageError, match=message):
        prunebench.prune(tiny_llama[0], "magnitude", 0.5, tiny_calibration, progress=False, allocation="fixed")
    assert all(torch.equal(v, before[k]) for k, v in tiny_llama[0].state_dict().items())  # refused before pruning


def test_list_shows_which_track_each_allocation_serves(register_plugin, capsys):
    register_plugin(Plugin(LowThenHigh()))
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    section = listing[listing.index("Layer allocations"):].split("\n\n")[0]
    rows = {line.split()[0]: line for line in section.splitlines()[3:] if line.strip()}
    assert "unstructured" in rows["owl"] and "structured" not in rows["owl"].replace("unstructured", "")
    assert "unstructured, structured" in rows["uniform"]
    assert "unstructured" not in rows["global"] and "structured" in rows["global"]
    assert "low=0.1" in rows["low-then-high"] and "m=5.0, lambda=0.08" in rows["owl"]


ALLOCATION_GRID = """\
suite: tiny
models: [tiny-llama]
methods:
  - {{method: magnitude, allocation: {allocation}}}
sparsity: [{sparsity}]
calibration: {{dataset: pydoc, nsamples: 2, lengths: [16]}}
evaluation:
  perplexity: [{{dataset: pydoc, seqlen: 32, max_windows: 2}}]
device: cpu
"""


def test_a_grid_and_prune_name_a_plugins_allocation_with_its_settings(register_plugin, tmp_path, capsys):
    from prunebench.grid.config import load_config
    from prunebench.grid.runner import run_grid
    from prunebench.store.results import ResultsStore

    register_plugin(Plugin(LowThenHigh()))
    path = tmp_path / "grid.yaml"
    path.write_text(ALLOCATION_GRID.format(allocation="{name: low-then-high, low: 0.25}", sparsity="0.5"))
    summary = run_grid(load_config(path), tmp_path / "results", progress=False, echo=lambda line: None)
    assert not summary.failed
    record = next(r for r in ResultsStore(tmp_path / "results").records() if r["cell"]["method"] != "dense")
    assert record["layer_targets"] == pytest.approx([0.25, 0.75])
    assert record["measured_sparsity"]["per_layer"] == pytest.approx([0.25, 0.75], abs=1e-3)
    # Bad names and settings in a grid: refused at validation, naming the fix.
    for allocation, sparsity, message in (("{name: low-then-hihg}", "0.5", "Did you mean: low-then-high"),
                                          ("{name: low-then-high, lo: 0.2}", "0.5", "Unknown setting(s) lo"),
                                          ("low-then-high", "'2:4'", "uses the low-then-high allocation, which needs a ratio")):
        path.write_text(ALLOCATION_GRID.format(allocation=allocation, sparsity=sparsity))
        assert main(["validate", str(path)]) == 2
        assert message in capsys.readouterr().err
    # prune: the plugin's allocation by name; a typo refused before the model loads.
    assert main(["prune", "--model", "tiny-llama", "--method", "magnitude", "--sparsity", "0.5",
                 "--nsamples", "2", "--seqlen", "16", "--allocation", "low-then-high"]) == 0
    assert "low-then-high" in capsys.readouterr().out
    assert main(["prune", "--model", "tiny-llama", "--method", "magnitude", "--sparsity", "0.5",
                 "--allocation", "owll"]) == 2
    assert "Did you mean: owl" in capsys.readouterr().err
