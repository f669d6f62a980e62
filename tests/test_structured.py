"""Structured pruning: known answers for every score and allocation on hand-made tensors, the host's
budget rules, physical removal, save and reload with the same logits, the CLI, and a contract over
every registered structured method on a tiny LLaMA."""
import copy
import json
import math
import subprocess
import sys

import prunebench
import pytest
import torch
from prunebench import register_pruned_models, registry
from prunebench.api.allocation import LayerAllocation
from prunebench.api.errors import UsageError
from prunebench.api.structured import LayerEvidence, LayerScores, StructuredMethod, group_sum
from prunebench.baselines.structured import block_influence
from prunebench.cli.main import main
from prunebench.models.checkpoints import save_structured
from prunebench.models.loading import load_model
from prunebench.models.walk import decoder_layers
from prunebench.models.structure import keep_channels, keep_heads, prunable_parameters, read_structure, read_structures
from prunebench.plugins.cfsp import angular_importance, channel_scores, sigmoid_removal_ratios
from prunebench.plugins.saap import ranked_removal_ratios, uncertainty_fusion
from prunebench.pruning.structured_allocation import LayerBudget, Plan
from prunebench.pruning.structured_engine import accumulate_gradients, structured_prune
from torch import nn

METHODS = sorted(registry.registered("register_structured_methods"))


@pytest.fixture(scope="module")
def calibration():
    return torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(0))


def tiny_layer():
    """A LLaMA layer: hidden 4, 2 kv groups of 2 query heads, head_dim 1, 3 FFN channels; weights = index."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    config = LlamaConfig(hidden_size=4, intermediate_size=3, num_attention_heads=4, num_key_value_heads=2, head_dim=1)
    layer = LlamaDecoderLayer(config, 0)
    for linear in layer.modules():
        if isinstance(linear, nn.Linear):
            linear.weight.data = torch.arange(linear.weight.numel(), dtype=torch.float32).reshape(linear.weight.shape)
    return read_structure(0, layer)


def test_group_sum_adds_each_structures_rows_and_columns():
    s = tiny_layer()
    ones = {name: torch.ones_like(linear.weight) for name, linear in s.linears.items()}
    # A kv group: 2 q rows + 1 k row + 1 v row of width 4, and 2 o columns of height 4.
    assert group_sum(s, ones, "heads").tolist() == [24.0, 24.0]
    # A channel: one gate row and one up row of width 4, one down column of height 4.
    assert group_sum(s, ones, "channels").tolist() == [12.0, 12.0, 12.0]
    weights = {"o_proj": s.attention.o_proj.weight.data}  # o[i, j] = 4 i + j
    assert group_sum(s, weights, "heads").tolist() == [sum(4 * i + j for i in range(4) for j in (0, 1)),
                                                       sum(4 * i + j for i in range(4) for j in (2, 3))]


def test_group_magnitude_is_the_l2_norm_of_the_group():
    s = tiny_layer()
    method = registry.get_structured_method("magnitude-sp")
    scores = method.score_layer(LayerEvidence(0, s.layer, s)).scores
    down = s.mlp.down_proj.weight
    expected = math.sqrt(float(s.mlp.gate_proj.weight[1].square().sum() + s.mlp.up_proj.weight[1].square().sum()
                               + down[:, 1].square().sum()))
    assert scores["channels"][1].item() == pytest.approx(expected)


def test_wanda_sp_weights_each_input_by_its_norm():
    s = tiny_layer()
    stats = {name: {"input_sq_norm": torch.full((linear.in_features,), 4.0)} for name, linear in s.linears.items()}
    stats["down_proj"]["input_sq_norm"] = torch.tensor([1.0, 9.0, 0.0])
    evidence = LayerEvidence(0, s.layer, s, stats=stats)
    output = registry.get_structured_method("wanda-sp").score_layer(evidence, sides="output").scores["channels"]
    assert output.tolist() == pytest.approx([1 * s.mlp.down_proj.weight[:, 0].sum().item(),
                                             3 * s.mlp.down_proj.weight[:, 1].sum().item(), 0.0])
    both = registry.get_structured_method("wanda-sp").score_layer(evidence, sides="both").scores["channels"]
    rows = 2 * (s.mlp.gate_proj.weight[2].sum() + s.mlp.up_proj.weight[2].sum())
    assert both[2].item() == pytest.approx(rows.item())


def test_flap_scores_variance_times_column_norm_and_compensation_keeps_constant_inputs_exact():
    s = tiny_layer()
    x = torch.tensor([[1.0, 2.0, 5.0], [3.0, 2.0, 5.0], [5.0, 2.0, 5.0]])  # channel 1 and 2 are constant
    moments = torch.stack([x.double().mean(0), x.double().var(0)])
    stats = {"o_proj": {"input_moments": torch.zeros(2, 4, dtype=torch.float64)}, "down_proj": {"input_moments": moments}}
    flap = registry.get_structured_method("flap")
    scores = flap.score_layer(LayerEvidence(0, s.layer, s, stats=stats))
    column = s.mlp.down_proj.weight[:, 0].double().square().sum()
    assert scores.scores["channels"].tolist() == pytest.approx([4.0 * column.item(), 0.0, 0.0])
    before = s.mlp.down_proj(x)
    flap.compensate(s, {"channels": torch.tensor([1, 2])}, scores, compensate_bias=True)
    keep_channels(s, torch.tensor([0]))
    assert torch.allclose(s.mlp.down_proj(x[:, :1]), before, atol=1e-4)


def test_taylor_vector_and_element_readings():
    s = tiny_layer()
    for linear in s.linears.values():
        linear.weight.grad = torch.ones_like(linear.weight)
    s.mlp.down_proj.weight.grad[:, 0] = -1.0  # channel 0: w g of opposite signs in rows and column
    method = registry.get_structured_method("llm-pruner")
    vector = method.score_layer(LayerEvidence(0, s.layer, s), reading="vector").scores["channels"]
    element = method.score_layer(LayerEvidence(0, s.layer, s), reading="element").scores["channels"]
    rows = float(s.mlp.gate_proj.weight[0].sum() + s.mlp.up_proj.weight[0].sum())
    column = float(s.mlp.down_proj.weight[:, 0].sum())
    assert vector[0].item() == pytest.approx(abs(rows - column))
    assert element[0].item() == pytest.approx(rows + column)


def test_layer_angles_and_block_influence():
    a = [torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])]
    b = [torch.tensor([[[0.0, 2.0], [3.0, 0.0]]])]  # one token turned 90 degrees, one kept
    assert angular_importance(a, b) == pytest.approx(0.25)
    assert block_influence(a, b) == pytest.approx(0.5)


def test_cfsp_channel_scores_and_sigmoid_allocation():
    norms = torch.tensor([1.0, 2.0])
    gate = torch.tensor([[1.0, 1.0], [3.0, 3.0]])  # row L1 2, 6: relative 0.5, 1.5
    up = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # 2, 2: 1, 1
    down = torch.tensor([[1.0, 3.0], [-1.0, 3.0]])  # column L1 2, 6: 0.5, 1.5
    assert channel_scores(norms, gate, up, down).tolist() == pytest.approx([2.0 / 3, 2 * 4.0 / 3])
    ratios = sigmoid_removal_ratios([0.1, 0.2, 0.3], 0.4, 1.0, [1, 1, 1])
    assert sum(ratios) / 3 == pytest.approx(0.4)
    assert ratios[0] > ratios[1] > ratios[2]  # the most important layer loses least
    assert ratios[1] == pytest.approx(0.4)


def test_saap_fusion_and_closed_form_uncertainty_scales():
    vector, element = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 6.0])
    fused = uncertainty_fusion(vector, element, 2.0, 4.0)
    assert fused.tolist() == pytest.approx([0.25 + 0.25 + 0.5 * math.log(8), 0.75 + 0.75 + 0.5 * math.log(8)])

    def loss(scale2):  # summed fused loss of the vector-wise term as a function of s1^2
        return float((vector / (2 * scale2) + 0.5 * math.log(scale2)).sum())

    best = float(vector.mean())  # the closed form: the mean importance
    assert loss(best) < loss(best * 1.1) and loss(best) < loss(best * 0.9)
    weights = ranked_removal_ratios([0.3, 0.1, 0.2, 0.4], 0.5, protect=0.25)
    assert weights == [1.0, 1.0, 1.0, 0.0]  # the most important layer (0.4) stays whole


def plan(sparsity, kinds=("heads", "channels"), round_to=1, heads=3, channels=10):
    layer = LayerBudget({"heads": heads, "channels": channels}, {"heads": 30, "channels": 9}, heads * 30 + channels * 9)
    return Plan(sparsity, kinds, [layer, layer], [LayerScores(), LayerScores()], round_to)


def test_counts_round_heads_and_let_channels_make_up_the_budget():
    counts = plan(0.5).counts_for_ratios([0.5, 0.5])
    # 180 parameters: 2 of 3 heads (60) go by rounding 1.5 up, channels then cover 30 more: 3 of 10.
    assert counts == [{"heads": 2, "channels": 3}] * 2
    assert plan(0.5, round_to=4).counts_for_ratios([0.5, 0.5])[0]["channels"] == 2  # kept 7 -> 8
    assert plan(0.3, kinds=("channels",)).counts_for_ratios([0.3, 0.3])[0] == {"channels": 6}  # 54 / 9
    with pytest.raises(UsageError, match="every attention head of layer 0"):
        plan(0.9).counts_for_ratios([0.9, 0.9])


def test_capped_ratios_keep_the_mean_and_refuse_the_impossible():
    p = plan(0.5, kinds=("channels",))
    ratios = p.capped([0.1, 0.7])  # a channels-only layer can lose at most 81 of 180 parameters
    assert ratios == pytest.approx([0.35, 0.45])
    with pytest.raises(UsageError, match="cannot be reached"):
        p.capped([0.5, 0.5])


def test_physical_removal_matches_masking(tiny_llama):
    model, _ = tiny_llama
    structure = read_structures(model)[0]
    x = torch.randn(1, 5, 64)
    attention = structure.attention
    with torch.no_grad():
        reference_o = attention.o_proj.weight.clone()
        attention.o_proj.weight[:, :32] = 0  # mask kv group 0 (2 query heads x 16) at the output side
        expected = structure.layer.mlp(x)
    keep_channels(structure, torch.arange(128))  # no-op channels
    keep_heads(structure, torch.tensor([1]))
    assert structure.kv_heads == 1 and attention.q_proj.out_features == 32 and attention.o_proj.in_features == 32
    assert torch.equal(attention.o_proj.weight, reference_o[:, 32:])
    assert torch.allclose(structure.layer.mlp(x), expected)


@pytest.mark.parametrize("method", METHODS)
def test_every_structured_method_removes_about_the_budget_and_still_runs(method, calibration):
    model, _ = load_model("tiny-llama")
    before = prunable_parameters(model)
    report = structured_prune(model, method, 0.3, calibration, batch_size=2)
    assert report.prunable_before == before and report.prunable_after < before
    if method == "cfsp":  # the authors' CFSP: the sparsity is the fraction of FFN channels removed
        channels = sum(k["channels"] for k in report.kept) / (model.config.intermediate_size * len(report.kept))
        assert 1 - channels == pytest.approx(0.3, abs=0.06) and report.removed_fraction < 0.3
    else:
        assert report.removed_fraction == pytest.approx(0.3, abs=0.06) or method == "shortgpt"
    logits = model(calibration[:1]).logits
    assert torch.isfinite(logits).all()
    again, _ = load_model("tiny-llama")
    structured_prune(again, method, 0.3, calibration, batch_size=2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("method,expected_format", [("wanda-sp", "family"), ("cfsp-normalized", "prunebench"),
                                                    ("flap", "prunebench"), ("shortgpt", "family")])
def test_saved_model_reloads_with_the_same_logits(method, expected_format, calibration, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_model("tiny-llama")
    structured_prune(model, method, 0.3, calibration, batch_size=2)
    saved = save_structured(model, tokenizer, tmp_path)
    assert saved["format"] == expected_format and saved["bytes"] > 0
    register_pruned_models()  # as prunebench's own loads do
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(reloaded(calibration).logits, model(calibration).logits, atol=1e-5)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == ("llama" if expected_format == "family" else "prunebench_llama")


def test_per_layer_shapes_load_after_registering_in_a_fresh_process(calibration, tmp_path):
    model, tokenizer = load_model("tiny-llama")
    structured_prune(model, "cfsp", 0.3, calibration, batch_size=2)
    save_structured(model, tokenizer, tmp_path)
    torch.save(model(calibration).logits.detach(), tmp_path / "logits.pt")
    code = ("import prunebench, torch\nfrom transformers import AutoModelForCausalLM\nprunebench.register_pruned_models()\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})\n"
            f"x = torch.load({str(tmp_path / 'logits.pt')!r})\n"
            f"print('SAME', torch.allclose(m(torch.tensor({calibration.tolist()})).logits, x, atol=1e-5))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "SAME True" in out.stdout, out.stderr[-800:]


def test_gradients_are_those_of_the_mean_calibration_loss(calibration):
    model, _ = load_model("tiny-llama")
    accumulate_gradients(model, calibration, batch_size=3, device=torch.device("cpu"))  # uneven batches 3 + 1
    split = model.model.layers[0].mlp.down_proj.weight.grad.clone()
    model.zero_grad()
    model(input_ids=calibration, labels=calibration).loss.backward()
    assert torch.allclose(split, model.model.layers[0].mlp.down_proj.weight.grad, atol=1e-6)
    assert model.model.embed_tokens.weight.requires_grad  # flags restored


def test_saap_lora_recovery_runs_and_merges(calibration):
    pytest.importorskip("peft")
    model, _ = load_model("tiny-llama")
    report = structured_prune(model, "saap-standin", 0.3, calibration, batch_size=2, recover_tokens=48)
    assert "recovery" in report.timings and any("recovery" in n for n in report.notes)
    assert report.parameters_after == sum(p.numel() for p in model.parameters())  # adapters merged away
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_inline_structured_method_and_allocation_hooks(register_plugin, calibration):
    class FirstGoes(StructuredMethod):
        name = "first-goes"
        description = "index as score: the lowest indices are removed"
        kinds = ("channels",)
        allocation = "everything-in-layer-0"

        def score_layer(self, evidence, **args):
            return LayerScores({"channels": torch.arange(evidence.structure.channels, dtype=torch.float64)})

    class LayerZero:
        name = "everything-in-layer-0"
        description = "layer 0 pays the whole budget"

        def allocate(self, plan, **args):
            return [{"channels": 64}, {"channels": 0}]

    class Plugin:
        @prunebench.hookimpl
        def register_structured_methods(self, register):
            register(FirstGoes())

        @prunebench.hookimpl
        def register_allocations(self, register):
            register(LayerZero())

    register_plugin(Plugin())
    model, _ = load_model("tiny-llama")
    down = model.model.layers[0].mlp.down_proj.weight[:, 64:].clone()
    report = structured_prune(model, "first-goes", 0.3, calibration)
    assert report.kept == [{"heads": 2, "channels": 64}, {"heads": 2, "channels": 128}]
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, down)


def test_cli_prunes_saves_and_lists(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    assert main(["prune", "--model", "tiny-llama", "--method", "cfsp", "--sparsity", "0.3", "--nsamples", "2",
                 "--seqlen", "16", "--save", str(tmp_path / "model"), "--json", str(tmp_path / "r.json")]) == 0
    output = json.loads((tmp_path / "r.json").read_text())
    details = output["pruned"]["structured"]
    assert details["parameters_after"] < details["parameters_before"] and output["saved"]["bytes"] > 0
    register_pruned_models()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert sum(p.numel() for p in reloaded.parameters()) == details["parameters_after"]
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in METHODS) and "cfsp-sigmoid" in listing


@pytest.mark.parametrize("argv,message", [
    (["--model", "tiny-llama", "--method", "cfsp", "--sparsity", "2:4"], "not N:M"),
    (["--model", "tiny-opt", "--method", "saap-standin", "--sparsity", "0.3"], "Cannot read the head layout"),
    (["--model", "tiny-llama", "--method", "wanda-sp", "--sparsity", "0.75"], "every attention head"),
    (["--model", "tiny-llama", "--method", "flap", "--sparsity", "0.95"], "cannot be reached while every layer keeps"),
    (["--model", "tiny-llama", "--method", "cfsp", "--arg", "allocation=owl"], "serves unstructured pruning, not structured"),
    (["--model", "tiny-llama", "--method", "cfsp", "--arg", "allocation=globl"], "Did you mean: global"),
])
def test_bad_structured_input_is_one_line_exit_2(argv, message, capsys):
    assert main(["prune", "--nsamples", "2", "--seqlen", "16", *argv]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


# --- The budget is refused from the layer layout alone, before any forward or backward ----------

@pytest.fixture
def no_calibration_work(monkeypatch):
    """Every way a structured run touches calibration data or scores raises: a refusal must come first."""
    import prunebench.data.datasets
    import prunebench.pruning.structured_engine as engine

    def forbidden(*args, **kwargs):
        raise AssertionError("calibration work before the budget check")

    monkeypatch.setattr(engine, "capture_inputs", forbidden)
    monkeypatch.setattr(engine, "accumulate_gradients", forbidden)
    for name in METHODS:
        monkeypatch.setattr(type(registry.get_structured_method(name)), "score_layer", forbidden)
    monkeypatch.setattr(prunebench.data.datasets, "sample_calibration", forbidden)


@pytest.mark.parametrize("method,sparsity,message", [
    # Uniform counts from sparsity and layout: 0.75 of 2 key/value groups rounds to both.
    ("magnitude-sp", 0.75, "every attention head of layer 0"),
    ("wanda-sp", 0.75, "every attention head of layer 0"),
    ("llm-pruner", 0.75, "every attention head of layer 0"),
    # Beyond what the layers can lose while each keeps a head and a channel (at most 0.828): any allocation.
    ("magnitude-sp", 0.99, "Sparsity 0.99 cannot be reached while every layer keeps a head and a channel"),
    ("flap", 0.95, "cannot be reached while every layer keeps a head and a channel"),
    ("saap-standin", 0.95, "cannot be reached while every layer keeps a head and a channel"),
    ("shortgpt", 0.8, "would remove all 2 decoder layers"),
])
def test_an_impossible_budget_fails_before_any_calibration_work(no_calibration_work, calibration, method, sparsity,
                                                                message):
    model, _ = load_model("tiny-llama")
    with pytest.raises(UsageError, match=message):
        structured_prune(model, method, sparsity, calibration)


def test_cli_refuses_the_budget_right_after_loading_the_model(no_calibration_work, capsys):
    import time

    from prunebench.models.loading import load_model as load

    load("tiny-llama")  # warm: what is timed below is the command, not the first import
    start = time.perf_counter()
    assert main(["prune", "--model", "tiny-llama", "--method", "magnitude-sp", "--sparsity", "0.99",
                 "--eval-dataset", "pydoc", "--nsamples", "2", "--seqlen", "16"]) == 2
    elapsed = time.perf_counter() - start
    error = capsys.readouterr().err
    assert "Sparsity 0.99 cannot be reached" in error and error.count("\n") == 1
    assert elapsed < 5, elapsed  # well under a second unloaded; bounded loosely for a busy machine


@pytest.mark.parametrize("method", METHODS)
def test_n_m_is_refused_by_every_structured_method(no_calibration_work, calibration, method):
    model, _ = load_model("tiny-llama")
    with pytest.raises(UsageError, match="not N:M sparsity 2:4"):
        structured_prune(model, method, "2:4", calibration)


def test_an_unreadable_head_layout_is_one_line_before_any_calibration_work(no_calibration_work, calibration):
    model, _ = load_model("tiny-llama")
    attention = model.model.layers[1].self_attn
    attention.k_proj = nn.Linear(64, 24, bias=False)  # 24 rows: not a whole number of 16-wide heads
    with pytest.raises(UsageError) as error:
        structured_prune(model, "wanda-sp", 0.3, calibration)
    assert str(error.value).startswith("Cannot read the head layout of LlamaDecoderLayer (layer 1)")
    assert "\n" not in str(error.value)
    opt, _ = load_model("tiny-opt")
    with pytest.raises(UsageError, match="Cannot read the head layout of OPTDecoderLayer"):
        structured_prune(opt, "magnitude-sp", 0.3, calibration)


# --- propagate: scores on the pruned outputs of earlier layers, where the method allows it -------

class FixedCounts(LayerAllocation):
    """Removes exactly `counts` (set by the test), whatever the budget and the scores."""

    name = "fixed-counts"
    description = "test: fixed removal counts per layer"
    needs_scores = False
    counts: list = []

    def allocate(self, plan, **args):
        return self.counts


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_pruned_propagation_scores_each_layer_on_the_pruned_layers_before_it(register_plugin, calibration):
    pruned, _ = load_model("tiny-llama")
    report = structured_prune(pruned, "wanda-sp", 0.3, calibration, batch_size=2, propagate="pruned")
    assert report.propagate.startswith("pruned")
    dense, _ = load_model("tiny-llama")
    assert structured_prune(dense, "wanda-sp", 0.3, calibration, batch_size=2).propagate.startswith("dense")
    assert report.kept == [{"heads": 1, "channels": 102}] * 2  # uniform counts: the same in both runs

    # The known answer, built with dense scoring only: prune layer 0 alone, then score the model with
    # its pruned layer 0 and prune layer 1 alone; layer 1 then saw the pruned layer 0's outputs.
    allocation = FixedCounts()

    class Plugin:
        @prunebench.hookimpl
        def register_allocations(self, register):
            register(allocation)

    register_plugin(Plugin())
    stepwise, _ = load_model("tiny-llama")
    removed = {"heads": 1, "channels": 26}
    nothing = {"heads": 0, "channels": 0}
    for counts in ([removed, nothing], [nothing, removed]):
        allocation.counts = counts
        structured_prune(stepwise, "wanda-sp", 0.3, calibration, batch_size=2, allocation="fixed-counts")
    expected, got, dense_state = state(stepwise), state(pruned), state(dense)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    layer0 = [k for k in expected if k.startswith("model.layers.0.")]
    layer1 = [k for k in expected if k.startswith("model.layers.1.")]
    assert all(torch.equal(dense_state[k], got[k]) for k in layer0)  # layer 0 sees the same inputs either way
    assert not all(torch.equal(dense_state[k], got[k]) for k in layer1)  # layer 1 does not


@pytest.mark.parametrize("method,arguments,message", [
    ("saap-standin", {}, "whole-model gradients of the dense model, so propagate does not apply"),
    ("llm-pruner", {}, "whole-model gradients of the dense model, so propagate does not apply"),
    ("flap", {}, "Allocation 'global' needs every layer's scores before any layer is pruned"),
    ("cfsp", {}, "Allocation 'cfsp' needs every layer's scores"),
    ("shortgpt", {}, "ranks every layer before removing any"),
])
def test_pruned_propagation_is_refused_where_it_cannot_apply(no_calibration_work, calibration, method, arguments,
                                                             message):
    model, _ = load_model("tiny-llama")
    with pytest.raises(UsageError, match=message):
        structured_prune(model, method, 0.3, calibration, propagate="pruned", **arguments)
    with pytest.raises(UsageError, match="Bad propagate 'sideways'"):
        structured_prune(model, method, 0.3, calibration, propagate="sideways", **arguments)


def test_propagation_is_recorded_and_flap_with_uniform_counts_can_propagate_pruned(calibration):
    model, _ = load_model("tiny-llama")
    assert structured_prune(model, "llm-pruner", 0.3, calibration).propagate.startswith("not applicable")
    model, _ = load_model("tiny-llama")
    report = structured_prune(model, "flap", 0.3, calibration, propagate="pruned", allocation="uniform")
    assert report.propagate.startswith("pruned") and report.removed_fraction == pytest.approx(0.3, abs=0.02)


def test_cli_propagate_for_structured_methods(capsys, tmp_path):
    assert main(["prune", "--model", "tiny-llama", "--method", "saap-standin", "--propagate", "pruned",
                 "--nsamples", "2", "--seqlen", "16"]) == 2
    error = capsys.readouterr().err
    assert "propagate does not apply" in error and error.count("\n") == 1
    for given, expected in ((["--propagate", "pruned"], "pruned"), ([], "dense")):
        assert main(["prune", "--model", "tiny-llama", "--method", "wanda-sp", "--sparsity", "0.3", *given,
                     "--nsamples", "2", "--seqlen", "16", "--json", str(tmp_path / "r.json")]) == 0
        assert json.loads((tmp_path / "r.json").read_text())["pruned"]["structured"]["propagate"].startswith(expected)


def test_speed_orders_a_model_with_half_the_layers_above_the_full_one(one_thread):
    """Two different models with a known ordering: half the decoder layers, each costing 20 ms (long beside a
    loaded machine's oversleeping), must show a prefill and decode speedup over the full model (paired per
    repeat, interleaved), near 2; the lower bounds only, as a loaded machine's delays fall anywhere."""
    from planted_cost import sleeping_layers
    from prunebench.metrics.measurements import measure_speed

    full, _ = load_model("tiny-llama")
    shallow = copy.deepcopy(full)
    del decoder_layers(shallow)[len(decoder_layers(shallow)) // 2:]
    shallow.config.num_hidden_layers = len(decoder_layers(shallow))
    result = measure_speed({"dense": sleeping_layers(full, 0.02), "shallow": sleeping_layers(shallow, 0.02)},
                           torch.arange(32), repeats=5, decode_tokens=3, decode_batches=(1, 2), prompt_length=8)
    entry = result["models"]["shallow"]
    assert set(entry) == {"prefill", "decode_b1", "decode_b2"} and len(entry["prefill"]["seconds"]["samples"]) == 5
    assert result["prefill_length"] == 32 and result["models"]["dense"]["prefill"]["speedup"]["median"] == 1.0
    for case in entry.values():
        assert case["speedup"]["median"] > 1.4 and case["speedup"]["min"] > 1.0, case["speedup"]
