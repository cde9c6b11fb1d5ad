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


def test_lip_colour_error_ignores_where_the_lips_are():
    """Lips of the right colour drawn 6 px lower: the per-pixel Delta E over the real lips is large (half of
    them now land on skin), the mean-colour one is 0; pale pink lips in the right place are far off in both."""
    skin, red, pink = (200, 150, 130), (150, 20, 40), (220, 150, 160)
    real = np.full((40, 40, 3), skin, np.uint8)
    real[14:22, 10:30] = red
    low = np.full((40, 40, 3), skin, np.uint8)
    low[20:28, 10:30] = red
    m_real, m_low = real[..., 0] == red[0], low[..., 0] == red[0]
    assert metrics.delta_e(low, real, m_real) > 20
    assert metrics.mean_colour_delta_e(low, m_low, real, m_real) == pytest.approx(0.0, abs=1e-4)
    painted = real.copy()
    painted[m_real] = pink
    assert metrics.mean_colour_delta_e(painted, m_real, real, m_real) > 30


def test_dub_texture_measures_tell_lip_colour_from_lip_position():
    """evaluate.texture_measures on frames whose lips are the real colour but 6 px lower: the per-pixel lip Delta E
    is large, the colour of each frame's own lips matches; with pink lips the colour measure is large too."""
    from talkingface import evaluate

    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    outer = np.stack([50 + 24 * np.cos(t), 40 + 10 * np.sin(t)], 1)
    inner = np.stack([50 + 14 * np.cos(t), 40 + 3 * np.sin(t)], 1)
    lips = np.concatenate([outer, inner]).astype(np.float32)
    low = lips + np.float32([0, 6])

    def frame(points, colour):
        img = np.full((80, 100, 3), (200, 150, 130), np.uint8)
        img[evaluate.lip_region(points, img.shape)] = colour
        return img

    real = [frame(lips, (150, 20, 40))] * 3
    ok = np.ones(3, bool)
    moved = evaluate.texture_measures([frame(low, (150, 20, 40))] * 3, real, real, np.stack([lips] * 3), ok,
                                      out_lips=np.stack([low] * 3))
    assert moved["delta_e"] > 15 and moved["delta_e_own"] < 0.5
    pink = evaluate.texture_measures([frame(lips, (220, 150, 160))] * 3, real, real, np.stack([lips] * 3), ok,
                                     out_lips=np.stack([lips] * 3))
    assert pink["delta_e_own"] > 30 and pink["delta_e"] > 30
