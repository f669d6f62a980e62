"""Which calibration statistics are invariant to the calibration batch size, and to what tolerance.

Every statistic of the unstructured methods (Wanda's input_sq_norm, SparseGPT's hessian, ACE's
ace_cos, ace_cos_abs, ace_inverse_norm, ace_token_variance) sums each calibration window in float32 and
adds the windows in float64, where the sum of float32 values is exact (prunebench.api.method.RunningMean):
the result, rounded to float32, is bitwise the same for batch sizes 1, 2, 3 and 8 here, and within float32
rounding of each window's sum (1e-6 of the statistic's scale) of the float64 formula. The reference's float32 sum over a whole batch is
not (checked below, so the test would notice if the invariance came for free)."""
import pytest
import torch
from prunebench import registry

STATISTICS = ["input_sq_norm", "hessian", "ace_cos", "ace_cos_abs", "ace_inverse_norm", "ace_token_variance"]
WINDOWS, LENGTH, WIDTH, OUT = 8, 128, 48, 24


def _windows():
    generator = torch.Generator().manual_seed(0)
    # Heavy-tailed activations with a large common offset: where summation order shows most.
    inputs = torch.randn(WINDOWS, LENGTH, WIDTH, generator=generator) * torch.rand(WIDTH, generator=generator) * 30 + 7
    outputs = torch.randn(WINDOWS, LENGTH, OUT, generator=generator) * 5
    return inputs, outputs


def _accumulate(name, batch_size):
    statistic = registry.registered("register_statistics")[name].item
    accumulator = statistic.accumulator(torch.nn.Linear(WIDTH, OUT), torch.device("cpu"), {"eps": 1e-6})
    inputs, outputs = _windows()
    for start in range(0, WINDOWS, batch_size):
        batch_in, batch_out = inputs[start:start + batch_size], outputs[start:start + batch_size]
        accumulator.add(batch_in.reshape(-1, WIDTH), batch_out.reshape(-1, OUT), batch_in.shape[0])
    return accumulator.result()


@pytest.mark.parametrize("name", STATISTICS)
def test_statistic_is_bitwise_the_same_for_any_batch_size(name, one_thread):
    reference = _accumulate(name, 1)
    assert reference.dtype == torch.float32 and torch.isfinite(reference).all()
    for batch_size in (2, 3, 8):
        assert torch.equal(_accumulate(name, batch_size), reference), f"{name} differs at batch size {batch_size}"


@pytest.mark.parametrize("name", ["input_sq_norm", "hessian"])
def test_statistic_equals_its_float64_formula(name):
    """Known answer: Wanda's mean over windows of sum_t x_tj^2, SparseGPT's (2/n) sum_t x_t x_t^T."""
    inputs, _ = _windows()
    flat = inputs.double().reshape(-1, WIDTH)
    expected = flat.square().sum(0) / WINDOWS if name == "input_sq_norm" else 2 * flat.t() @ flat / WINDOWS
    # float32 rounding of each window's sum: relative to the statistic's scale (off-diagonal entries cancel).
    torch.testing.assert_close(_accumulate(name, 3).double(), expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))


def test_a_float32_sum_over_the_batch_would_depend_on_the_batch_size(one_thread):
    inputs, _ = _windows()
    sums = {b: sum(inputs[s:s + b].reshape(-1, WIDTH).t().mm(inputs[s:s + b].reshape(-1, WIDTH))
                   for s in range(0, WINDOWS, b)) for b in (1, 8)}
    assert not torch.equal(sums[1], sums[8])
