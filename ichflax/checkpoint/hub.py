"""Checkpoints on the Hugging Face Hub: `hf://OWNER/REPO[@REVISION][/PATH]` and `push`.

The Hub's convention is weights in a model repository with a model card, fetched by the Space
at start. `ichflax.checkpoint.resolve` sends every `hf://` path here, so the app, the predict CLI
and `ICHFLAX_CHECKPOINT` all accept one. Downloads go once into the Hub cache (`HF_HUB_CACHE`)
and are checked before anything is served; the endpoint, token and offline mode are the client's
usual settings (`HF_ENDPOINT`, `HF_TOKEN` or `hf auth login`, `HF_HUB_OFFLINE`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import huggingface_hub as hf
from huggingface_hub import constants, errors

from ichflax.checkpoint import card, layout

log = logging.getLogger("ichflax.checkpoint.hub")
SCHEME = constants.HF_PROTOCOL  # "hf://"
PUSH = "python -m ichflax.checkpoint push DIR OWNER/REPO"


class HubError(layout.CheckpointError):
  """A Hub checkpoint that cannot be fetched or published; the message says how to fix it."""


def is_hub(path: str | Path) -> bool:
  """True for `hf://...`, also after `Path()` collapsed it to `hf:/...`."""
  return str(path).startswith(SCHEME[:-1])


@functools.cache
def download(uri: str) -> Path:
  """The checkpoint directory of a Hub URI, downloaded once per revision and checked.

  Checked: the Hub cache holds every file of the revision at its listed size, and the model
  spec loads; otherwise HubError says what went wrong and what to do.
  """
  ref = _parse(uri)
  try:
    folder = Path(hf.snapshot_download(ref.id, repo_type=ref.type, revision=ref.revision,
                                       library_name="ichflax"))
  except errors.RevisionNotFoundError:
    raise HubError(f"{uri}: {ref.id} has no revision {ref.revision!r}; use a branch, tag or "
                   "commit of the repository, or leave `@REVISION` out for main") from None
  except errors.RepositoryNotFoundError:
    raise HubError(f"{uri}: no {ref.type} repository {ref.id} on {constants.ENDPOINT}, or it is "
                   "private and no token with access was given: check the name, log in "
                   "(`hf auth login`, or set HF_TOKEN), or publish one with "
                   f"`{PUSH}`") from None
  except errors.LocalEntryNotFoundError as e:
    raise HubError(f"{uri}: the Hub at {constants.ENDPOINT} cannot be reached (offline, or "
                   f"HF_HUB_OFFLINE=1) and the Hub cache ({constants.HF_HUB_CACHE}) holds no "
                   "complete copy: connect once to download it, or serve a local checkpoint "
                   f"directory instead ({type(e).__name__})") from None
  except errors.HfHubHTTPError as e:
    raise HubError(f"{uri}: the Hub refused the download: {e}") from None
  _check_complete(ref, folder)
  step = folder / ref.path_in_repo
  try:
    spec = layout.spec_at(layout.find_step(step))
  except (OSError, ValueError, KeyError) as e:
    raise HubError(f"{uri}: the repository holds no usable ichflax checkpoint at its "
                   f"{'root' if not ref.path_in_repo else ref.path_in_repo} ({e}); publish "
                   f"one with `python -m ichflax.checkpoint export` then `{PUSH}`") from None
  log.info("%s: commit %s in %s: %s", uri, folder.name, step, spec.describe())
  return step


def push(folder: str | Path, repo_id: str, *, private: bool = False,
         message: str | None = None) -> hf.CommitInfo:
  """Uploads an exported checkpoint and its model card; the repository then holds exactly it.

  The repository is created if needed; files of an earlier push that this export lacks are
  deleted in the same commit, so `hf://` never serves a mix of two checkpoints.
  """
  folder = Path(folder)
  if layout.find_step(folder) != folder:
    raise HubError(f"{folder} is a training run, not an exported checkpoint: export it first "
                   "(`python -m ichflax.checkpoint export RUN OUT`), then push OUT")
  if not (folder / card.NAME).is_file():
    raise HubError(f"{folder} has no model card ({card.NAME}): export the checkpoint with "
                   "`python -m ichflax.checkpoint export`, which writes one")
  token = hf.get_token()
  if token is None:
    raise HubError("no Hugging Face token: run `hf auth login`, or set HF_TOKEN to a token with "
                   "write access (https://huggingface.co/settings/tokens), then push again")
  api = hf.HfApi(token=token, library_name="ichflax")
  try:
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(
        folder_path=folder, repo_id=repo_id, delete_patterns="*",
        commit_message=message or f"ichflax checkpoint: {layout.spec_at(folder).describe()}")
  except errors.HfHubHTTPError as e:
    raise HubError(f"could not push {folder} to {repo_id} on {constants.ENDPOINT}: {e}") from None


def _parse(uri: str) -> hf.HfUri:
  if not uri.startswith(SCHEME):  # Path("hf://o/r") reads back as "hf:/o/r"
    uri = SCHEME + uri.removeprefix(SCHEME[:-1])
  try:
    ref = hf.parse_hf_uri(uri)
  except errors.HfUriError as e:
    raise HubError(f"{e}; a checkpoint on the Hub is hf://OWNER/REPO[@REVISION]") from None
  if ref.type == "bucket":
    raise HubError(f"{uri}: buckets are not versioned; push the checkpoint to a model "
                   f"repository with `{PUSH}`")
  return ref


def _check_complete(ref: hf.HfUri, folder: Path) -> None:
  """Every file the revision lists is in the cache at its listed size (a cut download is not)."""
  try:
    listed = hf.get_cached_repo_tree(ref.id, repo_type=ref.type, revision=folder.name)
  except errors.CachedRepoTreeNotFoundError:
    log.warning("%s: no cached file listing for commit %s; completeness not checked",
                ref.id, folder.name)
    return
  broken = [f.path for f in listed
            if not (folder / f.path).is_file() or (folder / f.path).stat().st_size != f.size]
  if broken:
    raise HubError(f"hf://{ref.id}: the cached download of commit {folder.name} is incomplete "
                   f"({len(broken)} file(s), e.g. {broken[0]}): connect to the Hub and start "
                   f"again, or delete it with `hf cache rm {ref.type}/{ref.id}`")
