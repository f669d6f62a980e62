"""Config and model classes for structurally pruned models whose layers differ in shape, registered
with transformers' Auto classes by `register_with_transformers` (`prunebench.register_pruned_models()`;
`prunebench.load_model` and every prunebench load call it first).

A saved model whose layers all keep one shape is a plain checkpoint of its family. Where heads or
FFN widths differ per layer, config.json has model_type ``prunebench_<family>`` and a
``layer_shapes`` list; the registered model class builds the family's model and then resizes each
layer's linears, so `AutoModelForCausalLM.from_pretrained` loads it without remote code.
Registering needs transformers (and torch), so it runs when called, never at import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api.errors import UsageError

FAMILIES = {  # model_type -> (config class, causal LM class) in transformers
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
}
PREFIX = "prunebench_"
_classes: dict[str, tuple[type, type]] = {}


def apply_layer_shapes(model: Any, shapes: list[dict]) -> None:
    """Replace each decoder layer's linears by ones of the shape `shapes[i]` gives (weights unset)."""
    from torch import nn

    from .walk import decoder_layers

    config = model.config
    head_dim = config.head_dim
    hidden = config.hidden_size
    for layer, shape in zip(decoder_layers(model), shapes):
        attention, mlp = layer.self_attn, layer.mlp
        like = attention.q_proj.weight
        heads, kv_heads, width = shape["num_attention_heads"], shape["num_key_value_heads"], shape["intermediate_size"]

        def linear(n_in, n_out, bias):
            return nn.Linear(n_in, n_out, bias=bias, device=like.device, dtype=like.dtype)

        qkv_bias = attention.q_proj.bias is not None
        attention.q_proj = linear(hidden, heads * head_dim, qkv_bias)
        attention.k_proj = linear(hidden, kv_heads * head_dim, qkv_bias)
        attention.v_proj = linear(hidden, kv_heads * head_dim, qkv_bias)
        attention.o_proj = linear(heads * head_dim, hidden, shape["o_proj_bias"])
        mlp_bias = mlp.gate_proj.bias is not None
        mlp.gate_proj = linear(hidden, width, mlp_bias)
        mlp.up_proj = linear(hidden, width, mlp_bias)
        mlp.down_proj = linear(width, hidden, shape["down_proj_bias"])


def pruned_classes(family: str) -> tuple[type, type]:
    """The (config, model) classes for pruned models of `family`, built once."""
    if family not in _classes:
        import transformers

        config_name, model_name = FAMILIES[family]
        base_config, base_model = getattr(transformers, config_name), getattr(transformers, model_name)
        config_class = type(f"Prunebench{config_name}", (base_config,), {
            "model_type": PREFIX + family,
            "__init__": _config_init(base_config),
            "__module__": __name__,
        })

        def __init__(self, config):
            base_model.__init__(self, config)
            apply_layer_shapes(self, config.layer_shapes)

        model_class = type(f"Prunebench{model_name}", (base_model,), {
            "config_class": config_class, "__init__": __init__, "__module__": __name__,
        })
        _classes[family] = (config_class, model_class)
    return _classes[family]


def _config_init(base_config: type):
    def __init__(self, layer_shapes: list[dict] | None = None, **kwargs):
        self.layer_shapes = list(layer_shapes or [])
        base_config.__init__(self, **kwargs)

    return __init__


def register_with_transformers() -> None:
    """Register every family's pruned config and model with AutoConfig and AutoModelForCausalLM."""
    from transformers import AutoConfig, AutoModelForCausalLM

    for family in FAMILIES:
        config_class, model_class = pruned_classes(family)
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)


def save_structured(model: Any, tokenizer: Any, directory: "str | Path") -> dict:
    """Save a structurally pruned model; returns {"format": "family"|"prunebench", "bytes": size on disk}.

    Uniform layers: a plain checkpoint of the family. Layers that differ: the same weights with a
    config of the registered ``prunebench_<family>`` type.
    """
    from .structure import sync_config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    uniform = sync_config(model) if _has_structures(model) else True
    config = model.config
    if uniform:
        model.save_pretrained(directory)
        fmt = "family"
    else:
        family = config.model_type.removeprefix(PREFIX)
        if family not in FAMILIES:
            raise UsageError(f"Saving per-layer shapes of a {family} model is not supported; "
                             f"supported families: {', '.join(FAMILIES)}.")
        model.save_pretrained(directory)
        config_class, model_class = pruned_classes(family)
        values = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "transformers_version")}
        values["architectures"] = [model_class.__name__]
        config_class(**values).save_pretrained(directory)
        fmt = "prunebench"
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    size = sum(p.stat().st_size for p in directory.iterdir() if p.suffix in (".safetensors", ".bin"))
    return {"format": fmt, "bytes": size}


def _has_structures(model: Any) -> bool:
    from .structure import read_structures

    try:
        read_structures(model)
    except UsageError:
        return False
    return True
