"""The sequential engine: layer discovery, statistics, pruned versus dense propagation."""
import copy

import prunebench
import pytest
import torch
from prunebench.api.errors import UsageError
from prunebench.cli.bench import forward_through_layers
from prunebench.models.walk import capture_inputs, decoder_layers, prunable_linears
from prunebench.pruning.masks import lowest_per_row


def test_finds_layers_and_linears_without_model_name_checks(tiny_llama, tiny_opt):
    llama_layers = decoder_layers(tiny_llama[0])
    opt_layers = decoder_layers(tiny_opt[0])
    assert len(llama_layers) == len(opt_layers) == 2
    assert set(prunable_linears(llama_layers[0])) == {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    }
    assert set(prunable_linears(opt_layers[0])) == {
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2",
    }


def test_captured_inputs_equal_the_models_own_layer_inputs(tiny_llama, tiny_calibration):
    model = tiny_llama[0]
    captured = capture_inputs(model, tiny_calibration, batch_size=3, device=torch.device("cpu"))
    with torch.no_grad():
        reference = model(tiny_calibration, output_hidden_states=True).hidden_states[0]
    assert torch.allclose(torch.cat(captured.hidden), reference)
    assert [h.shape[0] for h in captured.hidden] == [3, 1]


def _expected_wanda_mask(dense_model, layer_input_model, calibration, layer_index, ratio=0.5):
    """Wanda's layer-`layer_index` q_proj mask, computed independently from a full forward."""
    with torch.no_grad():
        hidden = layer_input_model(calibration, output_hidden_states=True).hidden_states[layer_index]
        layer = decoder_layers(layer_input_model)[layer_index]
        x = layer.input_layernorm(hidden).reshape(-1, hidden.shape[-1])
    norm = x.square().sum(dim=0)
    weight = decoder_layers(dense_model)[layer_index].self_attn.q_proj.weight
    return lowest_per_row(weight.abs() * norm.sqrt(), ratio)


def test_pruned_propagation_feeds_pruned_outputs_forward(tiny_llama, tiny_calibration):
    dense = tiny_llama[0]
    model = copy.deepcopy(dense)
    prunebench.prune(model, "wanda", 0.5, tiny_calibration, progress=False)
    pruned_mask = decoder_layers(model)[1].self_attn.q_proj.weight == 0
    # Layer 1 must have been scored on what the *pruned* layer 0 outputs.
    assert torch.equal(pruned_mask, _expected_wanda_mask(dense, model, tiny_calibration, 1))
    assert not torch.equal(pruned_mask, _expected_wanda_mask(dense, dense, tiny_calibration, 1))


def test_dense_propagation_feeds_dense_outputs_forward(tiny_llama, tiny_calibration):
    dense = tiny_llama[0]
    model = copy.deepcopy(dense)
    report = prunebench.prune(model, "wanda", 0.5, tiny_calibration, propagate="dense", progress=False)
    assert report.propagate == "dense"
    pruned_mask = decoder_layers(model)[1].self_attn.q_proj.weight == 0
    assert torch.equal(pruned_mask, _expected_wanda_mask(dense, dense, tiny_calibration, 1))


def test_embeddings_and_lm_head_are_never_pruned(tiny_llama, tiny_calibration):
    model = tiny_llama[0]
    before = {k: v.clone() for k, v in model.state_dict().items() if "layers" not in k}
    prunebench.prune(model, "magnitude", 0.5, tiny_calibration, progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_report_has_timings_sparsity_and_memory(tiny_opt, tiny_calibration):
    report = prunebench.prune(tiny_opt[0], "wanda", "2:4", tiny_calibration, progress=False)
    assert set(report.timings) == {"calibration_forward", "score_mask", "weight_update", "total"}
    assert report.timings["total"] >= report.timings["calibration_forward"] > 0
    assert report.layer_sparsity == pytest.approx([0.5, 0.5])
    assert report.overall_sparsity == pytest.approx(0.5)
    assert len(report.linear_sparsity) == 12
    assert report.peak_memory_bytes >= report.memory_before_bytes > 0


def test_plain_forward_through_layers_runs(tiny_llama, tiny_calibration):
    assert forward_through_layers(tiny_llama[0], tiny_calibration) > 0


def test_bad_engine_input_is_refused(tiny_llama, tiny_calibration):
    model = tiny_llama[0]
    with pytest.raises(UsageError, match="Did you mean: wanda"):
        prunebench.prune(model, "wandaa", 0.5, tiny_calibration)
    with pytest.raises(UsageError, match="divide the input width"):
        prunebench.prune(model, "wanda", "2:6", tiny_calibration)
    with pytest.raises(UsageError, match="LongTensor"):
        prunebench.prune(model, "wanda", 0.5, tiny_calibration.float())
    with pytest.raises(UsageError, match="Valid: group"):
        prunebench.prune(model, "wanda", 0.5, tiny_calibration, alpha=1)
    with pytest.raises(UsageError, match="propagate"):
        prunebench.prune(model, "wanda", 0.5, tiny_calibration, propagate="sideways")
