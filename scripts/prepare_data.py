#!/usr/bin/env python3
"""Prepare a training/evaluation dataset from a folder of talking-head clips (one .npz per clip).

    python scripts/prepare_data.py                       # ../shared/data/videos -> data/prepared
    python scripts/prepare_data.py --videos my_clips --out data/mine
    python scripts/prepare_data.py --add-stream-features  # streamable features (4 s window) for an older dataset
    python scripts/prepare_data.py --add-stream-features --stream-window 50  # the first live models' 2 s window

Streamable features are named by their window (talkingface.audio.StreamWindow.key); --add-stream-features also
covers the audio-only recordings in <out>/audio (scripts/train_landmarks.py --extra-audio prepares those).
"""
import argparse
import logging

from talkingface.audio import LIVE_WINDOW, StreamWindow
from talkingface.training.prepare import add_stream_features, prepare_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", default="../shared/data/videos", help="folder of clips (default: %(default)s)")
    ap.add_argument("--out", default="data/prepared", help="output folder (default: %(default)s)")
    ap.add_argument("--size", type=int, default=128, help="mouth crop side in pixels (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N clips (for a quick try)")
    ap.add_argument("--add-stream-features", action="store_true",
                    help="only add streamable Whisper features (the live landmark model's) to --out")
    ap.add_argument("--stream-window", type=int, default=LIVE_WINDOW.window, metavar="FRAMES",
                    help="video frames of audio per streaming encoder pass (default: %(default)s = 4 s)")
    ap.add_argument("--stream-block", type=int, default=LIVE_WINDOW.block, metavar="FRAMES",
                    help="video frames per streaming encoder pass (default: %(default)s)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    window = StreamWindow(block=args.stream_block, window=args.stream_window)
    if args.add_stream_features:
        print(f"added {window.key} features to {add_stream_features(args.out, window)} files in {args.out}")
        return
    prepare_folder(args.videos, args.out, size=args.size, limit=args.limit, window=window)


if __name__ == "__main__":
    main()
