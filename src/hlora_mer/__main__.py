"""``python -m hlora_mer`` is the same as the ``hlora-mer`` command."""

import sys

from hlora_mer.cli import main

if __name__ == "__main__":
    sys.exit(main())
