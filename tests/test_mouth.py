"""The mouth stage (talkingface.warp, talkingface.mouth): geometry, warp, interior and refine network.

Synthetic faces are the canonical FaceMesh placed into an image by a known pose, so these tests need no
detector; the end-to-end tests at the bottom use the real fixtures.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from talkingface import face, mouth, warp


def _frame(scale_px: float = 14.0, yaw_deg: float = 8.0, centre=(160.0, 150.0)) -> face.FaceFrame:
    """A face pose: canonical cm -> image px (scale_px per cm), turned by ``yaw_deg``."""
    a = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    # image point p: to_canonical(p) = s * rot @ yup(p) + t; pick s, t so the face centre lands at ``centre``
    s = 1.0 / scale_px
    t = -s * rot @ np.array([centre[0], -centre[1], 0.0])
    return face.FaceFrame(s, rot, t)


def _landmarks(ff: face.FaceFrame) -> np.ndarray:
    return ff.to_image(face.canonical_mesh())  # (468, 3) image x, y, z


def _texture(h: int = 300, w: int = 320, seed: int = 0) -> np.ndarray:
    """A detailed image (random blobs at several scales) so any wrong fetch shows."""
    rng = np.random.default_rng(seed)
    import cv2

    img = np.zeros((h, w, 3), np.float32)
    for k in (2, 6, 20):
        noise = rng.random((h // k + 1, w // k + 1, 3)).astype(np.float32)
        img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def _open_mouth(rest: np.ndarray, amount_cm: float) -> np.ndarray:
    """Lower lip, inner and outer, and the jaw moved down by ``amount_cm`` (the chin by as much)."""
    m = rest.copy()
    idx = {p: i for i, p in enumerate(face.MOUTH)}
    lower = [idx[p] for p in warp.LOWER_INNER + warp.LOWER_OUTER]
    jaw = list(range(len(face.LIPS_OUTER) + len(face.LIPS_INNER), len(face.MOUTH)))
    m[lower, 1] -= amount_cm
    m[jaw, 1] -= amount_cm * 0.8
    return m


def test_identity_warp_returns_the_input():
    img = _texture()
    ff = _frame()
    src = warp.extend_points(_landmarks(ff))
    tris = warp.extended_triangles()
    box = (40, 40, 280, 260)
    out, tri = warp.warp_region(img, src, src.copy(), tris, box)
    assert (tri >= 0).mean() > 0.5
    np.testing.assert_array_equal(out, img[40:260, 40:280])


def test_degenerate_triangle_fetches_only_nearby_pixels():
    """A target triangle of (nearly) zero area must not fetch pixels from far away (stray dots, seen at the
    nose wings before the fix)."""
    img = _texture()
    src = np.array([[100.0, 100.0], [110.0, 100.0], [105.0, 108.0]])
    dst = np.array([[100.0, 100.0], [110.0, 100.3], [105.0, 100.15]])  # collapsed to a line
    map_x, map_y, tri = warp.piecewise_affine_maps(src, dst, np.array([[0, 1, 2]]), (95, 95, 116, 114))
    inside = tri >= 0
    assert inside.any()
    assert map_x[inside].min() >= 99.0 and map_x[inside].max() <= 111.0
    assert map_y[inside].min() >= 99.0 and map_y[inside].max() <= 109.0


def test_fast_maps_equal_the_reference_bit_for_bit():
    """piecewise_affine_maps (label image + per-coefficient gathers) gives exactly the simple per-pixel
    reference's maps: on the face mesh with an opening mouth (partly outside the frame: the box is clipped),
    on a degenerate triangle and on no triangles at all."""
    ff = _frame(scale_px=10.0, centre=(110.0, 95.0))
    lm = _landmarks(ff)
    rest = ff.to_canonical(lm[face.MOUTH])
    tgt = warp.target_points(lm, ff, _open_mouth(rest, 0.9))
    tris = warp.extended_triangles()
    src = warp.extend_points(lm)
    dst, _ = warp.safe_target(src, warp.extend_points(lm, tgt), tris)
    moved = tris[warp.moved_triangles(src, dst, tris)]
    box = warp.triangles_box(np.vstack([src, dst]), moved, (180, 200), pad=3)
    assert len(moved) > 100 and box is not None
    deg_src = np.array([[10.0, 10.0], [20.0, 10.0], [15.0, 18.0]])
    deg_dst = np.array([[10.0, 10.0], [20.0, 10.3], [15.0, 10.15]])
    cases = [(src, dst, moved, box), (deg_src, deg_dst, np.array([[0, 1, 2]]), (5, 5, 26, 24)),
             (src, dst, moved[:0], (10, 10, 30, 40))]
    for s, d, t, b in cases:
        fast, ref = warp.piecewise_affine_maps(s, d, t, b), warp.reference_maps(s, d, t, b)
        for a, r in zip(fast, ref, strict=True):
            assert a.dtype == r.dtype and a.shape == r.shape
            np.testing.assert_array_equal(a, r)
    # a second call with a smaller box reuses the work buffers: still exact
    small = (box[0] + 20, box[1] + 20, box[0] + 60, box[1] + 50)
    for a, r in zip(warp.piecewise_affine_maps(src, dst, moved, small), warp.reference_maps(src, dst, moved, small),
                    strict=True):
        np.testing.assert_array_equal(a, r)


def test_target_points_from_2d_landmarks_match_3d():
    ff = _frame(yaw_deg=15.0)
    lm = _landmarks(ff)
    rest = ff.to_canonical(lm[face.MOUTH])
    target = _open_mouth(rest, 0.6)
    with_z = warp.target_points(lm, ff, target)
    flat = warp.target_points(lm[:, :2], ff, target, own=rest)
    np.testing.assert_allclose(flat, with_z, atol=1e-6)
    # the upper face does not move; the chin drops
    rigid = face.rigid_indices()
    np.testing.assert_allclose(with_z[rigid], lm[rigid, :2], atol=1e-6)
    chin = 152  # FaceMesh chin tip
    assert with_z[chin, 1] - lm[chin, 1] > 3.0


@pytest.mark.parametrize("yaw", [0.0, 25.0])
def test_no_folds_over_extreme_shapes(yaw):
    rng = np.random.default_rng(1)
    ff = _frame(yaw_deg=yaw)
    lm = _landmarks(ff)
    rest = ff.to_canonical(lm[face.MOUTH])
    tris = warp.extended_triangles()
    src = warp.extend_points(lm)
    for trial in range(40):
        shape = rest + rng.normal(0, 0.25 + trial * 0.03, rest.shape)  # up to absurd (1.4 cm noise per point)
        if trial % 4 == 0:
            shape = _open_mouth(rest, 0.2 * trial)  # very wide openings
        tgt = warp.target_points(lm, ff, warp.clamp_mouth(shape, rest))
        dst, _ = warp.safe_target(src, warp.extend_points(lm, tgt), tris)
        assert not warp.flipped(src, dst, tris).any(), trial


def test_clamp_keeps_lips_from_crossing():
    ff = _frame()
    rest = ff.to_canonical(_landmarks(ff)[face.MOUTH])
    crossed = _open_mouth(rest, -0.8)  # the lower lip pushed far above the upper one
    m = warp.clamp_mouth(crossed, rest)
    idx = {p: i for i, p in enumerate(face.MOUTH)}
    for u, lo in zip(warp.UPPER_INNER, warp.LOWER_INNER, strict=True):
        assert m[idx[lo], 1] <= m[idx[u], 1] + 1e-9


def _painter_job(painter, img, ff, lm, rest, target):
    return painter.prepare(img, lm, ff, target, rest, None)


def test_hole_grows_with_opening_and_vanishes_when_closed():
    img = _texture()
    ff = _frame()
    lm = _landmarks(ff)
    rest = ff.to_canonical(lm[face.MOUTH])
    closed = mouth.neutral_rest(rest, 1.0)
    painter = mouth.MouthPainter(None)
    areas = []
    for amount in (0.0, 0.3, 0.6, 0.9):
        target = _open_mouth(closed, amount)
        tgt = warp.target_points(lm, ff, warp.clamp_mouth(target, rest))
        hole, _ = mouth.hole_and_band(tgt, img.shape[:2], 4.0)
        areas.append(float(hole.sum()))
    assert areas[0] < 0.05 * areas[-1]
    assert areas[1] < areas[2] < areas[3]
    job = _painter_job(painter, img, ff, lm, rest, _open_mouth(closed, 0.6))
    assert job is not None and job["hole"].max() > 0
    assert job["band"] is None  # the band is the refine network's: not computed without it


def test_refine_changes_only_the_band():
    img = _texture()
    ff = _frame()
    lm = _landmarks(ff)
    rest = ff.to_canonical(lm[face.MOUTH])
    torch.manual_seed(0)
    net = mouth.RefineNet(mouth.RefineConfig())
    for p in net.parameters():  # an untrained-but-nonzero network: its output must land only in the band
        torch.nn.init.normal_(p, 0, 0.05)
    warp_only = mouth.MouthPainter(None)
    refined = mouth.MouthPainter(net)
    target = _open_mouth(rest, 0.5)
    a = warp_only.prepare(img, lm, ff, target, rest, None)
    b = refined.prepare(img, lm, ff, target, rest, None)
    refined.refine_batch([b])
    np.testing.assert_array_equal(a["box"], b["box"])
    diff = np.abs(a["image"] - b["image"]).max(2)
    assert diff[b["band"] > 0].max() > 1.0  # the network did change the band
    assert diff[b["band"] == 0].max() == 0.0  # and nothing else


def test_refine_net_trains():
    cfg = mouth.RefineConfig()
    net = mouth.RefineNet(cfg)
    x = torch.rand(2, 6, cfg.size, cfg.size)
    residual, alpha = net(x)
    assert residual.shape == (2, 3, cfg.size, cfg.size) and alpha.shape == (2, 1, cfg.size, cfg.size)
    out = mouth.RefineNet.apply(x[:, :3] * 2 - 1, residual, alpha)
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    # the output conv starts at zero: an untrained network returns its input
    net2 = mouth.RefineNet(cfg)
    r2, a2 = net2(x)
    assert float((a2 * r2).abs().max()) == 0.0


def test_interior_layers_follow_the_lips():
    """The upper teeth move with the upper lip, the lower teeth with the lower lip."""
    size = mouth.INTERIOR_SIZE
    ff = _frame()
    a_int = mouth.crop_affine(ff, size)
    lm = face.apply_affine(_landmarks(ff)[:, :2], a_int)
    rest = ff.to_canonical(_landmarks(ff)[face.MOUTH])
    opened = ff.to_image(warp.clamp_mouth(_open_mouth(rest, 0.8), rest))
    pts = lm.copy()
    pts[face.MOUTH] = face.apply_affine(opened[:, :2], a_int)
    crop = _texture(size, size, seed=3)
    src = mouth.InteriorSource(crop, pts)
    assert src.hole.sum() > 50
    gy, gx = np.mgrid[0:size, 0:size].astype(np.float64)
    same = mouth.fill_interior(src, gx, gy, pts)
    hole = src.upper > 0.99  # fully inside the upper layer (its anti-aliased edge mixes with the lower one)
    np.testing.assert_allclose(same[hole], crop[hole].astype(np.float32), atol=1.5)
    shifted = pts.copy()
    shifted[:, 1] += 5.0  # the whole target mouth 5 px lower: the fill moves with it
    moved = mouth.fill_interior(src, gx, gy + 5.0, shifted)
    np.testing.assert_allclose(moved[hole], same[hole], atol=1.5)


@pytest.mark.slow
def test_dub_warp_changes_only_the_lower_face(grid_video_path, grid_wav_path):
    import talkingface

    pipe = talkingface.load(texture="warp")
    res = pipe.dub(grid_video_path, grid_wav_path, return_frames=True)
    from talkingface import media

    orig = list(media.iter_video_frames(grid_video_path, fps=res.fps))
    assert res.frames_dubbed > 0.8 * res.n_frames
    m = res.mouth_landmarks
    changed_top, changed_mouth = [], []
    for k, fr in enumerate(res.frames[: len(orig)]):
        if np.isnan(m[k, 0, 0]):
            continue
        d = np.abs(fr.astype(int) - orig[k].astype(int)).max(2)
        top = int(m[k, :, 1].min() - 0.9 * (m[k, :, 0].max() - m[k, :, 0].min()))
        changed_top.append(d[:max(0, top)].max())
        changed_mouth.append(d.max())
    assert max(changed_top) == 0  # eyes, brows, forehead: the input's own pixels, exactly
    assert np.median(changed_mouth) > 20
