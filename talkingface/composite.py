"""Compositing: put a generated mouth crop back into the full frame without a seam.

The crop came from the frame through the affine ``A`` of the face's pose (face.FaceFrame.crop_affine);
the generated crop goes back through ``A^-1`` into the smallest region of the frame it covers. The blend
mask follows the face mesh: the lower-face polygon (jaw line and the line under the nose) of both the
original and the target mouth, so an opened jaw covers the old chin and a closed one covers the old open
mouth; it is limited to where the generator paints, then feathered. A mean colour offset measured in the
feather band is removed from the generated pixels so no colour step shows at the edge.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import face
from .texture import generator_mask

_N_LIPS = len(face.LIPS_OUTER) + len(face.LIPS_INNER)


def lower_face_polygon(mouth_pts: np.ndarray, nose_pts: np.ndarray) -> np.ndarray:
    """Closed polygon (N, 2) of jaw (from face.MOUTH points) and the nose-bottom line, crop pixels."""
    jaw = mouth_pts[_N_LIPS:]  # (19, 2) right ear -> chin -> left ear
    return np.concatenate([jaw, nose_pts], axis=0)  # nose_pts: face.NOSE_LINE, which continues face.JAW


class Compositor:
    """Blends generated crops into frames. Built per target face (its crop affine and original mouth)."""

    def __init__(self, frame_shape: tuple[int, int], affine: np.ndarray, size: int, orig_mouth: np.ndarray,
                 nose_pts: np.ndarray, *, feather: float = 0.06):
        self.h, self.w = frame_shape
        self.size = size
        self.inv = cv2.invertAffineTransform(affine)  # crop -> frame
        self.gen_mask = generator_mask(size)
        self.nose_pts = nose_pts
        self.orig_poly = lower_face_polygon(orig_mouth, nose_pts)
        self.blur = max(3, int(round(feather * size)) | 1)  # odd Gaussian kernel, ~8 px at 128
        # frame region covered by the crop (clipped), where all per-frame work happens
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ self.inv.T
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        self.box = (max(0, x0), max(0, y0), min(self.w, x1), min(self.h, y1))
        bx, by = self.box[:2]
        self.inv_roi = self.inv.copy()
        self.inv_roi[:, 2] -= (bx, by)

    def mask(self, target_mouth: np.ndarray) -> np.ndarray:
        """(S, S) float32 soft blend mask in crop space for a target mouth (59, 2) in crop pixels."""
        m = np.zeros((self.size, self.size), np.uint8)
        for poly in (self.orig_poly, lower_face_polygon(target_mouth, self.nose_pts)):
            cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 255)
        k = max(3, self.blur // 2 * 2 + 1)
        m = cv2.dilate(m, np.ones((k, k), np.uint8))
        m = m.astype(np.float32) / 255.0 * self.gen_mask
        # erode from the generator mask's border so the feather never reaches unpainted pixels
        m = cv2.erode(m, np.ones((self.blur, self.blur), np.uint8))
        return cv2.GaussianBlur(m, (self.blur * 2 + 1, self.blur * 2 + 1), 0)

    def __call__(self, frame: np.ndarray, generated: np.ndarray, original_crop: np.ndarray,
                 target_mouth: np.ndarray, weight: float = 1.0) -> np.ndarray:
        """frame (H, W, 3) uint8 (not modified), generated/original crops (S, S, 3) uint8 -> new frame.
        ``weight`` in [0, 1] scales the blend (fades between dubbed and passed-through video frames)."""
        alpha = self.mask(target_mouth) * float(weight)  # (S, S)
        gen = generated.astype(np.float32)
        band = (alpha > 0.05 * weight) & (alpha < 0.6 * weight)
        if band.sum() > 20:  # colour match in the feather band
            gen += (original_crop[band].astype(np.float32).mean(0) - gen[band].mean(0)) * (alpha[..., None] > 0)
        x0, y0, x1, y1 = self.box
        roi_w, roi_h = x1 - x0, y1 - y0
        if roi_w <= 0 or roi_h <= 0:
            return frame
        warped = cv2.warpAffine(gen, self.inv_roi, (roi_w, roi_h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        a = cv2.warpAffine(alpha, self.inv_roi, (roi_w, roi_h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
        out = frame.copy()
        roi = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(roi * (1 - a) + warped * a + 0.5, 0, 255).astype(np.uint8)
        return out
