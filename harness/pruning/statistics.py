"""Built-in calibration statistics (a plugin): what Wanda-style and magnitude-style methods need."""
from __future__ import annotations

from ..api.hookspecs import hookimpl
from ..api.method import RunningMean, Statistic


class _RunningSquaredNorm(RunningMean):
    def fold(self, inputs, outputs):
        # Wanda's scaler_row: the mean over sequences of sum_t x_tj^2 (window sums in float32, see RunningMean).
        for window in self.windows(inputs):
            self.total += window.square().sum(dim=0).double()


class InputSquaredNorm(Statistic):
    name = "input_sq_norm"
    description = "per input feature j: mean over sequences of sum_t x_tj^2 (Wanda's scaler_row)"

    def accumulator(self, linear, device, arguments):
        return _RunningSquaredNorm((linear.in_features,), device)


@hookimpl
def register_statistics(register):
    register(InputSquaredNorm())
