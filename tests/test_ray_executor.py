"""The Ray executor on a local Ray started by each test (2 CPUs), tiny models: the same records as the
local executor, failing and crashing cells isolated, an interrupted run resumed; resource keys checked
like the rest of the config; a clear usage error where Ray is missing."""
import importlib.util
import sys

import pytest
from prunebench.api.errors import UsageError
from prunebench.cli.main import main
from prunebench.grid.cells import expand
from prunebench.grid.config import Resources, load_config, validate_config
from prunebench.grid.provenance import NOT_HASHED
from prunebench.grid.runner import run_grid
from prunebench.store.results import ResultsStore

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed: pip install 'prunebench[ray]'")

TEST_METHODS = '''
import os, signal
from prunebench import PruningMethod, hookimpl


class Raiser(PruningMethod):
    name = "raiser"
    description = "a plugin with a bug"

    def score(self, weight, stats, **args):
        raise RuntimeError("plugin bug")


class WorkerKiller(PruningMethod):
    name = "worker-killer"
    description = "SIGKILLs the process it scores in when PRUNEBENCH_TEST_KILL is set (a worker lost mid-cell)"

    def score(self, weight, stats, **args):
        if os.environ.get("PRUNEBENCH_TEST_KILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        return weight.abs()


@hookimpl
def register_methods(register):
    register(Raiser())
    register(WorkerKiller())
'''

GRID = """\
suite: tiny
models: [tiny-llama]
methods: [{methods}]
sparsity: [0.5]
calibration: {{dataset: pydoc, nsamples: 2, lengths: [{lengths}]}}
evaluation:
  perplexity:
    - {{dataset: pydoc, seqlen: 32, max_windows: 2}}
device: cpu
resources: {{cpus: 1}}
"""

# Fields of a record that say when and where it ran, not what it computed.
RUN_FIELDS = {"started", "finished", "wall_seconds", "load", "timings", "peak_memory_bytes", "memory_before_bytes"}


def grid(tmp_path, methods, lengths=(16,)):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(methods=", ".join(methods), lengths=", ".join(map(str, lengths))))
    return path


@pytest.fixture
def start_ray():
    """Start a local Ray (2 CPUs) with the given worker environment; always shut down afterwards."""
    started = []

    def start(**env_vars):
        import ray

        # Workers are fresh processes: they find test plugins through PYTHONPATH, as a cluster's would.
        for attempt in (1, 2):
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env_vars})
                break
            except Exception as error:  # on a loaded machine the raylet can miss Ray's fixed 30 s start window
                ray.shutdown()
                if attempt == 2 or "timed out during startup" not in str(error):
                    raise
        started.append(ray)
        return ray

    yield start
    for ray in started:
        ray.shutdown()


def quiet(run, config, results, **kwargs):
    return run(config, results, progress=False, echo=lambda line: None, **kwargs)


def computed(record: dict) -> dict:
    kept = {key: value for key, value in record.items() if key not in RUN_FIELDS}
    kept["perplexity"] = {label: {k: v for k, v in result.items() if k != "seconds"}
                          for label, result in record["perplexity"].items()}
    # The git revision is read when a process first asks: a commit between two runs moves it.
    kept["provenance"] = {k: v for k, v in record["provenance"].items() if k not in NOT_HASHED}
    return kept


@needs_ray
def test_ray_records_equal_the_local_executors(tmp_path, start_ray, one_thread):
    from prunebench.grid.executors import RayExecutor

    config = load_config(grid(tmp_path, ["wanda", "magnitude"], lengths=(16, 32)))
    local = quiet(run_grid, config, tmp_path / "local")
    start_ray()
    remote = quiet(run_grid, config, tmp_path / "ray", executor=RayExecutor())
    assert sorted(remote.ran) == sorted(local.ran) and len(local.ran) == 5 and not remote.failed
    local_records = {r["name"]: r for r in ResultsStore(tmp_path / "local").leaderboard()}
    ray_records = {r["name"]: r for r in ResultsStore(tmp_path / "ray").leaderboard()}
    assert local_records.keys() == ray_records.keys()
    for name, record in local_records.items():
        # Everything computed is identical (perplexities, per-window NLLs, sparsity, hash, provenance),
        # and the same fields are there.
        assert record.keys() == ray_records[name].keys()
        assert computed(ray_records[name]) == computed(record), name
        assert record["perplexity"]["pydoc-32x2"]["perplexity"] > 1
    # Resume: the driver's expected hash is the worker's, so nothing reruns.
    again = quiet(run_grid, config, tmp_path / "ray", executor=RayExecutor())
    assert again.ran == [] and len(again.skipped) == 5


@needs_ray
def test_failing_and_crashing_cells_are_isolated(tmp_path, install_plugin, start_ray, capsys):
    plugin_dir = install_plugin(TEST_METHODS, "ray_test_methods", "ray-test-methods")
    start_ray(PYTHONPATH=str(plugin_dir), PRUNEBENCH_TEST_KILL="1")
    path = grid(tmp_path, ["raiser", "worker-killer", "wanda"])
    results = tmp_path / "results"
    code = main(["run", str(path), "--results-dir", str(results), "--executor", "ray"])
    captured = capsys.readouterr()
    assert code == 1
    assert "4 ran, 0 already finished, 0 busy in another process, 2 failed" in captured.out
    assert "RuntimeError: plugin bug" in captured.err
    records = {r["cell"]["method"]: r for r in ResultsStore(results).leaderboard()}
    assert records["raiser"]["status"] == "failed" and "plugin bug" in records["raiser"]["traceback"]
    # A worker killed mid-cell (out of memory, a lost node) fails its cell, not the grid.
    assert records["worker-killer"]["status"] == "failed"
    assert records["worker-killer"]["error"].startswith("WorkerCrashedError")
    assert records["wanda"]["status"] == records["dense"]["status"] == "ok"


@needs_ray
def test_interrupted_ray_run_resumes(tmp_path, start_ray):
    from prunebench.grid.executors import RayExecutor

    config = load_config(grid(tmp_path, ["wanda", "magnitude"], lengths=(16, 32)))
    results = tmp_path / "results"
    start_ray()

    def interrupt(line):
        raise KeyboardInterrupt  # Ctrl-C on the driver as the first cell finishes

    with pytest.raises(KeyboardInterrupt):
        run_grid(config, results, executor=RayExecutor(), progress=False, echo=interrupt)
    store = ResultsStore(results)
    finished = {r["name"]: store.record_path(r["name"]).stat().st_mtime_ns for r in store.records()}
    assert len(finished) == 1  # the cancelled cells wrote nothing
    # Their locks were released: only the cell another runner holds now is busy, the rest runs, and
    # the finished cell is left alone.
    held = next(cell.name for cell in expand(config) if cell.name not in finished)
    with store.claim(held) as claimed:
        assert claimed
        resumed = quiet(run_grid, config, results, executor=RayExecutor())
    assert resumed.busy == [held] and resumed.skipped == list(finished) and len(resumed.ran) == 3
    assert not resumed.failed
    assert all(store.record_path(name).stat().st_mtime_ns == mtime for name, mtime in finished.items())
    last = quiet(run_grid, config, results, executor=RayExecutor())
    assert last.ran == [held] and len(last.skipped) == 4
    assert len(store.leaderboard()) == 5


@needs_ray
def test_cuda_cells_must_ask_ray_for_a_gpu(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(methods="wanda", lengths="16").replace("device: cpu", "device: cuda"))
    code = main(["run", str(path), "--results-dir", str(tmp_path / "r"), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "ask Ray for no GPU" in err and "resources: {gpus: 1}" in err


def test_missing_ray_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = main(["run", str(grid(tmp_path, ["wanda"])), "--results-dir", str(tmp_path / "r"), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'prunebench[ray]'" in err
    assert not (tmp_path / "r").exists()
    code = main(["run", str(grid(tmp_path, ["wanda"])), "--address", "auto"])
    assert code == 2 and "--executor ray" in capsys.readouterr().err


BASE = {"models": ["tiny-llama"], "methods": ["wanda"], "sparsity": [0.5], "calibration": {"dataset": "pydoc"}}


def test_resources_are_validated_with_the_config():
    config = validate_config(dict(BASE, resources={"cpus": 4, "gpus": 0.5, "memory_gb": 24, "retries": 2},
                                  models=[{"alias": "tiny-llama", "resources": {"gpus": 2}}, "tiny-opt"]))
    assert config.resources == Resources(cpus=4, gpus=0.5, memory_gb=24.0, retries=2)
    assert config.cell_resources(config.models[0]) == Resources(gpus=2)
    assert config.cell_resources(config.models[1]) == config.resources
    assert validate_config(dict(BASE)).resources == Resources()
    with pytest.raises(UsageError) as error:
        validate_config(dict(BASE, resources={"cpu": 1, "gpus": 1.5, "memory_gb": 0, "retries": -1}))
    message = str(error.value)
    assert "resources.cpu: unknown key 'cpu'. Did you mean: cpus?" in message
    assert "resources.gpus: must be a whole number" in message and "resources.memory_gb" in message
    assert "resources.retries" in message
    with pytest.raises(UsageError, match="asks for GPUs but device is cpu"):
        validate_config(dict(BASE, device="cpu", resources={"gpus": 1}))
    with pytest.raises(UsageError, match=r"models\[0\].resources: must be a mapping"):
        validate_config(dict(BASE, models=[{"alias": "tiny-llama", "resources": 2}]))
