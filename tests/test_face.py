import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from talkingface import face
from talkingface.errors import NoFaceError


def test_canonical_mesh_and_rigid_points():
    mesh = face.canonical_mesh()
    assert mesh.shape == (468, 3)
    rigid = face.rigid_indices()
    assert len(rigid) > 150
    assert not set(rigid) & set(face.MOUTH)  # lips and jaw never steer the normalization


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    rot = Rotation.from_euler("xyz", [10, -25, 5], degrees=True).as_matrix()
    dst = 2.5 * src @ rot.T + np.array([1.0, -2.0, 3.0])
    s, r, t = face.umeyama(src, dst)
    assert s == pytest.approx(2.5, rel=1e-6)
    np.testing.assert_allclose(r, rot, atol=1e-6)
    np.testing.assert_allclose(t, [1.0, -2.0, 3.0], atol=1e-6)


def test_detect_astronaut(tracker, astronaut):
    faces = tracker.detect(astronaut)
    assert len(faces) == 1
    lm = faces[0].landmarks
    assert lm.shape == (478, 3)
    x0, y0, x1, y1 = faces[0].box
    assert 150 < x0 < x1 < 320 and 40 < y0 < y1 < 260  # her face, upper middle of the 512 px photo
    pose = face.head_pose(lm, astronaut.shape[:2])
    assert abs(pose.yaw) < 30 and abs(pose.roll) < 20


def test_face_frame_round_trip_and_normalization(tracker, astronaut):
    lm = tracker.detect(astronaut)[0].landmarks
    ff = face.FaceFrame.fit(lm)
    canon = ff.to_canonical(lm)
    np.testing.assert_allclose(ff.to_image(canon), lm, atol=1e-3)
    # in the normalized space this face's rigid points sit close to the canonical mesh (cm units)
    err = np.linalg.norm(canon[face.rigid_indices()] - face.canonical_mesh()[face.rigid_indices()], axis=1)
    assert err.mean() < 0.5
    # the same face rotated and scaled in the image normalizes to the same shape
    rot = Rotation.from_euler("z", 20, degrees=True).as_matrix()
    moved = (lm - lm.mean(0)) @ rot.T * 0.6 + lm.mean(0) + np.array([30.0, -10.0, 0.0])
    canon2 = face.FaceFrame.fit(moved.astype(np.float32)).to_canonical(moved)
    np.testing.assert_allclose(canon2[face.MOUTH], canon[face.MOUTH], atol=1e-3)


def test_crop_affine_frames_the_mouth(tracker, astronaut):
    lm = tracker.detect(astronaut)[0].landmarks
    aff = face.FaceFrame.fit(lm).crop_affine(128)
    pts = face.apply_affine(lm[face.MOUTH], aff)
    lips = pts[: len(face.LIPS_OUTER)]
    assert (lips > 5).all() and (lips < 123).all()
    cx, cy = lips.mean(0)
    assert abs(cx - 64) < 10 and 25 < cy < 90  # lips centred horizontally, below the nose
    nose = face.apply_affine(lm[1], aff)
    assert nose[1] < 16  # the nose tip sits at the crop's top edge


def test_mouth_measures_on_canonical_face():
    mesh = face.canonical_mesh()
    assert face.mouth_width(mesh) == pytest.approx(4.92 / 8.9, abs=0.02)
    assert 0 < face.mouth_opening(mesh) < 0.1


def test_pick_face_choices(tracker, astronaut):
    import cv2

    small = cv2.resize(astronaut, (420, 420))
    canvas = np.full((512, 1024, 3), 128, np.uint8)  # a wide photo: FaceMesh alone finds no face here
    canvas[:, :512] = astronaut
    canvas[:420, 604:] = small
    faces = tracker.detect(canvas)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert face.pick_face(faces, None, "two.png") is faces[0]
    assert face.pick_face(faces, 1, "two.png") is faces[1]
    with pytest.raises(NoFaceError, match="face index 5"):
        face.pick_face(faces, 5, "two.png")


def test_no_face(tracker):
    blank = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    faces = tracker.detect(blank)
    with pytest.raises(NoFaceError, match="no face found in 'blank.png'"):
        face.pick_face(faces, None, "blank.png")
