"""`python -m ichflax.train`: the paper's recipe, jit-compiled, data-parallel, resumable.

The command lives in ichflax/training/cli.py; this entry keeps `python -m ichflax.train`.
"""

import sys

from ichflax.training.cli import main

if __name__ == "__main__":
  sys.exit(main())
