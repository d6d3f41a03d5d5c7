"""`python -m ichflax.evaluate`: a checkpoint measured on a labelled split, with intervals.

The command lives in ichflax/trust/evaluate.py; this entry keeps `python -m ichflax.evaluate`.
"""

import sys

from ichflax.trust.evaluate import main

if __name__ == "__main__":
  sys.exit(main())
