"""The mouth stage (mouth-v2): the person's own pixels warped to the predicted mouth, at native resolution;
only what no pixel shows (the mouth interior) comes from elsewhere, and a small refine network shades the
interior and mends the seams inside a band around the lips.

Per frame (``MouthPainter``):

1. **Geometry** (talkingface.warp): the face's 468 mesh points with lips and jaw moved to the predicted
   shape, the displacement spread harmonically over the lower face, impossible shapes clamped.
2. **Warp**: piecewise-affine over the FaceMesh triangles, bicubic, at the frame's resolution. Pixels whose
   triangle did not move are the input's own, bit for bit. The lip opening is a hole.
3. **Interior**: the hole is filled from a real mouth interior, in two rigid layers (upper teeth move with
   the upper lip, lower teeth with the lower lip; the gap between them is the dark cavity): in dubbing from the
   person's own frames (the appearance bank, chosen by mouth opening), in photo mode from the photo itself when
   its mouth is open, else from a small donor library of GRID open mouths (CC BY 4.0), colour-matched.
4. **Refine** (``RefineNet``, trained by talkingface/training/mouth_training.py): on the aligned mouth crop
   (``CROP_SIZE`` px over an 8 x 8 cm square of the canonical face) it predicts a residual and an alpha that is
   zero outside a band around the lips; the residual is added at native resolution inside that band only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import face, warp
from .errors import InputError

CROP_CENTER = (0.0, -5.9, 5.0)  # canonical cm: the square from under the nose (-1.9) to below the chin (-9.9)
CROP_HALF = 4.0
CROP_SIZE = 128


def crop_affine(frame: face.FaceFrame, size: int = CROP_SIZE) -> np.ndarray:
    """(2, 3) image -> aligned mouth crop of ``size`` px."""
    return frame.crop_affine(size, CROP_CENTER, CROP_HALF)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class MouthOptions:
    """Settings of the mouth stage's compositing (one home: ``MouthPainter.options``; ``talkingface.load(...,
    mouth_options=...)``, ``talkingface eval --texture-methods warp:feather_cm=0.12:smooth=0.3``).

    feather_cm: Gaussian sigma, in cm of the face (canonical units), of the filled opening's edge and of the
        closed-lip seam: the interior and the seam blend into the lips over a few pixels instead of a hard
        one-pixel polygon edge (real inner lips shade into the mouth). 0: the hard edge (as before this
        option). Pixels further than 3 sigma in x or in y (the kernel is square) from
        the opening and the seam are the warped ones, exactly.
    seam_alpha: opacity of the dark line drawn where (nearly) closed lips meet (``closed_seam``).
    smooth: zero-phase temporal smoothing of the target mouth track (offline render and dub, where the whole
        track is known): an exponential moving average with this coefficient per 25 fps frame, run forward
        and then backward, so it adds no lag. 0: none. Not applied live (``talkingface.live``), where only a
        causal filter is possible and it would delay the mouth.
    fill_reach_cm: how far beyond the interior source's own opening its two layers reach (cm). FaceMesh's
        inner lip runs a little inside the visible lips and the layers are placed rigidly by the lips' middle
        points, so a target opening often extends past the layer near its edge; with 0 that rim is the flat
        cavity colour, a hard dark outline (most visible along the lower lip); with a reach it is the source's
        own inner lip edge.
    """

    # defaults chosen on 10 training-speaker clips (scripts/tune_mouth.py, docs/MOUTH.md) before the validation run
    # that reports them; the first tuned defaults were feather_cm=0.12, smooth=0.3, fill_reach_cm=0.3 (validation
    # sharpness ratio 0.81: too soft), the stage before these options feather_cm=0, seam_alpha=0.6, smooth=0,
    # fill_reach_cm=0; smooth 0.15 -> 0.3 with the lip-corner geometry (2026-12-02, third session: on the 5 tuning
    # clips r 0.556 -> 0.573, flicker 1.29 -> 1.24; the renderer now shows the track it is given, jitter included)
    feather_cm: float = 0.06
    seam_alpha: float = 0.3
    smooth: float = 0.3
    fill_reach_cm: float = 0.2

    _RANGES = {"feather_cm": (0.0, 1.0), "seam_alpha": (0.0, 1.0), "smooth": (0.0, 0.95), "fill_reach_cm": (0.0, 0.5)}

    def __post_init__(self):
        for name, (lo, hi) in self._RANGES.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not np.isfinite(v) or not lo <= v <= hi:
                raise InputError(f"mouth option {name} must be a number between {lo:g} and {hi:g}, got {v!r}")

    @classmethod
    def parse(cls, spec: str) -> MouthOptions:
        """``"feather_cm=0.12:smooth=0.3"`` (colon-separated name=value; unnamed fields keep their default)."""
        kw = {}
        for part in (p.strip() for p in spec.split(":")):
            if not part:
                continue
            name, eq, value = part.partition("=")
            if not eq or name.strip() not in cls._RANGES:
                raise InputError(f"mouth option '{part}': expected NAME=VALUE with NAME one of "
                                 f"{', '.join(cls._RANGES)}")
            try:
                kw[name.strip()] = float(value)
            except ValueError:
                raise InputError(f"mouth option {name.strip()} must be a number, got {value!r}") from None
        return cls(**kw)


def parse_method(spec: str) -> tuple[str, MouthOptions | None]:
    """A texture method with optional mouth options: ``"warp"`` -> ("warp", None); ``"warp:smooth=0.3"`` ->
    ("warp", MouthOptions(smooth=0.3))."""
    name, _, rest = spec.strip().partition(":")
    return name.strip(), (MouthOptions.parse(rest) if rest.strip() else None)


def smooth_track(track: np.ndarray, strength: float, fps: float = 25.0) -> np.ndarray:
    """Zero-phase smoothing of a track (T, ...) over time: an exponential moving average with coefficient
    ``strength`` per 25 fps frame (converted to ``fps``), forward then backward (no lag, a peak stays where it
    was). ``strength`` 0 returns the input unchanged (the same array)."""
    if strength <= 0 or len(track) < 2:
        return track
    a = float(strength) ** (25.0 / float(fps))
    x = np.asarray(track, np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    for t in range(1, len(x)):
        y[t] = a * y[t - 1] + (1 - a) * x[t]
    for t in range(len(x) - 2, -1, -1):
        y[t] = a * y[t + 1] + (1 - a) * y[t]
    return y.astype(np.asarray(track).dtype)


def feather(mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """``mask`` (h, w) float32 blurred by a Gaussian of ``sigma_px`` (a square kernel, truncated at 3 sigma in x
    and in y); the same array when 0."""
    if sigma_px <= 0:
        return mask
    k = 2 * int(np.ceil(3 * sigma_px)) + 1
    return cv2.GaussianBlur(mask, (k, k), sigma_px, borderType=cv2.BORDER_CONSTANT)


# --------------------------------------------------------------------------- the interior

_UP_MID, _LO_MID = (82, 13, 312), (87, 14, 317)  # middle of the upper / lower inner lip
DEFAULT_CAVITY = np.array([52.0, 24.0, 24.0], np.float32)  # a dark mouth cavity, RGB, when no source shows one


def inner_polygon(points478: np.ndarray) -> np.ndarray:
    """(20, 2) inner-lip contour (face.LIPS_INNER order) of 478/468 points."""
    return np.asarray(points478, np.float64)[face.LIPS_INNER, :2]


def lip_midpoints(points478: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points478, np.float64)[:, :2]
    return p[list(_UP_MID)].mean(0), p[list(_LO_MID)].mean(0)


def polygon_mask(poly: np.ndarray, shape: tuple[int, int], offset=(0.0, 0.0)) -> np.ndarray:
    """(h, w) float32 anti-aliased fill of a polygon given in pixel coordinates (minus ``offset``)."""
    m = np.zeros(shape, np.uint8)
    shift = 4
    pts = np.round((np.asarray(poly, np.float64) - offset) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(m, [pts], 255, cv2.LINE_AA, shift)
    mask = m.astype(np.float32) / 255.0
    # a thin polygon (closed lips) rasterizes as a line a pixel or two wide: scale the mask to its true area,
    # so a closed mouth has no opening and a barely open one a faint one
    p = np.asarray(poly, np.float64)
    area = 0.5 * abs(float(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))))
    total = float(mask.sum())
    if total > 0 and area < 0.7 * total:  # mostly edge: fade out (a wide polygon's edge overdraw is kept)
        mask *= area / (0.7 * total)
    return mask


class InteriorSource:
    """A real mouth interior to fill holes from: an aligned mouth crop and its 478 points in crop pixels."""

    def __init__(self, crop: np.ndarray, points: np.ndarray):
        self.crop = np.ascontiguousarray(crop)
        self.points = np.asarray(points, np.float32)[:, :2]
        size = crop.shape[:2]
        hole = polygon_mask(inner_polygon(self.points), size)
        self.hole = cv2.erode(hole, np.ones((3, 3), np.uint8))  # keep the lips' own edge out of the interior
        self.up, self.lo = lip_midpoints(self.points)
        self.opening = float(np.linalg.norm(self.lo - self.up)) / crop.shape[0]
        ymid = (self.up[1] + self.lo[1]) / 2
        rows = np.arange(size[0], dtype=np.float32)[:, None]
        self.upper = self.hole * (rows < ymid)
        self.lower = self.hole * (rows >= ymid)
        inside = self.crop[self.hole > 0.5]
        if len(inside) >= 12:
            lum = inside.astype(np.float32).mean(1)
            self.cavity = inside[lum <= np.quantile(lum, 0.3)].astype(np.float32).mean(0)
        else:
            self.cavity = DEFAULT_CAVITY.copy()
        self.rgb = self.crop.astype(np.float32)
        self.masks = np.dstack([self.upper, self.lower, np.zeros_like(self.upper)])  # (S, S, 3)
        self._reach: dict[int, np.ndarray] = {0: self.masks}

    def layer_masks(self, reach_px: float = 0.0) -> np.ndarray:
        """The two layers' masks (S, S, 3: upper, lower, 0), each dilated by ``reach_px`` crop pixels (rounded):
        a layer then also brings the source's own inner lip edge, so a target opening a little larger than the
        source's shows lip there, not a hard line of cavity colour (``MouthOptions.fill_reach_cm``)."""
        r = int(round(max(0.0, reach_px)))
        if r not in self._reach:
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
            self._reach[r] = np.ascontiguousarray(cv2.dilate(self.masks, k))
        return self._reach[r]


def fill_interior(source: InteriorSource, qx: np.ndarray, qy: np.ndarray, tgt_points: np.ndarray,
                  scale: float = 1.0, reach_px: float = 0.0) -> np.ndarray:
    """RGB float32 (h, w, 3) of the interior at target positions (qx, qy), given in the target's aligned crop
    pixels at the source crop's size (``scale`` multiplies them first). ``tgt_points``: the target's 478
    points in those crop pixels. Upper teeth follow the upper lip, lower teeth the lower lip, each as a rigid
    layer; where neither layer shows, the cavity colour. ``reach_px``: the layers reach this far (source crop
    pixels) beyond the source's opening (``InteriorSource.layer_masks``)."""
    t_up, t_lo = lip_midpoints(np.asarray(tgt_points, np.float64) * scale)
    du, dl = source.up - t_up, source.lo - t_lo
    qx = (qx * scale).astype(np.float32)
    qy = (qy * scale).astype(np.float32)
    masks = source.layer_masks(reach_px)

    def layer(d: np.ndarray, channel: int) -> tuple[np.ndarray, np.ndarray]:
        mx, my = qx + np.float32(d[0]), qy + np.float32(d[1])
        rgb = cv2.remap(source.rgb, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        a = cv2.remap(masks, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return rgb, np.clip(a[..., channel:channel + 1], 0, 1)

    up, a_up = layer(du, 0)
    lo, a_lo = layer(dl, 1)
    cavity = source.cavity[None, None, :]
    lower = a_lo * lo + (1 - a_lo) * cavity
    return a_up * up + (1 - a_up) * lower


def cover_stale(warped: np.ndarray, tri: np.ndarray, src_points: np.ndarray, offset=(0.0, 0.0)) -> np.ndarray:
    """Pixels of the source's own lip opening that no moved triangle covers would keep the source's teeth or
    cavity (a mouth closing from an open smile showed stripes of squashed teeth): fill them from the lips
    around them (inpainting). ``warped``: uint8 box from ``warp.warp_region`` (filled in place and returned),
    ``tri`` its covering map."""
    h, w = tri.shape
    poly = inner_polygon(src_points) - offset
    # only around the source's opening (its polygon's box; margin 8 px: inpainting reads 3 px around the hole)
    m = 8
    x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int) - m, 0)
    x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + 1 + m, (w, h))
    if x1 <= x0 or y1 <= y0:
        return warped
    stale = (polygon_mask(poly, (y1 - y0, x1 - x0), (x0, y0)) > 0.2) & (tri[y0:y1, x0:x1] < 0)
    if not stale.any():
        return warped
    out = warped  # in place: the caller's fresh box
    out[y0:y1, x0:x1] = cv2.inpaint(np.ascontiguousarray(warped[y0:y1, x0:x1]), stale.astype(np.uint8), 3,
                                    cv2.INPAINT_TELEA)
    return out


SEAM_CM = 0.07  # width of the dark line where closed lips meet


def closed_seam(out: np.ndarray, points: np.ndarray, px_per_cm: float, offset, cavity: np.ndarray,
                strength: float, sigma_px: float = 0.0) -> np.ndarray:
    """Where the target's lips (nearly) meet, the thin dark line real closed lips show between them, along the
    inner lip contour; it fades out as the mouth opens (then the opening itself is dark). Without it, lips
    closed from an open photo met in a pale seam that reads as a slightly open mouth. ``out``: float32 box;
    ``strength``: the line's opacity when the lips touch (``MouthOptions.seam_alpha``); ``sigma_px``: its
    feather (``MouthOptions.feather_cm`` in pixels). Painted in place (only around the line: beyond the line's
    thickness and the feather's kernel nothing changes) and returned."""
    up, lo = lip_midpoints(points)
    width = max(1.0, SEAM_CM * px_per_cm)
    alpha = strength * float(np.clip(1.0 - np.linalg.norm(up - lo) / (3.0 * width), 0.0, 1.0))
    if alpha <= 0:
        return out
    line = np.asarray(points, np.float64)[[78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308], :2] - offset
    thickness = max(1, int(round(width)))
    m = thickness // 2 + 3 + (int(np.ceil(3 * sigma_px)) if sigma_px > 0 else 0)  # line, anti-aliasing, kernel
    h, w = out.shape[:2]
    x0, y0 = np.maximum(np.floor(line.min(0)).astype(int) - m, 0)
    x1, y1 = np.minimum(np.ceil(line.max(0)).astype(int) + m + 1, (w, h))
    if x1 <= x0 or y1 <= y0:
        return out
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.polylines(mask, [np.round((line - (x0, y0)) * 16).astype(np.int32)], False, 255, thickness, cv2.LINE_AA, 4)
    a = (feather(mask.astype(np.float32) / 255.0, sigma_px) * alpha)[..., None]
    out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - a) + cavity[None, None, :] * a
    return out


def hole_and_band(points: np.ndarray, shape: tuple[int, int], band_px: float, offset=(0.0, 0.0)
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The lip opening (anti-aliased) and the band where the refine network may act: the opening and the
    inner lip line, dilated by ``band_px`` pixels and feathered. ``points``: 478 points in the same pixels."""
    inner = inner_polygon(points) - offset
    hole = polygon_mask(inner, shape)
    seam = np.zeros(shape, np.uint8)
    cv2.polylines(seam, [np.round(inner * 16).astype(np.int32)], True, 255, 2, cv2.LINE_AA, 4)
    core = np.maximum(seam, (hole * 255).astype(np.uint8))
    k = max(1, int(round(band_px)))
    band = cv2.dilate(core, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    band = cv2.GaussianBlur(band, (0, 0), max(0.5, k / 3))
    return hole, band.astype(np.float32) / 255.0


BAND_CM = 0.35  # how far outside the lip opening the refine network may change pixels


def paint_opening(out: np.ndarray, hole: np.ndarray, points: np.ndarray, px_per_cm: float, offset,
                  interior: InteriorSource | None, options: MouthOptions,
                  to_interior: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Finish the lip opening as the renderer does (``MouthPainter.prepare``, and ``compose_crop`` for the refine
    network's training pairs): the opening's edge feathered by ``options.feather_cm``, the closed-lip seam drawn,
    the opening filled from ``interior``. ``out``: float32 box whose pixel (0, 0) is point ``offset`` of the
    points' frame; ``hole``: the opening (``polygon_mask``); ``points``: the target's 468/478 points;
    ``to_interior``: (2, 3) affine from the points' frame to the interior source's crop (None without one).
    Returns the painted box (``out`` itself where it could be painted in place) and the feathered hole."""
    sigma = options.feather_cm * px_per_cm
    hole = feather(hole, sigma)  # the opening's soft edge (the same array when feather_cm is 0)
    out = closed_seam(out, points, px_per_cm, offset, interior.cavity if interior is not None else DEFAULT_CAVITY,
                      options.seam_alpha, sigma)
    if interior is not None and hole.max() > 0:
        x0, y0 = offset
        ys, xs = np.nonzero(hole > 0)
        hy0, hy1, hx0, hx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        a = to_interior
        gy, gx = np.mgrid[hy0 + y0:hy1 + y0, hx0 + x0:hx1 + x0].astype(np.float64)
        qx = a[0, 0] * gx + a[0, 1] * gy + a[0, 2]
        qy = a[1, 0] * gx + a[1, 1] * gy + a[1, 2]
        fill = fill_interior(interior, qx, qy, face.apply_affine(points, a),
                             reach_px=options.fill_reach_cm * interior.crop.shape[0] / (2 * CROP_HALF))
        h = hole[hy0:hy1, hx0:hx1, None]
        out[hy0:hy1, hx0:hx1] = out[hy0:hy1, hx0:hx1] * (1 - h) + fill * h
    return out, hole


def compose_crop(src_crop: np.ndarray, src_points: np.ndarray, tgt_points: np.ndarray,
                 interior: InteriorSource | None, options: MouthOptions | None = None) -> dict[str, np.ndarray]:
    """Warp an aligned crop's pixels to ``tgt_points`` and fill the opening (the refine network's input, in
    crop space; used for training, where source and target are frames of one clip). The opening is blended
    and the closed-lip seam drawn as ``MouthPainter.prepare`` does with the same ``options``, so the network
    trains on what it gets when rendering."""
    opt = options or MouthOptions()
    s = src_crop.shape[0]
    px_per_cm = s / (2 * CROP_HALF)
    src = warp.extend_points(src_points)
    dst = warp.extend_points(src_points, tgt_points)
    tris = warp.extended_triangles()
    dst, _ = warp.safe_target(src, dst, tris)
    moved = tris[warp.moved_triangles(src, dst, tris)]
    warped, tri = warp.warp_region(src_crop, src, dst, moved, (0, 0, s, s))
    warped = cover_stale(warped, tri, src)
    stretch = warp.stretch_map(src, dst, moved, tri)
    tgt = dst[: face.N_MESH]
    hole, band = hole_and_band(tgt, (s, s), BAND_CM * px_per_cm)
    k = interior.crop.shape[0] / s if interior is not None else 1.0  # this crop -> the interior's (same square)
    out, _ = paint_opening(warped.astype(np.float32), hole, tgt, px_per_cm, (0, 0), interior, opt,
                           np.array([[k, 0.0, 0.0], [0.0, k, 0.0]]))
    return {"image": out, "hole": hole, "band": band, "stretch": stretch, "points": tgt}


# --------------------------------------------------------------------------- the refine network



@dataclass(frozen=True)
class RefineConfig:
    size: int = CROP_SIZE  # aligned mouth crop side (8 x 8 cm of the canonical face)
    width: int = 16  # channels at half resolution
    levels: int = 3  # further down-sampling steps: 64 -> 8
    full: int = 8  # channels of the full-resolution path
    top: int = 0  # the network sees crop rows [top, top + rows): the band around the lips lies there
    rows: int = 96
    lowpass: int = 1  # > 1: the colour residual is averaged over lowpass x lowpass pixels (it shades, cannot blur)
    disc_width: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


IN_CHANNELS = 6  # warped RGB, hole, band, log stretch


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class RefineNet(nn.Module):
    """Small U-Net on the mouth crop: (B, 6, S, S) -> residual (B, 3, S, S) and alpha (B, 1, S, S).

    Channels in: warped image in [-1, 1] (3), hole (1), band (1), log2 of the triangle stretch / 2 (1).
    alpha = sigmoid(logit) * band, so the network cannot change a pixel outside the band. Sized for 2 CPU cores:
    it runs only on the crop rows [top, top + rows) that hold the lips (outside them residual and alpha are 0),
    the U-Net starts at half resolution, and a thin full-resolution path keeps the crop's own detail (about
    3 ms per crop on one core)."""

    def __init__(self, config: RefineConfig = RefineConfig()):
        super().__init__()
        self.config = c = config
        ch = [min(c.width * 2**i, c.width * 4) for i in range(c.levels + 1)]
        self.fullres = nn.Sequential(nn.Conv2d(IN_CHANNELS, c.full, 3, padding=1), _act())
        self.stem = nn.Sequential(nn.Conv2d(IN_CHANNELS, ch[0], 4, 2, 1), _act())
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1), _act(),
                                                nn.Conv2d(ch[i + 1], ch[i + 1], 3, padding=1), _act())
                                  for i in range(c.levels))
        self.up = nn.ModuleList(nn.Sequential(nn.Conv2d(ch[i + 1] + ch[i], ch[i], 3, padding=1), _act())
                                for i in reversed(range(c.levels)))
        self.lift = nn.Sequential(nn.ConvTranspose2d(ch[0], c.full, 4, 2, 1), _act())
        self.out = nn.Conv2d(2 * c.full, 4, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, 0.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        w = x[:, :, c.top:c.top + c.rows]
        skips = [self.stem(w)]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in self.up:
            skip = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        o = self.out(torch.cat([self.lift(h), self.fullres(w)], dim=1))
        pad = (0, 0, c.top, x.shape[2] - c.top - o.shape[2])
        residual = 2.0 * torch.tanh(o[:, :3])
        if c.lowpass > 1:  # only smooth corrections (colour, shading): the warped pixels' detail stays
            residual = F.interpolate(F.avg_pool2d(residual, c.lowpass, ceil_mode=True), size=residual.shape[-2:],
                                     mode="bilinear", align_corners=False)
        residual = F.pad(residual, pad)
        alpha = F.pad(torch.sigmoid(o[:, 3:4] + 2.0), pad) * x[:, 4:5]  # starts mostly open inside the band
        return residual, alpha

    @staticmethod
    def apply(x: torch.Tensor, residual: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return (x[:, :3] + alpha * residual).clamp(-1, 1)


def refine_input(image: np.ndarray, hole: np.ndarray, band: np.ndarray, stretch: np.ndarray) -> np.ndarray:
    """(S, S, 3) float 0..255 + three (S, S) maps -> (6, S, S) float32 network input."""
    img = image.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    st = np.clip(np.log2(np.maximum(stretch, 1e-3)) / 2.0, -1.5, 1.5)
    return np.concatenate([img, hole[None], band[None], st[None].astype(np.float32)]).astype(np.float32)


class PatchDiscriminator(nn.Module):
    """(image * band, band) (B, 4, S, S) -> patch logits and features; judges only the mouth region."""

    def __init__(self, config: RefineConfig = RefineConfig()):
        super().__init__()
        w = config.disc_width
        sn = nn.utils.spectral_norm
        self.layers = nn.ModuleList([
            nn.Sequential(sn(nn.Conv2d(4, w, 4, 2, 1)), nn.LeakyReLU(0.2)),
            nn.Sequential(sn(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2)),
            nn.Sequential(sn(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2)),
            nn.Sequential(sn(nn.Conv2d(4 * w, 4 * w, 3, 1, 1)), nn.LeakyReLU(0.2)),
        ])
        self.head = sn(nn.Conv2d(4 * w, 1, 3, 1, 1))

    def forward(self, image: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = torch.cat([image * region, region], dim=1)
        feats = []
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        return self.head(h), feats


# --------------------------------------------------------------------------- rendering

INTERIOR_SIZE = 160  # side of the interior sources' aligned crops (20 px per cm)


# how far the outer lip follows its inner lip when a photo's open mouth is closed to rest: the lips thicken as they
# close (and the band FaceMesh calls lip, which on a toothy smile holds a row of teeth, is compressed rather than
# carried whole onto the closed mouth)
OUTER_FOLLOW = 0.4


def neutral_rest(mouth: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """A canonical mouth (59, 3) with the lips closed: each inner-lip pair meets at its midline, the outer lips
    and the chin follow their lip (``amount`` in [0, 1]: 0 keeps the shape, 1 closes fully). The photo's
    open smile or talking mouth does not come back in every pause."""
    m = np.array(mouth, np.float64, copy=True)
    mi = warp._MI
    amount = float(np.clip(amount, 0.0, 1.0))
    lower_shift = np.zeros(3)
    for u_in, l_in, u_out, l_out in zip(warp.UPPER_INNER, warp.LOWER_INNER, warp.UPPER_OUTER, warp.LOWER_OUTER,
                                        strict=True):
        gap = m[mi[u_in], 1] - m[mi[l_in], 1]  # > 0 when open (y up)
        if gap <= 0:
            continue
        down, up = 0.35 * gap * amount, 0.65 * gap * amount  # the jaw closes more than the upper lip drops
        m[mi[u_in], 1] -= down
        m[mi[u_out], 1] -= OUTER_FOLLOW * down
        m[mi[l_in], 1] += up
        m[mi[l_out], 1] += OUTER_FOLLOW * up
        if u_in == 13:
            lower_shift[1] = up
    jaw = np.arange(len(face.LIPS_OUTER) + len(face.LIPS_INNER), len(face.MOUTH))
    m[jaw] += warp.mouth_weights()[jaw, None] * lower_shift[None]
    return m


def is_greyscale(image: np.ndarray, box: tuple[int, int, int, int] | None = None) -> bool:
    """True when the (face region of the) image has no colour: a black-and-white photo."""
    x0, y0, x1, y1 = box or (0, 0, image.shape[1], image.shape[0])
    roi = image[y0:y1, x0:x1].astype(np.int16)
    if roi.size == 0:
        return False
    spread = roi.max(axis=2) - roi.min(axis=2)
    return float(np.percentile(spread, 90)) <= 6


def match_colour(source: InteriorSource, target_crop: np.ndarray, grey: bool) -> InteriorSource:
    """A donor interior adjusted to the target face: the donor's lighting (its skin's colour and brightness)
    turned into the target's by a gain per channel, so teeth lit by a yellow lamp do not come out orange on a
    face in daylight; greyscale for a black-and-white face."""
    rgb = source.crop.astype(np.float32)
    around = cv2.dilate((source.hole > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    d_skin = np.median(rgb[around], axis=0) + 1.0
    t_skin = np.median(target_crop.reshape(-1, 3).astype(np.float32), axis=0) + 1.0
    rgb = rgb * np.clip(t_skin / d_skin, 0.5, 2.0)[None, None, :]
    if grey:
        rgb = np.repeat(rgb.mean(2, keepdims=True), 3, axis=2)
    return InteriorSource(np.clip(rgb, 0, 255).astype(np.uint8), source.points)


def teeth_score(source: InteriorSource) -> float:
    """How much the upper part of the opening looks like teeth: bright and colourless against the skin around
    it (about 1 for clearly visible upper teeth, below 0.4 for a dark cavity or a tongue)."""
    rgb = source.crop.astype(np.float32)
    lum = rgb.mean(2)
    sat = (rgb.max(2) - rgb.min(2)) / (lum + 1.0)
    around = cv2.dilate((source.hole > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    upper = (source.hole > 0.5) & (source.upper > 0.5)
    if upper.sum() < 12 or not around.any():
        return 0.0
    skin_lum, skin_sat = float(np.median(lum[around])) + 1.0, float(np.median(sat[around])) + 1e-3
    return float(np.percentile(lum[upper], 80) / skin_lum - 0.5 * np.percentile(sat[upper], 20) / skin_sat)


def load_donors() -> list[InteriorSource]:
    """The shipped interior donors: open mouths from GRID training clips (CC BY 4.0, see assets/NOTICE)."""
    from importlib import resources

    ref = resources.files("talkingface.assets").joinpath("mouth_donors.npz")
    if not ref.is_file():
        return []
    with ref.open("rb") as f:
        d = np.load(f)
        return [InteriorSource(c, p) for c, p in zip(d["crops"], d["points"], strict=True)]


class MouthPainter:
    """Paints target mouths into frames: warp at native resolution, interior, refine (see the module doc).

    ``refine=None`` is the warp-only variant (no network). Not thread-safe (one render at a time)."""

    def __init__(self, refine: RefineNet | None = None, device: str | torch.device = "cpu",
                 options: MouthOptions | None = None):
        self.options = options or MouthOptions()
        self.refine = refine.to(device).eval() if refine is not None else None
        self.device = torch.device(device)
        self.size = refine.config.size if refine is not None else CROP_SIZE
        self.tris = warp.extended_triangles()

    def prepare(self, frame: np.ndarray, landmarks: np.ndarray, ff: face.FaceFrame, target: np.ndarray,
                rest: np.ndarray, interior: InteriorSource | None, own: np.ndarray | None = None) -> dict | None:
        """Geometry, warp and interior of one frame. ``landmarks``: the frame's own 478 (or 468) points, (x, y, z)
        or, with ``own`` (the frame's mouth (59, 3) canonical), (x, y); ``target``: the mouth (59, 3) canonical
        to show; ``rest``: the person's resting mouth (for the clamp). Returns None when nothing moves."""
        tgt468 = warp.target_points(landmarks, ff, warp.clamp_mouth(target, rest), own)
        src = warp.extend_points(landmarks)
        dst, _ = warp.safe_target(src, warp.extend_points(landmarks, tgt468), self.tris)
        moved = self.tris[warp.moved_triangles(src, dst, self.tris)]
        box = warp.triangles_box(np.vstack([src, dst]), moved, frame.shape[:2], pad=3)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        warped, tri = warp.warp_region(frame, src, dst, moved, box)
        warped = cover_stale(warped, tri, src, offset=(x0, y0))
        out = warped.astype(np.float32)
        tgt = dst[: face.N_MESH]
        a_net = crop_affine(ff, self.size)
        px_per_cm = self.size / (2 * CROP_HALF) / float(np.sqrt(abs(np.linalg.det(a_net[:, :2]))))
        if self.refine is not None:
            hole, band = hole_and_band(tgt, (y1 - y0, x1 - x0), BAND_CM * px_per_cm, offset=(x0, y0))
        else:  # the band is only the refine network's
            hole, band = polygon_mask(inner_polygon(tgt) - (x0, y0), (y1 - y0, x1 - x0)), None
        to_interior = crop_affine(ff, interior.crop.shape[0]) if interior is not None else None
        out, hole = paint_opening(out, hole, tgt, px_per_cm, (x0, y0), interior, self.options, to_interior)
        job = {"box": box, "image": out, "hole": hole, "band": band}  # band: None without the refine network
        if self.refine is not None:
            shifted = a_net.astype(np.float64).copy()
            shifted[:, 2] += a_net[:, :2] @ np.array([x0, y0], np.float64)
            crop = face.warp_crop(np.clip(out, 0, 255).astype(np.uint8), shifted, self.size)
            stretch = cv2.warpAffine(warp.stretch_map(src, dst, moved, tri), shifted, (self.size, self.size),
                                     flags=cv2.INTER_NEAREST, borderValue=1.0)
            c_hole, c_band = hole_and_band(face.apply_affine(tgt, a_net), (self.size, self.size),
                                           BAND_CM / (2 * CROP_HALF) * self.size)
            job["x"] = refine_input(crop, c_hole, c_band, stretch)
            job["affine"] = shifted
        return job

    def smooth_track(self, track: np.ndarray, fps: float = 25.0) -> np.ndarray:
        """The target mouth track (T, 59, 3) smoothed over time by ``options.smooth`` (zero-phase, see
        ``smooth_track``); the same array when it is 0."""
        return smooth_track(track, self.options.smooth, fps)

    @torch.no_grad()
    def refine_batch(self, jobs: list[dict]) -> None:
        """Run the refine network on prepared jobs (in place: adds the residual at native resolution)."""
        todo = [j for j in jobs if j is not None and "x" in j]
        if not todo or self.refine is None:
            return
        x = torch.from_numpy(np.stack([j["x"] for j in todo])).to(self.device)
        residual, alpha = self.refine(x)
        delta = (alpha * residual).mul(127.5).permute(0, 2, 3, 1).cpu().numpy()  # (B, S, S, 3) in 0..255 units
        for j, d in zip(todo, delta, strict=True):
            x0, y0, x1, y1 = j["box"]
            up = cv2.warpAffine(d, j["affine"], (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            j["image"] += up * (j["band"] > 0)[..., None]  # outside the band: the warped pixels, exactly

    @staticmethod
    def finish(frame: np.ndarray, job: dict | None, weight: float = 1.0, inplace: bool = False) -> np.ndarray:
        """The frame with the painted box (``weight`` < 1 fades towards the input: dubbing's pass-through);
        ``inplace``: painted on ``frame`` itself (a full-frame copy saved) instead of a copy."""
        if job is None:
            return frame
        x0, y0, x1, y1 = job["box"]
        out = frame if inplace else frame.copy()
        img = job["image"]
        if weight < 1.0:
            img = frame[y0:y1, x0:x1].astype(np.float32) * (1 - weight) + img * weight
        img = img + 0.5
        np.maximum(img, 0, out=img)
        np.minimum(img, 255, out=img)
        out[y0:y1, x0:x1] = img  # truncates, as astype(np.uint8)
        return out
