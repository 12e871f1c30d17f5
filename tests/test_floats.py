"""tests/floats.py: the ulp tolerances the suite states must pass what they promise and fail beyond it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.floats import SUMMATION_ORDER_ULPS, assert_close_up_to_summation_order, assert_within_ulps


def ulps_away(values, count):
    """``values`` moved ``count`` representable numbers up (float32 stays float32)."""
    values = np.asarray(values)
    for _ in range(count):
        values = np.nextafter(values, np.asarray(np.inf, values.dtype))
    return values


def test_within_ulps_of_the_desired_value():
    desired = np.array([1.0, -3.5, 1e-30, 7e20], np.float32)
    assert_within_ulps(desired, desired, 0)
    assert_within_ulps(ulps_away(desired, 1), desired, 1)
    with pytest.raises(AssertionError, match=r"4 of 4 elements differ by more than 1 ulp"):
        assert_within_ulps(ulps_away(desired, 2), desired, 1)


def test_the_spacing_is_of_the_actual_dtype_when_desired_is_wider():
    exact = np.float64(1.0) + 2.0**-30  # between two float32 numbers, much closer to 1.0
    assert_within_ulps(np.float32(1.0), exact, 0.01)
    with pytest.raises(AssertionError):
        assert_within_ulps(np.float64(1.0), exact, 0.01)  # in float64 it is 2**22 ulps away


def test_scale_states_what_a_cancelling_sum_is_relative_to():
    p, step = np.float32(1.0), np.float32(1.0 - 2.0**-20)
    exact = np.float64(p) - np.float64(step)  # 2**-20: cancellation leaves few significant bits
    off_by_one_ulp_of_p = np.float32(exact + np.spacing(np.float32(1.0)))
    with pytest.raises(AssertionError):
        assert_within_ulps(off_by_one_ulp_of_p, exact, 1)  # thousands of ulps of the tiny result
    assert_within_ulps(off_by_one_ulp_of_p, exact, 1, scale=abs(p) + abs(step))


def test_nans_must_match_and_infinities_be_equal():
    desired = np.array([np.nan, np.inf, -np.inf, 1.0])
    assert_within_ulps(desired.copy(), desired, 1)
    with pytest.raises(AssertionError):
        assert_within_ulps(np.array([0.0, np.inf, -np.inf, 1.0]), desired, 1)
    with pytest.raises(AssertionError):
        assert_within_ulps(np.array([np.nan, -np.inf, -np.inf, 1.0]), desired, 1)
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_within_ulps(desired[:3], desired, 1)


def test_summation_order_tolerance_is_relative_to_the_largest_element():
    desired = np.array([[1024.0, 0.25], [-2.0, 0.0]], np.float32)
    moved = desired + SUMMATION_ORDER_ULPS * np.spacing(np.float32(1024.0))  # small elements move a lot
    assert_close_up_to_summation_order(moved, desired)
    with pytest.raises(AssertionError, match="worst at"):
        assert_close_up_to_summation_order(moved + np.spacing(np.float32(1024.0)), desired)
