"""``python -m talkingface ...``: the same as the ``talkingface`` command."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python and the command line's own modules start (0.4 s on a busy machine)
    print("talkingface: interrupted; no output was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
