"""``talkingface`` command line: a thin client of talkingface.pipeline (no logic of its own).

    talkingface render --image face.jpg --audio speech.wav -o out.mp4
    talkingface eval --videos ../shared/data/videos --out eval/
    talkingface benchmark
    talkingface demo                      # the web page on http://127.0.0.1:7860
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys

from .checks import MAX_FACES, arg
from .errors import TalkingFaceError

EPILOG = "Everything runs offline with the weights in checkpoints/. Errors name the file and exit with status 1."


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help="folder with MANIFEST.json and weights (default: the shipped checkpoints/)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each stage")


def _add_provenance(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("provenance (every output carries an invisible watermark; see docs/PROVENANCE.md)")
    g.add_argument("--no-credentials", action="store_true",
                   help="leave out the signed C2PA content credentials (the watermark stays)")
    g.add_argument("--sign-key", default=None, metavar="PEM",
                   help="sign the credentials with this private key (default: a local key created on first use in "
                        "~/.config/talkingface/c2pa)")
    g.add_argument("--sign-cert", default=None, metavar="PEM",
                   help="the certificate chain of --sign-key (signing certificate first)")


def _add_dub_options(g) -> None:
    g.add_argument("--face-point", default=None, metavar="X,Y",
                   help="dub the face whose box holds this pixel (in the first frame it appears)")
    g.add_argument("--length", default="pingpong", choices=["pingpong", "loop", "freeze", "trim", "video"],
                   help="when the speech is longer than the video: play it back and forth (pingpong, default), "
                        "loop, or freeze the last frame; a shorter speech always cuts the video. trim: the "
                        "shorter of the two; video: keep the video's length (speech cut or padded with silence)")
    g.add_argument("--fps", type=arg("fps"), default=None, help="output frame rate, 1-120 (default: the input's)")
    g.add_argument("--adapt", action="store_true",
                   help="first fine-tune the mouth generator on this video's own frames (slower, sharper)")
    g.add_argument("--adapt-steps", type=arg("adapt_steps"), default=150,
                   help="fine-tuning steps with --adapt (default 150)")
    g.add_argument("--max-angle", type=arg("max_angle"), default=35.0,
                   help="frames with the head turned more than this (yaw/pitch, degrees) pass through (default 35)")
    g.add_argument("--average-range", action="store_true",
                   help="move the mouth within the training speakers' average range of motion instead of this "
                        "person's own, measured on the video (the default)")
    g.add_argument("--average-expression", action="store_true",
                   help="while speaking, the mouth sits as the training speakers' average does instead of as this "
                        "person's does (a talking smile, lips held apart), measured on the video with its own "
                        "audio (the default; a video without audio gets the average)")


def _dub_options(args: argparse.Namespace):
    from .dub_options import DubOptions

    point = None
    if args.face_point:
        try:
            x, y = (float(v) for v in args.face_point.split(","))
        except ValueError as e:
            raise TalkingFaceError(f"--face-point must be X,Y in pixels, got '{args.face_point}'") from e
        point = (x, y)
    return DubOptions(face_index=args.face, face_point=point, length=args.length, fps=args.fps,
                      max_size=args.max_size, adapt=args.adapt, adapt_steps=args.adapt_steps,
                      max_angle=args.max_angle, own_range=not getattr(args, "average_range", False),
                      own_expression=not getattr(args, "average_expression", False),
                      silence_gate=not getattr(args, "no_silence_gate", False),
                      motion_scale=getattr(args, "motion", 1.0), crf=getattr(args, "crf", 18),
                      credentials=not args.no_credentials, sign_key=args.sign_key, sign_cert=args.sign_cert)


def _bar(args: argparse.Namespace, desc: str, unit: str = "frame"):
    """A progress bar and the ``progress(done, total)`` callback the pipeline calls to move it."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit=unit, desc=desc, disable=not sys.stderr.isatty() and not args.verbose)

    def progress(done: int, total: int) -> None:
        check_interrupted()  # a Ctrl-C that a library swallowed stops the work here
        bar.total = total or None
        bar.update(done - bar.n)

    return bar, progress


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="talkingface",
        description="Make a face talk: speech audio + one photo -> a lip-synced H.264/AAC video at 25 fps.",
        epilog=EPILOG,
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser(
        "render", help="photo + speech audio -> talking video",
        description="Photo mode (--image): render the face in IMAGE speaking the speech; the video is as long as "
                    "the speech (25 fps), keeps the photo's resolution (up to --max-size). Dubbing mode (--video): "
                    "keep every pixel of VIDEO except the mouth region of the chosen face, which follows the new "
                    "speech; the speech replaces the video's audio; input resolution and frame rate are kept. "
                    "The output file appears only when rendering succeeded.",
        epilog=EPILOG,
    )
    face_src = r.add_mutually_exclusive_group(required=True)
    face_src.add_argument("--image", help="photo with a face (jpg, png, webp, bmp)")
    face_src.add_argument("--video", help="video of a person to dub: only the mouth region changes")
    _add_speech_options(r, audio_flag=True)
    r.add_argument("-o", "--output", required=True, help="output .mp4 path (its folder must exist)")
    r.add_argument("--face", type=arg("face_index"), default=None, metavar="N",
                   help=f"which face when there are several: 0 = largest (default), 1 = next, ... "
                        f"(up to {MAX_FACES} faces are found)")
    r.add_argument("--max-size", type=arg("max_size"), default=None,
                   help="longer side of the output in px, 64-8192 (default: 1280 for photos, the input's size for "
                        "videos)")
    r.add_argument("--motion", type=arg("motion_scale"), default=1.0,
                   help="scale of the mouth motion, 0-2 (default 1.0)")
    r.add_argument("--no-silence-gate", action="store_true", help="do not force the mouth to rest in silence")
    r.add_argument("--texture", choices=["mouth-v2", "warp", "texture-v1"], default=None,
                   help="how the mouth is painted: warp (default: the person's own pixels warped at full "
                        "resolution, the opening filled from real mouths), mouth-v2 (the same plus a refine network: "
                        "needs a checkpoint of that name, none is shipped since it measured worse, docs/MOUTH.md), "
                        "texture-v1 (the first version's 128 px generator; needed for --adapt)")
    r.add_argument("--keep-expression", type=arg("keep_expression"), default=0.0, metavar="K",
                   help="photo mode: how much of the photo's own mouth expression (an open smile, say) to keep "
                        "under the speech, 0 = rest on a neutral closed mouth (default) .. 1 = keep it all")
    r.add_argument("--head-motion", default="natural", choices=["natural", "subtle", "still"],
                   help="photo mode: head motion and blinks timed to the speech (default natural; still = none)")
    r.add_argument("--seed", type=arg("seed"), default=0,
                   help="photo mode: seed of the head motion and blinks; the same seed, the same video (default 0)")
    r.add_argument("--crf", type=arg("crf"), default=18, help="H.264 quality 0-51, lower is better (default 18)")
    r.add_argument("--landmarks-json", default=None, metavar="PATH",
                   help="also write the mouth track (image pixels, visemes when known) as the lip-sync JSON of "
                        "docs/LIPSYNC.md")
    dub = r.add_argument_group("dubbing (with --video)")
    _add_dub_options(dub)
    _add_provenance(r)
    _add_common(r)

    bt = sub.add_parser(
        "batch", help="dub many videos from a CSV/JSON job list (parallel, resumable)",
        description="Dub every job of JOBS (a .csv with a header 'video,audio[,output][,option...]' or a .json "
                    "list of objects with those keys) into OUT_DIR. Jobs already done with the same inputs, "
                    "options and weights are skipped, so a killed batch resumes where it stopped. A failed job "
                    "is reported and the others go on. OUT_DIR/batch_summary.json lists every job.",
        epilog=EPILOG,
    )
    bt.add_argument("jobs", help="job list (.csv, .tsv or .json)")
    bt.add_argument("--out-dir", required=True, help="folder for the outputs and the summary (created if needed)")
    bt.add_argument("--workers", type=arg("workers"), default=None,
                    help="parallel worker processes (default 1); with --ray: Ray workers (default: as many as the "
                         "cluster holds)")
    bt.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                    help="run the jobs on Ray: 'local' starts a Ray instance on this machine, 'auto' joins the "
                         "cluster this machine is part of, or a cluster address (host:6379, ray://host:10001); "
                         "needs pip install 'talkingface[cluster]' (docs/DUBBING.md)")
    bt.add_argument("--cpus-per-worker", type=arg("cpus_per_worker"), default=1, metavar="N",
                    help="with --ray: CPUs each Ray worker declares and uses as torch threads (default 1)")
    bt.add_argument("--gpus-per-worker", type=arg("gpus_per_worker"), default=None, metavar="N",
                    help="with --ray and --device cuda: GPUs each Ray worker declares (default 1; 0.5 shares one)")
    bt.add_argument("--allow-outside-out-dir", action="store_true",
                    help="let a job's output (absolute or with '..') be written outside --out-dir; refused otherwise")
    bt.add_argument("--face", type=arg("face_index"), default=None, metavar="N",
                    help="default face index for every job")
    bt.add_argument("--max-size", type=arg("max_size"), default=None, help="default longer side of the outputs")
    _add_dub_options(bt)
    _add_provenance(bt)
    _add_common(bt)

    vf = sub.add_parser(
        "verify", help="was this video made by talkingface? (content credentials + watermark)",
        description="Read the C2PA content credentials of each FILE (valid, tampered or absent, and who signed "
                    "them) and look for talkingface's invisible watermark. Exit code: 0 when talkingface's "
                    "provenance is found (manifest or watermark), 1 when none is found, 2 when a file cannot be "
                    "read.")
    vf.add_argument("files", nargs="+", metavar="FILE", help="video file(s) to check")
    vf.add_argument("--json", action="store_true", help="print the findings as JSON")
    vf.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)

    vo = sub.add_parser("voices", help="list the text-to-speech voices (all offline)",
                        description="The voices --voice accepts: the bundled neural Piper voice(s) and every "
                                    "espeak-ng language. A Piper voice on disk is named by its .onnx path.")
    vo.add_argument("--language", default=None, help="only voices whose language starts with this (e.g. en, es)")
    vo.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)

    ls = sub.add_parser(
        "lipsync", help="speech or text -> mouth landmarks and visemes per frame (JSON/CSV/TSV), no video",
        description="Mouth data for animators: the 59 predicted mouth points per frame, the mouth opening and "
                    "width, and a viseme track (Rhubarb's A-H, X) with start/end times; see docs/LIPSYNC.md. "
                    "Phoneme timing comes from the TTS (--text), from --transcript (forced alignment), or else "
                    "from phone recognition of the audio (English, approximate).",
        epilog=EPILOG,
    )
    _add_speech_options(ls, audio_flag=False)
    ls.add_argument("-o", "--output", required=True, help="output path (.json, .csv or .tsv)")
    ls.add_argument("--format", choices=["json", "csv", "tsv"], default=None,
                    help="output format (default: from the output's extension). csv/tsv also write "
                         "<name>.visemes.csv/.tsv")
    ls.add_argument("--fps", type=arg("fps"), default=25.0, help="frames per second of the export (default 25)")
    ls.add_argument("--image", default=None,
                    help="a photo: use its resting mouth and export in its pixels (default: a generic face in "
                         "pose-normalized centimetres)")
    ls.add_argument("--face", type=arg("face_index"), default=None, metavar="N",
                    help="which face of --image (0 = largest)")
    ls.add_argument("--no-silence-gate", action="store_true", help="do not force the mouth to rest in silence")
    _add_common(ls)

    e = sub.add_parser(
        "eval", help="evaluate on held-out talking-head clips (prints a table, writes plots)",
        description="Landmark- and video-level evaluation on the speaker-disjoint validation clips; see "
                    "docs/EVALUATION.md. Needs a prepared dataset (scripts/prepare_data.py).",
    )
    e.add_argument("--data", default="data/prepared", help="prepared dataset (default data/prepared)")
    e.add_argument("--out", default="eval", help="folder for the table, JSON and plots (default eval/)")
    e.add_argument("--no-video", action="store_true", help="landmark level only (fast)")
    e.add_argument("--landmarks", metavar="NAME", default=None,
                   help="the landmark model to evaluate, a checkpoint name (default: the one talkingface.load "
                        "uses); to compare two in the same session")
    e.add_argument("--max-clips", type=arg("max_clips"), default=None, help="only the first N validation clips")
    e.add_argument("--dub", action="store_true",
                   help="evaluate dubbing instead: self-dub, cross-dub sync, untouched-region PSNR, --adapt")
    e.add_argument("--adapt-steps", type=arg("adapt_steps"), default=150, help="fine-tuning steps for the --adapt rows")
    e.add_argument("--methods", metavar="A,B", default=None,
                   help="with --dub: only these of model, model+adapt, static, energy (default: all)")
    e.add_argument("--no-cross", action="store_true", help="with --dub: self-dubs only (no cross-dub sync rows)")
    e.add_argument("--texture-methods", metavar="A,B", default=None,
                   help="with --dub: only the texture table (lip-box PSNR/SSIM, sharpness, Delta E, flicker, lag-0 r) "
                        "of these mouth texture methods (e.g. texture-v1,warp,mouth-v2) and a plain re-encode; a "
                        "method may carry mouth-stage options, e.g. warp:feather_cm=0:seam_alpha=0.6:smooth=0")
    e.add_argument("--average-range", action="store_true",
                   help="with --texture-methods: dub with the average range of motion (render --average-range)")
    e.add_argument("--average-expression", action="store_true",
                   help="with --texture-methods: dub with the average speaking expression (render "
                        "--average-expression)")
    _add_common(e)

    b = sub.add_parser("benchmark", help="seconds per stage and frames per second of a 10 s render",
                       description="Renders the bundled example photo with 10 s of speech and prints the "
                                   "seconds spent in each stage and the end-to-end frames per second.")
    b.add_argument("--seconds", type=arg("bench_seconds"), default=10.0, help="audio length, 1-3600 (default 10)")
    b.add_argument("--repeat", type=arg("repeat"), default=2, help="renders to time; the first is a warm-up (default 2)")
    b.add_argument("--dub", action="store_true", help="benchmark dubbing a video instead of a photo render")
    b.add_argument("--live", action="store_true",
                   help="benchmark the live path: the example streamed in real time; latency, sustained fps, "
                        "lip sync against the offline render (use --seconds 600 for the 10-minute run)")
    b.add_argument("--chunk-ms", type=arg("chunk_ms"), default=40.0, help="with --live: audio chunk length (default 40)")
    b.add_argument("--head-motion", default="natural", choices=["natural", "subtle", "still"],
                   help="photo render: head motion and blinks (default natural, as render)")
    b.add_argument("--size", type=int, default=512, choices=[512, 720],
                   help="with --dub: 512 (512x512) or 720 (1280x720) test video (default 512)")
    b.add_argument("--adapt", action="store_true", help="with --dub: include --adapt fine-tuning (texture-v1)")
    b.add_argument("--texture", choices=["mouth-v2", "warp", "texture-v1"], default=None,
                   help="the mouth texture method to time (default: the shipped default)")
    _add_common(b)

    d = sub.add_parser("demo", help="the web page: photo/video + audio/text -> video, in the browser",
                       description="Serve the web page (Gradio) on http://HOST:PORT. The models are loaded once "
                                   "and shared; renders run one at a time and other requests wait in line.",
                       epilog=EPILOG)
    d.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0: the network)")
    d.add_argument("--port", type=arg("port"), default=7860, help="port (default 7860)")
    d.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    d.add_argument("--max-upload-mb", type=arg("max_upload_mb"), default=50.0, help="largest upload per file in MB (default 50)")
    d.add_argument("--max-total-mb", type=arg("max_total_mb"), default=2048.0,
                   help="disk for all recent uploads and results in MB; new uploads are refused while it is full "
                        "(default 2048)")
    d.add_argument("--max-uploads", type=arg("max_uploads_per_visitor"), default=60,
                   help="uploads per visitor (client address) per hour (default 60)")
    d.add_argument("--max-seconds", type=arg("max_seconds"), default=120.0,
                   help="longest speech or video to render, in seconds (default 120)")
    _add_common(d)
    return ap


def _add_speech_options(p: argparse.ArgumentParser, *, audio_flag: bool) -> None:
    """Speech from a recording (--audio, or a positional AUDIO) or from text (--text, --text-file)."""
    g = p.add_argument_group("speech (what the face says): one of")
    src = g.add_mutually_exclusive_group(required=True)
    audio_help = "speech (wav, mp3, m4a, flac, ogg, or a video file's audio track); any rate/channels"
    if audio_flag:
        src.add_argument("--audio", help=audio_help)
    else:
        src.add_argument("audio", nargs="?", default=None, help=audio_help)
    src.add_argument("--text", help="text to speak with a bundled voice (offline TTS)")
    src.add_argument("--text-file", metavar="PATH", help="UTF-8 text file to speak (long scripts are streamed)")
    t = p.add_argument_group("text to speech (with --text/--text-file)")
    t.add_argument("--voice", default=None,
                   help="voice name, language code (es, fr-fr, de, ...) or a Piper .onnx path; "
                        "`talkingface voices` lists them (default: joe, US English, neural)")
    t.add_argument("--rate", type=arg("rate"), default=1.0,
                   help="speaking rate, 0.25-4, 1.0 normal, 1.5 faster (default 1.0)")
    t.add_argument("--save-audio", metavar="PATH", default=None, help="also keep the synthesized speech (.wav)")
    a = p.add_argument_group("phoneme timing")
    a.add_argument("--transcript", default=None,
                   help="what the recorded --audio says (English): aligned with PocketSphinx for phoneme timing")
    a.add_argument("--transcript-file", default=None, metavar="PATH", help="the transcript from a UTF-8 file")
    a.add_argument("--no-phoneme-timing", action="store_true",
                   help="drive the mouth from the audio alone, without the closed-lips/rounding correction")


def _speech(args: argparse.Namespace):
    """The speech that drives the face -> (audio path or float32 16 kHz array, phoneme timings or None)."""
    text_file = getattr(args, "text_file", None)
    text = getattr(args, "text", None)
    if text is not None or text_file is not None:
        import atexit
        import shutil
        import tempfile

        from . import tts

        if text_file is not None:
            text = tts.read_text_file(text_file)
        if args.save_audio:
            path = args.save_audio
        else:
            tmp = tempfile.mkdtemp(prefix="talkingface-tts-")
            atexit.register(shutil.rmtree, tmp, True)
            path = os.path.join(tmp, "speech.wav")
        bar, progress = _bar(args, "speech", unit="sentence")

        try:
            speech = tts.synthesize_to_file(text, path, voice=args.voice, rate=args.rate, progress=progress)
        finally:
            bar.close()
        if args.save_audio:
            print(f"wrote {speech.path}: {speech.duration:.2f} s of speech, voice {speech.voice}")
        phonemes = None if args.no_phoneme_timing else speech.phonemes
        return speech.path, phonemes
    if args.audio is not None and not os.path.exists(args.audio):
        raise TalkingFaceError(f"audio file '{args.audio}' does not exist")
    transcript = args.transcript
    if args.transcript_file is not None:
        from .tts import read_text_file

        transcript = read_text_file(args.transcript_file)
    if transcript is None or args.no_phoneme_timing:
        return args.audio, None
    from . import align, media

    return args.audio, align.align(media.load_audio(args.audio), transcript)


def _write_landmarks_json(path: str, result, phonemes, mode: str) -> None:
    """Write the mouth track beside the video just written, as the lip-sync JSON of docs/LIPSYNC.md (the one
    writer the web page uses too); if that fails, remove the video too (both or neither)."""
    from . import lipsync

    try:
        lipsync.write_mouth_json(path, result, phonemes, source={"mode": mode})
    except BaseException as e:
        try:
            os.remove(result.output)
        except (OSError, TypeError):
            pass
        if isinstance(e, (OSError, TalkingFaceError)):
            why = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise TalkingFaceError(f"could not write --landmarks-json '{path}': {why}; the video was removed "
                                   f"too") from e
        raise


def _check_render(args: argparse.Namespace) -> None:
    """Everything about a render that can be checked cheaply, before any model is loaded: numbers (parsed by
    argparse already), option combinations, the inputs (exist, decode, big enough, audible) and the outputs
    (writable, a kind the encoder writes, none of them an input)."""
    from . import checks, media

    if args.image is not None and args.fps is not None:
        raise TalkingFaceError("--fps applies to dubbing (--video); a photo render is always 25 fps")
    if args.image is not None and (args.adapt or args.face_point):
        raise TalkingFaceError("--adapt and --face-point apply to dubbing (--video); with --image use --face N")
    if args.image is not None:
        _refuse_unused(args, ("length", "max_angle", "adapt_steps", "average_range", "average_expression"),
                       "to dubbing (--video)")
    else:
        _refuse_unused(args, ("keep_expression", "head_motion", "seed"),
                       "to photo renders (--image); a dub keeps the video's own head motion and expression")
    _check_speech_options(args)
    inputs = [("image", args.image), ("video", args.video), ("audio", args.audio),
              ("text", getattr(args, "text_file", None)), ("transcript", args.transcript_file)]
    for kind, path in inputs:
        if path is not None and not os.path.exists(path):
            raise TalkingFaceError(f"{kind} file '{path}' does not exist")
    checks.output_file(args.output, inputs=inputs)
    outputs = [("output video", args.output)]
    if args.landmarks_json:
        checks.output_file(args.landmarks_json, inputs=inputs + outputs, suffixes=None, what="--landmarks-json")
        outputs.append(("--landmarks-json", args.landmarks_json))
    if args.save_audio:
        checks.output_file(args.save_audio, inputs=inputs + outputs, suffixes=(".wav",), what="--save-audio")
    if args.video is not None:
        from . import face

        info = media.probe_video(args.video)
        face.check_image_size(*info.display_size, args.video)
    _check_photo_and_speech(args)


def _refuse_unused(args: argparse.Namespace, names: tuple[str, ...], why: str) -> None:
    """An option given (set away from its default) in a mode that would silently ignore it is a mistake."""
    defaults = _defaults(args.command)
    given = [name for name in names if getattr(args, name, None) != defaults[name]]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise TalkingFaceError(f"{flags} {'applies' if len(given) == 1 else 'apply'} {why}")


def _check_speech_options(args: argparse.Namespace) -> None:
    """The text-to-speech options need text, the transcript a recording (render and lipsync)."""
    if args.audio is not None:
        _refuse_unused(args, ("voice", "rate", "save_audio"),
                       "to text (--text, --text-file); a recording is used as it is")
    else:
        _refuse_unused(args, ("transcript", "transcript_file"),
                       "to a recording; with --text the speech synthesis gives the phoneme timing")


@functools.lru_cache(maxsize=None)
def _defaults(command: str) -> dict:
    """The options' defaults of ``render`` or ``lipsync`` (the parser's own), to tell a given option from one left
    alone."""
    minimal = {"render": ["render", "--image", "_", "--audio", "_", "-o", "_"], "lipsync": ["lipsync", "_", "-o", "_"]}
    return vars(build_parser().parse_args(minimal[command]))


def _check_photo_and_speech(args: argparse.Namespace) -> None:
    """The photo (decodes, big enough for a face) and the speech (audible voice, or a known voice and speakable
    text), checked before any model is loaded (render and lipsync)."""
    from . import media

    if args.image is not None:
        from . import face

        img = media.load_image(args.image)
        face.check_image_size(img.shape[1], img.shape[0], args.image)
    if args.audio is not None:
        from . import audio

        audio.check_speech(media.load_audio(args.audio, max_seconds=3 * 3600.0), args.audio)
    elif args.text is not None or args.text_file is not None:
        from . import tts

        tts.resolve_voice(args.voice)
        if args.text is not None:
            tts.check_text(args.text)


def _dub(args: argparse.Namespace, pipe, speech, phonemes) -> int:
    options = _dub_options(args)
    bar, progress = _bar(args, "track")

    def stage(name: str) -> None:
        check_interrupted()
        bar.set_description(name)
        bar.reset(total=None)

    try:
        result = pipe.dub(args.video, speech, output=args.output, options=options, phonemes=phonemes,
                          progress=progress, stage=stage)
    finally:
        bar.close()
    if args.landmarks_json:
        _write_landmarks_json(args.landmarks_json, result, phonemes, "dub")
    t = result.timings
    if result.n_faces > 1:
        how = f"face {args.face}" if args.face is not None else (
            f"the face at {args.face_point}" if args.face_point else "the largest face")
        print(f"the video shows up to {result.n_faces} faces; dubbed {how} (box {result.face_box} where first "
              f"seen); choose another with --face 0..{result.n_faces - 1} or --face-point X,Y")
    if result.frames_no_face or result.frames_turned:
        print(f"{result.frames_no_face} frame(s) without the face and {result.frames_turned} with the head turned "
              f"beyond {options.max_angle:g} degrees were passed through unchanged")
    if result.adapt:
        a = result.adapt
        print(f"adapted to the video in {a['seconds']} s: held-out L1 {a['l1_before']} -> {a['l1_after']}")
    print(f"wrote {result.output}: {result.n_frames} frames at {result.fps:g} fps, {result.duration:.2f} s "
          f"({result.frames_dubbed} dubbed), {result.n_frames / max(t['total'], 1e-9):.1f} fps")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from .batch import dub_batch, read_jobs

    jobs = read_jobs(args.jobs)
    import dataclasses

    from .dub_options import DubOptions

    base = dataclasses.asdict(DubOptions())  # only what the command line changed becomes a job default
    defaults = {k: v for k, v in dataclasses.asdict(_dub_options(args)).items() if v != base[k]}
    records = dub_batch(jobs, args.out_dir, workers=args.workers, options=defaults, checkpoints=args.checkpoints,
                        device=args.device, allow_outside=args.allow_outside_out_dir,
                        executor="ray" if args.ray else "local", ray_address=args.ray,
                        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker)
    n = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
    for r in records:
        if r["status"] == "failed":
            print(f"failed: {r['video']} + {r['audio']}: {r['error']}", file=sys.stderr)
    print(f"{n['done']} dubbed, {n['skipped']} already done, {n['failed']} failed; summary: "
          f"{os.path.join(args.out_dir, 'batch_summary.json')}")
    return 1 if n["failed"] else 0


def _render(args: argparse.Namespace) -> int:
    _check_render(args)  # a mistake is reported in a second, not after loading the models
    check_interrupted()
    speech, phonemes = _speech(args)
    check_interrupted()
    from .pipeline import RenderOptions, load

    options = None
    if args.video is None:
        options = RenderOptions(face_index=args.face, max_size=1280 if args.max_size is None else args.max_size,
                                silence_gate=not args.no_silence_gate, motion_scale=args.motion, crf=args.crf,
                                keep_expression=args.keep_expression, head_motion=args.head_motion, seed=args.seed,
                                credentials=not args.no_credentials,
                                sign_key=args.sign_key, sign_cert=args.sign_cert,
                                text=args.text is not None or args.text_file is not None)
    else:
        _dub_options(args)  # checked before loading
    pipe = load(args.checkpoints, device=args.device, **({"texture": args.texture} if args.texture else {}))
    check_interrupted()
    if args.video is not None:
        return _dub(args, pipe, speech, phonemes)
    bar, progress = _bar(args, "render")

    try:
        result = pipe.render(args.image, speech, output=args.output, options=options, progress=progress,
                             phonemes=phonemes)
    finally:
        bar.close()
    if args.landmarks_json:
        _write_landmarks_json(args.landmarks_json, result, phonemes, "photo")
    t = result.timings
    if result.n_faces > 1:
        chosen = 0 if args.face is None else args.face
        print(f"the photo has {result.n_faces} faces; animated face {chosen} (box {result.face_box}); "
              f"choose another with --face 0..{result.n_faces - 1}")
    print(f"wrote {result.output}: {result.n_frames} frames, {result.duration:.2f} s, "
          f"{result.n_frames / max(t['total'], 1e-9):.1f} fps")
    return 0


def _voices(args: argparse.Namespace) -> int:
    from .tts import list_voices

    voices = [v for v in list_voices() if not args.language or v.language.startswith(args.language.lower())]
    for v in voices:
        print(f"{v.name:<24} {v.language:<18} {v.kind:<7} {v.description}")
    print(f"{len(voices)} voices; use one with --voice NAME (or a Piper .onnx path)", file=sys.stderr)
    return 0


def _lipsync(args: argparse.Namespace) -> int:
    from . import checks, lipsync

    # everything that can be checked cheaply, before torch is imported and the models are loaded
    fmt = lipsync.format_of(args.output, args.format)
    inputs = [("image", args.image), ("audio", args.audio), ("text", args.text_file),
              ("transcript", args.transcript_file)]
    for kind, path in inputs:
        if path is not None and not os.path.exists(path):
            raise TalkingFaceError(f"{kind} file '{path}' does not exist")
    outputs = [("output", args.output)]
    _check_speech_options(args)
    checks.output_file(args.output, inputs=inputs, suffixes=None)
    visemes = lipsync.visemes_path(args.output, fmt)
    if visemes is not None:
        checks.output_file(visemes, inputs=inputs, suffixes=None, what="the viseme file")
        outputs.append(("viseme", visemes))
    if args.save_audio:
        checks.output_file(args.save_audio, inputs=inputs + outputs, suffixes=(".wav",), what="--save-audio")
    _check_photo_and_speech(args)
    speech, phonemes = _speech(args)
    from . import align, audio, media
    from .pipeline import load

    wav = media.load_audio(speech)
    timing = "none"
    if phonemes:
        timing = "tts" if args.audio is None else "alignment"
    visemes_from = phonemes
    if not phonemes and not args.no_phoneme_timing:
        visemes_from = align.recognize(wav)  # for the viseme track only: too noisy to correct the landmarks
        timing = "recognition"
    pipe = load(args.checkpoints, device=args.device)
    points, space = lipsync.mouth_track(pipe, wav, phonemes=phonemes, image=args.image, face_index=args.face,
                                        silence_gate=not args.no_silence_gate)
    source = {"audio": None if args.audio is None else os.path.basename(args.audio), "text": args.text is not None
              or args.text_file is not None, "voice": args.voice, "phoneme_timing": timing,
              "landmarks_corrected_by_phonemes": bool(phonemes)}
    doc = lipsync.mouth_data(points, lipsync.MODEL_FPS, phonemes=visemes_from, duration=len(wav) / audio.SAMPLE_RATE,
                             out_fps=args.fps, space=space, source=source)
    written = lipsync.write(doc, args.output, fmt)
    print(f"wrote {', '.join(written)}: {doc['n_frames']} frames at {doc['fps']:g} fps, "
          f"{len(doc['visemes'])} viseme segments ({timing} timing), {doc['duration']:.2f} s")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that it unwinds like Ctrl-C: workers stopped, temporaries removed."""


# The signal (SIGINT or SIGTERM) this command received, if any. Python raises KeyboardInterrupt wherever the main
# thread happens to be, and two places there do not let it through: inside an import, a C extension turns it into
# an ImportError ("numpy._core.multiarray failed to import", a 20-line traceback), and a weakref callback of the
# import lock swallows it ("Exception ignored in: ... KeyboardInterrupt", and the render went on to write its
# output). Both were seen with Ctrl-C in the first second. So the handler also records the signal: main() reports
# any failure after it as the interruption it is, and check_interrupted() (called between stages and from the
# progress callbacks) raises it again when a library swallowed it.
_received: int | None = None
_command: str | None = None  # the subcommand main() runs; `demo` serves until Ctrl-C, which is its normal end


def _on_signal(signum, frame) -> None:
    global _received
    if _received is None:
        _received = signum
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not interrupt the clean-up
        raise Terminated
    raise KeyboardInterrupt


def check_interrupted() -> None:
    """Raise the interruption again if a signal arrived and something swallowed its exception."""
    if _received is not None:
        raise Terminated if _received == signal.SIGTERM else KeyboardInterrupt


def _quiet_hooks(unraisable, excepthook):
    """sys.unraisablehook and sys.excepthook that leave out a KeyboardInterrupt: a callback that swallowed it
    prints "Exception ignored in ...", and numpy's C import macro prints the traceback (PyErr_Print, through
    sys.excepthook) before it raises its ImportError; main() says the one line instead. Everything else goes to the
    hooks given."""
    def quiet_unraisable(u) -> None:
        if u.exc_type is not None and issubclass(u.exc_type, KeyboardInterrupt):
            return
        unraisable(u)

    def quiet_excepthook(exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            return
        excepthook(exc_type, exc, tb)

    return quiet_unraisable, quiet_excepthook


def _forget_interrupt() -> None:
    """Let the exit status be ours. When a KeyboardInterrupt ends code run from a string (``exec``/``eval`` of
    source text: dataclasses and namedtuples build their methods that way while modules import), CPython marks it
    "unhandled" even though it was caught, and under ``python -m`` it then ends the process by SIGINT (status -2)
    instead of exiting with 130: 2 of 24 Ctrl-C tries here. Every string evaluation clears that mark first."""
    exec("None")  # noqa: S102 - a string on purpose: only that path clears the mark


def main(argv: list[str] | None = None) -> int:
    global _received, _command
    _received = _command = None
    saved = {}
    hooks = sys.unraisablehook, sys.excepthook
    try:
        if threading_main():
            saved[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_signal)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when Ctrl-C is ignored (nohup)
                saved[signal.SIGINT] = signal.signal(signal.SIGINT, _on_signal)
            sys.unraisablehook, sys.excepthook = _quiet_hooks(*hooks)
        code = _main(argv)
        if _received is not None:
            _forget_interrupt()
            if _command != "demo":  # the work finished although a signal came (a library swallowed its exception);
                # the page's server ends by Ctrl-C (Gradio catches it and closes): its normal end
                term = _received == signal.SIGTERM
                print(f"talkingface: {'terminated' if term else 'interrupted'} too late to stop: the work was done",
                      file=sys.stderr)
                return 143 if term else 130
        return code
    except BaseException as e:  # also while the first imports run
        if not isinstance(e, KeyboardInterrupt) and _received is None:
            raise
        term = isinstance(e, Terminated) or _received == signal.SIGTERM
        print(f"talkingface: {'terminated' if term else 'interrupted'}; no output was written", file=sys.stderr)
        _forget_interrupt()
        return 143 if term else 130
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        sys.unraisablehook, sys.excepthook = hooks


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def hide_native_stderr() -> bool:
    """Native libraries (MediaPipe's graphs, TFLite, ONNX Runtime) print start-up chatter straight to file
    descriptor 2, from their own threads and at moments no context manager can bracket (1 run in 8 leaked a
    'W0000 ... inference_feedback_manager' line). The command line sends descriptor 2 to /dev/null and keeps
    Python's own stderr (messages, warnings, tracebacks, progress bars) on a copy of the real one. Only when
    sys.stderr is the process's own (not when a caller or a test captures it). ffmpeg's output goes to log files
    and pipes, never to descriptor 2. Returns whether it did."""
    if sys.stderr is not sys.__stderr__ or sys.stderr is None:
        return False
    try:
        fd = sys.stderr.fileno()
        if fd != 2:
            return False
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return False
    sys.stderr.flush()
    sys.stderr = sys.__stderr__ = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding,
                                            errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    import faulthandler

    if faulthandler.is_enabled():
        faulthandler.enable(sys.stderr)
    return True


def _main(argv: list[str] | None) -> int:
    global _command
    args = build_parser().parse_args(argv)
    _command = args.command
    if not args.verbose:  # -v: everything, the native libraries' logs too
        hide_native_stderr()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")  # quiet mediapipe's C++ logging
    try:
        if args.command == "render":
            return _render(args)
        if args.command == "voices":
            return _voices(args)
        if args.command == "lipsync":
            return _lipsync(args)
        if args.command == "batch":
            return _batch(args)
        if args.command == "verify":
            from .provenance import main as verify_main

            return verify_main(args)
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
    return 2


if __name__ == "__main__":
    sys.exit(main())
