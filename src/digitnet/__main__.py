"""Allow ``python -m digitnet``."""

import sys

from digitnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
