"""The GPU path, as far as a CPU can check it: dtype defaults, float32 statistics and losses under a
half-precision model, offloaded evaluation that leaves the model as it was, the GPU check script's
own machinery; and, marked `cuda` (skipped without CUDA), Wanda and SparseGPT on the GPU against the
CPU with the model held on the CPU."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from prunebench.grid.config import default_dtype, validate_config
from prunebench.metrics.perplexity import perplexity
from prunebench.models.loading import load_model
from prunebench.models.walk import decoder_layers, dispatched, module_bytes, offload_device_map, on_device
from prunebench.pruning.engine import prune

ROOT = Path(__file__).resolve().parents[1]
BASE = {"models": ["tiny-llama"], "methods": ["wanda"], "sparsity": [0.5], "calibration": {"dataset": "pydoc"}}


def test_dtype_defaults_to_half_on_cuda_and_float32_on_cpu():
    assert default_dtype("cpu") == "float32" and default_dtype("cuda") == default_dtype("cuda:1") == "float16"
    # A Ray cell that asks for a GPU runs on CUDA though the driver may have none.
    assert default_dtype("auto", gpus=1) == "float16"
    assert default_dtype("auto") == ("float16" if torch.cuda.is_available() else "float32")
    assert validate_config(dict(BASE, device="cpu")).dtype == "float32"
    assert validate_config(dict(BASE, device="cuda")).dtype == "float16"
    assert validate_config(dict(BASE, device="cuda", dtype="bfloat16")).dtype == "bfloat16"


def test_half_precision_model_gets_float32_statistics_and_loss(tiny_calibration, register_plugin, monkeypatch):
    """Statistics, Hessians and the evaluation loss stay float32 (or wider) when the weights are bfloat16."""
    from prunebench import PruningMethod, hookimpl

    seen = {}

    class Spy(PruningMethod):
        name = "dtype-spy"
        description = "magnitude that records the dtypes of its statistics"
        statistics = ("input_sq_norm", "hessian")
        arguments = {"group": "row"}

        def score(self, weight, stats, **args):
            seen.update({name: value.dtype for name, value in stats.items()}, weight=weight.dtype)
            return weight.abs().float() * stats["input_sq_norm"]

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(Spy())

    register_plugin(Plugin())
    model, _ = load_model("tiny-llama", "bfloat16")
    prune(model, "dtype-spy", 0.5, tiny_calibration, device="cpu", progress=False)
    assert seen == {"input_sq_norm": torch.float32, "hessian": torch.float32, "weight": torch.bfloat16}
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    # The evaluation loss takes float32 logits from the bfloat16 model.
    import prunebench.metrics.perplexity as evaluate

    cross_entropy, losses = evaluate.F.cross_entropy, []
    monkeypatch.setattr(evaluate.F, "cross_entropy", lambda logits, *a, **k: losses.append(logits.dtype) or
                        cross_entropy(logits, *a, **k))
    result = perplexity(model, tiny_calibration.flatten(), 32, 2)
    assert losses == [torch.float32, torch.float32] and result.perplexity > 1


def test_offload_device_map_keeps_decoder_layers_whole():
    model, _ = load_model("tiny-llama")
    layer = decoder_layers(model)[0]
    # Room for the embeddings and two and a half layers, less the largest layer accelerate keeps free
    # for bringing offloaded ones in: the embeddings and layer 0 on the GPU, the rest on the CPU.
    budget = module_bytes(model.model.embed_tokens) + 2 * module_bytes(layer) + module_bytes(layer) // 2
    device_map = offload_device_map(model, torch.device("cuda:0"), budget)
    assert device_map["model.embed_tokens"] == device_map["model.layers.0"] == 0
    assert device_map["model.layers.1"] == device_map["lm_head"] == "cpu"
    # Each decoder layer is placed whole (never its attention on one device and its MLP on another).
    assert all(not key.startswith("model.layers.") or key.count(".") == 2 for key in device_map)


def test_dispatched_evaluation_leaves_the_model_as_it_was(tmp_path):
    """Offloaded execution through accelerate's hooks (here layer 0 offloaded to disk, the CPU's
    stand-in for the GPU's CPU offload) gives the same logits, then the model is exactly as before:
    no hooks, the same parameter objects holding the same data, so pruning still reaches the model."""
    model, _ = load_model("tiny-llama")
    ids = torch.arange(1, 33).view(1, 32)
    expected = model(input_ids=ids).logits
    before = {name: (param, param.data_ptr()) for name, param in model.named_parameters()}
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "disk", "model.layers.1": "cpu",
                  "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    with dispatched(model, device_map, "cpu", offload_dir=str(tmp_path)):
        assert model.model.layers[0].self_attn.q_proj.weight.device.type == "meta"  # really offloaded
        torch.testing.assert_close(model(input_ids=ids).logits, expected)
    assert not any(hasattr(module, "_hf_hook") for module in model.modules())
    assert "hf_device_map" not in vars(model)
    after = dict(model.named_parameters())
    assert all(after[name] is param and param.data_ptr() == pointer for name, (param, pointer) in before.items())
    torch.testing.assert_close(model(input_ids=ids).logits, expected)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.zero_()
    assert not torch.equal(model(input_ids=ids).logits, expected)


def test_gpu_check_script_machinery_on_cpu(tmp_path):
    """`--device cpu` compares CPU with CPU: every agreement 1, the same perplexity, weights on the CPU."""
    out = tmp_path / "check"
    command = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--dtypes", "float32",
               "--nsamples", "4", "--seqlen", "32", "--eval-seqlen", "32", "--eval-windows", "2", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    check = json.loads((out / "gpu-check.json").read_text())
    assert [row["method"] for row in check["rows"]] == ["wanda", "sparsegpt"]
    for row in check["rows"]:
        assert row["mask_agreement"] == 1.0 and row["perplexity"] == row["cpu_perplexity"]
        assert row["weights_after_pruning_on"] == ["cpu"] and 0.49 < row["overall_sparsity"] < 0.51
    assert "| wanda" in (out / "README.md").read_text()


def test_gpu_check_refuses_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "no CUDA device" in done.stderr


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pruning_matches_cpu_with_the_model_held_on_cpu(method, dtype, tiny_calibration):
    cpu_model = load_model("tiny-llama")[0]
    cuda_model = copy.deepcopy(cpu_model).to(dtype)  # the same weights, whatever the dtype
    prune(cpu_model, method, 0.5, tiny_calibration, device="cpu", progress=False)
    layers = decoder_layers(cuda_model)
    on_gpu = []  # decoder layers on the GPU whenever one of them runs
    hooks = [layer.register_forward_pre_hook(lambda *_: on_gpu.append(
        sum(next(l.parameters()).device.type == "cuda" for l in layers))) for layer in layers]
    report = prune(cuda_model, method, 0.5, tiny_calibration, device="cuda", progress=False)
    for hook in hooks:
        hook.remove()
    # Layer at a time: one decoder layer on the GPU at any moment, the weights on the CPU afterwards,
    # and the peak is the GPU's.
    assert on_gpu and max(on_gpu) == 1
    assert all(p.device.type == "cpu" for p in cuda_model.parameters())
    assert report.device.startswith("cuda") and report.peak_memory_bytes > 0
    masks = [(a.weight == 0, b.weight.cpu() == 0) for a, b in zip(cpu_model.modules(), cuda_model.modules())
             if isinstance(a, torch.nn.Linear) and a is not cpu_model.lm_head]
    agreement = sum(int((x == y).sum()) for x, y in masks) / sum(x.numel() for x, _ in masks)
    assert agreement > (0.999 if dtype == torch.float32 else 0.95)
    tokens = tiny_calibration.flatten()
    cpu_ppl = perplexity(cpu_model, tokens, 32, 2).perplexity
    with on_device(cuda_model, "cuda"):
        cuda_ppl = perplexity(cuda_model, tokens, 32, 2, device="cuda").perplexity
    assert abs(cuda_ppl - cpu_ppl) < (1e-3 if dtype == torch.float32 else 0.05) * cpu_ppl


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_device_offloads_a_model_larger_than_the_gpu(monkeypatch):
    import prunebench.models.walk as walk

    model, _ = load_model("tiny-llama")
    ids = torch.arange(1, 33).view(1, 32)
    expected = model(input_ids=ids).logits
    # Pretend the GPU has room for less than the whole model.
    monkeypatch.setattr(walk, "free_gpu_bytes", lambda device: int(0.85 * module_bytes(model)))
    with on_device(model, "cuda") as placed:
        assert "cpu" in set(placed.hf_device_map.values())  # dispatched, not moved
        torch.testing.assert_close(placed(input_ids=ids.cuda()).logits.cpu(), expected, rtol=1e-4, atol=1e-4)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_layer_cost_script_machinery_on_cpu(tmp_path):
    """`gpu_layer_cost.py --shape tiny --device cpu`: every method's per-layer seconds and its estimate."""
    out = tmp_path / "cost.json"
    command = [sys.executable, str(ROOT / "scripts" / "gpu_layer_cost.py"), "--shape", "tiny", "--device", "cpu",
               "--dtype", "float32", "--layers", "3", "--nsamples", "2", "--seqlen", "16", "--methods",
               "wanda,sparsegpt", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert [row["method"] for row in result["rows"]] == ["wanda", "sparsegpt"]
    for row in result["rows"]:
        assert len(row["layer_seconds"]) == 3 and all(s > 0 for s in row["layer_seconds"])
        assert row["outside_layers_seconds"] >= 0 and 0.49 < row["overall_sparsity"] < 0.51
    assert "estimate, 2 layers" in done.stdout


def test_layer_cost_estimate_arithmetic():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gpu_layer_cost import estimate
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    # outside 3 + first 2 + 79 later layers at the mean of 4 and 6.
    assert estimate({"outside_layers_seconds": 3.0, "layer_seconds": [2.0, 4.0, 6.0]}, 80) == 3 + 2 + 79 * 5
    assert estimate({"before_layers_seconds": 1.0, "layer_seconds": [2.0]}, 10) == 1 + 2 + 9 * 2


def test_mask_sensitivity_script_on_a_tiny_model(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "mask_sensitivity.py"), "--nsamples", "4", "--seqlen", "32",
               "--eval-seqlen", "32", "--eval-windows", "2", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "mask-sensitivity.json").read_text())["rows"]
    assert [row["method"] for row in rows] == ["wanda", "sparsegpt"]
    for row in rows:
        assert 0.9 < row["mask_agreement"] <= 1 and len(row["layer_agreement"]) == 2
        assert row["perplexity_1_threads"] > 1 and row["perplexity_2_threads"] > 1
