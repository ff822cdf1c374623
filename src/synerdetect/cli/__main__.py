"""``python -m synerdetect.cli``: the command line (as ``python -m synerdetect``)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
