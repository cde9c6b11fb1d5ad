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


def test_one_home_for_the_mouth_measures():
    """The evaluation's measures (59 mouth points), the re-tracked measures (478 FaceMesh points) and the lip-sync
    export's signed gap are the same formulas in face.py, whichever layout they are given."""
    from talkingface import face, lipsync

    mesh = np.random.default_rng(0).normal(size=(5, 478, 3))
    mouth, iod = mesh[:, face.MOUTH], face.inter_ocular(mesh)
    np.testing.assert_array_equal(face.mouth_opening(mouth, iod), face.mouth_opening(mesh))
    np.testing.assert_array_equal(metrics.opening(mouth, iod), face.mouth_opening(mesh))
    np.testing.assert_array_equal(metrics.width(mouth, iod), face.mouth_width(mesh))
    closed = np.zeros((2, 59, 3))  # upper inner lip above the lower one by 1, then crossed by 1 (y up)
    closed[0, metrics.I_UP, 1], closed[1, metrics.I_UP, 1] = 1.0, -1.0
    np.testing.assert_array_equal(face.lip_gap(closed, y_down=False), [1.0, -1.0])
    np.testing.assert_array_equal(face.lip_gap(closed, y_down=True), [-1.0, 1.0])
    opening, _ = lipsync._opening_width(closed, "canonical")
    np.testing.assert_array_equal(opening, [1.0, 0.0])  # crossed lips export as closed, not as open


def test_sharpness_sees_blur(astronaut):
    import cv2

    sharp = astronaut[None]
    blurred = cv2.GaussianBlur(astronaut, (9, 9), 3)[None]
    assert metrics.sharpness(blurred) < 0.3 * metrics.sharpness(sharp)


def test_sharpness_counts_only_the_mask_and_ignores_its_border(astronaut):
    import cv2

    img = astronaut[100:228, 150:278].copy()
    mask = np.zeros(img.shape[:2], bool)
    mask[32:96, 32:96] = True
    bordered = img.copy()
    bordered[~mask] = 0  # black outside the mask: a hard edge that must not count
    assert metrics.sharpness(bordered[None], mask[None]) == pytest.approx(metrics.sharpness(img[None], mask[None]))
    whole = metrics.sharpness(bordered[None])  # unmasked, the black area and its edge count
    assert abs(whole / metrics.sharpness(img[None], mask[None]) - 1) > 0.1
    blurred = img.copy()
    blurred[mask] = cv2.GaussianBlur(img, (9, 9), 3)[mask]
    assert metrics.sharpness_ratio(blurred[None], img[None], mask[None]) < 0.5
    assert metrics.sharpness_ratio(img[None], img[None], mask[None]) == pytest.approx(1.0)


def test_ssim_and_delta_e():
    rng = np.random.default_rng(0)
    a = (rng.random((64, 96)) * 255).astype(np.uint8)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert 0 < metrics.ssim(a, noisy) < 0.9
    red, pink = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    red[:] = (150, 20, 40)
    pink[:] = (220, 150, 160)
    assert metrics.delta_e(red, red) == 0.0
    assert metrics.delta_e(red, pink) > 30  # dark red lipstick vs pale pink: far apart in CIELAB
