#!/usr/bin/env python3
"""Prepare the mouth refine network's training data: aligned mouth crops + FaceMesh points per frame.

    python scripts/prepare_mouth_data.py        # ../shared/data/videos (training speakers) + videos_silent
                                                # -> data/mouth (one .npz per clip, ~3 min on 2 cores)
"""
import argparse
import logging

from talkingface.training.mouth_data import prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", nargs="+", default=["../shared/data/videos", "../shared/data/videos_silent"],
                    help="folders of clips (validation speakers are skipped; default: %(default)s)")
    ap.add_argument("--out", default="data/mouth", help="output folder (default: %(default)s)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    prepare(args.videos, args.out)


if __name__ == "__main__":
    main()
