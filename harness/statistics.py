"""Built-in calibration statistics (a plugin): what Wanda-style and magnitude-style methods need."""
from __future__ import annotations

import torch

from prunebench.hookspecs import hookimpl
from prunebench.method import Accumulator, Statistic


class _RunningSquaredNorm(Accumulator):
    def __init__(self, width: int, device: torch.device):
        self.mean = torch.zeros(width, dtype=torch.float32, device=device)
        self.nsequences = 0

    def add(self, inputs, outputs, nsequences):
        # Wanda's update: r *= n/(n+b); n += b; r += sum_t x^2 / n.
        self.mean *= self.nsequences / (self.nsequences + nsequences)
        self.nsequences += nsequences
        self.mean += inputs.square().sum(dim=0) / self.nsequences

    def result(self):
        return self.mean


class InputSquaredNorm(Statistic):
    name = "input_sq_norm"
    description = "per input feature j: mean over sequences of sum_t x_tj^2 (Wanda's scaler_row)"

    def accumulator(self, linear, device, arguments):
        return _RunningSquaredNorm(linear.in_features, device)


@hookimpl
def register_statistics(register):
    register(InputSquaredNorm())
