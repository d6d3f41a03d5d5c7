"""`ichflax-demo`: the checkout's demo page (demo/, kept out of site-packages: too generic a
name), served by its `demo.server`. Research and education use only; not a medical device."""

from ichflax.checkpoint import discover


def main(argv: list[str] | None = None) -> None:
  discover.checkout_package("demo")
  from demo import server
  server.main(argv)
