"""The plugin host: the README's example plugin, entry points, registries and their errors."""
import re
from pathlib import Path

import prunebench
import pytest
import torch
from prunebench import PruningMethod, hookimpl, registry
from prunebench.api.errors import UsageError
from prunebench.models.walk import capture_inputs, decoder_layers
from prunebench.pruning.masks import lowest_per_row

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example_plugin() -> str:
    text = README.read_text()
    block = re.search(r"<!-- example-plugin -->\s*```python\n(.*?)```\s*<!-- /example-plugin -->", text, re.S)
    assert block, "README lost its example plugin"
    return block.group(1)


@pytest.fixture
def installed_example(install_plugin):
    source = readme_example_plugin()
    assert len(source.strip().splitlines()) <= 20
    install_plugin(source, "wanda_sq_example", "wanda-sq")


def test_readme_example_loads_from_its_entry_point_and_prunes(installed_example, tiny_llama, tiny_calibration):
    registered = registry.registered("register_methods")
    assert registered["wanda-sq"].plugin == "wanda-sq"
    dense = decoder_layers(tiny_llama[0])[0].self_attn.q_proj.weight.clone()
    # Known answer for layer 0 (its inputs do not depend on pruning): |W| * sum x^2, per row.
    captured = capture_inputs(tiny_llama[0], tiny_calibration, 8, torch.device("cpu"))
    layer = decoder_layers(tiny_llama[0])[0]
    with torch.no_grad():
        x = layer.input_layernorm(torch.cat(captured.hidden)).reshape(-1, dense.shape[1])
    expected = lowest_per_row(dense.abs() * x.square().sum(0), 0.5)

    prunebench.prune(tiny_llama[0], "wanda-sq", 0.5, tiny_calibration, progress=False, power=1.0)
    assert torch.equal(layer.self_attn.q_proj.weight == 0, expected)


def test_load_plugins_env_restricts_third_party_plugins(installed_example, monkeypatch):
    monkeypatch.setenv(registry.LOAD_PLUGINS_ENV, "someone-else")
    registry.reset_plugin_manager()
    assert "wanda-sq" not in registry.registered("register_methods")
    assert {"magnitude", "wanda"} <= set(registry.registered("register_methods"))


class _Doubler(PruningMethod):
    name = "wanda"
    description = "a clash"

    def score(self, weight, stats, **args):
        return weight.abs()


def test_duplicate_method_names_are_refused(register_plugin):
    class Clash:
        @hookimpl
        def register_methods(self, register):
            register(_Doubler())

    register_plugin(Clash(), name="clash")
    with pytest.raises(UsageError, match="registered by both prunebench.baselines.wanda and clash"):
        registry.registered("register_methods")


def test_misspelled_hook_fails_loudly():
    import pluggy

    class Typo:
        @hookimpl
        def register_method(self, register):
            pass

    manager = registry.plugin_manager()
    manager.register(Typo(), name="typo")
    try:
        with pytest.raises(pluggy.PluginValidationError):
            manager.check_pending()
    finally:
        manager.unregister(name="typo")


def test_registered_method_needs_a_registered_statistic(register_plugin, tiny_llama, tiny_calibration):
    class NeedsMissing(PruningMethod):
        name = "needs-missing"
        description = "asks for a statistic nobody provides"
        statistics = ("no_such_statistic",)

    class Provider:
        @hookimpl
        def register_methods(self, register):
            register(NeedsMissing())

    register_plugin(Provider(), name="provider")
    with pytest.raises(UsageError, match="no_such_statistic"):
        prunebench.prune(tiny_llama[0], "needs-missing", 0.5, tiny_calibration)


def test_a_plugin_statistic_feeds_a_plugin_method(register_plugin, tiny_llama, tiny_calibration):
    from prunebench import Statistic
    from prunebench.api.method import Accumulator

    class _AbsSum(Accumulator):
        def __init__(self, width):
            self.total = torch.zeros(width)

        def add(self, inputs, outputs, nsequences):
            self.total += inputs.abs().sum(dim=0)

        def result(self):
            return self.total

    class InputAbsSum(Statistic):
        name = "input_abs_sum"
        description = "sum over tokens of |x_j|"

        def accumulator(self, linear, device, arguments):
            return _AbsSum(linear.in_features)

    class AbsActivation(PruningMethod):
        name = "abs-activation"
        description = "|W_ij| * sum_t |x_tj|"
        statistics = ("input_abs_sum",)

        def score(self, weight, stats, group):
            return weight.abs() * stats["input_abs_sum"]

    class Provider:
        @hookimpl
        def register_statistics(self, register):
            register(InputAbsSum())

        @hookimpl
        def register_methods(self, register):
            register(AbsActivation())

    register_plugin(Provider(), name="abs-provider")
    assert registry.registered("register_statistics")["input_abs_sum"].plugin == "abs-provider"
    model = tiny_llama[0]
    layer = decoder_layers(model)[0]
    dense = layer.self_attn.q_proj.weight.clone()
    captured = capture_inputs(model, tiny_calibration, 8, torch.device("cpu"))
    with torch.no_grad():
        x = layer.input_layernorm(torch.cat(captured.hidden)).reshape(-1, dense.shape[1])
    expected = lowest_per_row(dense.abs() * x.abs().sum(0), 0.5)
    prunebench.prune(model, "abs-activation", 0.5, tiny_calibration, progress=False)
    assert torch.equal(layer.self_attn.q_proj.weight == 0, expected)


def test_a_plugin_dataset_and_model_alias_are_used_by_name(register_plugin):
    from prunebench.api.sources import ModelAlias, TextDataset
    from prunebench.data.datasets import calibration_documents, evaluation_text
    from prunebench.models.loading import load_model

    class Memo(TextDataset):
        def calibration_documents(self, path, dirs):
            return ["first document", "second document"]

        def evaluation_text(self, path, dirs):
            return "held-out text"

    loaded = []

    def load(dtype):
        loaded.append(dtype)
        return "model", "tokenizer"

    class Provider:
        @hookimpl
        def register_datasets(self, register):
            register(Memo("memo", "two documents in memory"))

        @hookimpl
        def register_models(self, register):
            register(ModelAlias("memo-model", "a stand-in", load))

    register_plugin(Provider(), name="memo-provider")
    assert calibration_documents("memo") == ["first document", "second document"]
    assert evaluation_text("memo") == "held-out text"
    assert load_model("memo-model", "bfloat16") == ("model", "tokenizer")
    assert loaded == [torch.bfloat16]


def test_registries_are_built_once_and_rebuilt_after_registering(register_plugin):
    calls = []

    class Counting:
        @hookimpl
        def register_methods(self, register):
            calls.append(1)

    register_plugin(Counting(), name="counting")
    registry.registered("register_methods")
    registry.registered("register_methods")
    registry.get_method("wanda")
    assert len(calls) == 1
    register_plugin(type("Other", (), {})(), name="other")
    registry.registered("register_methods")
    assert len(calls) == 2


def test_a_plugin_that_raises_while_registering_is_named(register_plugin):
    class Broken:
        @hookimpl
        def register_models(self, register):
            raise RuntimeError("boom")

    register_plugin(Broken(), name="broken-plugin")
    with pytest.raises(UsageError, match="Plugin broken-plugin failed in register_models: RuntimeError: boom"):
        registry.registered("register_models")

