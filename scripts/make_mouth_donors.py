#!/usr/bin/env python3
"""Build the mouth-interior donor library shipped in talkingface/assets/mouth_donors.npz.

Open mouths (teeth, tongue, cavity) for photo mode, where the photo shows no interior of its own. Only GRID
corpus clips are used (CC BY 4.0, redistributable with attribution), and only training speakers'.

    python scripts/make_mouth_donors.py      # ../shared/data/videos/*GRID* -> talkingface/assets/mouth_donors.npz
"""
import argparse
import glob
import os

import numpy as np

from talkingface import face, media, mouth
from talkingface.training.speakers import VALIDATION_SPEAKERS, speaker_of

SIZE = 96  # GRID faces are small: 96 px over the 8 cm square is about their native resolution


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", default="../shared/data/videos")
    ap.add_argument("--out", default="talkingface/assets/mouth_donors.npz")
    ap.add_argument("--per-clip", type=int, default=2)
    args = ap.parse_args()
    crops, points, names = [], [], []
    with face.FaceTracker(static=False, max_faces=1) as tracker:
        for path in sorted(glob.glob(os.path.join(args.videos, "*GRID*.mp4"))):
            stem = os.path.splitext(os.path.basename(path))[0]
            if speaker_of(stem) in VALIDATION_SPEAKERS:
                continue
            rows = []
            for i, frame in enumerate(media.iter_video_frames(path, fps=25.0)):
                faces = tracker.detect(frame)
                if not faces:
                    continue
                lm = faces[0].landmarks
                aff = mouth.crop_affine(face.FaceFrame.fit(lm), SIZE)
                pts = face.apply_affine(lm, aff).astype(np.float32)
                up, lo = mouth.lip_midpoints(pts)
                rows.append((float(np.linalg.norm(lo - up)), i, face.warp_crop(frame, aff, SIZE), pts))
            rows.sort(key=lambda r: -r[0])
            chosen = []
            for r in rows:
                if all(abs(r[1] - c[1]) >= 10 for c in chosen):
                    chosen.append(r)
                if len(chosen) == args.per_clip:
                    break
            for opening, i, crop, pts in chosen:
                crops.append(crop)
                points.append(pts)
                names.append(f"{stem}#{i}")
                print(f"{stem} frame {i}: opening {opening / SIZE:.3f} of the crop")
    np.savez_compressed(args.out, crops=np.stack(crops), points=np.stack(points), names=np.array(names))
    print(f"wrote {args.out}: {len(crops)} donors, {os.path.getsize(args.out) / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
