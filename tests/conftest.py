"""Shared fixtures: offline hub, tiny models, inline plugin registration."""
from __future__ import annotations

import importlib
import os
import sys

# Tests never reach the hub: fail fast instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
from prunebench import registry
from prunebench.data.datasets import calibration_documents, sample_calibration
from prunebench.models.loading import load_model


@pytest.fixture
def one_thread():
    """torch on one thread for the test: the float sums of a `cpus: 1` Ray cell, and a test that stays
    fast when other work shares the cores (spinning OpenMP threads then run several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_llama():
    return load_model("tiny-llama")


@pytest.fixture
def tiny_opt():
    return load_model("tiny-opt")


@pytest.fixture(scope="session")
def pydoc_documents():
    return calibration_documents("pydoc")


@pytest.fixture
def tiny_calibration(tiny_llama, pydoc_documents):
    return sample_calibration(tiny_llama[1], pydoc_documents, nsamples=4, seqlen=32, seed=0)


@pytest.fixture
def register_plugin():
    """Register inline plugin objects for one test; always unregistered afterwards."""
    registered = []

    def register(plugin, name=None):
        registry.plugin_manager().register(plugin, name=name)
        registered.append(plugin)
        return plugin

    yield register
    for plugin in registered:
        registry.plugin_manager().unregister(plugin)


def weights_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """Install plugin source as a module with an entry point (a dist-info) on sys.path.

    Returns the directory, to put on PYTHONPATH for subprocesses too.
    """
    modules = []

    def install(source: str, module: str, entry_name: str):
        (tmp_path / f"{module}.py").write_text(source)
        dist = tmp_path / f"{module}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[prunebench]\n{entry_name} = {module}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        importlib.invalidate_caches()
        registry.reset_plugin_manager()
        modules.append(module)
        return tmp_path

    yield install
    registry.reset_plugin_manager()
    for module in modules:
        sys.modules.pop(module, None)
