"""The one stopwatch of the pruning passes: sections add up, nested sections are not counted twice."""
import itertools

from prunebench.pruning import measure
from prunebench.pruning.measure import Stopwatch


def test_nested_section_pauses_the_outer_one(monkeypatch):
    clock = itertools.count()  # each reading is one second later
    monkeypatch.setattr(measure.time, "perf_counter", lambda: float(next(clock)))
    watch = Stopwatch("cpu", ("removal", "allocation"))
    with watch.time("removal"):      # t=0
        with watch.time("allocation"):   # t=1 .. 2
            pass
    # removal: 0..1 and 2..3, allocation: 1..2; the three seconds are counted once in all
    assert watch.totals == {"removal": 2.0, "allocation": 1.0}
    with watch.time("removal"):      # t=4 .. 5
        pass
    assert watch.totals["removal"] == 3.0
