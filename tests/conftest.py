"""Shared fixtures: offline hub, tiny models, inline plugin registration."""
from __future__ import annotations

import os

# Tests never reach the hub: fail fast instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

from harness import plugins
from harness.data import calibration_documents, sample_calibration
from harness.models import load_model


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
        plugins.plugin_manager().register(plugin, name=name)
        registered.append(plugin)
        return plugin

    yield register
    for plugin in registered:
        plugins.plugin_manager().unregister(plugin)


def weights_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
