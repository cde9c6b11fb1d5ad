"""``talkingface`` command line: a thin client of talkingface.pipeline (no logic of its own).

    talkingface render --image face.jpg --audio speech.wav -o out.mp4
    talkingface eval --videos ../shared/data/videos --out eval/
    talkingface benchmark
    talkingface demo                      # the web page on http://127.0.0.1:7860
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import TalkingFaceError

EPILOG = "Everything runs offline with the weights in checkpoints/. Errors name the file and exit with status 1."


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help="folder with MANIFEST.json and weights (default: the shipped checkpoints/)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each stage")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="talkingface",
        description="Make a face talk: speech audio + one photo -> a lip-synced H.264/AAC video at 25 fps.",
        epilog=EPILOG,
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "render", help="photo + speech audio -> talking video",
        description="Render the face in IMAGE speaking AUDIO. The video is as long as the audio (25 fps), "
                    "keeps the photo's resolution (up to --max-size), and carries the audio as AAC. The output "
                    "file appears only when rendering succeeded.",
        epilog=EPILOG,
    )
    face_src = r.add_mutually_exclusive_group(required=True)
    face_src.add_argument("--image", help="photo with a face (jpg, png, webp, bmp)")
    face_src.add_argument("--video", help="video of a person to dub: only the mouth region changes")
    speech = r.add_argument_group("speech (what the face says)")
    speech.add_argument("--audio", required=True,
                        help="speech (wav, mp3, m4a, flac, ogg, or a video file's audio track); any rate/channels")
    r.add_argument("-o", "--output", required=True, help="output .mp4 path (its folder must exist)")
    r.add_argument("--face", type=int, default=None, metavar="N",
                   help="which face when the photo has several: 0 = largest (default), 1 = next, ...")
    r.add_argument("--max-size", type=int, default=1280, help="longer side of the output in px (default 1280)")
    r.add_argument("--motion", type=float, default=1.0, help="scale of the mouth motion (default 1.0)")
    r.add_argument("--no-silence-gate", action="store_true", help="do not force the mouth to rest in silence")
    r.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    r.add_argument("--landmarks-json", default=None, metavar="PATH",
                   help="also write the per-frame mouth landmarks (image pixels) as JSON")
    _add_common(r)

    e = sub.add_parser(
        "eval", help="evaluate on held-out talking-head clips (prints a table, writes plots)",
        description="Landmark- and video-level evaluation on the speaker-disjoint validation clips; see "
                    "docs/EVALUATION.md. Needs a prepared dataset (scripts/prepare_data.py).",
    )
    e.add_argument("--data", default="data/prepared", help="prepared dataset (default data/prepared)")
    e.add_argument("--out", default="eval", help="folder for the table, JSON and plots (default eval/)")
    e.add_argument("--no-video", action="store_true", help="landmark level only (fast)")
    e.add_argument("--max-clips", type=int, default=None, help="only the first N validation clips")
    _add_common(e)

    b = sub.add_parser("benchmark", help="seconds per stage and frames per second of a 10 s render",
                       description="Renders the bundled example photo with 10 s of speech and prints the "
                                   "seconds spent in each stage and the end-to-end frames per second.")
    b.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    b.add_argument("--repeat", type=int, default=2, help="renders to time; the first is a warm-up (default 2)")
    _add_common(b)

    d = sub.add_parser("demo", help="the web page: photo/video + audio/text -> video, in the browser",
                       description="Serve the web page (Gradio) on http://HOST:PORT. The models are loaded once "
                                   "and shared; renders run one at a time and other requests wait in line.",
                       epilog=EPILOG)
    d.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0: the network)")
    d.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    d.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    d.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload per file in MB (default 50)")
    d.add_argument("--max-seconds", type=float, default=120.0,
                   help="longest speech or video to render, in seconds (default 120)")
    _add_common(d)
    return ap


def _speech(args: argparse.Namespace):
    """The speech that drives the face -> (audio path or float32 16 kHz array, phoneme timings or None)."""
    return args.audio, None


def _dub(args: argparse.Namespace, pipe, speech, phonemes) -> int:
    raise TalkingFaceError("dubbing a video is not available yet")


def _render(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from .pipeline import RenderOptions, load

    for path, what in ((args.image, "image"), (args.video, "video"), (args.audio, "audio")):
        if path is not None and not os.path.exists(path):
            raise TalkingFaceError(f"{what} file '{path}' does not exist")
    pipe = load(args.checkpoints, device=args.device)
    speech, phonemes = _speech(args)
    if args.video is not None:
        return _dub(args, pipe, speech, phonemes)
    options = RenderOptions(face_index=args.face, max_size=args.max_size, silence_gate=not args.no_silence_gate,
                            motion_scale=args.motion, crf=args.crf)
    bar = tqdm(total=None, unit="frame", desc="render", disable=not sys.stderr.isatty() and not args.verbose)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        result = pipe.render(args.image, speech, output=args.output, options=options, progress=progress,
                             phonemes=phonemes)
    finally:
        bar.close()
    if args.landmarks_json:
        with open(args.landmarks_json, "w") as f:
            json.dump({"fps": result.fps, "points": "face.MOUTH (59 FaceMesh ids: lips outer, lips inner, jaw)",
                       "frames": result.mouth_landmarks.round(2).tolist()}, f)
    t = result.timings
    if result.n_faces > 1:
        chosen = 0 if args.face is None else args.face
        print(f"the photo has {result.n_faces} faces; animated face {chosen} (box {result.face_box}); "
              f"choose another with --face 0..{result.n_faces - 1}")
    print(f"wrote {result.output}: {result.n_frames} frames, {result.duration:.2f} s, "
          f"{result.n_frames / max(t['total'], 1e-9):.1f} fps")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")  # quiet mediapipe's C++ logging
    try:
        if args.command == "render":
            return _render(args)
        if args.command == "eval":
            from .evaluate import main as eval_main

            return eval_main(args)
        if args.command == "benchmark":
            from .benchmark import main as bench_main

            return bench_main(args)
        if args.command == "demo":
            from .web import main as demo_main

            return demo_main(args)
    except TalkingFaceError as e:
        print(f"talkingface: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("talkingface: interrupted; no output was written", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
