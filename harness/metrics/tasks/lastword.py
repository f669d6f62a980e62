"""Builds LAMBADA-style last-word passages from real local text, for the prunebench_lastword tasks.

A passage is the start of one paragraph, whole sentences, 40 to 120 words, that ends in a word
already seen earlier in the passage (so that the context can predict it, as LAMBADA filters for).
The model sees the passage without its last word and must give that word. Nothing is hand-written:
the text comes from WikiText-2 test (local copy or hub) or from a file the user names.
"""
from __future__ import annotations

import os

# lm-eval loads this file by path (the task YAML's !function), outside the package: absolute imports only.
from prunebench.data.datasets import WikiText2, data_dirs, read_utf8, resolve_dataset

MIN_WORDS, MAX_WORDS, MAX_PASSAGES = 40, 120, 1000


def _bare(word: str) -> str:
    return word.strip(".,;:!?()[]\"'")


def passages_from_paragraphs(paragraphs: list[str]) -> list[dict]:
    found = []
    for paragraph in paragraphs:
        words = paragraph.split()
        if not words or words[0] == "=":  # WikiText headings
            continue
        for end in range(MIN_WORDS, min(len(words), MAX_WORDS + 1)):
            word = words[end]
            if word in (".", "!", "?"):  # WikiText writes " ." apart
                context, target = words[: end - 1], words[end - 1]
            elif len(word) > 1 and word[-1] in ".!?":
                context, target = words[:end], word[:-1]
            else:
                continue
            if target.isalpha() and len(target) >= 3 and target in {_bare(w) for w in context}:
                found.append({"context": " ".join(context), "target": target})
                break
        if len(found) >= MAX_PASSAGES:
            break
    return found


def _paragraphs(source: str, data_dir: str | None, text_path: str | None) -> list[str]:
    if source == "wikitext2":

        dataset, _ = resolve_dataset("wikitext2")
        return dataset._rows("test", WikiText2.TEST, data_dirs(data_dir))
    path = text_path or os.environ.get("PRUNEBENCH_LASTWORD_TEXT")
    if not path:
        raise ValueError("prunebench_lastword_text needs a text file: set tasks_text_path / PRUNEBENCH_LASTWORD_TEXT")
    from pathlib import Path

    # A file that is not UTF-8 is named with its byte offset, as every other corpus is.
    return [p for p in read_utf8(Path(path).expanduser()).replace("\r\n", "\n").split("\n") if p.strip()]


def load_dataset(source: str = "wikitext2", data_dir: str | None = None, text_path: str | None = None, **metadata):
    """lm-eval `custom_dataset` entry: a DatasetDict with a test split of passages."""
    import datasets

    passages = passages_from_paragraphs(_paragraphs(source, data_dir or None, text_path or None))
    if not passages:
        raise ValueError(f"no passage of {MIN_WORDS}-{MAX_WORDS} words ending in a repeated word found in the {source} source")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(passages)})
