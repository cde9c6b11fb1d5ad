"""Landmark model: audio features -> mouth landmarks in the pose-normalized 3D face space.

The "LSTM to mouth shape" stage of Suwajanakorn et al. 2017, trained on many speakers instead of one.
Notation: x_t is the audio feature of video frame t, y_t the mouth shape (59 FaceMesh points, lips and
jaw, in canonical-mesh centimetres) *as an offset from the person's own resting mouth*, so the model is
speaker-independent and the identity's mouth geometry is kept. The network predicts K coefficients of a
PCA basis of those offsets (fitted on the training speakers) - a hard low-dimensional prior, which this
little data needs.

Bidirectional: rendering is offline (the whole audio is known), and the mouth moves *before* the sound it
makes (coarticulation, plosive closures), which a causal model cannot see in time; a BiLSTM sees both
sides, so it need not lag. Training targets are divided by each speaker's own motion range so loud and
quiet talkers count alike; the ``cm_per_unit`` buffer turns the prediction back into centimetres (the
user's ``RenderOptions.motion_scale`` multiplies the result afterwards).

The live path (talkingface.live) cannot wait for the end of the utterance: its model is unidirectional
(``bidirectional=False``) on streamable features (``feature_kind="whisper_stream"``), and sees
``conv_kernel // 2`` frames ahead through its input convolution. ``LandmarkStream`` runs such a model frame by
frame, carrying the LSTM's state, with exactly the offline model's output.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from . import face
from .audio import StreamWindow


@dataclass(frozen=True)
class LandmarkConfig:
    feature_kind: str = "whisper"  # audio.AudioFeatureConfig.kind
    feature_dim: int = 384
    fps: int = 25
    n_points: int = len(face.MOUTH)  # 59 (lips outer, lips inner, jaw) in face.MOUTH order
    n_pca: int = 16
    hidden: int = 128
    layers: int = 2
    conv_kernel: int = 5
    dropout: float = 0.3
    bidirectional: bool = True
    # whisper_stream features only: how audio.StreamingWhisper cuts the audio (audio.StreamWindow)
    stream_block: int = 4
    stream_window: int = 50
    stream_lookahead: int = 1
    # > 1: an ensemble (``LandmarkEnsemble``) of that many models of this config, trained apart (other seeds or
    # data); their predictions are averaged
    members: int = 1

    @property
    def lookahead(self) -> int:
        """Frames of features after frame t that its prediction needs (unidirectional models)."""
        return self.conv_kernel // 2

    @property
    def data_key(self) -> str:
        """The name of this model's input features in a prepared dataset (training.prepare)."""
        if self.feature_kind != "whisper_stream":
            return self.feature_kind
        return StreamWindow(self.stream_block, self.stream_window, self.stream_lookahead).key

    def to_dict(self) -> dict:
        return asdict(self)


class LandmarkModel(nn.Module):
    """features (B, T, F) -> mouth offsets (B, T, n_points, 3) in canonical cm (before ``cm_per_unit``)."""

    def __init__(self, config: LandmarkConfig):
        super().__init__()
        self.config = c = config
        self.inp = nn.Sequential(
            nn.LayerNorm(c.feature_dim),
            nn.Dropout(c.dropout),
            nn.Linear(c.feature_dim, c.hidden),
            nn.GELU(),
        )
        self.conv = nn.Conv1d(c.hidden, c.hidden, c.conv_kernel, padding=c.conv_kernel // 2)
        self.lstm = nn.LSTM(
            c.hidden, c.hidden, num_layers=c.layers, batch_first=True,
            bidirectional=c.bidirectional, dropout=c.dropout if c.layers > 1 else 0.0,
        )
        out_dim = c.hidden * (2 if c.bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(out_dim, c.n_pca))
        # PCA basis and per-dimension scale of the (speaker-normalized) offsets: data, saved with the weights
        self.register_buffer("pca_basis", torch.zeros(c.n_pca, c.n_points * 3))  # (K, P*3)
        self.register_buffer("pca_mean", torch.zeros(c.n_points * 3))  # (P*3,)
        self.register_buffer("cm_per_unit", torch.ones(c.n_points * 3))  # (P*3,) cm per normalized unit

    def coefficients(self, feats: torch.Tensor) -> torch.Tensor:
        h = self.inp(feats)  # (B, T, H)
        h = h + torch.nn.functional.gelu(self.conv(h.transpose(1, 2))).transpose(1, 2)  # (B, T, H)
        h, _ = self.lstm(h)  # (B, T, H * dirs)
        return self.head(h)  # (B, T, K)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Normalized offsets (B, T, P, 3): multiply by ``cm_per_unit`` for centimetres."""
        coef = self.coefficients(feats)  # (B, T, K)
        flat = coef @ self.pca_basis + self.pca_mean  # (B, T, P*3)
        return flat.view(*flat.shape[:2], self.config.n_points, 3)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        old = prefix + "motion_scale"  # the buffer's name in checkpoints written before it was renamed
        if old in state_dict:
            state_dict[prefix + "cm_per_unit"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def predict(self, feats: torch.Tensor) -> torch.Tensor:
        """features (T, F) -> offsets in canonical cm (T, P, 3). Eval mode, no batch dimension."""
        was_training = self.training
        self.eval()
        out = self(feats[None])[0]  # (T, P, 3)
        self.train(was_training)
        return out * self.cm_per_unit.view(self.config.n_points, 3)


class LandmarkEnsemble(nn.Module):
    """Several landmark models of one config trained apart (``LandmarkConfig.members``), whose predictions in
    centimetres are averaged: the offline model is three of one recipe with other seeds (landmarks-v2,
    docs/EVALUATION.md), the live model three distilled students (landmarks-live-v7, docs/LIVE.md); each follows
    the real mouths or its teacher better than any of its members alone. Build it from trained models with
    ``from_models``; checkpoints hold the members' tensors as ``members.<i>.*``."""

    def __init__(self, config: LandmarkConfig):
        super().__init__()
        if config.members < 2:
            raise ValueError("an ensemble needs at least two members")
        self.config = config
        self.members = nn.ModuleList(LandmarkModel(replace(config, members=1)) for _ in range(config.members))

    @classmethod
    def from_models(cls, models: list[LandmarkModel]) -> LandmarkEnsemble:
        configs = {replace(m.config, members=1) for m in models}
        if len(configs) != 1:
            raise ValueError(f"ensemble members must share one config, got {len(configs)} different ones")
        ens = cls(replace(configs.pop(), members=len(models)))
        for mine, theirs in zip(ens.members, models):
            mine.load_state_dict(theirs.state_dict())
        return ens.eval()

    @property
    def cm_per_unit(self) -> torch.Tensor:
        return self.members[0].cm_per_unit

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """The members' mean (B, T, P, 3), taken in centimetres and given in the first member's normalized units
        (``LandmarkModel.forward``; a teacher's targets for distillation)."""
        per_point = (self.config.n_points, 3)
        cm = torch.stack([m(feats) * m.cm_per_unit.view(per_point) for m in self.members]).mean(0)
        return cm / self.cm_per_unit.view(per_point)

    @torch.no_grad()
    def predict(self, feats: torch.Tensor) -> torch.Tensor:
        """features (T, F) -> the members' mean offsets in canonical cm (T, P, 3)."""
        return torch.stack([m.predict(feats) for m in self.members]).mean(0)


def build(config: LandmarkConfig) -> LandmarkModel | LandmarkEnsemble:
    """The module a landmark checkpoint's config describes (for ``checkpoints.load_module``)."""
    return LandmarkEnsemble(config) if config.members > 1 else LandmarkModel(config)


class LandmarkStream:
    """A unidirectional LandmarkModel run incrementally: ``push(features)`` -> the predictions (offsets in canonical
    cm, (k, P, 3)) of every frame whose ``lookahead`` frames of features have arrived; ``flush()`` -> the rest
    (the features after the end count as zeros, as the offline model's convolution pads them). The outputs
    equal ``model.predict`` over the whole sequence (tests/test_live.py)."""

    def __init__(self, model: LandmarkModel):
        if model.config.bidirectional:
            raise ValueError("a bidirectional landmark model cannot run live: it needs the whole utterance")
        self.model = model.eval()
        self.reset()

    def reset(self) -> None:
        k = self.model.config.conv_kernel
        self._h = None  # input projections of the frames the convolution still needs
        self._pad = k // 2
        self._state = None  # the LSTM's (h, c)
        self._started = False

    @torch.no_grad()
    def push(self, feats) -> torch.Tensor:
        m, c = self.model, self.model.config
        feats = torch.as_tensor(feats, dtype=torch.float32)
        if len(feats) == 0:
            return torch.zeros(0, c.n_points, 3)
        h = m.inp(feats[None])  # (1, k, H): per frame, causal
        if not self._started:  # the convolution's zero padding before the first frame
            h = torch.cat([torch.zeros(1, self._pad, h.shape[-1]), h], 1)
            self._started = True
        buf = h if self._h is None else torch.cat([self._h, h], 1)
        return self._run(buf)

    def _run(self, buf: torch.Tensor) -> torch.Tensor:
        m, c = self.model, self.model.config
        k = c.conv_kernel
        n_new = buf.shape[1] - (k - 1)  # frames whose whole convolution window is here
        if n_new <= 0:
            self._h = buf
            return torch.zeros(0, c.n_points, 3)
        conv = torch.nn.functional.conv1d(buf.transpose(1, 2), m.conv.weight, m.conv.bias).transpose(1, 2)
        x = buf[:, self._pad: self._pad + n_new] + torch.nn.functional.gelu(conv)  # (1, n_new, H)
        y, self._state = m.lstm(x, self._state)
        self._h = buf[:, n_new:]
        coef = m.head(y)
        flat = coef @ m.pca_basis + m.pca_mean
        return flat.view(n_new, c.n_points, 3) * m.cm_per_unit.view(c.n_points, 3)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        c = self.model.config
        if self._h is None or not self._started:
            return torch.zeros(0, c.n_points, 3)
        buf = torch.cat([self._h, torch.zeros(1, self._pad, self._h.shape[-1])], 1)
        out = self._run(buf)
        self._h = None
        return out


class EnsembleStream:
    """``LandmarkStream`` for a ``LandmarkEnsemble``: one stream per member, each with its own state, averaged
    (equal to the ensemble's ``predict`` over the whole sequence)."""

    def __init__(self, model: LandmarkEnsemble):
        self.model = model.eval()
        self.streams = [LandmarkStream(m) for m in model.members]

    def reset(self) -> None:
        for s in self.streams:
            s.reset()

    def push(self, feats) -> torch.Tensor:
        return torch.stack([s.push(feats) for s in self.streams]).mean(0)

    def flush(self) -> torch.Tensor:
        return torch.stack([s.flush() for s in self.streams]).mean(0)


def open_stream(model: LandmarkModel | LandmarkEnsemble) -> LandmarkStream | EnsembleStream:
    """The incremental runner of a unidirectional landmark model or ensemble (the live path)."""
    return EnsembleStream(model) if isinstance(model, LandmarkEnsemble) else LandmarkStream(model)
