"""Forward/backward through every model, checkpoint round trips with the hash check, golden slices."""
import json

import numpy as np
import pytest
import torch

from pathlib import Path

from talkingface import checkpoints
from talkingface.errors import CheckpointError
from talkingface.landmarks import LandmarkConfig, LandmarkModel, build
from talkingface.texture import MouthGenerator, PatchDiscriminator, TextureConfig, draw_sketch, generator_mask

ROOT = Path(__file__).resolve().parent.parent
TINY_LM = LandmarkConfig(feature_dim=24, hidden=16, n_pca=4, layers=2)
TINY_TEX = TextureConfig(size=64, width=8, levels=4, disc_width=8)


def _all_params_have_grad(module: torch.nn.Module) -> None:
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a gradient: {missing}"
    assert any(p.grad.abs().sum() > 0 for p in module.parameters())


def test_landmark_model_forward_backward():
    torch.manual_seed(0)
    model = LandmarkModel(TINY_LM)
    model.pca_basis.normal_()
    out = model(torch.randn(3, 20, 24))
    assert out.shape == (3, 20, 59, 3)
    out.pow(2).mean().backward()
    _all_params_have_grad(model)


def test_landmark_model_predict_scales_to_cm():
    torch.manual_seed(0)
    model = LandmarkModel(TINY_LM)
    model.pca_basis.normal_()
    model.cm_per_unit.fill_(2.0)
    x = torch.randn(10, 24)
    assert model.training  # predict() must not leave the model in eval mode
    pred = model.predict(x)
    assert model.training
    model.eval()
    np.testing.assert_allclose(pred.numpy(), 2.0 * model(x[None])[0].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_generator_and_discriminator_forward_backward():
    torch.manual_seed(0)
    gen, disc = MouthGenerator(TINY_TEX), PatchDiscriminator(TINY_TEX)
    ref, masked = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    sketch = torch.rand(2, 1, 64, 64)
    fake = gen(ref, masked, sketch)
    assert fake.shape == (2, 3, 64, 64)
    # outside the generator mask the target's own pixels are kept exactly
    keep = gen.mask == 0
    assert torch.equal(fake[keep.expand_as(fake)], masked[keep.expand_as(masked)])
    logits, feats = disc(fake, sketch)
    assert logits.shape == (2, 1, 8, 8) and len(feats) == 4
    (logits.mean() + fake.mean()).backward()
    _all_params_have_grad(gen)
    _all_params_have_grad(disc)


def test_generator_paint_hides_the_mouth_itself():
    """MouthGenerator.paint is the one home the photo render, the dub, --adapt and training paint through: it hides
    the crop's mouth region with the generator's own mask, so what is under the mask cannot leak into the output,
    and the crop outside it comes back unchanged. (Before, each caller masked the crop with its own copy.)"""
    from talkingface.texture import sketches

    torch.manual_seed(1)
    gen = MouthGenerator(TINY_TEX).eval()
    ref, crop = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    pts = [np.array([[20 + i % 20, 40 + i // 20] for i in range(59)], float)] * 2
    sk = sketches(pts, 64)
    assert sk.shape == (2, 1, 64, 64) and sk.dtype == torch.float32 and sk.max() > 0
    other = torch.where(gen.mask > 0, torch.rand_like(crop), crop)  # a different mouth under the mask
    with torch.no_grad():
        out = gen.paint(ref, crop, sk)
        assert torch.equal(out, gen.paint(ref, other, sk))
        assert torch.equal(out, gen(ref, crop * (1 - gen.mask), sk))
    keep = (gen.mask == 0).expand_as(out)
    assert torch.equal(out[keep], crop[keep])


def _shipped_texture_v1_output() -> np.ndarray:
    """A slice of the shipped texture-v1 generator's output on a fixed input: the bundled photo's aligned face
    crop, its lower half masked, with the mouth sketch of its own landmarks (so the input is a real face)."""
    from talkingface import face, media
    from talkingface.texture import to_tensor

    gen, _ = checkpoints.load_module(checkpoints.resolve("texture-v1"), MouthGenerator, TextureConfig, model="texture")
    size = gen.config.size
    img = media.load_image(ROOT / "demo" / "astronaut.jpg")
    with face.FaceTracker(static=True, max_faces=1) as tracker:
        det = tracker.detect(img)[0]
    affine = face.FaceFrame.fit(det.landmarks).crop_affine(size)
    crop = to_tensor(face.warp_crop(img, affine, size)[None])
    sketch = torch.from_numpy(draw_sketch(face.apply_affine(det.landmarks[face.MOUTH], affine), size))[None, None]
    masked = crop * (1 - torch.from_numpy(generator_mask(size)))
    with torch.no_grad():
        out = gen(crop, masked, sketch)[0]  # (3, S, S) in [-1, 1]
    return out[:, size * 3 // 4, size // 2 - 8: size // 2 + 8].numpy()  # a row through the painted mouth


def test_shipped_generator_golden_slice():
    """Regression on the shipped weights (not a random network): texture-v1's output on the bundled photo
    is pinned. Regenerate tests/fixtures/texture_v1_golden.npy only on purpose (new weights, new kernels)."""
    out = _shipped_texture_v1_output()
    expected = np.load(ROOT / "tests" / "fixtures" / "texture_v1_golden.npy")
    assert out.shape == expected.shape and np.abs(expected).max() > 0.05  # a painted mouth, not zeros
    np.testing.assert_allclose(out, expected, atol=2e-3)


def test_mask_and_sketch():
    m = generator_mask(128)
    assert m[0].sum() == 0 and m[-1].sum() > 80  # nose kept, chin painted
    pts = np.stack([np.linspace(20, 100, 59), np.full(59, 70.0)], 1)
    sk = draw_sketch(pts, 128)
    assert sk.shape == (128, 128) and 0.9 < sk.max() <= 1.0 and sk[60:80].sum() > 0 and sk[:50].sum() == 0


def _save_tiny(tmp_path, name="landmarks-v1"):
    model = LandmarkModel(TINY_LM)
    model.cm_per_unit.fill_(0.5)
    file = f"{name}.safetensors"
    checkpoints.save_module(tmp_path / file, model, TINY_LM, model="landmarks", info={"steps": 3})
    checkpoints.add_to_manifest(tmp_path, name, file, model="landmarks", info={})
    return model


def test_checkpoint_round_trip_with_hash(tmp_path):
    model = _save_tiny(tmp_path)
    path = checkpoints.resolve("landmarks-v1", tmp_path)
    loaded, meta = checkpoints.load_module(path, LandmarkModel, LandmarkConfig, model="landmarks")
    assert meta["config"] == TINY_LM.to_dict() and meta["info"] == {"steps": 3}
    assert loaded.config == TINY_LM
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert manifest["models"]["landmarks-v1"]["sha256"] == checkpoints.sha256_of(path)


def test_checkpoint_tampering_is_detected(tmp_path):
    _save_tiny(tmp_path)
    f = tmp_path / "landmarks-v1.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or modified"):
        checkpoints.resolve("landmarks-v1", tmp_path)


def test_checkpoint_refuses_pickles_wrong_kind_and_overwrites(tmp_path):
    _save_tiny(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="only safetensors"):
        checkpoints.read_checkpoint(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="holds a 'landmarks' model"):
        checkpoints.load_module(tmp_path / "landmarks-v1.safetensors", MouthGenerator, TextureConfig, model="texture")
    with pytest.raises(CheckpointError, match="exists already"):
        checkpoints.add_to_manifest(tmp_path, "landmarks-v1", "landmarks-v1.safetensors", model="landmarks", info={})
    with pytest.raises(CheckpointError, match="no checkpoint named"):
        checkpoints.resolve("texture-v9", tmp_path)


def test_shipped_checkpoints_verify_and_load():
    from talkingface.pipeline import DEFAULT_MODELS

    # the default mouth stage ("warp") has no weights; texture-v1 is still shipped (comparison, --adapt)
    assert DEFAULT_MODELS["texture"] == "warp" or DEFAULT_MODELS["texture"] in checkpoints.read_manifest()
    for kind, name, cls, cfg in (("landmarks", DEFAULT_MODELS["landmarks"], build, LandmarkConfig),
                                 ("landmarks", "landmarks-v1", build, LandmarkConfig),
                                 ("texture", "texture-v1", MouthGenerator, TextureConfig)):
        path = checkpoints.resolve(name)
        model, meta = checkpoints.load_module(path, cls, cfg, model=kind)
        assert meta["info"].get("steps", 0) > 0  # trained, not initialized
