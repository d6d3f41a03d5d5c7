"""`python -m ichflax.checkpoint`: `export SRC DST [--dtype bfloat16]`, `push DIR OWNER/REPO` or
`migrate DIR`."""

from __future__ import annotations

import argparse
import sys

import jax.numpy as jnp

from ichflax.checkpoint import export, hub, layout


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m ichflax.checkpoint", description=__doc__)
  commands = p.add_subparsers(dest="command", required=True)
  out = commands.add_parser("export", help="a small serving copy of a training checkpoint")
  out.add_argument("src", help="a training workdir, its checkpoints/ dir, one step dir, or "
                               "hf://OWNER/REPO[@REV]")
  out.add_argument("dst", help="new directory for the inference checkpoint")
  out.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="parameter storage: bfloat16 (half the size; served in fp32) or float32 "
                        "(default bfloat16)")
  push = commands.add_parser(
      "push", help="upload an exported checkpoint and its model card to a Hugging Face model "
                   "repository (token: HF_TOKEN or `hf auth login`)")
  push.add_argument("dir", help="a directory written by `export`")
  push.add_argument("repo", help="OWNER/REPO on the Hub; created if it does not exist")
  push.add_argument("--private", action="store_true", help="create the repository private")
  old = commands.add_parser("migrate", help="convert a checkpoint of the older one-`meta` layout")
  old.add_argument("dir", help="the checkpoint's step directory (holding state/ and meta/)")
  a = p.parse_args(argv)
  try:
    if a.command == "export":
      print(export.export_inference(a.src, a.dst, jnp.dtype(a.dtype)))
    elif a.command == "push":
      commit = hub.push(a.dir, a.repo, private=a.private)
      print(f"{commit.commit_url}\nserve it with: python app.py --checkpoint hf://{a.repo}"
            f"@{commit.oid}")
    else:
      print(export.migrate(a.dir))
  except layout.CheckpointError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
