import numpy as np

from talkingface import face
from talkingface.composite import Compositor


def _setup(tracker, astronaut, size=128):

    lm = tracker.detect(astronaut)[0].landmarks
    aff = face.FaceFrame.fit(lm).crop_affine(size)
    to_crop = lambda p: face.apply_affine(p, aff)  # noqa: E731
    crop = face.warp_crop(astronaut, aff, size, replicate_border=False)
    comp = Compositor(astronaut.shape[:2], aff, size, to_crop(lm[face.MOUTH]), to_crop(lm[face.NOSE_LINE]))
    return comp, crop, to_crop(lm[face.MOUTH]), lm


def test_identity_composite_leaves_no_seam(tracker, astronaut):
    comp, crop, mouth, _ = _setup(tracker, astronaut)
    out = comp(astronaut, crop, crop, mouth)
    diff = np.abs(out.astype(int) - astronaut.astype(int))
    assert diff.max() <= 40  # only resampling error from the round trip through the crop
    assert diff.mean() < 0.5


def test_composite_changes_only_the_lower_face(tracker, astronaut):
    comp, crop, mouth, lm = _setup(tracker, astronaut)
    red = np.zeros_like(crop)
    red[..., 0] = 255
    out = comp(astronaut, red, crop, mouth)
    changed = np.abs(out.astype(int) - astronaut.astype(int)).sum(-1) > 30
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 500
    nose_y = lm[2, 1]
    assert ys.min() >= nose_y - 5  # nothing above the nose is touched
    assert xs.min() >= lm[:, 0].min() - 10 and xs.max() <= lm[:, 0].max() + 10
    # the mask is feathered: between untouched and fully replaced pixels there is a soft band
    mask = comp.mask(mouth)
    assert ((mask > 0.05) & (mask < 0.95)).sum() > 100


def test_mask_covers_an_opened_jaw(tracker, astronaut):
    comp, _, mouth, _ = _setup(tracker, astronaut)
    opened = mouth.copy()
    opened[len(face.LIPS_OUTER) + len(face.LIPS_INNER):, 1] += 8  # jaw 8 px lower
    assert comp.mask(opened).sum() > comp.mask(mouth).sum()
