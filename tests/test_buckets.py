"""Shape buckets (prpose.buckets): few padded sizes, real rows untouched."""

import numpy as np
import pytest

from prpose.buckets import bucket_size, pad_rows


@pytest.mark.parametrize("n, minimum, expected", [
    (0, 1, 1), (1, 1, 1), (2, 1, 2), (3, 1, 4), (64, 1, 64), (65, 1, 128), (1000, 1, 1024),
    (5, 64, 64), (64, 64, 64), (65, 64, 128), (1500, 1024, 2048), (7, 1024, 1024)])
def test_bucket_size_is_the_next_power_of_two_above_the_minimum(n, minimum, expected):
    assert bucket_size(n, minimum) == expected


def test_every_row_count_up_to_a_limit_uses_few_buckets():
    assert len({bucket_size(n, 64) for n in range(1, 5000)}) == 8  # 64, 128, ..., 8192


def test_pad_rows_repeats_row_zero_and_keeps_the_real_rows():
    x = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    p = pad_rows(x, minimum=8)
    assert p.shape == (8, 3, 2) and p.dtype == x.dtype
    np.testing.assert_array_equal(p[:5], x)
    np.testing.assert_array_equal(p[5:], np.repeat(x[:1], 3, axis=0))
    assert pad_rows(p, minimum=8) is p  # already a bucket: unchanged
    empty = np.zeros((0, 4))
    assert pad_rows(empty).shape == (0, 4)
