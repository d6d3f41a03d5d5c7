"""`python -m ichflax.reproduce`: the paper's two experiments under either reading, one report.

The command lives in ichflax/training/reproduce.py; this entry keeps `python -m ichflax.reproduce`.
"""

import sys

from ichflax.training.reproduce import main

if __name__ == "__main__":
  sys.exit(main())
