"""What a data or model plugin registers: a text source (calibration documents and evaluation text) and
a model alias (a short name that loads a model and its tokenizer)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TextDataset:
    """A named text source. Subclasses load calibration documents and evaluation text."""

    name: str
    description: str
    takes_path: bool = False
    # Cap on evaluation windows the protocol itself applies (C4 uses 256), else None.
    protocol_max_windows: int | None = None
    # One continuous text (WikiText-2, PTB, text:PATH): calibration windows are drawn from it
    # directly, as Wanda's get_wikitext2 does, without a draw for choosing a document.
    single_document: ClassVar[bool] = False
    # What the text may serve as: a model's own generations are calibration only.
    roles: ClassVar[tuple[str, ...]] = ("calibration", "evaluation")
    # Its calibration windows come from the model being pruned (`model_windows`), not from documents.
    from_model: ClassVar[bool] = False

    def calibration_documents(self, path: str | None, dirs: list[Path]) -> list[str]:
        raise NotImplementedError

    def evaluation_text(self, path: str | None, dirs: list[Path]) -> str:
        raise NotImplementedError

    def model_windows(self, model, tokenizer, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
        """(nsamples, seqlen) calibration token ids made with the model itself (`from_model` sources)."""
        raise NotImplementedError

    def problem(self) -> str | None:
        """Why this source cannot be used here (e.g. the package that carries it is not installed), or None."""
        return None

    def source(self, role: str, path: str | None, dirs: list[Path]) -> "Path | str":
        """Where the text for `role` ("calibration" or "evaluation") comes from: the local file that
        will be read, or else a description (hub id, module) whose loaded text is hashed instead."""
        return f"{self.name} (dataset plugin {type(self).__module__})"


@dataclass(frozen=True)
class ModelAlias:
    """A short name that loads a (model, tokenizer) pair."""

    name: str
    description: str
    load: Callable[[torch.dtype], tuple]
