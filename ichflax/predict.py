"""`python -m ichflax.predict`: probabilities, Grad-CAM and a verdict for files and series.

The command lives in ichflax/serving/cli.py; this entry keeps `python -m ichflax.predict`.
"""

import sys

from ichflax.serving.cli import main

if __name__ == "__main__":
  sys.exit(main())
