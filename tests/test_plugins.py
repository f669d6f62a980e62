"""The plugin host: the README's example plugin, entry points, registries and their errors."""
import re
from pathlib import Path

import pytest
import torch

import prunebench
from prunebench import PruningMethod, hookimpl, registry
from prunebench.walk import decoder_layers
from prunebench.errors import UsageError
from prunebench.masks import lowest_per_row

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
    from prunebench.walk import capture_inputs

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


def test_every_hook_is_documented_in_the_readme():
    from prunebench import hookspecs

    names = [n for n in dir(hookspecs) if n.startswith(("register_", "make_"))]
    assert names and all(f"`{n}`" in README.read_text() for n in names)


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
