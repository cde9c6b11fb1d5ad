"""The mouth stage (talkingface.warp, talkingface.mouth): geometry, warp, interior and refine network.

Synthetic faces are the canonical FaceMesh placed into an image by a known pose, so these tests need no
detector; the end-to-end tests at the bottom use the real fixtures.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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
        a_src, a_dst = warp.signed_areas(src, tris), warp.signed_areas(dst, tris)
        sliver = (np.abs(a_src) < warp.SLIVER) & (np.abs(a_dst) < warp.SLIVER)  # < half a pixel: not a fold
        assert not (warp.flipped(src, dst, tris) & ~sliver).any(), trial


def test_a_closing_lip_keeps_its_corners():
    """A lower lip closing from an open mouth and rising past the line between the outer and the inner lip corner
    (where the predicted mouth puts it) is kept below that line at each corner, and the upper lip above it, as in
    the source: the corner's triangles keep their orientation (their folding, then undone by halving the corner
    points' motion, notched the closed lips: the dark fleck under a corner). The real-data check is
    test_dubbing_moves_the_lips_where_asked."""
    ff = _frame(yaw_deg=0.0)
    lm = _landmarks(ff)
    rest = ff.to_canonical(lm[face.MOUTH])
    src_lm = lm.copy()
    src_lm[:, :2] = warp.target_points(lm, ff, _open_mouth(rest, 0.5))  # the source frame: mouth open
    own = ff.to_canonical(src_lm[face.MOUTH])
    raised = _open_mouth(rest, -0.3)  # the lower lip far above its rest
    disp = warp.spread_matrix() @ (warp.clamp_mouth(raised, rest) - own)
    plain = src_lm[:, :2] + (ff.to_image(disp) - ff.to_image(np.zeros((1, 3))))[:, :2]  # without the rules
    tgt = warp.target_points(src_lm[:, :2], ff, warp.clamp_mouth(raised, rest), own=own)

    def side(pts, outer, inner, p):
        o, i = pts[outer], pts[inner]
        return (i - o)[0] * (pts[p, 1] - o[1]) - (i - o)[1] * (pts[p, 0] - o[0])

    crossed = 0
    for outer, inner, up, low in warp.CORNERS:
        for p in (up, low):
            want = np.sign(side(src_lm[:, :2], outer, inner, p))
            crossed += np.sign(side(plain, outer, inner, p)) != want  # without the corner rule
            d = want * side(tgt, outer, inner, p) / np.linalg.norm(tgt[inner] - tgt[outer])
            assert d >= warp.CORNER_GAP - 1e-9
    assert crossed > 0  # the case is real: the spread alone puts a lip point past a corner line


def test_points_on_the_lips_follow_the_lips():
    """A mesh point between the two lip contours moves with its lip triangle: when the lips move by one affine
    map, so does it (its neighbours' interpolation would let it lag)."""
    ff = _frame(yaw_deg=0.0)
    src = _landmarks(ff)[:, :2]
    lips = face.MOUTH[:40]
    centre = src[lips].mean(0)
    a = np.array([[1.1, 0.15], [-0.05, 0.8]])
    dst = src.copy()
    dst[lips] = (src[lips] - centre) @ a.T + centre + (2.0, -3.0)
    out = warp.follow_lip_ring(src, dst)
    on_lips = [62, 76, 292, 306]  # the corners' points between the contours (not in face.MOUTH)
    want = (src[on_lips] - centre) @ a.T + centre + (2.0, -3.0)
    np.testing.assert_allclose(out[on_lips], want, atol=1e-6)
    far = [1, 152, 234]  # nose tip, chin, cheek: not on the lips, untouched
    np.testing.assert_array_equal(out[far], dst[far])


def test_dubbing_moves_the_lips_where_asked(grid_video_path, grid_wav):
    """The GRID fixture dubbed with the other sentence (mouths closing where the video's are open: the case that
    left a dark fleck under a lip corner): no frame needs fold removal on the lips, so every lip point lands
    where the mouth track puts it."""
    import talkingface
    from talkingface import media

    off = []
    real = warp.safe_target

    def spy(src, dst, tris, *a, **kw):
        out = real(src, dst, tris, *a, **kw)
        off.append(float(np.abs(out[0][face.MOUTH[:40]] - np.asarray(dst)[face.MOUTH[:40]]).max()))
        return out

    import unittest.mock

    pipe = talkingface.load(texture="warp")
    other = media.load_audio(str(Path(__file__).parent.parent / "demo" / "grid_sbwe5n.wav"))
    with unittest.mock.patch.object(warp, "safe_target", spy):
        pipe.dub(grid_video_path, other)
    assert len(off) > 50 and max(off) < 0.01


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
    assert float((a2 * r2).detach().abs().max()) == 0.0


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


# --------------------------------------------------------------------------- mouth-stage options (MouthOptions)

# the stage before these options existed (each test below changes one setting from it)
LEGACY = mouth.MouthOptions(feather_cm=0.0, seam_alpha=0.6, smooth=0.0, fill_reach_cm=0.0)

def _open_interior(ff: face.FaceFrame, rest: np.ndarray) -> mouth.InteriorSource:
    """A bright textured interior source (an open mouth of the synthetic face), so the fill differs from the lips."""
    size = mouth.INTERIOR_SIZE
    a_int = mouth.crop_affine(ff, size)
    pts = face.apply_affine(_landmarks(ff)[:, :2], a_int)
    opened = ff.to_image(warp.clamp_mouth(_open_mouth(rest, 1.0), rest))
    pts[face.MOUTH] = face.apply_affine(opened[:, :2], a_int)
    crop = np.clip(_texture(size, size, seed=5).astype(np.int16) + 60, 0, 255).astype(np.uint8)
    return mouth.InteriorSource(crop, pts)


def _open_scene(opening: float = 0.5):
    """The synthetic face, its landmarks, resting mouth, a bright interior source, a texture and a target mouth
    opened by ``opening``: what the option tests paint with."""
    ff = _frame()
    lm = _landmarks(ff)
    rest = ff.to_canonical(lm[face.MOUTH])
    return ff, lm, rest, _open_interior(ff, rest), _texture(), _open_mouth(mouth.neutral_rest(rest), opening)


def _distance_from(job: dict, lm: np.ndarray, ff: face.FaceFrame, target: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Per pixel of the job's box: distance (px) to the target's inner-lip polygon (its inside and its outline)."""
    import cv2

    x0, y0, x1, y1 = job["box"]
    tgt = warp.target_points(lm, ff, warp.clamp_mouth(target, rest))
    poly = mouth.inner_polygon(tgt) - (x0, y0)
    near = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(near, [np.round(poly).astype(np.int32)], 1)
    cv2.polylines(near, [np.round(poly).astype(np.int32)], True, 1, 1)
    return cv2.distanceTransform((near == 0).astype(np.uint8), cv2.DIST_L2, 5)


def test_options_defaults_and_checks():
    from talkingface.errors import InputError

    assert mouth.MouthPainter(None).options == mouth.MouthOptions()
    o = mouth.MouthOptions.parse("feather_cm=0.1:smooth=0.25")
    assert (o.feather_cm, o.seam_alpha, o.smooth) == (0.1, mouth.MouthOptions().seam_alpha, 0.25)
    assert mouth.parse_method("warp") == ("warp", None)
    assert mouth.parse_method("warp:seam_alpha=0.2") == ("warp", mouth.MouthOptions(seam_alpha=0.2))
    for bad in ("feather_cm=-0.1", "smooth=1", "seam_alpha=nan", "feather=0.1", "feather_cm", "smooth=abc"):
        with pytest.raises(InputError):
            mouth.MouthOptions.parse(bad)
    with pytest.raises(InputError):
        mouth.MouthOptions(feather_cm=True)


def test_feather_zero_keeps_the_hard_edge_exactly():
    """feather_cm 0: the opening's alpha is the anti-aliased polygon itself and the seam the drawn line, as
    before the option existed (the composite below is the stage's formula before it, written out)."""
    ff, lm, rest, interior, img, target = _open_scene()
    job = mouth.MouthPainter(None, options=LEGACY).prepare(img, lm, ff, target, rest, interior)
    x0, y0, x1, y1 = job["box"]
    tgt = warp.safe_target(warp.extend_points(lm), warp.extend_points(lm, warp.target_points(
        lm, ff, warp.clamp_mouth(target, rest))), warp.extended_triangles())[0][: face.N_MESH]
    np.testing.assert_array_equal(job["hole"], mouth.polygon_mask(mouth.inner_polygon(tgt) - (x0, y0),
                                                                  (y1 - y0, x1 - x0)))
    assert mouth.feather(job["hole"], 0.0) is job["hole"]
    track = np.random.default_rng(0).random((20, 59, 3)).astype(np.float32)
    assert mouth.smooth_track(track, 0.0) is track


def test_feather_softens_only_near_the_opening():
    import cv2

    ff, lm, rest, interior, img, target = _open_scene()
    feather_cm = 0.15
    hard = mouth.MouthPainter(None, options=LEGACY).prepare(img, lm, ff, target, rest, interior)
    soft = mouth.MouthPainter(None, options=replace(LEGACY, feather_cm=feather_cm)).prepare(
        img, lm, ff, target, rest, interior)
    np.testing.assert_array_equal(hard["box"], soft["box"])
    dist = _distance_from(hard, lm, ff, target, rest)
    px_per_cm = 1.0 / ff.scale  # _frame: canonical cm -> scale_px per cm
    sigma = feather_cm * px_per_cm
    diff = np.abs(hard["image"] - soft["image"]).max(2)
    reach = np.sqrt(2) * np.ceil(3 * sigma)  # the Gaussian's square kernel: 3 sigma in x and in y
    far = dist > reach + 3  # beyond the anti-aliased, rounded polygon
    assert far.mean() > 0.5
    assert diff[far].max() == 0.0  # away from the opening: the warped pixels, bit for bit
    assert diff[dist <= 2].max() > 10  # the edge itself did change
    # softer: the Laplacian's energy along the opening's edge drops
    edge = (dist > 0) & (dist <= 2) | (dist == 0) & (cv2.erode((dist == 0).astype(np.uint8), np.ones((5, 5))) == 0)

    def lap_energy(x):
        g = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
        return float(np.square(cv2.Laplacian(g.astype(np.float32), cv2.CV_32F))[edge].mean())

    assert lap_energy(soft["image"]) < 0.8 * lap_energy(hard["image"])
    # the seam of closed lips is feathered the same way and stays near the lip line
    closed = mouth.neutral_rest(rest)
    h0 = mouth.MouthPainter(None, options=LEGACY).prepare(img, lm, ff, closed, rest, interior)
    h1 = mouth.MouthPainter(None, options=replace(LEGACY, feather_cm=feather_cm)).prepare(
        img, lm, ff, closed, rest, interior)
    d = np.abs(h0["image"] - h1["image"]).max(2)
    dist_c = _distance_from(h0, lm, ff, closed, rest)
    assert d.max() > 1 and d[dist_c > reach + 3 + mouth.SEAM_CM * px_per_cm].max() == 0.0


def test_seam_alpha_sets_the_closed_lip_line():
    ff = _frame()
    lm = _landmarks(ff)
    rest = ff.to_canonical(lm[face.MOUTH])
    img = _texture()
    closed = mouth.neutral_rest(rest)
    jobs = {a: mouth.MouthPainter(None, options=replace(LEGACY, seam_alpha=a)).prepare(img, lm, ff, closed, rest, None)
            for a in (0.0, 0.3, 0.6)}
    dist = _distance_from(jobs[0.0], lm, ff, closed, rest)
    line = dist <= 1
    cavity = mouth.DEFAULT_CAVITY
    # the line moves towards the cavity colour in proportion to seam_alpha, and nothing else changes
    gap = {a: float(np.abs(j["image"][line] - cavity).mean()) for a, j in jobs.items()}
    assert gap[0.6] < gap[0.3] < gap[0.0]
    for a in (0.3, 0.6):
        diff = np.abs(jobs[a]["image"] - jobs[0.0]["image"]).max(2)
        assert diff[dist > 2 + mouth.SEAM_CM / ff.scale].max() == 0.0  # the line's width, anti-aliased


@pytest.mark.parametrize("sigma", [0.0, 0.8, 2.5])
def test_closed_seam_over_its_own_box_equals_the_whole_box(sigma):
    """The seam is drawn over the line's own box (speed): bit for bit what drawing it over the whole mouth box
    gives, for a hard and for feathered lines, and for a line partly outside the box."""
    import cv2

    ff = _frame()
    lm = _landmarks(ff).copy()
    lm[[87, 14, 317]] = lm[[82, 13, 312]] + (0.0, 0.5, 0.0)  # lips (nearly) closed: the seam shows
    cavity = mouth.DEFAULT_CAVITY
    rng = np.random.default_rng(1)
    for offset in [(100.0, 120.0), (150.0, 150.0)]:  # the second cuts the line at the box's left and top edges
        box = rng.uniform(0, 255, (90, 130, 3)).astype(np.float32)
        width = max(1.0, mouth.SEAM_CM * 14.0)
        line = np.asarray(lm, np.float64)[[78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308], :2] - offset
        mask = np.zeros(box.shape[:2], np.uint8)
        cv2.polylines(mask, [np.round(line * 16).astype(np.int32)], False, 255, max(1, int(round(width))),
                      cv2.LINE_AA, 4)
        up, lo = mouth.lip_midpoints(lm)
        alpha = 0.4 * float(np.clip(1.0 - np.linalg.norm(up - lo) / (3.0 * width), 0.0, 1.0))
        assert alpha > 0
        a = (mouth.feather(mask.astype(np.float32) / 255.0, sigma) * alpha)[..., None]
        whole = box * (1 - a) + cavity[None, None, :] * a
        got = mouth.closed_seam(box.copy(), lm, 14.0, np.array(offset), cavity, 0.4, sigma)
        assert np.array_equal(got, whole)
        assert not np.array_equal(got, box)


def test_smooth_track_is_zero_phase():
    t = np.arange(101, dtype=np.float64)
    pulse = np.exp(-0.5 * ((t - 50) / 3.0) ** 2)[:, None, None] * np.ones((1, 59, 3))
    out = mouth.smooth_track(pulse.astype(np.float32), 0.4)
    assert out.shape == pulse.shape and out.dtype == np.float32
    assert int(np.argmax(out[:, 0, 0])) == 50  # no lag: the peak stays on its frame
    np.testing.assert_allclose(out[:, 0, 0], out[::-1, 0, 0], atol=1e-4)  # symmetric in, symmetric out
    const = np.full((30, 59, 3), 2.5, np.float32)
    np.testing.assert_allclose(mouth.smooth_track(const, 0.5), const, atol=1e-5)
    noise = np.random.default_rng(0).normal(size=(200, 59, 3)).astype(np.float32)
    sm = mouth.smooth_track(noise, 0.3)
    assert np.abs(np.diff(sm, axis=0)).mean() < 0.7 * np.abs(np.diff(noise, axis=0)).mean()
    # the coefficient is per 25 fps frame: the same pulse sampled at 50 fps is smoothed over the same time
    t50 = np.arange(202) / 2.0
    pulse50 = np.exp(-0.5 * ((t50 - 50) / 3.0) ** 2)[:, None, None] * np.ones((1, 59, 3))
    out50 = mouth.smooth_track(pulse50, 0.4, fps=50.0)
    assert abs(out50[:, 0, 0].max() - out[:, 0, 0].max()) < 0.03


def test_load_passes_mouth_options():
    import talkingface

    opts = mouth.MouthOptions(feather_cm=0.1, smooth=0.2)
    pipe = talkingface.load(texture="warp", mouth_options=opts)
    assert pipe.painter.options == opts
    assert talkingface.load(texture="warp").painter.options == mouth.MouthOptions()


def test_fill_reach_brings_the_sources_lip_edge_not_a_cavity_rim():
    """A target opening larger than the interior source's: with no reach its rim is the flat cavity colour; with
    a reach the layers extend over it (the source's own pixels), and only near the opening."""
    ff = _frame()
    lm = _landmarks(ff)
    rest = ff.to_canonical(lm[face.MOUTH])
    size = mouth.INTERIOR_SIZE
    a_int = mouth.crop_affine(ff, size)
    pts = face.apply_affine(_landmarks(ff)[:, :2], a_int)
    small = ff.to_image(warp.clamp_mouth(_open_mouth(rest, 0.4), rest))
    pts[face.MOUTH] = face.apply_affine(small[:, :2], a_int)
    src = mouth.InteriorSource(np.clip(_texture(size, size, seed=7).astype(np.int16) + 60, 0, 255).astype(np.uint8),
                               pts)
    assert mouth.InteriorSource.layer_masks(src, 0.0) is src.masks
    wide = pts.copy()
    wide[face.MOUTH] = face.apply_affine(ff.to_image(warp.clamp_mouth(_open_mouth(rest, 0.8), rest))[:, :2], a_int)
    hole = mouth.polygon_mask(mouth.inner_polygon(wide), (size, size)) > 0.99
    gy, gx = np.mgrid[0:size, 0:size].astype(np.float64)
    cavity = np.all(np.abs(mouth.fill_interior(src, gx, gy, wide) - src.cavity) < 1e-3, axis=2)
    reach = np.all(np.abs(mouth.fill_interior(src, gx, gy, wide, reach_px=4.0) - src.cavity) < 1e-3, axis=2)
    assert (cavity & hole).sum() > 20  # the wider target shows bare cavity colour without a reach
    assert (reach & hole).sum() < 0.5 * (cavity & hole).sum()  # with one, mostly the source's pixels
    # the painter: fill_reach_cm 0 is the stage without the option; a reach changes only the opening's pixels
    interior = _open_interior(ff, rest)
    img = _texture()
    target = _open_mouth(mouth.neutral_rest(rest), 0.9)
    a = mouth.MouthPainter(None, options=LEGACY).prepare(img, lm, ff, target, rest, interior)
    b = mouth.MouthPainter(None, options=replace(LEGACY, fill_reach_cm=0.2)).prepare(img, lm, ff, target, rest,
                                                                                    interior)
    diff = np.abs(a["image"] - b["image"]).max(2)
    assert diff.max() > 1 and diff[a["hole"] == 0].max() == 0.0


@pytest.mark.slow
def test_render_smooths_the_target_track(astronaut, grid_wav):
    import talkingface
    from talkingface.pipeline import RenderOptions

    pipe = talkingface.load(texture="warp", mouth_options=LEGACY)
    opts = RenderOptions(head_motion="still", max_size=256)
    wav = grid_wav[: 16000 * 2]
    raw = pipe.render(astronaut, wav, options=opts).mouth_canonical
    pipe.painter.options = replace(LEGACY, smooth=0.5)
    smooth = pipe.render(astronaut, wav, options=opts).mouth_canonical
    assert raw.shape == smooth.shape
    np.testing.assert_allclose(smooth, mouth.smooth_track(raw, 0.5), atol=1e-4)
    assert np.abs(np.diff(smooth, axis=0)).mean() < 0.8 * np.abs(np.diff(raw, axis=0)).mean()


def test_tune_script_refuses_validation_speakers(monkeypatch, tmp_path):
    """scripts/tune_mouth.py tunes on training speakers only: a validation speaker's clip stops it before any
    work (nothing written)."""
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "tune_mouth.py"
    out = tmp_path / "tune"
    monkeypatch.setattr(sys, "argv", [str(script), "--clips", "rizkiarm__LipNet__GRID_brbk7n",
                                      "rizkiarm__LipNet__GRID_lwbsza", "--out", str(out)])
    with pytest.raises(SystemExit, match="validation speaker"):
        runpy.run_path(str(script), run_name="__main__")
    assert not out.exists()


def test_refine_training_checkpoints_and_resumes(tmp_path, grid_video_path):
    """Issue 9's CPU training: a few steps on real crops of the GRID fixture (pairs of its frames) write a
    safetensors checkpoint; --resume continues from it (steps, runs, the optimizer state), the adversarial
    phase included; a different network config is refused on resume."""
    from safetensors import safe_open

    from talkingface import face
    from talkingface.training import mouth_data, mouth_training

    with face.FaceTracker(static=False, max_faces=1) as tracker:
        arrays = mouth_data.prepare_clip(grid_video_path, tracker, mouth.CROP_SIZE)
    assert len(arrays["frame"]) > 50 and arrays["crops"].shape[1:] == (128, 128, 3)
    np.savez(tmp_path / "grid.npz", **arrays)
    (tmp_path / "index.json").write_text(
        '{"crop_size": 128, "clips": [{"clip": "grid", "speaker": "s", "frames": %d}]}' % len(arrays["frame"]))
    clips = mouth_training.load_clips(str(tmp_path))
    cfg = mouth.RefineConfig(width=4, levels=2, full=4, rows=96, disc_width=4)
    out = str(tmp_path / "refine.train.safetensors")
    kw = dict(out=out, batch=2, warmup=2, save_minutes=100.0)
    first = mouth_training.train(clips, clips, cfg, steps=2, **kw)
    assert first["step"] == 2 and "val_refined" in first and "val_warp_only" in first
    with safe_open(out, "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("opt_g.") for k in keys) and any(k.startswith("disc.") for k in keys)
    again = mouth_training.train(clips, clips, cfg, steps=4, resume=True, **kw)
    assert again["step"] == 4 and [r["start_step"] for r in again["runs"]] == [0, 2]
    assert again["config"] == cfg.to_dict()
    with pytest.raises(ValueError, match="config"):
        mouth_training.train(clips, clips, mouth.RefineConfig(width=8, levels=2, full=4, disc_width=4), steps=6,
                             resume=True, **kw)
