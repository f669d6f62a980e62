"""The layer walk on every supported family: each decoder layer gets the arguments the model's own
forward gives it, so dense layer-by-layer propagation equals the model's hidden states at every layer."""
import prunebench
import pytest
import torch
from prunebench.api.errors import UsageError
from prunebench.models.walk import capture_inputs, decoder_layers, walk_layers
from torch import nn

SEQUENCE = 48  # longer than the sliding windows below, so local and global layers really differ


def _config(family):
    import transformers

    common = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if family == "llama":
        return transformers.LlamaConfig(**common)
    if family == "opt":
        return transformers.OPTConfig(vocab_size=256, hidden_size=64, ffn_dim=128, num_hidden_layers=3,
                                      num_attention_heads=4, max_position_embeddings=256, word_embed_proj_dim=64)
    if family == "gemma3":
        # 5 of every 6 layers local in the real model; here layers 0, 1, 3 local, layer 2 global.
        return transformers.Gemma3TextConfig(**common, head_dim=16, sliding_window=16, query_pre_attn_scalar=16,
                                             layer_types=["sliding_attention", "sliding_attention",
                                                          "full_attention", "sliding_attention"])
    if family == "gemma2":
        return transformers.Gemma2Config(**common, head_dim=16, sliding_window=16, query_pre_attn_scalar=16)
    if family == "qwen2":
        return transformers.Qwen2Config(**common, use_sliding_window=True, sliding_window=16, max_window_layers=2,
                                        layer_types=["full_attention", "full_attention", "sliding_attention",
                                                     "sliding_attention"])
    if family == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=16)
    if family == "mistral":
        return transformers.MistralConfig(**common, sliding_window=16)
    raise ValueError(family)


FAMILIES = ["llama", "opt", "gemma3", "gemma2", "qwen2", "qwen3", "mistral"]


def _tiny(family):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = _config(family)
    config._attn_implementation = "eager"  # the masks are explicit tensors: the hardest case for replaying
    return AutoModelForCausalLM.from_config(config).eval()


def dense_walk_outputs(model, tokens, batch_size):
    captured = capture_inputs(model, tokens, batch_size, torch.device("cpu"))
    outputs = []
    for step in walk_layers(model, captured, torch.device("cpu")):
        hidden = step.forward()
        step.propagate(hidden)
        outputs.append(torch.cat(hidden))
    return outputs


def assert_walk_equals_own_forward(model, tokens, batch_size, atol=1e-5):
    with torch.no_grad():
        reference = model(tokens, output_hidden_states=True).hidden_states
    outputs = dense_walk_outputs(model, tokens, batch_size)
    assert len(outputs) == len(decoder_layers(model))
    # hidden_states[i + 1] is layer i's output; the last one has the final norm applied by some families.
    for index, output in enumerate(outputs[:-1]):
        assert torch.allclose(output, reference[index + 1], atol=atol), f"layer {index} differs"


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_walk_equals_the_models_own_forward(family):
    model = _tiny(family)
    tokens = torch.randint(0, 256, (5, SEQUENCE), generator=torch.Generator().manual_seed(1))
    assert_walk_equals_own_forward(model, tokens, batch_size=2)  # uneven batches: 2, 2, 1


def test_local_and_global_layers_get_different_arguments():
    model = _tiny("gemma3")
    tokens = torch.randint(0, 256, (2, SEQUENCE), generator=torch.Generator().manual_seed(1))
    calls = capture_inputs(model, tokens, 2, torch.device("cpu")).calls
    local, global_ = calls[0][0].kwargs, calls[2][0].kwargs
    assert not torch.equal(local["attention_mask"], global_["attention_mask"])
    assert not torch.equal(local["position_embeddings"][0], global_["position_embeddings"][0])


@pytest.mark.parametrize("family", ["gemma3", "qwen2", "opt"])
def test_wanda_prunes_every_family(family):
    model = _tiny(family)
    tokens = torch.randint(0, 256, (4, SEQUENCE), generator=torch.Generator().manual_seed(2))
    report = prunebench.prune(model, "wanda", 0.5, tokens, batch_size=3, progress=False)
    assert report.overall_sparsity == pytest.approx(0.5, abs=0.01)


class _SharedLayerModel(nn.Module):
    """A model that runs one decoder layer twice per forward (weight sharing across depth)."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"num_hidden_layers": 2})()
        self.embed = nn.Embedding(16, 8)
        self.layers = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])

    def forward(self, input_ids, use_cache=False):
        hidden = self.embed(input_ids)
        for layer in (self.layers[0], self.layers[0], self.layers[1]):
            hidden = layer(hidden)
        return hidden


def test_a_model_whose_layers_the_walk_cannot_replay_is_refused_in_one_line():
    with pytest.raises(UsageError, match="_SharedLayerModel does not call each decoder layer once"):
        capture_inputs(_SharedLayerModel(), torch.zeros(2, 4, dtype=torch.long), 2, torch.device("cpu"))


@pytest.mark.gemma3
def test_gemma3_270m_walk_equals_its_own_forward_with_1024_token_calibration():
    from prunebench.data.datasets import calibration_documents, sample_calibration
    from prunebench.models.loading import load_model

    model, tokenizer = load_model("gemma3-270m")
    assert type(model).__name__ == "Gemma3ForCausalLM" and len(decoder_layers(model)) == 18
    assert model.config.sliding_window == 512
    tokens = sample_calibration(tokenizer, calibration_documents("pydoc"), 1, 1024, seed=0)
    with torch.no_grad():
        reference = model.model(tokens, output_hidden_states=True).hidden_states
    outputs = dense_walk_outputs(model, tokens, batch_size=1)
    for index, output in enumerate(outputs[:-1]):
        assert torch.allclose(output, reference[index + 1], atol=1e-4, rtol=1e-4), f"layer {index} differs"
