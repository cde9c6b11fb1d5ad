"""``python -m talkingface ...`` and the ``talkingface`` command (pyproject's entry point is :func:`run`)."""
import sys


def run() -> int:
    """The command line, with Ctrl-C handled from the first import on: a Ctrl-C while the command line's own modules
    load (argparse, ...: 0.4 s on a busy machine) is the same one line as later, not a traceback."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("talkingface: interrupted; no output was written", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
