#!/usr/bin/env python3
"""Prepare a training/evaluation dataset from a folder of talking-head clips (one .npz per clip).

    python scripts/prepare_data.py                       # ../shared/data/videos -> data/prepared
    python scripts/prepare_data.py --videos my_clips --out data/mine
    python scripts/prepare_data.py --add-stream-features  # streamable features for a dataset prepared before them
"""
import argparse
import logging

from talkingface.training.prepare import add_stream_features, prepare_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", default="../shared/data/videos", help="folder of clips (default: %(default)s)")
    ap.add_argument("--out", default="data/prepared", help="output folder (default: %(default)s)")
    ap.add_argument("--size", type=int, default=128, help="mouth crop side in pixels (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N clips (for a quick try)")
    ap.add_argument("--add-stream-features", action="store_true",
                    help="only add the streamable Whisper features (live landmark model) to --out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.add_stream_features:
        print(f"added stream features to {add_stream_features(args.out)} clips in {args.out}")
        return
    prepare_folder(args.videos, args.out, size=args.size, limit=args.limit)


if __name__ == "__main__":
    main()
