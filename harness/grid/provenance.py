"""What a result depends on besides its configuration: code versions, libraries, data files, machine
settings; one function for grid cells and `prunebench prune --json`, and the part the content hash takes."""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from .. import registry
from ..api import __version__
from ..api.errors import UsageError
from ..data.datasets import text_provenance

if TYPE_CHECKING:
    import torch

# Bump when a host change can change any method's numbers (methods bump their own `version`).
# 2: statistics accumulate in float64 and count sequences of flattened inputs; OWL keeps its mean
#    exactly; single-document calibration draws no document; C4 perplexity capped at 256 windows.
# 3: statistics sum each calibration window in float32 and add the windows in float64 (not float64
#    products over every token): the same for any batch size, at float32 cost.
NUMERICS_VERSION = 3

# Recorded, but kept out of the content hash: they change without changing any number (a commit
# of finished cells moves the git revision; kernels and interpreters are covered by library versions).
NOT_HASHED = ("git_revision", "python", "platform")


def _distribution_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The checkout's commit, with "+dirty" when tracked files differ from it; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, cwd=here).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (revision + ("+dirty" if dirty else "")) if revision else None


def _data(spec: str | None, role: str, data_dir) -> dict | None:
    if spec is None:
        return None
    try:
        return text_provenance(spec, role, data_dir)
    except UsageError as error:  # missing data fails its cell later, with this message
        return {"dataset": spec, "source": None, "local": False, "sha256": None, "error": str(error)}


def run_provenance(method: str | None, *, device: "torch.device | str", batch_size: int | None,
                   calibration_dataset: str | None, evaluation_datasets: list[str], data_dir=None) -> dict:
    """Everything besides the configuration that a run's numbers depend on, and the git revision.

    `method` is a registered method name (None for a dense run, which also has no batch size).
    """
    import torch

    method_version = None
    if method is not None:  # a structured method's plugin may declare no version
        found = registry.get_structured_method(method) if registry.is_structured(method) else registry.get_method(method)
        method_version = getattr(found, "version", None)
    return {
        "prunebench": __version__, "numerics_version": NUMERICS_VERSION, "method_version": method_version,
        "torch": torch.__version__, "transformers": _distribution_version("transformers"),
        "lm_eval": _distribution_version("lm_eval"), "torch_threads": torch.get_num_threads(), "device": str(device),
        "batch_size": batch_size if method is not None else None,
        "calibration_data": _data(calibration_dataset if method is not None else None, "calibration", data_dir),
        "evaluation_data": [_data(spec, "evaluation", data_dir) for spec in evaluation_datasets],
        "git_revision": git_revision(), "python": platform.python_version(), "platform": platform.platform(),
    }


def hashed_provenance(provenance: dict) -> dict:
    """The part of `provenance` that goes into a content hash: no git revision, no local directories
    (a data file is known by its name and sha256, so moving the data directory changes nothing)."""

    def data(entry: dict | None) -> dict | None:
        if entry is None:
            return None
        return dict(entry, source=Path(entry["source"]).name if entry.get("local") else entry.get("source"))

    hashed = {k: v for k, v in provenance.items() if k not in NOT_HASHED}
    hashed["calibration_data"] = data(provenance.get("calibration_data"))
    hashed["evaluation_data"] = [data(e) for e in provenance.get("evaluation_data", [])]
    return hashed
