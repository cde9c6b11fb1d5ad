"""``python -m talkingface ...``: the same as the ``talkingface`` command."""
import sys

from .cli import main

sys.exit(main())
