"""The prunebench command line: prune, list, bench."""
from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading

from ..api.errors import Terminated, UsageError
from ..api.options import DTYPES, PROPAGATIONS
from ..grid.config import default_dtype
from ..metrics.zeroshot import (
    VERBOSE_ENV,  # light: lm-eval is imported only when tasks run
)
from . import commands
from .commands import run_list
from .prune import run_prune


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)  # every option shows its default
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 1")
    return value


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device; use cpu, cuda or cuda:N")
    return text


def _method_args(pairs: list[str]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"Bad --arg '{pair}': write KEY=VALUE, e.g. --arg group=layer.")
        parsed[key] = value
    return parsed


VERBOSE_HELP = "show lm-eval's warnings (hidden otherwise: they are about how prunebench calls it)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunebench", description="Post-training pruning of causal LMs, measured.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    prune = commands.add_parser("prune", help="prune one model with one method and report perplexity")
    prune.add_argument("--model", default="smollm2-135m", help="alias, local dir, .gguf file or hub id")
    prune.add_argument("--method", default="wanda", help="pruning method (see 'prunebench list')")
    prune.add_argument("--sparsity", default="0.5", help="ratio in (0, 1) or N:M, e.g. 2:4")
    prune.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="method argument (repeatable)")
    prune.add_argument("--calib-dataset", default="pydoc", help="calibration dataset, or text:PATH / jsonl:PATH")
    prune.add_argument("--nsamples", type=_positive, default=128, help="calibration windows")
    prune.add_argument("--seqlen", type=_positive, default=128, help="calibration window length L")
    prune.add_argument("--seed", type=int, default=0, help="calibration sampling seed")
    prune.add_argument("--eval-dataset", default=None, help="perplexity dataset (none: skip evaluation)")
    prune.add_argument("--eval-seqlen", type=_positive, default=512, help="evaluation window length")
    prune.add_argument("--eval-windows", type=_positive, default=None, help="cap on evaluation windows")
    prune.add_argument("--no-dense-eval", action="store_true", help="skip the dense evaluation")
    prune.add_argument("--tasks", default=None, help="lm-eval tasks, comma-separated (e.g. prunebench_lastword_wikitext2)")
    prune.add_argument("--limit", type=_positive, default=None, help="examples per lm-eval task")
    prune.add_argument("--num-fewshot", type=int, default=0, help="few-shot examples per lm-eval task")
    prune.add_argument("--tasks-batch-size", type=_positive, default=8, help="lm-eval batch size")
    prune.add_argument("--tasks-path", default=None,
                       help="extra directory of lm-eval task YAMLs; task files can run Python (lm-eval's !function), "
                            "so give only directories you trust")
    prune.add_argument("--metric", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                       help="measure the pruned model with a registered metric (size, memory, speed, a plugin's; "
                            "see 'prunebench list'), e.g. speed:repeats=3; repeatable; printed and in --json")
    prune.add_argument("--propagate", choices=PROPAGATIONS, default=None,
                       help="which activations feed the next layer's calibration: the pruned or the dense layer's "
                            "(if not given, pruned; structured methods: dense)")
    prune.add_argument("--allocation", default="uniform", metavar="NAME[:KEY=VALUE,...]",
                       help="layer-wise sparsity: a registered unstructured allocation (uniform, owl, a plugin's) "
                            "with its settings, e.g. owl:m=5,lambda=0.08 (see 'prunebench list')")
    prune.add_argument("--batch-size", type=_positive, default=8, help="calibration batch size")
    prune.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 (if not given, cuda if present)")
    prune.add_argument("--dtype", default=None, choices=DTYPES,
                       help="weight dtype (if not given, float16 on CUDA, float32 on CPU)")
    prune.add_argument("--data-dir", default=None, help="directory with local dataset files")
    prune.add_argument("--save", default=None, metavar="DIR", help="save the pruned model here")
    prune.add_argument("--json", default=None, metavar="FILE", help="write the full report as JSON")
    prune.add_argument("--speed-repeats", type=int, default=0, metavar="N",
                       help="the same as --metric speed:repeats=N: prefill/decode against dense, N interleaved repeats")
    prune.add_argument("--debug", action="store_true",
                       help="when the method's plugin raises, show the full traceback instead of one line")
    prune.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)

    commands.add_parser("list", help="list methods, statistics, datasets and models, and their plugins")

    run = commands.add_parser("run", help="run a benchmark grid (resumes finished cells)")
    run.add_argument("file", nargs="?", default="benchmarks.yaml", help="benchmark grid YAML")
    run.add_argument("--results-dir", default=None, help="results directory (if not given, results/<suite>)")
    run.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                     help="run only matching cells (model, method, sparsity, seqlen, seed, calibration, nsamples)")
    run.add_argument("--force", action="store_true", help="rerun finished cells")
    run.add_argument("--remeasure", default=None, metavar="METRIC[,METRIC]",
                     help="timed metrics of the grid (speed, memory) to measure again in finished cells that "
                          "measured them on a contended machine; run it on a quiet one")
    run.add_argument("--dry-run", action="store_true", help="list the cells and their status, run nothing")
    run.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failed cell")
    run.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    run.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local: cells one after another in this process; ray: each cell a Ray task with the "
                          "config's resources (pip install 'prunebench[ray]')")
    run.add_argument("--address", default=None,
                     help="with --executor ray: auto (the running cluster) or ray://host:port (if not given, "
                          "a Ray started here)")

    validate = commands.add_parser("validate", help="check a benchmark config without loading any weights")
    validate.add_argument("file", nargs="?", default="benchmarks.yaml", help="benchmark grid YAML")

    status = commands.add_parser("status", help="done / pending / failed per cell")
    status.add_argument("file", nargs="?", default="benchmarks.yaml", help="benchmark grid YAML")
    status.add_argument("--results-dir", default=None, help="results directory (if not given, results/<suite>)")
    status.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                        help="show only matching cells (model, method, sparsity, seqlen, seed, calibration, nsamples)")

    report = commands.add_parser("report", help="tables and plots from a results directory")
    report.add_argument("results_dir", nargs="?", default=None, help="results directory; if not given, results/<suite of ./benchmarks.yaml>")
    report.add_argument("--format", choices=("github", "latex", "csv", "html"), default="github",
                        help="html: a static site (index.html, a page per cell) in RESULTS_DIR/report/site")
    report.add_argument("--out", default=None, help="output directory; if not given, RESULTS_DIR/report (html: RESULTS_DIR/report/site)")
    report.add_argument("--claims", default=None, metavar="FILE",
                        help="also write the claims table of this claims YAML (e.g. results/claims/claims.yaml) "
                             "beside it, from RESULTS_DIR's records")
    report.add_argument("--reference", default="wanda",
                        help="method every other is compared with by a paired t interval ('none' for no comparison)")

    browse = commands.add_parser("browse", help="open the SQLite leaderboard in datasette (pip install prunebench[browse])")
    browse.add_argument("results_dir", nargs="?", default=None, help="results directory; if not given, results/<suite of ./benchmarks.yaml>")
    browse.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1: this machine only)")
    browse.add_argument("--port", type=int, default=8001, help="port to serve on")
    browse.add_argument("--open", action="store_true", help="open it in a web browser")

    bench = commands.add_parser("bench", help="speed and memory benchmark of pruning and evaluation")
    bench.add_argument("--model", default="smollm2-135m", help="alias, local dir, .gguf file or hub id")
    bench.add_argument("--method", default="wanda", help="pruning method")
    bench.add_argument("--sparsity", default="0.5", help="ratio in (0, 1) or N:M")
    bench.add_argument("--nsamples", type=_positive, default=32, help="calibration windows")
    bench.add_argument("--seqlen", type=_positive, default=128, help="calibration window length")
    bench.add_argument("--eval-dataset", default="pydoc", help="perplexity dataset")
    bench.add_argument("--eval-seqlen", type=_positive, default=512, help="evaluation window length")
    bench.add_argument("--eval-windows", type=_positive, default=8, help="evaluation windows")
    bench.add_argument("--data-dir", default=None, help="directory with local dataset files")
    bench.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 (if not given, cuda if present)")
    return parser


# The commands that read a grid or a results directory, by name.
GRID_COMMANDS = {"run": commands.run_run, "validate": commands.run_validate, "status": commands.run_status,
                 "report": commands.run_report, "browse": commands.run_browse}


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    # SIGTERM unwinds like Ctrl-C (locks released, temporary files removed); only the main thread
    # may set handlers, and the previous one comes back when main returns (tests call main in-process).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    verbose = os.environ.get(VERBOSE_ENV)  # --verbose sets it for this command only
    try:
        return _main(argv)
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if verbose is None:
            os.environ.pop(VERBOSE_ENV, None)
        else:
            os.environ[VERBOSE_ENV] = verbose


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "verbose", False):
            os.environ[VERBOSE_ENV] = "1"  # read where lm-eval runs: here, or in a Ray worker started after
        if args.command == "prune":
            args.dtype = args.dtype or default_dtype(args.device or "auto")
            run_prune(args, _method_args(args.arg))
        elif args.command == "list":
            run_list()
        elif args.command == "bench":
            from .bench import run_bench  # torch: `prunebench --help` stays light

            run_bench(args)
        else:
            return GRID_COMMANDS[args.command](args)
        return 0
    except UsageError as error:
        print(f"prunebench: error: {error}", file=sys.stderr)
        return 2
    except Terminated:
        print("prunebench: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("prunebench: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
