#!/usr/bin/env python3
"""Lip sync of the live path against the offline render of the same audio, per recording.

For each recording: ``pipe.stream`` in 40 ms chunks (not paced: the frames do not depend on the chunking) and
``pipe.render`` (still head), and r of the mouth opening the two drive. Recordings: the 2 demo sentences and
the development recordings of ../shared/data/audio (``landmark_training.is_dev_recording``: never trained
on), the first ``--seconds`` of each.

    python scripts/eval_live_stream.py                     # table on stdout
    python scripts/eval_live_stream.py --out eval/live_stream.json
"""
import argparse
import glob
import json
import os

import numpy as np

import talkingface
from talkingface import media, metrics
from talkingface.live import LiveOptions
from talkingface.training.landmark_training import is_dev_recording


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", default="../shared/data/audio", help="folder of recordings (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=20.0, help="first seconds of each (default: %(default)s)")
    ap.add_argument("--image", default="demo/astronaut.jpg")
    ap.add_argument("--out", default=None, help="also write the per-recording r as JSON here")
    args = ap.parse_args()
    pipe = talkingface.load()
    img = media.load_image(args.image)
    iod = metrics.canonical_iod()
    files = sorted(glob.glob("demo/*.wav"))
    files += sorted(f for f in glob.glob(os.path.join(args.audio, "*"))
                    if is_dev_recording(os.path.splitext(os.path.basename(f))[0]))
    rows = {}
    for f in files:
        wav = media.load_audio(f, max_seconds=max(60.0, args.seconds))[: int(16000 * args.seconds)]
        chunks = [wav[i:i + 640] for i in range(0, len(wav), 640)]
        live = np.stack([fr.mouth for fr in pipe.stream(img, chunks, options=LiveOptions(head_motion="still"))])
        off = pipe.mouth_track(img, wav, options=talkingface.RenderOptions(head_motion="still"))  # render's track
        m = min(len(live), len(off))
        rows[os.path.basename(f)] = r = metrics.pearson(metrics.opening(live[:m], iod), metrics.opening(off[:m], iod))
        print(f"{os.path.basename(f)[:48]:48s} {m:5d} frames  r {r:.3f}", flush=True)
    print(f"mean r over {len(rows)} recordings: {np.mean(list(rows.values())):.3f}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
