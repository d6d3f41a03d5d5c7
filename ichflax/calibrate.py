"""`python -m ichflax.calibrate`: a checkpoint's domain statistics, temperatures, operating points.

The command lives in ichflax/trust/calibrate.py; this entry keeps `python -m ichflax.calibrate`.
"""

import sys

from ichflax.trust.calibrate import main

if __name__ == "__main__":
  sys.exit(main())
