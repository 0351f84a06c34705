"""``python -m persona_async``: the ``persona-async`` command line (see ``persona_async._cli``)."""

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
