"""Serve the ichflax demo: `python app.py [--port N] [--share] [--checkpoint DIR]`.

Hugging Face Spaces runs this file; the server itself is `demo/server.py`, reached through
`ichflax.app` (also installed as the `ichflax-demo` command). Research and education use only;
not a medical device.
"""

import sys

from ichflax.app import main

if __name__ == "__main__":
  sys.exit(main())
