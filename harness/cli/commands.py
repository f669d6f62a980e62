"""What the grid and report commands (`run`, `validate`, `status`, `report`, `browse`) and `list` do."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

from .. import registry
from ..api.allocation import tracks_of
from ..api.errors import UsageError
from ..api.metric import REQUIRED
from ..grid.cells import expand
from ..grid.config import load_config
from ..metrics.run import registered_metrics
from ..report.browse import serve
from ..store.results import ResultsStore, check_writable


def run_list() -> None:
    """Print every registered method, statistic, dataset, model and metric with the plugin that gave it."""
    sections = [
        ("Methods", "register_methods",
         lambda m: [m.description, ", ".join(f"{k}={v}" for k, v in m.arguments.items()),
                    ", ".join(m.required_statistics(m.arguments)) or "-"],
         ["method", "plugin", "description", "arguments (defaults)", "statistics"]),
        ("Structured methods (sparsity = fraction of prunable parameters removed; --arg allocation=, round_to=)",
         "register_structured_methods",
         lambda m: [", ".join(m.kinds), m.description, ", ".join(f"{k}={v}" for k, v in m.all_arguments().items())],
         ["method", "plugin", "removes", "description", "arguments (defaults)"]),
        ("Layer allocations (unstructured methods: --allocation; structured: --arg allocation=)", "register_allocations",
         lambda a: [", ".join(tracks_of(a)), a.description,
                    ", ".join(f"{k}={v}" for k, v in getattr(a, "settings", {}).items()) or "-"],
         ["allocation", "plugin", "serves", "description", "settings (defaults)"]),
        ("Statistics", "register_statistics", lambda s: [s.description], ["statistic", "plugin", "description"]),
        ("Datasets", "register_datasets", lambda d: [d.description], ["dataset", "plugin", "description"]),
        ("Models", "register_models", lambda a: [a.description], ["model", "plugin", "description"]),
        ("Metrics (evaluation.metrics in a grid; ↑ higher is better, ↓ lower)", "register_metrics",
         lambda m: [m.arrow(), m.unit, ", ".join(m.applies_to), m.description,
                    ", ".join(f"{k}={'(required)' if v is REQUIRED else v}" for k, v in m.settings.items())],
         ["metric", "plugin", "better", "unit", "cells", "description", "settings (defaults)"]),
    ]
    # What the defaults need: an argument can change it (ace's sign and reading, wanda+varp's reading).
    for title, hook, describe, headers in sections:
        rows = [[name, reg.plugin, *describe(reg.item)] for name, reg in registry.registered(hook).items()]
        print(f"{title}:\n{tabulate(rows, headers=headers, tablefmt='simple')}\n")
    print("Models may also be a local directory, a .gguf file or a Hugging Face hub id.")
    skipped = registry.skipped_plugins()
    if skipped:  # installed plugins that failed: nothing above comes from them
        print(f"\nSkipped plugins (fix or uninstall them, or leave them out with {registry.LOAD_PLUGINS_ENV}):\n"
              + tabulate([[name, why] for name, why in skipped.items()], headers=["plugin", "why"], tablefmt="simple"))


def _results_dir(config, given: str | None) -> Path:
    return Path(given) if given else Path("results") / config.suite


def run_validate(args) -> int:
    config = load_config(args.file)
    print(f"{args.file}: valid; suite '{config.suite}', {len(expand(config))} cells")
    return 0


def run_run(args) -> int:
    import sys

    from ..grid.runner import LocalExecutor, run_grid

    config = load_config(args.file)
    filters = _checked_filters(config, args.only)
    results_dir = _results_dir(config, args.results_dir)
    if args.address and args.executor != "ray":
        raise UsageError("--address names a Ray cluster; use it with --executor ray.")
    if args.executor == "ray":
        from ..grid.executors import import_ray

        import_ray()  # a missing extra is a usage error before anything runs
    remeasure = _checked_remeasure(config, args.remeasure)
    if args.dry_run:
        return _print_status(config, results_dir, filters)
    if args.executor == "ray":
        from ..grid.executors import RayExecutor

        executor = RayExecutor(args.address)
    else:
        executor = LocalExecutor()
    summary = run_grid(config, results_dir, executor=executor, filters=filters, force=args.force,
                       fail_fast=args.exitfirst, remeasure=remeasure)
    print(f"{len(summary.ran)} ran, {len(summary.skipped)} already finished, {len(summary.busy)} busy in another "
          f"process, {len(summary.failed)} failed; results in {results_dir}")
    if summary.failed:
        for name, error in summary.failed:
            print(f"failed: {name}: {error}", file=sys.stderr)
        return 1
    return 0


def _checked_remeasure(config, names: str | None) -> tuple[str, ...]:
    """`--remeasure` names: timed metrics the grid measures (re-measuring anything else changes nothing)."""
    if not names:
        return ()
    in_grid = {spec.name for spec in config.metrics}
    timed = sorted(name for name in in_grid if registry.get_metric(name).timed)
    chosen = tuple(dict.fromkeys(name.strip() for name in names.split(",") if name.strip()))
    for name in chosen:
        if name not in timed:

            missing = "(none: add " + " or ".join(sorted(m.name for m in registered_metrics() if m.timed)) + \
                " to evaluation.metrics)"
            raise UsageError(f"--remeasure {name}: not a timed metric of this grid; name one of "
                             f"{', '.join(timed) or missing}.")
    return chosen


def run_status(args) -> int:
    config = load_config(args.file)
    return _print_status(config, _results_dir(config, args.results_dir), _checked_filters(config, args.only))


def _checked_filters(config, pairs: list[str]) -> dict:
    """`--only` filters, each value one the grid has: a filter that matches nothing is a mistake."""
    from ..grid.runner import parse_filters

    filters = parse_filters(pairs)
    cells = expand(config)
    for key, values in filters.items():
        valid = sorted({cell.fields()[key] for cell in cells if cell.method is not None or key == "model"} - {""})
        unknown = sorted(values - set(valid))
        if unknown:
            raise UsageError(f"--only {key}={unknown[0]} matches no cell of {config.path or 'the grid'}; "
                             f"{key} is one of: {', '.join(valid)}.")
    return filters


def _print_status(config, results_dir: Path, filters: dict) -> int:
    from collections import Counter

    from ..grid.runner import cell_status, select_cells

    store = ResultsStore(results_dir)
    rows = [[cell_status(store, cell, config), cell.name] for cell in select_cells(config, filters)]
    print(tabulate(rows, headers=["status", "cell"], tablefmt="simple"))
    counts = Counter(row[0] for row in rows)
    print(", ".join(f"{count} {status}" for status, count in sorted(counts.items())) + f"; results in {results_dir}")
    return 0


def _given_results_dir(args) -> "str | Path":
    """The results directory named on the command line, else that of ./benchmarks.yaml's suite."""
    if args.results_dir is not None:
        return args.results_dir

    if not Path("benchmarks.yaml").exists():
        raise UsageError(f"Give the results directory: prunebench {args.command} DIR.")
    return _results_dir(load_config("benchmarks.yaml"), None)


def run_report(args) -> int:
    from ..report.tables import write_report

    results_dir = Path(_given_results_dir(args))
    reference = None if args.reference.lower() == "none" else args.reference
    if args.out is not None:

        check_writable(args.out, "--out", directory=True)  # before the bootstrap intervals, not after
    if args.out is None and results_dir.is_dir() and not os.access(results_dir, os.W_OK | os.X_OK):
        if args.format == "html":
            raise UsageError(f"{results_dir} is read-only; give --out DIR for the site.")
        # Read-only results (a mounted archive, another user's run): print the tables, write nothing.
        with tempfile.TemporaryDirectory() as scratch:
            print(write_report(results_dir, args.format, scratch, reference=reference))
        print(f"{results_dir} is read-only: tables printed only; give --out DIR to keep tables and plots.",
              file=sys.stderr)
        return 0
    if args.format == "html":
        from ..report.site import write_site

        print(f"wrote {write_site(results_dir, args.out, reference=reference)}")
        return 0
    print(write_report(results_dir, args.format, args.out, reference=reference))
    if args.claims:
        from ..report.claims import write_claims  # torch loads here, not when the CLI starts

        path, _ = write_claims(args.claims, ResultsStore(results_dir).records(), args.format)
        print(f"wrote {path}")
    return 0


def run_browse(args) -> int:
    return serve(_given_results_dir(args), host=args.host, port=args.port, open_browser=args.open)
