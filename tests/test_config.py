"""benchmarks.yaml validation: every bad-input class, all reported at once with their lines."""
from pathlib import Path

import pytest
from prunebench.api.errors import UsageError
from prunebench.grid.cells import content_hash, expand
from prunebench.grid.config import load_config

GOOD = """\
suite: tiny
models:
  - alias: tiny-llama
methods:
  - wanda
  - label: mag
    method: magnitude
sparsity: [0.5, "2:4"]
calibration: {dataset: pydoc, nsamples: 4, lengths: [16, 32], seeds: [0, 1]}
evaluation:
  perplexity:
    - {dataset: pydoc, seqlen: 64, max_windows: 4}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    return path


def test_good_config_expands_to_the_full_grid(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    cells = expand(config)
    assert len(cells) == 1 + 2 * 2 * 2 * 2
    assert cells[0].method is None
    assert cells[1].name == "model=tiny-llama,method=wanda,sparsity=0.5,calib=pydoc-4x16,seed=0"
    assert len({c.name for c in cells}) == len(cells)


def test_every_problem_is_reported_at_once_with_its_line(tmp_path):
    bad = """\
suite: tiny
modles: []
models:
  - alias: tiny-lama
methods:
  - wandaa
  - method: wanda
    args: {alpha: 1}
  - method: magnitude
    label: wanda
sparsity: [1.5, "4:4", 0.5]
calibration: {dataset: pydocs, nsamples: 0, lengths: [16, -2]}
evaluation:
  perplexity:
    - {dataset: wikitext2, seqlen: 512, windows: 3}
device: tpu
"""
    with pytest.raises(UsageError) as caught:
        load_config(write(tmp_path, bad))
    message = str(caught.value)
    expected = [
        "bench.yaml:2: modles: unknown key 'modles'. Did you mean: models?",
        "bench.yaml:4: models[0].alias: unknown model alias 'tiny-lama'. Did you mean: tiny-llama?",
        "bench.yaml:6: methods[0].method: Unknown method 'wandaa'. Did you mean: wanda",
        "bench.yaml:8: methods[1].args: Unknown argument(s) alpha for method 'wanda'",
        "bench.yaml:10: methods[2].label: label 'wanda' is used twice",
        "bench.yaml:11: sparsity[0]: Bad sparsity '1.5'",
        "bench.yaml:11: sparsity[1]: Bad sparsity '4:4'",
        "bench.yaml:12: calibration.dataset: Unknown dataset 'pydocs'. Did you mean: pydoc?",
        "bench.yaml:12: calibration.nsamples: must be a positive integer, not 0.",
        "bench.yaml:12: calibration.lengths[1]: must be a positive integer, not -2.",
        "bench.yaml:15: evaluation.perplexity[0].windows: unknown key 'windows'.",
        "bench.yaml:16: device: unknown device 'tpu'",
    ]
    for piece in expected:
        assert piece in message
    assert message.startswith("12 problems in the config")


@pytest.mark.parametrize("text,message", [
    ("models: [tiny-llama]\nmethods: [wanda]\nsparsity: [0.5]\n", "missing required key 'calibration'"),
    ("- just a list\n", "top level must be a mapping"),
    ("models: [tiny-llama\n", "not valid YAML"),
    (GOOD.replace("sparsity: [0.5, \"2:4\"]", "sparsity: []"), "sparsity: must not be empty"),
    (GOOD.replace("  - wanda\n", "  - method: wanda\n    allocation: owl\n"), "N:M but method .wanda. uses the owl allocation"),
    (GOOD.replace("  - alias: tiny-llama", "  - path: /no/such/model"), "path not found"),
])
def test_single_problems(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match="Config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_content_hash_tracks_what_changes_numbers_only(tmp_path):
    base = expand(load_config(write(tmp_path, GOOD)))
    base_hashes = [content_hash(c, load_config(tmp_path / "bench.yaml")) for c in base]
    from prunebench.models.walk import default_device

    same = GOOD + f"device: {default_device()}\n"  # what auto resolves to here
    config = load_config(write(tmp_path, same))
    assert [content_hash(c, config) for c in expand(config)] == base_hashes
    # The batch size is recorded in the hash of pruned cells (it is in their provenance), not the dense one's.
    config = load_config(write(tmp_path, GOOD + "batch_size: 2\n"))
    hashes = [content_hash(c, config) for c in expand(config)]
    assert hashes[0] == base_hashes[0] and all(a != b for a, b in zip(hashes[1:], base_hashes[1:]))
    changed = GOOD.replace("  - wanda\n", "  - method: wanda\n    args: {group: layer}\n")
    config = load_config(write(tmp_path, changed))
    hashes = [content_hash(c, config) for c in expand(config)]
    assert hashes[0] == base_hashes[0]  # the dense cell does not depend on methods
    assert hashes[1] != base_hashes[1]  # wanda's cells do
    assert hashes[-1] == base_hashes[-1]  # magnitude's do not
    more_windows = GOOD.replace("max_windows: 4", "max_windows: 5")
    config = load_config(write(tmp_path, more_windows))
    assert all(a != b for a, b in zip([content_hash(c, config) for c in expand(config)], base_hashes))


def test_the_shipped_benchmarks_file_is_valid():
    config = load_config(Path(__file__).resolve().parents[1] / "benchmarks.yaml")
    from prunebench import registry

    registered = set(registry.registered("register_methods")) | set(registry.registered("register_structured_methods"))
    assert {m.method for m in config.methods} <= registered
    # A method the default grid leaves out is named in the file's header, with the reason.
    header = "".join(line for line in config.path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert all(f"`{name}`" in header for name in registered - {m.method for m in config.methods})


def test_max_windows_all_means_every_window(tmp_path):
    config = load_config(write(tmp_path, GOOD.replace("max_windows: 4", "max_windows: all")))
    assert config.perplexity[0].max_windows is None
    with pytest.raises(UsageError, match="max_windows: must be a positive integer or all, not 'most'"):
        load_config(write(tmp_path, GOOD.replace("max_windows: 4", "max_windows: most")))


def test_model_and_method_entries_can_run_part_of_the_grid(tmp_path):
    text = GOOD.replace("  - alias: tiny-llama\n", "  - alias: tiny-llama\n  - {alias: tiny-opt, methods: [wanda], sparsity: [0.5], seeds: [0]}\n")
    text = text.replace("  - label: mag\n    method: magnitude\n", "  - {label: mag, method: magnitude, lengths: [16], seeds: [0]}\n")
    cells = expand(load_config(write(tmp_path, text)))
    llama = [c for c in cells if c.model.label == "tiny-llama" and c.method]
    opt = [c for c in cells if c.model.label == "tiny-opt" and c.method]
    assert len(llama) == 2 * 2 * 2 + 2  # wanda: 2 sparsities x 2 lengths x 2 seeds; mag: 2 sparsities
    assert {(c.method_label, c.sparsity, c.seqlen, c.seed) for c in opt} == {("wanda", "0.5", 16, 0), ("wanda", "0.5", 32, 0)}
    bad = text.replace("methods: [wanda], sparsity: [0.5]", "methods: [wandaa], sparsity: [0.7]")
    with pytest.raises(UsageError) as caught:
        load_config(write(tmp_path, bad))
    assert "'wandaa' is not among the grid's methods" in str(caught.value)
    assert "'0.7' is not among the grid's sparsity" in str(caught.value)


def test_a_model_entry_can_leave_zero_shot_tasks_out(tmp_path):
    text = GOOD.replace("  - alias: tiny-llama\n", "  - alias: tiny-llama\n  - {alias: tiny-opt, tasks: []}\n")
    text += "  tasks: {names: [prunebench_lastword_wikitext2], limit: 4}\n"
    config = load_config(write(tmp_path, text))
    llama, opt = config.models
    assert config.tasks_for(llama).names == ("prunebench_lastword_wikitext2",)
    assert config.tasks_for(opt).names == () and config.tasks_for(opt).limit == 4
    # The tasks a cell runs are part of what its numbers depend on; the other model's hashes stay as they were.
    plain = load_config(write(tmp_path, text.replace("  - {alias: tiny-opt, tasks: []}\n", "  - {alias: tiny-opt}\n")))
    hashes = {c.name: content_hash(c, plain) for c in expand(plain)}
    changed = {c.name for c in expand(config) if content_hash(c, config) != hashes[c.name]}
    assert changed and all("tiny-opt" in name for name in changed)
    with pytest.raises(UsageError) as caught:
        load_config(write(tmp_path, text.replace("tasks: []", "tasks: [hellaswag]")))
    assert "task 'hellaswag' is not in evaluation.tasks.names" in str(caught.value)


def test_a_named_perplexity_protocol_fixes_seqlen_and_windows(tmp_path):
    config = load_config(write(tmp_path, GOOD.replace("{dataset: pydoc, seqlen: 64, max_windows: 4}",
                                                      "{dataset: pydoc, protocol: llm-pruner}")))
    assert [(p.dataset, p.seqlen, p.max_windows, p.label) for p in config.perplexity] == [("pydoc", 128, None, "pydoc-128")]
    with pytest.raises(UsageError, match="unknown perplexity protocol 'flap2'; use one of llm-pruner"):
        load_config(write(tmp_path, GOOD.replace("seqlen: 64, max_windows: 4", "protocol: flap2")))
    with pytest.raises(UsageError, match="protocol llm-pruner fixes seqlen; leave it out or drop the protocol"):
        load_config(write(tmp_path, GOOD.replace("max_windows: 4", "protocol: llm-pruner")))


def test_a_token_budget_gives_each_length_its_window_count_beside_the_fixed_counts(tmp_path):
    text = GOOD.replace("calibration: {dataset: pydoc, nsamples: 4, lengths: [16, 32], seeds: [0, 1]}",
                        "calibration: {dataset: pydoc, windows: [4], tokens: [128], lengths: [16, 32, 64], seeds: [0]}")
    config = load_config(write(tmp_path, text))
    # Fixed count 4 at each length, then 128 tokens: 8 x 16, 4 x 32 (already there), 2 x 64.
    assert config.calibration_shapes == [(4, 16), (4, 32), (4, 64), (8, 16), (2, 64)]
    wanda = [c.name for c in expand(config) if c.method is not None and c.method.label == "wanda" and c.sparsity == "0.5"]
    assert [n.split("calib=")[1] for n in wanda] == ["pydoc-4x16,seed=0", "pydoc-4x32,seed=0", "pydoc-4x64,seed=0",
                                                     "pydoc-8x16,seed=0", "pydoc-2x64,seed=0"]
    budget_only = load_config(write(tmp_path, text.replace("windows: [4], ", "")))
    assert budget_only.calibration_shapes == [(8, 16), (4, 32), (2, 64)]


def test_a_token_budget_must_be_whole_windows_at_every_length(tmp_path):
    text = GOOD.replace("calibration: {dataset: pydoc, nsamples: 4, lengths: [16, 32], seeds: [0, 1]}",
                        "calibration: {dataset: pydoc, tokens: [100], lengths: [16, 32], seeds: [0]}")
    with pytest.raises(UsageError) as error:
        load_config(write(tmp_path, text))
    assert "a budget of 100 tokens is not a whole number of 16-token windows" in str(error.value)


def evaluating(extra: str) -> str:
    """GOOD with `extra` lines added to its evaluation section."""
    line = "    - {dataset: pydoc, seqlen: 64, max_windows: 4}\n"
    return GOOD.replace(line, line + extra)


def test_metrics_run_where_metrics_only_and_the_entries_pick(tmp_path):
    text = evaluating("  metrics: [size, memory]\n  metrics_only: {lengths: [32], seeds: [0]}\n")
    text = text.replace("  - label: mag\n    method: magnitude\n", "  - label: mag\n    method: magnitude\n    metrics: [size]\n")
    config = load_config(write(tmp_path, text))
    names = {c.name: [m.name for m in config.metrics_for(c)] for c in expand(config)}
    assert names["model=tiny-llama,method=dense"] == ["size", "memory"]  # the dense cell always runs them
    assert names["model=tiny-llama,method=wanda,sparsity=0.5,calib=pydoc-4x32,seed=0"] == ["size", "memory"]
    assert names["model=tiny-llama,method=wanda,sparsity=0.5,calib=pydoc-4x16,seed=0"] == []
    assert names["model=tiny-llama,method=wanda,sparsity=0.5,calib=pydoc-4x32,seed=1"] == []
    assert names["model=tiny-llama,method=mag,sparsity=0.5,calib=pydoc-4x32,seed=0"] == ["size"]
    # Hashes: a cell that runs no metrics differs from one that runs them; nothing else moves.
    wanda = [c for c in expand(config) if c.method_label == "wanda"]
    assert len({content_hash(c, config) for c in wanda}) == len(wanda)
    bad = text.replace("    metrics: [size]\n", "    metrics: [speed]\n")
    with pytest.raises(UsageError) as error:
        load_config(write(tmp_path, bad))
    assert "'speed' is not in evaluation.metrics (size, memory)" in str(error.value)


def test_tasks_only_keeps_zero_shot_to_the_cells_it_names(tmp_path):
    text = evaluating("  tasks: [prunebench_lastword_wikitext2]\n  tasks_only: {lengths: [32]}\n")
    config = load_config(write(tmp_path, text))
    tasks = {c.name: config.tasks_of(c).names for c in expand(config)}
    assert tasks["model=tiny-llama,method=dense"] == ("prunebench_lastword_wikitext2",)
    assert tasks["model=tiny-llama,method=wanda,sparsity=0.5,calib=pydoc-4x32,seed=1"] == ("prunebench_lastword_wikitext2",)
    assert tasks["model=tiny-llama,method=wanda,sparsity=0.5,calib=pydoc-4x16,seed=1"] == ()
    names = {c.name: [s.name for s in config.metric_specs(c)] for c in expand(config)}
    assert names["model=tiny-llama,method=wanda,sparsity=0.5,calib=pydoc-4x16,seed=1"] == ["perplexity"]
    with pytest.raises(UsageError) as error:
        load_config(write(tmp_path, text.replace("tasks_only: {lengths: [32]}", "tasks_only: {length: [32]}")))
    assert "tasks_only is a mapping with methods, sparsity, lengths and seeds" in str(error.value)
