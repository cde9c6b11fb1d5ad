"""Piecewise-affine warping of a face's own pixels over the FaceMesh triangulation, at native resolution.

The sharp-mouth design (docs/MOUTH.md): instead of painting the mouth, the person's real pixels are moved
to the target mouth shape, resampled once at the frame's own resolution. Pieces:

* ``mesh_triangles()``: MediaPipe's 898-triangle tessellation of the 468 mesh points (from the canonical
  mesh .obj) *without* the 18 triangles that span the lip opening, so the inner-lip polygon is a hole, plus
  two rings of points around the face oval (``extend_points``) triangulated as strips, so the warp fades
  to zero displacement outside the face (the chin can drop over the neck without a seam).
* ``spread_matrix()``: how a displacement of the 59 predicted mouth points (lips and jaw) spreads onto the
  rest of the lower face: the harmonic (graph-Laplacian) interpolation over the mesh with the rigid upper
  face fixed at zero. A (468, 59) linear map, computed once.
* ``clamp_mouth``: impossible lip shapes (lips crossing, a lip thinner than a fraction of its rest
  thickness) are pushed back to possible ones.
* ``target_points``: the target mesh; ``keep_corners`` keeps each lip corner from turning over as a lip
  closes, ``follow_lip_ring`` moves the mesh points that lie on the lips with the lips.
* ``piecewise_affine_maps`` / ``warp_region``: backward maps for ``cv2.remap`` rasterised from the moved
  triangles (each target pixel -> the source position under its triangle's affine), identity where no
  moved triangle covers the pixel, so everything away from the mouth is the input's own pixels bit for bit
  (``reference_maps``: the same maps, computed simply and slowly, for tests and timing).
* ``flipped``: triangles whose orientation flips between source and target (folds); ``safe_target`` backs
  off the points of the folds left (not of slivers under half a pixel, ``SLIVER``).

All image-space functions take (x, y) pixel coordinates, float.
"""
from __future__ import annotations

import functools
import threading
from importlib import resources

import cv2
import numpy as np

from . import face

# MediaPipe's face oval, clockwise from the forehead (the outline of the 468-point mesh)
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
RING_SCALES = (1.25, 1.6)  # rings around the oval, as multiples of its distance from the face centre
RING_FOLLOW = (0.45, 0.0)  # share of the oval's displacement each ring follows (the outer ring stays still)
N_EXT = face.N_MESH + len(RING_SCALES) * len(FACE_OVAL)  # points of the extended set

# inner-lip pairs (upper, lower) facing each other across the opening, left corner to right corner
UPPER_INNER = [191, 80, 81, 82, 13, 312, 311, 310, 415]
LOWER_INNER = [95, 88, 178, 87, 14, 317, 402, 318, 324]
UPPER_OUTER = [185, 40, 39, 37, 0, 267, 269, 270, 409]
LOWER_OUTER = [146, 91, 181, 84, 17, 314, 405, 321, 375]
_MI = {v: i for i, v in enumerate(face.MOUTH)}  # mesh index -> index in the 59 mouth points
# (outer corner, inner corner, the upper and the lower inner-lip point next to it), left then right
CORNERS = ((61, 78, 191, 95), (291, 308, 415, 324))
CORNER_GAP = 0.5  # px: how far those points stay off the corner line (keep_corners)


@functools.lru_cache(maxsize=1)
def _obj_triangles() -> np.ndarray:
    text = resources.files("talkingface.assets").joinpath("canonical_face_model.obj").read_text()
    tris = [[int(t.split("/")[0]) - 1 for t in line.split()[1:4]] for line in text.splitlines()
            if line.startswith("f ")]
    return np.asarray(tris, np.int32)


@functools.lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """(F, 3) int32 triangles over the 468 mesh points, without those spanning the lip opening."""
    tris = _obj_triangles()
    up, lo = set(UPPER_INNER), set(LOWER_INNER)
    spans = np.array([bool(set(t) & up and set(t) & lo) for t in tris.tolist()])
    return tris[~spans]


@functools.lru_cache(maxsize=1)
def extended_triangles() -> np.ndarray:
    """(F', 3) the mesh triangles plus strips between the oval and the two rings (``extend_points`` order)."""
    n, m = face.N_MESH, len(FACE_OVAL)
    rows = [mesh_triangles()]
    inner = np.asarray(FACE_OVAL)
    for k in range(len(RING_SCALES)):
        outer = n + k * m + np.arange(m)
        for i in range(m):
            j = (i + 1) % m
            rows.append(np.array([[inner[i], inner[j], outer[i]], [inner[j], outer[j], outer[i]]], np.int32))
        inner = outer
    return np.concatenate(rows).astype(np.int32)


def extend_points(points: np.ndarray, moved: np.ndarray | None = None) -> np.ndarray:
    """(468+, 2) image points -> (N_EXT, 2) with the rings around the face oval appended.

    ``moved``: the target positions of the same 468 points; then the rings of the *source* ``points`` are
    moved by ``RING_FOLLOW`` of the oval's displacement (the result is the target's extended set).
    """
    pts = np.asarray(points, np.float64)[: face.N_MESH, :2]
    oval = pts[FACE_OVAL]
    centre = oval.mean(0)
    rings = [centre + s * (oval - centre) for s in RING_SCALES]
    if moved is None:
        return np.concatenate([pts, *rings])
    tgt = np.asarray(moved, np.float64)[: face.N_MESH, :2]
    d = tgt[FACE_OVAL] - oval
    return np.concatenate([tgt, *[r + f * d for r, f in zip(rings, RING_FOLLOW, strict=True)]])


NOSE_BOTTOM = 2  # FaceMesh point under the nose (subnasale)


@functools.lru_cache(maxsize=1)
def spread_matrix() -> np.ndarray:
    """(468, 59) float64: displacement of every mesh point as a linear function of the 59 mouth points'.

    Harmonic interpolation on the mesh graph: mouth points are the given values, the rigid upper face
    (face.rigid_indices) and every point above the base of the nose are fixed at zero, every other point is
    the mean of its neighbours.
    """
    n = face.N_MESH
    adj = np.zeros((n, n))
    for a, b, c in _obj_triangles():
        adj[a, b] = adj[b, a] = adj[a, c] = adj[c, a] = adj[b, c] = adj[c, b] = 1.0
    lap = np.diag(adj.sum(1)) - adj
    mouth = np.asarray(face.MOUTH)
    canon_y = face.canonical_mesh()[:, 1]
    above_nose = np.flatnonzero(canon_y > canon_y[NOSE_BOTTOM])  # nothing above the nose's base moves
    fixed = np.union1d(np.union1d(mouth, face.rigid_indices()), np.setdiff1d(above_nose, mouth))
    free = np.setdiff1d(np.arange(n), fixed)
    w = np.zeros((n, len(mouth)))
    w[mouth, np.arange(len(mouth))] = 1.0
    # L_ff x_f = -L_fm x_m  (rigid points contribute zero)
    w[free] = np.linalg.solve(lap[np.ix_(free, free)], -lap[np.ix_(free, mouth)])
    return w * mouth_weights()[None, :]


@functools.lru_cache(maxsize=1)
def mouth_weights() -> np.ndarray:
    """(59,) how much of its predicted displacement each mouth point gets: 1 for the lips and the chin,
    fading to 0 up the jaw line towards the ears, where FaceMesh's silhouette points slide with the view
    (their motion between frames is mostly the head turning, not the jaw)."""
    canonical_mouth_y = face.canonical_mesh()[face.MOUTH, 1]
    w = np.ones(len(face.MOUTH))
    jaw = np.arange(len(face.LIPS_OUTER) + len(face.LIPS_INNER), len(face.MOUTH))
    w[jaw] = np.clip((-2.5 - canonical_mouth_y[jaw]) / 4.5, 0.0, 1.0)
    return w


def clamp_mouth(mouth: np.ndarray, rest: np.ndarray, min_thickness: float = 0.35) -> np.ndarray:
    """Make a canonical mouth shape (59, 3) (y up) possible: the lower inner lip never above the upper inner
    lip, and each lip at least ``min_thickness`` of its thickness in ``rest`` (the person's resting mouth)."""
    m = np.array(mouth, np.float64, copy=True)
    ui, li = [_MI[i] for i in UPPER_INNER], [_MI[i] for i in LOWER_INNER]
    uo, lo = [_MI[i] for i in UPPER_OUTER], [_MI[i] for i in LOWER_OUTER]
    cross = m[li, 1] > m[ui, 1]  # lips crossing: meet in the middle
    if cross.any():
        mid = (m[li, 1] + m[ui, 1]) / 2
        m[np.asarray(ui)[cross], 1] = mid[cross]
        m[np.asarray(li)[cross], 1] = mid[cross]
    up_t = np.maximum(rest[uo, 1] - rest[ui, 1], 0.05) * min_thickness
    lo_t = np.maximum(rest[li, 1] - rest[lo, 1], 0.05) * min_thickness
    m[uo, 1] = np.maximum(m[uo, 1], m[ui, 1] + up_t)
    m[lo, 1] = np.minimum(m[lo, 1], m[li, 1] - lo_t)
    return m


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F,) twice the signed area of each triangle (positive counter-clockwise in x-right, y-up terms)."""
    a, b, c = points[triangles[:, 0]], points[triangles[:, 1]], points[triangles[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def _flipped_areas(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    return (np.sign(a) != np.sign(b)) & (np.abs(a) > eps) | ((np.abs(b) < eps) & (np.abs(a) > eps))


def flipped(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(F,) bool: triangles whose orientation flips (or that collapse) between ``src`` and ``dst``."""
    return _flipped_areas(signed_areas(src, triangles), signed_areas(dst, triangles), eps)


def _affines(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(F, 2, 3) affines taking each dst triangle onto its src triangle (backward mapping).

    Closed form: with e1 = d1 - d0, e2 = d2 - d0 (target edges) and f1, f2 the source's, the linear part is
    [f1 f2] @ inv([e1 e2]) and the translation puts d0 on s0."""
    s, d = src[triangles], dst[triangles]  # (F, 3, 2)
    e1, e2 = d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]
    f1, f2 = s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    # a (nearly) degenerate target triangle has an ill-conditioned affine that would fetch pixels from far away
    # (seen as bright dots at the nose wings): move those few pixels by the triangle's mean displacement instead
    thin = np.abs(det) < 1.0
    inv_det = 1.0 / np.where(thin, 1.0, det)
    # inv([e1 e2]) = [[e2y, -e2x], [-e1y, e1x]] / det
    i00, i01 = e2[:, 1] * inv_det, -e2[:, 0] * inv_det
    i10, i11 = -e1[:, 1] * inv_det, e1[:, 0] * inv_det
    x = np.empty((len(triangles), 2, 3))
    x[:, :, 0] = f1 * i00[:, None] + f2 * i10[:, None]
    x[:, :, 1] = f1 * i01[:, None] + f2 * i11[:, None]
    x[:, :, 2] = s[:, 0] - x[:, :, 0] * d[:, 0, :1] - x[:, :, 1] * d[:, 0, 1:]
    if thin.any():
        x[thin] = 0.0
        x[thin, 0, 0] = x[thin, 1, 1] = 1.0
        x[thin, :, 2] = s[thin].mean(1) - d[thin].mean(1)
    return x


def moved_triangles(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, tol: float = 0.02) -> np.ndarray:
    """Indices of the triangles with a vertex that moved more than ``tol`` pixels."""
    moved = np.linalg.norm(dst - src, axis=1) > tol
    return np.flatnonzero(moved[triangles].any(axis=1))


def triangles_box(points: np.ndarray, triangles: np.ndarray, shape: tuple[int, int], pad: int = 2
                  ) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) around the given triangles' points, clipped to an (H, W) frame."""
    if len(triangles) == 0:
        return None
    p = points[np.unique(triangles)]
    h, w = shape
    x0, y0 = np.floor(p.min(0)).astype(int) - pad
    x1, y1 = np.ceil(p.max(0)).astype(int) + pad
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return None if x1 <= x0 or y1 <= y0 else (int(x0), int(y0), int(x1), int(y1))


def reference_maps(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
                   box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The simple implementation of ``piecewise_affine_maps`` (same arguments and results): boolean masks and a
    per-pixel (2, 3) affine. Kept as the reference the fast version is tested against, bit for bit, and timed
    against (scripts/profile_mouth.py)."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    tri = np.full((h, w), -1, np.int32)
    shift = 4
    d = np.round((dst - (x0, y0)) * (1 << shift)).astype(np.int32)
    for k, t in enumerate(triangles):
        cv2.fillConvexPoly(tri, d[t], int(k), cv2.LINE_8, shift)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    map_x, map_y = xs.copy(), ys.copy()
    inside = tri >= 0
    if inside.any():
        aff = _affines(src, dst, triangles).astype(np.float32)[tri[inside]]  # (P, 2, 3)
        px, py = xs[inside], ys[inside]
        # rasterized edge pixels lie up to a pixel outside their triangle: keep every fetch within the source
        # triangle's box (plus a pixel), so no pixel is fetched from far away
        s = src[triangles]
        lo, hi = (s.min(1) - 1.0).astype(np.float32)[tri[inside]], (s.max(1) + 1.0).astype(np.float32)[tri[inside]]
        map_x[inside] = np.clip(aff[:, 0, 0] * px + aff[:, 0, 1] * py + aff[:, 0, 2], lo[:, 0], hi[:, 0])
        map_y[inside] = np.clip(aff[:, 1, 0] * px + aff[:, 1, 1] * py + aff[:, 1, 2], lo[:, 1], hi[:, 1])
    return map_x, map_y, tri


def _label_image(dst: np.ndarray, triangles: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w) int32 over ``box``: the row in ``triangles`` of the ``dst`` triangle covering each pixel, -1 where
    none (later triangles overwrite earlier ones along shared edges, as in ``reference_maps``)."""
    x0, y0, x1, y1 = box
    tri = np.full((y1 - y0, x1 - x0), -1, np.int32)
    shift = 4
    d = np.round((dst - (x0, y0)) * (1 << shift)).astype(np.int32)
    fill = cv2.fillConvexPoly
    for k, t in enumerate(d[triangles]):
        fill(tri, t, k, cv2.LINE_8, shift)
    return tri


_SCRATCH = threading.local()


def _scratch(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-thread work buffers of at least ``n`` elements (intp, float32), reused across calls: a fresh box-sized
    array costs page faults that were a large part of the maps' time."""
    lab, buf = getattr(_SCRATCH, "bufs", (np.empty(0, np.intp), np.empty(0, np.float32)))
    if lab.size < n:
        lab, buf = np.empty(n, np.intp), np.empty(n, np.float32)
        _SCRATCH.bufs = (lab, buf)
    return lab[:n], buf[:n]


def piecewise_affine_maps(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
                          box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward maps over ``box`` of the target image: for each pixel (x, y) in the box, the source position
    under the affine of the ``dst`` triangle that covers it; (x, y) itself where none does.

    src, dst: (N, 2) image points; triangles: (F, 3) indices. Returns map_x, map_y (h, w) float32 in full
    image coordinates (for cv2.remap of the whole source image) and ``tri`` (h, w) int32, the covering
    triangle's row in ``triangles`` (-1 where none).

    The same numbers as ``reference_maps``, bit for bit, several times faster: the triangles are rasterised
    once into a label image; each triangle's affine and fetch bounds go into a small float32 table whose first
    entry is the identity (label -1, shifted to 0, indexes it); the maps are then evaluated over the whole
    box, one gather per coefficient into a reused buffer, no boolean masks, no box-sized temporaries.
    """
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    tri = _label_image(dst, triangles, box)
    n = len(triangles)
    table = np.empty((10, n + 1), np.float32)  # a00 a01 a02 a10 a11 a12 lo_x lo_y hi_x hi_y, per label + 1
    table[:, 0] = (1, 0, 0, 0, 1, 0, -np.inf, -np.inf, np.inf, np.inf)  # not covered: the pixel itself
    if n:
        table[:6, 1:] = _affines(src, dst, triangles).astype(np.float32).reshape(n, 6).T
        # rasterized edge pixels lie up to a pixel outside their triangle: keep every fetch within the source
        # triangle's box (plus a pixel), so no pixel is fetched from far away
        s = src[triangles]
        table[6:8, 1:] = (s.min(1) - 1.0).astype(np.float32).T
        table[8:10, 1:] = (s.max(1) + 1.0).astype(np.float32).T
    table = [np.ascontiguousarray(t) for t in table]
    lab, buf = _scratch(h * w)
    lab, buf = lab.reshape(h, w), buf.reshape(h, w)
    np.add(tri, 1, out=lab, casting="unsafe")
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    maps = []
    for i in (0, 1):  # (a * x + b * y) + c, then the bounds: the reference's operations in its order, bit-identical
        m = np.empty((h, w), np.float32)
        np.take(table[3 * i], lab, out=buf, mode="clip")
        np.multiply(buf, xs, out=m)
        np.take(table[3 * i + 1], lab, out=buf, mode="clip")
        buf *= ys
        m += buf
        m += np.take(table[3 * i + 2], lab, out=buf, mode="clip")
        np.maximum(m, np.take(table[6 + i], lab, out=buf, mode="clip"), out=m)
        np.minimum(m, np.take(table[8 + i], lab, out=buf, mode="clip"), out=m)
        maps.append(m)
    return maps[0], maps[1], tri


def warp_region(image: np.ndarray, src: np.ndarray, dst: np.ndarray, triangles: np.ndarray,
                box: tuple[int, int, int, int], interpolation: int = cv2.INTER_CUBIC
                ) -> tuple[np.ndarray, np.ndarray]:
    """The ``box`` of ``image`` with its pixels moved from ``src`` to ``dst`` (piecewise affine).

    Returns the warped box (h, w, C) of the image's dtype and the covering-triangle map (h, w) int32
    (-1: not covered, the pixel is the input's own).
    """
    map_x, map_y, tri = piecewise_affine_maps(src, dst, triangles, box)
    out = cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
    x0, y0, x1, y1 = box
    keep = (tri < 0)[..., None] if out.ndim == 3 else tri < 0
    np.copyto(out, image[y0:y1, x0:x1], where=keep)  # uncovered pixels: exactly the input
    return out, tri


def stretch_map(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """(h, w) float32 area ratio target/source of the covering triangle (1 where uncovered)."""
    ratio = np.abs(signed_areas(dst, triangles)) / np.maximum(np.abs(signed_areas(src, triangles)), 1e-6)
    out = np.ones(tri.shape, np.float32)
    inside = tri >= 0
    out[inside] = ratio[tri[inside]]
    return out


def _ring_triangles() -> np.ndarray:
    """(40, 3) the lips as a strip of triangles between the outer and the inner contour (face.LIPS_OUTER[k] faces
    face.LIPS_INNER[k], corner to corner), mesh indices."""
    o, i = np.asarray(face.LIPS_OUTER), np.asarray(face.LIPS_INNER)
    k, k1 = np.arange(len(o)), (np.arange(len(o)) + 1) % len(o)
    return np.concatenate([np.stack([o[k], o[k1], i[k1]], 1), np.stack([o[k], i[k1], i[k]], 1)]).astype(np.int32)


RING = _ring_triangles()
_NOT_MOUTH = np.setdiff1d(np.arange(face.N_MESH), face.MOUTH)


def keep_corners(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``dst`` (468, 2) image points with, at each lip corner, the first upper and lower inner-lip points kept on
    the side of the line from the outer to the inner corner that they are on in ``src`` (at least CORNER_GAP
    px off it, pushed along its normal). A closing lower lip that rose past that line folded the corner's
    triangles, and the fold removal then left a notch: the dark fleck under a closed lip's corner."""
    out = np.array(dst, np.float64, copy=True)
    for outer, inner, up, low in CORNERS:
        o, i = out[outer, :2], out[inner, :2]
        d = i - o
        length = float(np.hypot(*d))
        if length < 1e-6:
            continue
        n = np.array([-d[1], d[0]]) / length  # unit normal of the corner line
        so, si = src[outer, :2], src[inner, :2]
        for p in (up, low):
            side = np.sign((si - so)[0] * (src[p, 1] - so[1]) - (si - so)[1] * (src[p, 0] - so[0]))
            if side == 0:
                continue
            dist = side * float(n @ (out[p, :2] - o))  # > 0: on its side
            if dist < CORNER_GAP:
                out[p, :2] += side * (CORNER_GAP - dist) * n
    return out


def follow_lip_ring(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``dst`` (468, 2) with the mesh points that lie on the lips in ``src`` (between the outer and the inner lip
    contour, e.g. the corner points 62 and 292) placed where the lips take them: at the same barycentric
    coordinates in their lip triangle (``RING``) in ``dst``. Interpolated over the mesh graph instead
    (``spread_matrix``), those points lag the lip contours at the corners, and a closing mouth folds them over.
    A point on no lip triangle keeps its place."""
    out = np.array(dst, np.float64, copy=True)
    a, b, c = (src[RING[:, j], :2].astype(np.float64) for j in range(3))
    lo, hi = np.minimum(np.minimum(a, b), c).min(0), np.maximum(np.maximum(a, b), c).max(0)
    pts = src[_NOT_MOUTH, :2].astype(np.float64)
    cand = np.flatnonzero(((pts >= lo) & (pts <= hi)).all(1))
    if not cand.size:
        return out
    p = pts[cand][:, None, :]  # (P, 1, 2) against (R, 2)
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v0[:, 1] * v1[:, 0]  # (R,)
    ok_t = np.abs(den) > 1e-9
    den = np.where(ok_t, den, 1.0)
    u = (v2[..., 0] * v1[:, 1] - v2[..., 1] * v1[:, 0]) / den  # (P, R) weight of b
    v = (v0[:, 0] * v2[..., 1] - v0[:, 1] * v2[..., 0]) / den  # weight of c
    inside = ok_t & (u >= -1e-6) & (v >= -1e-6) & (u + v <= 1 + 1e-6)
    hit = inside.any(1)
    if not hit.any():
        return out
    r = inside.argmax(1)[hit]
    rows = np.flatnonzero(hit)
    u, v = u[rows, r], v[rows, r]
    tri = RING[r]
    out[_NOT_MOUTH[cand[hit]]] = ((1 - u - v)[:, None] * dst[tri[:, 0], :2] + u[:, None] * dst[tri[:, 1], :2]
                                  + v[:, None] * dst[tri[:, 2], :2])
    return out


def target_points(landmarks: np.ndarray, frame: face.FaceFrame, mouth: np.ndarray,
                  own: np.ndarray | None = None) -> np.ndarray:
    """The face's 468 image points (x, y) with the mouth moved to ``mouth`` (59, 3) canonical.

    The 59 points' displacement (in the pose-normalized space, so it is the same whatever the head pose) is
    spread over the lower face by ``spread_matrix`` and mapped into the image by the face's pose (its linear
    part: only the displacement is mapped, so ``landmarks`` may be 2D image points).
    own: the face's current mouth (59, 3) canonical; by default from ``landmarks`` (which then need z).
    """
    pts = np.asarray(landmarks, np.float64)
    if own is None:
        own = frame.to_canonical(pts[face.MOUTH])
    disp = spread_matrix() @ (np.asarray(mouth, np.float64) - own)  # (468, 3) canonical
    delta = frame.to_image(disp) - frame.to_image(np.zeros((1, 3)))
    src = pts[: face.N_MESH]
    return follow_lip_ring(src, keep_corners(src, src[:, :2] + delta[:, :2]))


SLIVER = 1.0  # twice the area in px^2 under which a triangle folding over does not count (half a pixel at most)


def _folds(a_src: np.ndarray, a_dst: np.ndarray) -> np.ndarray:
    """(F,) bool: triangles that flip or collapse from areas ``a_src`` to ``a_dst``, slivers (both under SLIVER)
    excepted."""
    return _flipped_areas(a_src, a_dst) & ~((np.abs(a_src) < SLIVER) & (np.abs(a_dst) < SLIVER))


def safe_target(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, steps: int = 6) -> tuple[np.ndarray, float]:
    """Remove folds: halve the displacement of the points of flipped triangles (locally, up to 8 times), then,
    if any fold is left, back the whole displacement off by a common factor (bisection). A sliver that turns
    over (under SLIVER in both shapes: half a pixel) is not a fold.

    src, dst: (N, 2) extended point sets. Returns the safe target and the common factor (1.0 almost always)."""
    dst = np.array(dst, np.float64, copy=True)
    a_src = signed_areas(src, triangles)
    for _ in range(8):
        f = _folds(a_src, signed_areas(dst, triangles))
        if not f.any():
            return dst, 1.0
        v = np.unique(triangles[f])
        dst[v] = src[v] + 0.5 * (dst[v] - src[v])
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if _folds(a_src, signed_areas(src + mid * (dst - src), triangles)).any():
            hi = mid
        else:
            lo = mid
    return src + lo * (dst - src), lo
