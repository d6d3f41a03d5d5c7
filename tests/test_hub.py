"""Model cards, `checkpoint push` and `hf://` checkpoints against a Hub stand-in on 127.0.0.1.

Every Hub call runs in a child process, as a user would run the commands: huggingface_hub reads
HF_ENDPOINT, HF_HOME, HF_TOKEN and HF_HUB_OFFLINE once, at import.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import hub_standin
import huggingface_hub as hf
import pytest

from ichflax import checkpoint
from ichflax.checkpoint import card
from ichflax.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_standin_token"
REPO = "someone/ich-phantom"
SLICE = ROOT / "demo" / "examples" / "subdural.dcm"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """The shipped demo weights exported again: a serving checkpoint with its model card."""
  return checkpoint.export_inference(ROOT / "checkpoints" / "multilabel",
                                     tmp_path_factory.mktemp("export") / "multilabel")


@pytest.fixture
def hub(tmp_path):
  state, server = hub_standin.serve(TOKEN)
  yield state
  server.shutdown()
  server.server_close()


def run(hub, home: Path, *args: str, token: bool = True, **env) -> subprocess.CompletedProcess:
  """A command in a fresh process whose Hub client talks to the stand-in only."""
  child = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
  child.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", **env)
  if token:
    child["HF_TOKEN"] = TOKEN
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=child, capture_output=True,
                        text=True, timeout=300)


def files_of(folder: Path) -> dict[str, bytes]:
  return {p.relative_to(folder).as_posix(): p.read_bytes()
          for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_writes_a_model_card_the_hub_reads(exported):
  model_card = hf.ModelCard.load(exported / card.NAME)
  meta = model_card.data
  assert meta.license == "apache-2.0" and "intracranial-hemorrhage" in meta.tags
  assert meta.pipeline_tag == "image-classification"
  accuracy = next(r for r in meta.eval_results if r.metric_type == "accuracy")
  progress = checkpoint.read_progress(exported)
  # The shipped weights carry their run's test report: the card quotes it, naming the data once.
  assert accuracy.metric_value == pytest.approx(progress.test["accuracy"], abs=1e-4)
  assert accuracy.dataset_split == "test"
  assert accuracy.dataset_name.startswith("anatomy-based synthetic phantom")
  assert accuracy.dataset_name.count("not patients") == 1
  text = model_card.text
  for needed in ("not a medical device", "synthetic phantom", "Intended use",
                 "Base model: random initialisation", "| image_size | 128 |",
                 "| {0.epoch} | {0.step} |".format(progress.history[-1]), "hf://OWNER/REPO"):
    assert needed in text, needed


def test_card_prefers_the_test_split_and_names_its_data(exported):
  spec = checkpoint.read_spec(exported)
  test = {"n": 398, "accuracy": 0.91, "auc": 0.968}
  text = card.render(spec.replace(data="RSNA 2019 stage 2 (paper protocol)"),
                     checkpoint.read_config(exported), Progress(test=test))
  meta = hf.ModelCard(text).data
  assert {(r.metric_type, r.metric_value, r.dataset_name, r.dataset_split)
          for r in meta.eval_results} == {
      ("accuracy", 0.91, "RSNA 2019 stage 2 (paper protocol)", "test"),
      ("auc", 0.968, "RSNA 2019 stage 2 (paper protocol)", "test")}
  assert "**test split of RSNA 2019 stage 2 (paper protocol)**, n = 398" in text
  assert "synthetic phantom" not in text


def test_push_then_serve_from_the_hub(exported, hub, tmp_path):
  stale = tmp_path / "with-extra"
  shutil.copytree(exported, stale)
  (stale / "notes.txt").write_text("from an earlier push\n")
  first = run(hub, tmp_path / "hf", "-m", "ichflax.checkpoint", "push", str(stale), REPO)
  assert first.returncode == 0, first.stderr
  first_commit = hub.repos[REPO].commits[-1][0]

  pushed = run(hub, tmp_path / "hf", "-m", "ichflax.checkpoint", "push", str(exported), REPO)
  assert pushed.returncode == 0, pushed.stderr
  assert f"hf://{REPO}@" in pushed.stdout
  arrived = hub.files(REPO)
  assert arrived.pop(".gitattributes") == hub_standin.HUB_GITATTRIBUTES  # the Hub's own
  assert arrived == files_of(exported), "the repository must hold exactly the export"
  binaries = {p for p, data in arrived.items() if b"\0" in data[:512]}
  assert binaries and binaries <= hub.repos[REPO].lfs, "binaries must travel through LFS"

  predicted = run(hub, tmp_path / "hf", "-m", "ichflax.predict", str(SLICE),
                  "--checkpoint", f"hf://{REPO}")
  assert predicted.returncode == 0, predicted.stderr
  result = json.loads(predicted.stdout.splitlines()[0])
  assert set(result["probabilities"]) == set(checkpoint.read_spec(exported).outputs)
  snapshot = Path(run(hub, tmp_path / "hf", "-c", "from ichflax import checkpoint; "
                      f"print(checkpoint.resolve('hf://{REPO}'))").stdout.strip())
  assert files_of(snapshot) == {**files_of(exported),
                                ".gitattributes": hub_standin.HUB_GITATTRIBUTES}

  # Served from the cache once downloaded: offline, the same answer and no request at all.
  asked = len(hub.requests)
  offline = run(hub, tmp_path / "hf", "-m", "ichflax.predict", str(SLICE),
                "--checkpoint", f"hf://{REPO}", HF_HUB_OFFLINE="1")
  assert offline.returncode == 0, offline.stderr
  assert json.loads(offline.stdout.splitlines()[0]) == result
  assert len(hub.requests) == asked

  # A revision pins an older push: the one that still had notes.txt.
  older = run(hub, tmp_path / "hf", "-c", "from ichflax import checkpoint; "
              f"print(checkpoint.resolve('hf://{REPO}@{first_commit}'))")
  assert older.returncode == 0, older.stderr
  assert (Path(older.stdout.strip()) / "notes.txt").read_text() == "from an earlier push\n"


def test_push_without_token_says_how_to_log_in(exported, hub, tmp_path):
  out = run(hub, tmp_path / "hf", "-m", "ichflax.checkpoint", "push", str(exported), REPO,
            token=False)
  assert out.returncode == 2
  assert "no Hugging Face token" in out.stderr and "hf auth login" in out.stderr
  assert hub.requests == []


def test_push_refuses_a_checkpoint_without_a_card(exported, hub, tmp_path):
  bare = tmp_path / "bare"
  shutil.copytree(exported, bare)
  (bare / card.NAME).unlink()
  out = run(hub, tmp_path / "hf", "-m", "ichflax.checkpoint", "push", str(bare), REPO)
  assert out.returncode == 2 and "no model card" in out.stderr, out.stderr
  assert hub.requests == []


def test_unknown_repo_offline_and_bad_revision_are_explained(exported, hub, tmp_path):
  unknown = run(hub, tmp_path / "hf", "-m", "ichflax.predict", str(SLICE),
                "--checkpoint", "hf://someone/nothing-here")
  assert unknown.returncode == 2
  assert "no model repository someone/nothing-here" in unknown.stderr
  assert "hf auth login" in unknown.stderr and "checkpoint push" in unknown.stderr

  offline = run(hub, tmp_path / "hf", "-m", "ichflax.predict", str(SLICE),
                "--checkpoint", f"hf://{REPO}", HF_HUB_OFFLINE="1")
  assert offline.returncode == 2
  assert "cannot be reached" in offline.stderr and "holds no complete copy" in offline.stderr

  assert run(hub, tmp_path / "hf", "-m", "ichflax.checkpoint", "push", str(exported),
             REPO).returncode == 0
  revision = run(hub, tmp_path / "hf", "-m", "ichflax.predict", str(SLICE),
                 "--checkpoint", f"hf://{REPO}@v9")
  assert revision.returncode == 2 and "has no revision 'v9'" in revision.stderr


def test_a_space_with_an_unknown_hub_checkpoint_still_opens_and_says_why(hub, tmp_path):
  """ICHFLAX_CHECKPOINT=hf://... as a Space sets it: the page text names the fix."""
  out = run(hub, tmp_path / "hf", "-c", "from demo import weights; "
            "from ichflax.checkpoint import discover; "
            "predictor, page = weights.load(discover.requested(None)); "
            "print(predictor is None); print(page)",
            ICHFLAX_CHECKPOINT="hf://someone/nothing-here")
  assert out.returncode == 0, out.stderr
  shown, page = out.stdout.split("\n", 1)
  assert shown == "True"
  assert "hf://someone/nothing-here" in page and "no model repository" in page
  assert "runs without a model" in page


def test_every_checkpoint_option_names_hf_uris(capsys):
  """predict, calibrate and the app all read hf://OWNER/REPO[@REVISION]: their help says so."""
  from demo import server
  from ichflax.serving import cli as predict_cli
  from ichflax.trust import calibrate
  for main in (predict_cli.main, calibrate.main, server.parse):
    with pytest.raises(SystemExit):
      main(["--help"])
    assert "hf://OWNER/REPO[@REVISION]" in " ".join(capsys.readouterr().out.split())
