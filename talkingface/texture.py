"""Mouth texture generator: a conditional adversarial network that paints the mouth region of an aligned
crop for given target mouth landmarks, conditioned on the identity.

In the spirit of Song et al. 2019 (conditional adversarial talking faces), Wav2Lip (masked lower face +
reference frame) and IP-LAP (landmark sketch -> image). Names:

* ``ref``    (B, 3, S, S): the identity's crop (the photo, or another frame of the same video in training)
* ``masked`` (B, 3, S, S): the target crop with the mouth/jaw area blanked (``generator_mask``)
* ``sketch`` (B, 1, S, S): target lip contours and jaw line drawn as 1-px lines
* output     (B, 3, S, S): ``masked`` outside the mask, generated inside it; images in [-1, 1].

The discriminator is a PatchGAN (Isola et al. 2017) that sees the image *and* the sketch, so it also
judges whether the mouth matches the requested shape. No pretrained perceptual network exists offline,
so training uses L1 (extra weight on the lips), hinge adversarial loss and discriminator feature matching.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import face

# generator mask in canonical cm: x in [-4.2, 4.2], y below -2.5 (under the nose) to the crop's bottom edge
MASK_X = 4.2
MASK_TOP_Y = -2.5


@dataclass(frozen=True)
class TextureConfig:
    size: int = 128  # crop side in pixels (covers 10 x 10 cm of the canonical face, see face.CROP_*)
    width: int = 16  # channels of the first generator level
    levels: int = 5  # down-sampling steps: 128 -> 4
    disc_width: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


def generator_mask(size: int) -> np.ndarray:
    """(size, size) float32, 1 where the generator paints (mouth, jaw and chin), 0 for kept context."""
    cx, cy, _ = face.CROP_CENTER
    h = face.CROP_HALF
    x0 = int(round((-MASK_X - (cx - h)) / (2 * h) * size))
    x1 = int(round((MASK_X - (cx - h)) / (2 * h) * size))
    y0 = int(round(((cy + h) - MASK_TOP_Y) / (2 * h) * size))
    m = np.zeros((size, size), np.float32)
    m[y0:, x0:x1] = 1.0
    return m


def draw_sketch(points: np.ndarray, size: int) -> np.ndarray:
    """Mouth landmarks in crop pixels (59, 2), face.MOUTH order -> (size, size) float32 line drawing in {0,1}."""
    canvas = np.zeros((size, size), np.uint8)
    n_out, n_in = len(face.LIPS_OUTER), len(face.LIPS_INNER)
    shift = 4  # sub-pixel precision for cv2 drawing
    pts = np.round(points * (1 << shift)).astype(np.int32)
    cv2.polylines(canvas, [pts[:n_out]], True, 255, 1, cv2.LINE_AA, shift)
    cv2.polylines(canvas, [pts[n_out : n_out + n_in]], True, 255, 1, cv2.LINE_AA, shift)
    cv2.polylines(canvas, [pts[n_out + n_in :]], False, 255, 1, cv2.LINE_AA, shift)
    return canvas.astype(np.float32) / 255.0


def sketches(points, size: int) -> torch.Tensor:
    """(B, 1, S, S) float32 sketches of B mouths (each (59, 2) in crop pixels), the generator's third input."""
    return torch.from_numpy(np.stack([draw_sketch(p, size) for p in points])[:, None])


def lip_weight_map(points: np.ndarray, size: int, dilate: int = 6) -> np.ndarray:
    """(size, size) float32, 1 inside the (dilated) outer lip contour: where L1 gets extra weight."""
    m = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m, [np.round(points[: len(face.LIPS_OUTER)]).astype(np.int32)], 255)
    m = cv2.dilate(m, np.ones((dilate, dilate), np.uint8))
    return m.astype(np.float32) / 255.0


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch // 4) or 1, ch)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), _norm(cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), _norm(cout), nn.SiLU(),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class MouthGenerator(nn.Module):
    """U-Net: (ref, masked, sketch) (B, 7, S, S) -> image (B, 3, S, S); context outside the mask is kept."""

    def __init__(self, config: TextureConfig):
        super().__init__()
        self.config = c = config
        chans = [min(c.width * 2**i, c.width * 8) for i in range(c.levels + 1)]  # e.g. 16 32 64 128 128 128
        # full resolution is the costly level on a CPU: one plain conv there, residual blocks below it
        self.stem = nn.Sequential(nn.Conv2d(7, chans[0], 3, padding=1), nn.SiLU())
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1), _Block(chans[i + 1], chans[i + 1]))
            for i in range(c.levels)
        )
        self.mid = _Block(chans[-1], chans[-1])
        self.up = nn.ModuleList(
            _Block(chans[i + 1] + chans[i], chans[i]) if i > 0
            else nn.Sequential(nn.Conv2d(chans[1] + chans[0], chans[0], 3, padding=1), nn.SiLU())
            for i in reversed(range(c.levels))
        )
        self.out = nn.Conv2d(chans[0], 3, 3, padding=1)
        self.register_buffer("mask", torch.from_numpy(generator_mask(c.size))[None, None])  # (1, 1, S, S)

    def paint(self, ref: torch.Tensor, crop: torch.Tensor, sketch: torch.Tensor) -> torch.Tensor:
        """The one way every caller paints a batch of mouths (photo render, dub, --adapt, training): ``crop``'s
        mouth region is hidden (this generator's own mask) and repainted to ``sketch`` in the appearance of ``ref``.
        ref, crop: (B, 3, S, S) in [-1, 1]; sketch: (B, 1, S, S), see :func:`sketches`."""
        return self(ref, crop * (1 - self.mask), sketch)

    def forward(self, ref: torch.Tensor, masked: torch.Tensor, sketch: torch.Tensor) -> torch.Tensor:
        x = torch.cat([ref, masked, sketch], dim=1)  # (B, 7, S, S)
        skips = [self.stem(x)]  # level 0: (B, C0, S, S)
        for down in self.down:
            skips.append(down(skips[-1]))  # (B, Ci, S / 2^i, S / 2^i)
        h = self.mid(skips.pop())
        for up in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = up(torch.cat([h, skip], dim=1))
        painted = torch.tanh(self.out(h))  # (B, 3, S, S)
        return self.mask * painted + (1 - self.mask) * masked


class PatchDiscriminator(nn.Module):
    """(image, sketch) (B, 4, S, S) -> patch logits (B, 1, S/8, S/8) and intermediate features."""

    def __init__(self, config: TextureConfig):
        super().__init__()
        w = config.disc_width
        sn = nn.utils.spectral_norm
        self.layers = nn.ModuleList([
            nn.Sequential(sn(nn.Conv2d(4, w, 4, 2, 1)), nn.LeakyReLU(0.2)),  # S/2
            nn.Sequential(sn(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2)),  # S/4
            nn.Sequential(sn(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2)),  # S/8
            nn.Sequential(sn(nn.Conv2d(4 * w, 4 * w, 3, 1, 1)), nn.LeakyReLU(0.2)),  # S/8
        ])
        self.head = sn(nn.Conv2d(4 * w, 1, 3, 1, 1))

    def forward(self, image: torch.Tensor, sketch: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = torch.cat([image, sketch], dim=1)
        feats = []
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        return self.head(h), feats


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, S, S) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (B, 3, S, S) in [-1, 1] -> uint8 (B, S, S, 3)."""
    x = images.detach().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return x.permute(0, 2, 3, 1).cpu().numpy()
