"""Calibration sampling (REFERENCE.md section 1), text sources and their errors."""
import gzip
import json
import random
from pathlib import Path

import pytest
import torch
from prunebench.api.errors import UsageError
from prunebench.data.datasets import (
    calibration_documents,
    evaluation_text,
    read_raw_rows,
    resolve_dataset,
    sample_calibration,
    tokenize_text,
)
from prunebench.models.loading import byte_tokenizer

SHARED_WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"


def wanda_get_loader(documents, tokenizer, nsamples, seqlen, seed):
    """Wanda's sampling loop, written as in its code (global random, seeded once)."""
    random.seed(seed)
    windows = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(documents) - 1)
            ids = tokenizer(documents[i], return_tensors="pt").input_ids
            if ids.shape[1] > seqlen:
                break
        i = random.randint(0, ids.shape[1] - seqlen - 1)
        windows.append(ids[:, i : i + seqlen])
    return torch.cat(windows, dim=0)


@pytest.mark.parametrize("seed,seqlen", [(0, 16), (3, 64), (7, 300)])
def test_sampling_matches_wandas_loop(pydoc_documents, seed, seqlen):
    tokenizer = byte_tokenizer()
    ours = sample_calibration(tokenizer, pydoc_documents, nsamples=6, seqlen=seqlen, seed=seed)
    assert torch.equal(ours, wanda_get_loader(pydoc_documents, tokenizer, 6, seqlen, seed))
    assert ours.shape == (6, seqlen) and ours.dtype == torch.long


def test_different_seeds_give_different_windows(pydoc_documents):
    tokenizer = byte_tokenizer()
    a = sample_calibration(tokenizer, pydoc_documents, 4, 32, seed=0)
    b = sample_calibration(tokenizer, pydoc_documents, 4, 32, seed=1)
    assert not torch.equal(a, b)


def test_text_shorter_than_one_window_is_refused():
    with pytest.raises(UsageError, match="shorter than one window"):
        sample_calibration(byte_tokenizer(), ["short", "texts only"], nsamples=2, seqlen=64)


def test_pydoc_held_out_topics_are_disjoint_from_calibration(pydoc_documents):
    held_out = evaluation_text("pydoc")
    assert len(held_out) > 50_000
    assert not any(doc in held_out for doc in pydoc_documents)


def test_text_and_jsonl_sources(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("one document\n\nwith two paragraphs")
    assert calibration_documents(f"text:{text}") == ["one document\n\nwith two paragraphs"]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(json.dumps({"text": "first"}) + "\n\n" + json.dumps({"text": "second"}) + "\n")
    assert calibration_documents(f"jsonl:{jsonl}") == ["first", "second"]
    assert evaluation_text(f"jsonl:{jsonl}") == "first\n\nsecond"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "no text"}\n')
    with pytest.raises(UsageError, match="bad.jsonl:1 has no string field 'text'"):
        calibration_documents(f"jsonl:{bad}")


def test_local_wikitext_rows_and_c4_shards(tmp_path):
    (tmp_path / "wiki.test.raw").write_bytes(b" = Title = \r\n Body line . \r\n")
    (tmp_path / "wiki.train.raw").write_bytes(b" a \r\n b \r\n")
    assert evaluation_text("wikitext2", tmp_path) == " = Title = \n\n\n Body line . \n"
    assert calibration_documents("wikitext2", tmp_path) == [" a \n  b \n"]
    shard = tmp_path / "c4-validation.00000-of-00008.json.gz"
    with gzip.open(shard, "wt") as f:
        f.write("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(1200)))
    assert evaluation_text("c4", tmp_path) == " ".join(f"doc {i}" for i in range(1100))
    assert resolve_dataset("c4")[0].protocol_max_windows == 256


@pytest.mark.skipif(not SHARED_WIKITEXT.exists(), reason="the shared WikiText-2 file is not beside the repo")
def test_shared_wikitext_file_reads_as_hub_rows():
    rows = read_raw_rows(SHARED_WIKITEXT)
    assert len(rows) == 2891 and rows[0] == " = Robert Boulter = \n"
    assert "\r" not in "".join(rows)


@pytest.mark.parametrize("spec,message", [
    ("wikitxt2", "Did you mean: wikitext2"),
    ("text:/no/such/file.txt", "File not found"),
    ("text", "needs a path"),
    ("pydoc:/x", "takes no path"),
])
def test_bad_dataset_specs(spec, message):
    with pytest.raises(UsageError, match=message):
        resolve_dataset(spec)


def test_dataset_the_hub_cannot_serve_names_the_fix(tmp_path):
    with pytest.raises(UsageError, match="not reachable on the hub.*--data-dir"):
        evaluation_text("ptb", tmp_path)


def test_tokenize_text_is_one_long_sequence():
    ids = tokenize_text(byte_tokenizer(), "abc" * 1000)
    assert ids.shape == (3000,)
