"""The reconstruction and fidelity metric plugins (public API only), with known answers on the tiny random
LLaMA: an identical model scores 0 error and full agreement, a weight scaled by (1 - eps) has error eps,
fidelity equals an independent computation, the dense logits are cached per model, and both run in a grid."""
import copy
from pathlib import Path

import pytest
import torch
from prunebench import MetricContext, decoder_layers, evaluation_text, prunable_linears, registry, tokenize_text
from prunebench.api.errors import UsageError
from prunebench.api.metric import check_settings
from prunebench.grid.config import load_config
from prunebench.grid.runner import run_grid
from prunebench.plugins.fidelity import clear_dense_cache
from prunebench.plugins.reconstruction import plot_reconstruction
from prunebench.store.results import ResultsStore
from tiny_grid import grid

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DOWN = "model.layers.0.mlp.down_proj"
SMALL = {"windows": 2, "seqlen": 32}  # 64 held-out tokens: enough for the known answers, fast


def context_for(model, tokenizer, dense, calls=None, **fields):
    """A pruned cell's context whose `dense_model()` returns a fresh copy of `dense` (counted in `calls`)."""
    def dense_model():
        if calls is not None:
            calls.append(1)
        return copy.deepcopy(dense)

    return MetricContext(model=model, tokenizer=tokenizer, device=torch.device("cpu"), method="test", sparsity="0.5",
                         cell="model=tiny,method=test,sparsity=0.5", dense_model=dense_model, **fields)


def compute(name, context, **given):
    metric = registry.get_metric(name)
    settings, problems = check_settings(metric, given)
    assert not problems
    return metric.compute(context, **settings)


def linear_names(model):
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(linear)] for layer in decoder_layers(model) for linear in prunable_linears(layer).values()]


def windows_of(tokenizer, dataset, windows, seqlen):
    tokens = tokenize_text(tokenizer, evaluation_text(dataset))
    return tokens[: windows * seqlen].view(windows, seqlen)


def test_an_identical_model_has_no_error_and_full_agreement(tiny_llama, one_thread):
    model, tokenizer = tiny_llama
    context = context_for(model, tokenizer, model)
    result = compute("reconstruction", context, **SMALL)
    assert result["mean"] == 0.0 and result["worst"] == 0.0
    assert set(result["per_linear"]) == set(linear_names(model)) and len(result["per_linear"]) == 14
    clear_dense_cache()
    agreement = compute("fidelity", context, dataset="pydoc", **SMALL)
    assert agreement["top1"] == 1.0 and agreement["top5"] == 1.0 and agreement["kl"] == 0.0
    assert agreement["positions"] == 64  # every position of every window is predicted


@pytest.mark.parametrize("dtype, eps", [(torch.float64, 0.1), (torch.float32, 0.5)])
def test_a_weight_scaled_by_one_minus_eps_has_error_eps(tiny_llama, one_thread, tmp_path, dtype, eps):
    model, tokenizer = tiny_llama
    dense = model.to(dtype)
    pruned = copy.deepcopy(dense)
    with torch.no_grad():
        dict(pruned.named_modules())[DOWN].weight.mul_(1 - eps)  # exact for 0.5 in float32
    result = compute("reconstruction", context_for(pruned, tokenizer, dense), directory=str(tmp_path), **SMALL)
    assert result["per_linear"][DOWN] == pytest.approx(eps, abs=1e-9)
    assert all(e == 0.0 for name, e in result["per_linear"].items() if name != DOWN)
    assert result["mean"] == pytest.approx(eps / 14, abs=1e-9) and result["worst"] == result["per_linear"][DOWN]
    assert result["worst_linear"] == DOWN
    assert result["per_layer"]["mlp.down_proj"][0] == result["per_linear"][DOWN]
    assert len(result["per_layer"]) == 7 and all(len(errors) == 2 for errors in result["per_layer"].values())
    # The plot is kept under the directory, by cell; plot_reconstruction also takes a whole record.
    plot = Path(result["plot"])
    assert plot == tmp_path / "model=tiny,method=test,sparsity=0.5" / "reconstruction.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = plot_reconstruction({"metrics": {"reconstruction": result}}, tmp_path / "again.png")
    assert again.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_magnitude_pruned_linear_matches_an_independent_computation(tiny_llama, tiny_calibration, one_thread):
    import prunebench

    model, tokenizer = tiny_llama
    dense = copy.deepcopy(model)
    prunebench.prune(model, "magnitude", 0.5, tiny_calibration)
    result = compute("reconstruction", context_for(model, tokenizer, dense), **SMALL)
    name = "model.layers.1.self_attn.q_proj"
    dense_linear, pruned_linear = dict(dense.named_modules())[name], dict(model.named_modules())[name]
    inputs = []
    handle = dense_linear.register_forward_hook(lambda module, args, output: inputs.append(args[0].double()))
    with torch.no_grad():
        dense(windows_of(tokenizer, "pydoc", 2, 32))
    handle.remove()
    x = inputs[0].reshape(-1, inputs[0].shape[-1])
    w0, w = dense_linear.weight.detach().double(), pruned_linear.weight.detach().double()
    expected = float((x @ (w - w0).T).norm() / (x @ w0.T).norm())
    assert 0.1 < expected < 1 and result["per_linear"][name] == pytest.approx(expected, rel=1e-5)
    assert all(0 < e < 1 for e in result["per_linear"].values())


def test_a_structured_cell_gets_a_note_not_a_crash(tiny_llama):
    model, tokenizer = tiny_llama
    calls = []
    result = compute("reconstruction", context_for(model, tokenizer, model, calls, structured=True))
    assert set(result) == {"note"} and "structured" in result["note"] and not calls
    with pytest.raises(ValueError, match="structured"):
        plot_reconstruction(result, "unused.png")


def independent_fidelity(dense, pruned, batch):
    """top-1, top-5 (dense top-1 among pruned top 5) and mean KL(dense || pruned), in float64, by hand."""
    agree = among = 0
    kl = 0.0
    with torch.no_grad():
        for window in batch:
            p = dense(window[None]).logits[0].double()
            q = pruned(window[None]).logits[0].double()
            agree += int((p.argmax(-1) == q.argmax(-1)).sum())
            among += sum(int(p[i].argmax()) in q[i].topk(5).indices.tolist() for i in range(len(window)))
            kl += float(torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p),
                                                          torch.distributions.Categorical(logits=q)).sum())
    positions = batch.numel()
    return agree / positions, among / positions, kl / positions


def test_fidelity_equals_an_independent_computation(tiny_llama, one_thread):
    model, tokenizer = tiny_llama
    batch = windows_of(tokenizer, "pydoc", 2, 32)
    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for linear in prunable_linears(decoder_layers(noisy)[1]).values():
            linear.weight.add_(torch.randn(linear.weight.shape, generator=generator) * linear.weight.std() * 0.5)
    clear_dense_cache()
    result = compute("fidelity", context_for(noisy, tokenizer, model), dataset="pydoc", **SMALL)
    top1, top5, kl = independent_fidelity(model, noisy, batch)
    assert result["top1"] == top1 and result["top5"] == top5 and result["kl"] == pytest.approx(kl, rel=1e-9)
    assert 0 < top1 < top5 < 1 and kl > 0  # the perturbation moved some argmaxes, some out of the top 5
    # A positive scale of the LM head keeps every ranking: full agreement, yet the distributions differ.
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.lm_head.weight.mul_(2.0)
    result = compute("fidelity", context_for(scaled, tokenizer, model), dataset="pydoc", **SMALL)
    assert result["top1"] == 1.0 and result["top5"] == 1.0
    assert result["kl"] == pytest.approx(independent_fidelity(model, scaled, batch)[2], rel=1e-9) and result["kl"] > 0


def test_dense_logits_are_computed_once_per_model(tiny_llama, one_thread):
    model, tokenizer = tiny_llama
    clear_dense_cache()
    calls = []
    first = compute("fidelity", context_for(model, tokenizer, model, calls), dataset="pydoc", **SMALL)
    pruned = copy.deepcopy(model)  # another cell of the same model: its decoder weights differ, not its embeddings
    with torch.no_grad():
        dict(pruned.named_modules())[DOWN].weight.zero_()
    second = compute("fidelity", context_for(pruned, tokenizer, model, calls), dataset="pydoc", **SMALL)
    assert len(calls) == 1 and first["kl"] == 0.0 and second["kl"] > 0
    compute("fidelity", context_for(model, tokenizer, model, calls), dataset="pydoc", windows=1, seqlen=32)
    assert len(calls) == 2  # other windows: computed again
    other = copy.deepcopy(model)  # another model: other embeddings
    with torch.no_grad():
        other.get_input_embeddings().weight.mul_(1.5)
    compute("fidelity", context_for(other, tokenizer, other, calls), dataset="pydoc", **SMALL)
    assert len(calls) == 3
    compute("fidelity", context_for(model, tokenizer, model, calls), dataset="pydoc", **SMALL)
    assert len(calls) == 4  # one model's logits are kept at a time


def test_fidelity_on_wikitext2_test_tokens(tiny_llama, one_thread):
    if not (DATA_DIR / "wikitext-2-raw" / "wiki.test.raw").is_file():
        pytest.skip("no local WikiText-2 test split")
    model, tokenizer = tiny_llama
    clear_dense_cache()
    result = compute("fidelity", context_for(model, tokenizer, model, data_dir=str(DATA_DIR)), windows=1, seqlen=16)
    assert result["dataset"] == "wikitext2" and result["positions"] == 16 and result["top1"] == 1.0


def test_both_metrics_are_registered_with_validated_settings(tmp_path):
    metrics = registry.registered("register_metrics")
    assert metrics["reconstruction"].plugin == "prunebench.plugins.reconstruction"
    assert metrics["fidelity"].plugin == "prunebench.plugins.fidelity"
    fidelity = metrics["fidelity"].item
    assert check_settings(fidelity, {})[0] == {"dataset": "wikitext2", "windows": 4, "seqlen": 256}
    assert check_settings(metrics["reconstruction"].item, {})[0] == {"dataset": "pydoc", "windows": 8, "seqlen": 128,
                                                                     "directory": None}
    assert "Did you mean: windows" in check_settings(fidelity, {"windos": 2})[1][0][1]
    assert check_settings(fidelity, {"windows": "two"})[1][0][0] == "windows"
    assert "positive integer" in check_settings(fidelity, {"seqlen": 0})[1][0][1]
    assert "Unknown dataset 'wikitxt2'" in check_settings(metrics["reconstruction"].item, {"dataset": "wikitxt2"})[1][0][1]
    with pytest.raises(UsageError, match="Did you mean: seqlen"):
        load_config(grid(tmp_path, ["wanda"], "[{name: reconstruction, seqln: 64}]"))
    assert {"top1", "top5"} == {v.key for v in fidelity.values if v.higher_is_better}
    assert [v.key for v in fidelity.values if not v.higher_is_better] == ["kl"]
    assert "top 5" in fidelity.description and "dense top-1" in fidelity.description


def test_a_grid_records_both_metrics(tmp_path, one_thread):
    metrics = ("[{name: reconstruction, windows: 2, seqlen: 32}, "
               "{name: fidelity, dataset: pydoc, windows: 2, seqlen: 32}]")
    clear_dense_cache()
    summary = run_grid(load_config(grid(tmp_path, ["magnitude", "cfsp"], metrics)), tmp_path / "results",
                       progress=False, echo=lambda line: None)
    assert not summary.failed
    records = {r["cell"]["method"]: r for r in ResultsStore(tmp_path / "results").records()}
    assert "reconstruction" not in records["dense"].get("metrics", {})  # pruned cells only
    magnitude = records["magnitude"]["metrics"]
    assert 0 < magnitude["reconstruction"]["mean"] <= magnitude["reconstruction"]["worst"] < 1
    assert 0 < magnitude["fidelity"]["top5"] <= 1 and magnitude["fidelity"]["kl"] > 0
    cfsp = records["cfsp"]["metrics"]
    assert set(cfsp["reconstruction"]) == {"note"}  # structured: fewer rows and columns
    assert cfsp["fidelity"]["positions"] == 64 and cfsp["fidelity"]["kl"] > 0
