"""Built-in calibration statistics (a plugin): what Wanda-style and magnitude-style methods need."""
from __future__ import annotations

from ..api.hookspecs import hookimpl
from ..api.method import RunningMean, Statistic


class _RunningSquaredNorm(RunningMean):
    def fold(self, inputs, outputs):
        # Wanda's update: r *= n/(n+b); n += b; r += sum_t x^2 / n (in float64, see RunningMean).
        self.mean += inputs.double().square().sum(dim=0) / self.nsequences


class InputSquaredNorm(Statistic):
    name = "input_sq_norm"
    description = "per input feature j: mean over sequences of sum_t x_tj^2 (Wanda's scaler_row)"

    def accumulator(self, linear, device, arguments):
        return _RunningSquaredNorm((linear.in_features,), device)


@hookimpl
def register_statistics(register):
    register(InputSquaredNorm())
