"""`python -m ichflax.checkpoint export|push|migrate` (ichflax/checkpoint/cli.py)."""

import sys

from ichflax.checkpoint.cli import main

if __name__ == "__main__":
  sys.exit(main())
