import numpy as np
import pytest

from talkingface import metrics


def test_pearson_lagged_finds_the_lag():
    rng = np.random.default_rng(0)
    real = np.convolve(rng.normal(size=300), np.ones(5) / 5, mode="same")
    late = np.roll(real, 2)  # prediction two frames late
    r, lag = metrics.pearson_lagged(late, real, max_lag=3)
    assert lag == 2 and r > 0.99
    assert metrics.pearson(late, real) < r


def test_pearson_constant_is_zero():
    assert metrics.pearson(np.ones(10), np.arange(10)) == 0.0


def test_opening_width_and_distance():
    mouth = np.zeros((2, 59, 3))
    mouth[:, metrics.I_UP, 1] = 1.0
    mouth[1, metrics.I_LO, 1] = -1.0
    mouth[:, metrics.I_LEFT, 0] = -2.0
    mouth[:, metrics.I_RIGHT, 0] = 2.0
    np.testing.assert_allclose(metrics.opening(mouth, 2.0), [0.5, 1.0])
    np.testing.assert_allclose(metrics.width(mouth, 2.0), [2.0, 2.0])
    assert metrics.lip_distance(mouth, mouth, 1.0) == 0.0
    shifted = mouth.copy()
    shifted[..., 0] += 3.0
    assert metrics.lip_distance(shifted, mouth, 1.5) == pytest.approx(2.0)


def test_sharpness_sees_blur(astronaut):
    import cv2

    sharp = astronaut[None]
    blurred = cv2.GaussianBlur(astronaut, (9, 9), 3)[None]
    assert metrics.sharpness(blurred) < 0.3 * metrics.sharpness(sharp)
