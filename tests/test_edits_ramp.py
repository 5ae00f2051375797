"""Strength ramps: parsing, units, piecewise-linear values, held ends, clear usage errors."""

from __future__ import annotations

import pytest
import torch

from nvsvideo.edits.ramp import Ramp, parse_ramp, piecewise_linear
from nvsvideo.errors import UsageError


def test_seconds_ramp_values() -> None:
    ramp = parse_ramp("0s:0,1s:1,4s:1,5s:0")
    assert ramp == Ramp(times=(0.0, 1.0, 4.0, 5.0), values=(0.0, 1.0, 1.0, 0.0), unit="s", spec="0s:0,1s:1,4s:1,5s:0")
    times = torch.tensor([0.0, 0.25, 0.5, 1.0, 2.5, 4.0, 4.5, 4.9, 5.0, 7.0])
    expected = torch.tensor([0.0, 0.25, 0.5, 1.0, 1.0, 1.0, 0.5, 0.1, 0.0, 0.0])
    torch.testing.assert_close(ramp.at(times), expected, rtol=0, atol=1e-6)
    assert ramp.peak == 1.0


def test_values_are_held_outside_the_keys() -> None:
    ramp = parse_ramp("2s:0.5, 3s:-1")
    got = ramp.at(torch.tensor([0.0, 1.99, 2.0, 2.5, 3.0, 100.0]))
    torch.testing.assert_close(got, torch.tensor([0.5, 0.5, 0.5, -0.25, -1.0, -1.0]), rtol=0, atol=1e-6)
    assert ramp.peak == 1.0


def test_keys_are_hit_exactly() -> None:
    ramp = parse_ramp("0:0.3,0.7:0.1,1.9:0.77")
    got = ramp.at(torch.tensor([0.0, 0.7, 1.9], dtype=torch.float64))
    assert torch.equal(got, torch.tensor([0.3, 0.1, 0.77], dtype=torch.float32))


def test_frame_units_need_and_use_the_frame_rate() -> None:
    ramp = parse_ramp("0:0,30f:1,60f:1")  # bare 0 takes the spec's unit, frames
    assert ramp.unit == "f" and ramp.times == (0.0, 30.0, 60.0)
    times = torch.arange(0, 90) / 30.0
    got = ramp.at(times, fps=30.0)
    torch.testing.assert_close(got[:31], torch.arange(0, 31) / 30.0, rtol=0, atol=1e-6)
    assert bool((got[30:] == 1.0).all())
    with pytest.raises(UsageError, match="frame rate"):
        ramp.at(times)


def test_plain_numbers_are_seconds_and_a_single_key_is_constant() -> None:
    ramp = parse_ramp("2.5:0.8")
    assert ramp.unit == "s"
    assert ramp.at(torch.tensor([0.0, 2.5, 9.0])).tolist() == pytest.approx([0.8, 0.8, 0.8])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        (" , ", "empty"),
        ("1s", "bad key"),
        ("1s:", "bad key"),
        ("abc:1", "bad key"),
        ("1x:1", "bad key"),
        ("-1s:1", "bad key"),
        ("0s:nan", "bad key"),
        ("inf:1", "bad key"),
        ("0s:0,30f:1", "mixes seconds and frames"),
        ("0s:0,2s:1,1s:0", "strictly increase"),
        ("1s:0,1s:1", "strictly increase"),
    ],
)
def test_malformed_specs_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_ramp(spec)


def test_piecewise_linear_against_numpy_interp() -> None:
    import numpy as np

    key_x = torch.tensor([0.0, 0.5, 2.0, 2.1], dtype=torch.float64)
    key_y = torch.tensor([1.0, -2.0, 3.0, 0.0], dtype=torch.float64)
    x = torch.linspace(-1.0, 3.0, 97, dtype=torch.float64)
    expected = np.interp(x.numpy(), key_x.numpy(), key_y.numpy())
    np.testing.assert_allclose(piecewise_linear(x, key_x, key_y).numpy(), expected, rtol=0, atol=1e-12)
