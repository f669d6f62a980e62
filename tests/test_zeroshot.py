"""Zero-shot evaluation: lm-eval on the in-memory model with the offline last-word task."""
import json

import pytest
from prunebench.api.errors import UsageError
from prunebench.cli.main import main
from prunebench.grid.config import load_config
from prunebench.grid.runner import run_grid
from prunebench.metrics.tasks.lastword import passages_from_paragraphs
from prunebench.metrics.zeroshot import TaskSpec, evaluate_tasks, load_tasks
from prunebench.report.quality_tables import task_tables
from prunebench.store.results import ResultsStore

TASK = "prunebench_lastword_text"


@pytest.fixture
def corpus(tmp_path):
    """Real prose (CPython's documentation topics) as the task's local text."""
    from pydoc_data.topics import topics

    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(" ".join(text.split()) for text in topics.values()))
    return path


def test_passages_end_in_a_word_seen_in_their_context():
    words = ["w" + chr(97 + i // 26) + chr(97 + i % 26) for i in range(45)]  # distinct alphabetic words
    paragraph = " ".join(words[:20]) + " . " + " ".join(words[20:]) + f" {words[3]} . more text"
    [passage] = passages_from_paragraphs([" = Heading = ", paragraph])
    # The first sentence end is too early (20 words); the second ends in a word of the context.
    assert passage["target"] == words[3]
    assert passage["context"] == " ".join(words[:20]) + " . " + " ".join(words[20:])
    assert passages_from_paragraphs([" ".join(words) + " ."]) == []  # last word never seen before


def test_lm_eval_runs_the_offline_task_on_the_in_memory_model(tiny_llama, corpus):
    model, tokenizer = tiny_llama
    spec = TaskSpec((TASK,), 0, 6, 2, None, str(corpus))
    record = evaluate_tasks(model, tokenizer, spec, "cpu")
    assert record[TASK]["samples"] == 6
    assert 0.0 <= record[TASK]["acc"] <= 1.0 and record[TASK]["perplexity"] > 1
    assert record["mean_acc"] == record[TASK]["acc"]
    # Per-item correctness, in document order, averages to the accuracy; the stderr is of that mean.
    correct = record[TASK]["correct"]["acc"]
    assert len(correct) == 6 and set(correct) <= {0, 1}
    p = sum(correct) / 6
    assert p == pytest.approx(record[TASK]["acc"])
    assert record[TASK]["acc_stderr"] == pytest.approx((p * (1 - p) / 5) ** 0.5)


def test_grid_records_and_report_columns(tmp_path, corpus):
    config_path = tmp_path / "grid.yaml"
    config_path.write_text(f"""\
models: [tiny-opt]
methods: [wanda]
sparsity: [0.5]
calibration: {{dataset: pydoc, nsamples: 2, lengths: [16]}}
evaluation:
  perplexity: [{{dataset: pydoc, seqlen: 32, max_windows: 2}}]
  tasks: {{names: [{TASK}], limit: 4, batch_size: 2, text_path: {corpus}}}
device: cpu
""")
    results = tmp_path / "results"
    summary = run_grid(load_config(config_path), results, progress=False, echo=lambda line: None)
    assert not summary.failed
    records = ResultsStore(results).records()
    assert all(r["tasks"][TASK]["samples"] == 4 for r in records)
    [(title, table)] = task_tables(records)
    assert "zero-shot" in title
    header = table.splitlines()[0]
    assert f"{TASK} acc ↑" in header and "mean acc ↑" in header and "pydoc-32x2 ↓" in header
    dense = next(r for r in records if r["cell"]["method"] == "dense")
    dense_row = next(line for line in table.splitlines() if line.startswith("| dense"))
    assert f"{dense['tasks'][TASK]['acc'] * 100:.2f}" in dense_row


def test_unknown_task_is_named_with_suggestions():
    with pytest.raises(UsageError, match="Unknown lm-eval task 'prunebench_lastword_wikitxt2'. Did you mean"):
        load_tasks(TaskSpec(("prunebench_lastword_wikitxt2",)))


def test_a_task_whose_data_is_unreachable_is_named_with_the_fix():
    # Tests run with the hub offline: boolq's data cannot be had, and the error says how to point at local data.
    with pytest.raises(UsageError, match="lm-eval task 'boolq' cannot load its data.*tasks path"):
        load_tasks(TaskSpec(("boolq",)))


def test_prune_cli_accepts_tasks(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report.json"
    code = main(["prune", "--model", "tiny-llama", "--nsamples", "2", "--seqlen", "16", "--tasks", TASK,
                 "--limit", "3", "--tasks-batch-size", "3", "--json", str(report)])
    assert code == 2 and "needs a text file" in capsys.readouterr().err  # no text given for the text task
    monkeypatch.setenv("PRUNEBENCH_LASTWORD_TEXT", str(corpus))
    code = main(["prune", "--model", "tiny-llama", "--nsamples", "2", "--seqlen", "16", "--tasks", TASK,
                 "--limit", "3", "--tasks-batch-size", "3", "--json", str(report)])
    assert code == 0
    output = json.loads(report.read_text())
    assert output["pruned"]["tasks"][TASK]["samples"] == 3 and output["dense"]["tasks"][TASK]["samples"] == 3
    assert "pruned " + TASK in capsys.readouterr().out


def _per_request(lm_class, model, tokenizer, spec, data_dir=None):
    """(log-likelihood, greedy) of every request lm-eval makes for the tasks, in document order, and the accuracy."""
    from lm_eval import simple_evaluate

    manager, tasks = load_tasks(spec, data_dir)
    lm = lm_class(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size, device="cpu")
    output = simple_evaluate(model=lm, tasks=list(tasks.values()), limit=spec.limit, task_manager=manager,
                             log_samples=True, bootstrap_iters=0)
    name = spec.names[0]
    samples = sorted(output["samples"][name], key=lambda s: s["doc_id"])
    return [tuple(response[0]) for s in samples for response in s["resps"]], output["results"][name]["acc,none"]


def _assert_same_scores(model, tokenizer, spec, data_dir=None):
    from lm_eval.models.huggingface import HFLM
    from prunebench.metrics.lm_scoring import ContinuationLM

    ours, our_accuracy = _per_request(ContinuationLM, model, tokenizer, spec, data_dir)
    theirs, their_accuracy = _per_request(HFLM, model, tokenizer, spec, data_dir)
    assert len(ours) == len(theirs) == spec.limit
    for (ll, greedy), (expected, expected_greedy) in zip(ours, theirs):
        assert abs(ll - expected) <= 1e-4 and greedy == expected_greedy
    assert our_accuracy == their_accuracy


def test_continuation_scoring_equals_hflm_on_a_tiny_model(tiny_llama, corpus):
    """Logits at the continuation positions only (prunebench.metrics.lm_scoring) give lm-eval HFLM's own
    per-request log-likelihoods and greedy flags, across batches of mixed lengths (batch 3 of 7 requests)."""
    model, tokenizer = tiny_llama
    _assert_same_scores(model, tokenizer, TaskSpec((TASK,), 0, 7, 3, None, str(corpus)))


@pytest.mark.smollm2
def test_continuation_scoring_equals_hflm_on_smollm2(corpus):
    from prunebench import load_model

    model, tokenizer = load_model("smollm2-135m")
    _assert_same_scores(model, tokenizer, TaskSpec((TASK,), 0, 24, 8, None, str(corpus)))
