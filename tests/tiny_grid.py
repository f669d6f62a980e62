"""The one-model grid (tiny-llama, pydoc, 50%) that the metric and structured-grid tests write."""
GRID = """\
suite: tiny
models: [tiny-llama]
methods: [{methods}]
sparsity: [0.5]
calibration: {{dataset: pydoc, nsamples: 2, lengths: [16]}}
evaluation:
  perplexity: [{{dataset: pydoc, seqlen: 32, max_windows: 2}}]
  metrics: {metrics}
device: cpu
"""


def grid(tmp_path, methods, metrics="[]", name="grid.yaml"):
    """Write the grid with these methods and evaluation.metrics into tmp_path; its path."""
    path = tmp_path / name
    path.write_text(GRID.format(methods=", ".join(methods), metrics=metrics))
    return path
