"""A stand-in for the Hugging Face Hub's HTTP endpoints, on 127.0.0.1, for the hub tests.

Just the routes huggingface_hub calls to create a repository, upload a folder (preupload, the
git-LFS batch API with basic transfer, the NDJSON commit) and download a snapshot (revision
info, recursive tree, resolve with the X-Repo-Commit / ETag headers), with the error headers the
client turns into RepositoryNotFoundError and friends. Repositories live in memory. Point the
client at it with HF_ENDPOINT; Xet uploads need the real CAS service, so set HF_HUB_DISABLE_XET.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import json
import re
import threading
from urllib.parse import unquote, urlsplit

import yaml

LFS_OVER = 10 << 20  # the Hub's limit for a regular (non-LFS) file
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
HUB_GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n"  # what a new Hub repo holds


def git_blob_sha(data: bytes) -> str:
  return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclasses.dataclass
class Repo:
  """Commits as full snapshots: (commit id, {path: bytes}), newest last."""

  commits: list[tuple[str, dict[str, bytes]]]
  lfs: set[str] = dataclasses.field(default_factory=set)  # paths committed as LFS pointers

  def at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
    if revision == "main":
      return self.commits[-1]
    return next((c for c in self.commits if c[0] == revision), None)


class Hub:
  """The server's state, shared with the test: repositories, LFS objects, what was requested."""

  def __init__(self, token: str):
    self.token = token
    self.repos: dict[str, Repo] = {}
    self.lfs_objects: dict[str, bytes] = {}
    self.requests: list[tuple[str, str]] = []
    self.url = ""

  def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    return dict(self.repos[repo_id].at(revision)[1])

  def commit(self, repo_id: str, files: dict[str, bytes]) -> str:
    repo = self.repos[repo_id]
    sha = hashlib.sha1(json.dumps(
        [repo.commits[-1][0] if repo.commits else "", sorted(
            (p, git_blob_sha(b)) for p, b in files.items())]).encode()).hexdigest()
    repo.commits.append((sha, files))
    return sha


class _Handler(http.server.BaseHTTPRequestHandler):
  hub: Hub
  protocol_version = "HTTP/1.1"

  # --- plumbing ---------------------------------------------------------------------------

  def _route(self, method: str) -> None:
    path = unquote(urlsplit(self.path).path)
    self.hub.requests.append((method, path))
    self.body = self._read_body()  # all of it, so a kept-alive connection stays in step
    for verb, pattern, handler in ROUTES:
      match = re.fullmatch(pattern, path)
      if verb == method and match:
        handler(self, **match.groupdict())
        return
    self._send(404, {"error": f"no route {method} {path}"})

  def do_GET(self):
    self._route("GET")

  def do_HEAD(self):
    self._route("HEAD")

  def do_POST(self):
    self._route("POST")

  def do_PUT(self):
    self._route("PUT")

  def _read_body(self) -> bytes:
    if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
      out = b""
      while size := int(self.rfile.readline().strip().split(b";")[0], 16):
        out += self.rfile.read(size)
        self.rfile.readline()
      self.rfile.readline()
      return out
    return self.rfile.read(int(self.headers.get("Content-Length") or 0))

  def _send(self, status: int, payload=None, headers: dict | None = None, body: bytes = b""):
    if payload is not None:
      body = json.dumps(payload).encode()
    self.send_response(status)
    for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
      self.send_header(key, value)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)

  def _error(self, status: int, code: str, message: str) -> None:
    self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

  def _authorised(self) -> bool:
    if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
      return True
    self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
    return False

  def _repo(self, repo: str) -> Repo | None:
    if repo not in self.hub.repos:
      self._error(404, "RepoNotFound", f"Repository not found: {repo}")
      return None
    return self.hub.repos[repo]

  def _commit(self, repo: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
    found = self._repo(repo)
    commit = found and found.at(rev)
    if found and commit is None:
      self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
    return commit

  def log_message(self, *args):
    pass

  # --- upload -----------------------------------------------------------------------------

  def create_repo(self):
    if not self._authorised():
      return
    body = json.loads(self.body)
    repo_id = f"{body['organization']}/{body['name']}"
    if repo_id in self.hub.repos:
      self._send(409, {"error": "You already created this model repo", "url": repo_id})
      return
    self.hub.repos[repo_id] = Repo([])
    self.hub.commit(repo_id, {".gitattributes": HUB_GITATTRIBUTES})
    self._send(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

  def validate_yaml(self):
    content = json.loads(self.body)["content"]
    try:
      front = content.split("---\n")[1] if content.startswith("---\n") else ""
      ok = isinstance(yaml.safe_load(front) or {}, dict)
    except yaml.YAMLError:
      ok = False
    self._send(200 if ok else 400, {"errors": [] if ok else [{"message": "bad YAML"}],
                                    "warnings": []})

  def preupload(self, repo, rev):
    if not self._authorised() or not self._commit(repo, rev):
      return
    files = json.loads(self.body)["files"]
    self._send(200, {"files": [{
        "path": f["path"], "shouldIgnore": False, "oid": None,
        "uploadMode": "lfs" if (f["size"] > LFS_OVER or b"\0" in base64.b64decode(f["sample"]))
        else "regular"} for f in files]})

  def lfs_batch(self, repo):
    if not self._authorised() or not self._repo(repo):
      return
    objects = []
    for obj in json.loads(self.body)["objects"]:
      entry = {"oid": obj["oid"], "size": obj["size"]}
      if obj["oid"] not in self.hub.lfs_objects:
        entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs/{obj['oid']}"},
                            "verify": {"href": f"{self.hub.url}/lfs/{obj['oid']}/verify"}}
      objects.append(entry)
    self._send(200, {"transfer": "basic", "objects": objects})

  def lfs_put(self, oid):
    data = self.body
    if hashlib.sha256(data).hexdigest() != oid:
      self._send(400, {"error": "sha256 mismatch"})
      return
    self.hub.lfs_objects[oid] = data
    self._send(200, {})

  def lfs_verify(self, oid):
    self._send(200 if oid in self.hub.lfs_objects else 404, {})

  def commit(self, repo, rev):
    if not self._authorised():
      return
    parent = self._commit(repo, rev)
    if parent is None:
      return
    files, lfs = dict(parent[1]), set()
    for line in self.body.splitlines():
      item = json.loads(line)
      value = item["value"]
      if item["key"] == "file":
        files[value["path"]] = base64.b64decode(value["content"])
      elif item["key"] == "lfsFile":
        if value["oid"] not in self.hub.lfs_objects:
          self._send(422, {"error": f"LFS object {value['oid']} was never uploaded"})
          return
        files[value["path"]] = self.hub.lfs_objects[value["oid"]]
        lfs.add(value["path"])
      elif item["key"] == "deletedFile":
        files.pop(value["path"], None)
      elif item["key"] == "deletedFolder":
        files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/"))}
    self.hub.repos[repo].lfs |= lfs
    sha = self.hub.commit(repo, files)
    self._send(200, {"commitUrl": f"{self.hub.url}/{repo}/commit/{sha}", "commitOid": sha,
                     "pullRequestUrl": None})

  # --- download ---------------------------------------------------------------------------

  def revision(self, repo, rev):
    commit = self._commit(repo, rev)
    if commit:
      self._send(200, {"id": repo, "modelId": repo, "sha": commit[0], "private": False,
                       "siblings": [{"rfilename": p} for p in sorted(commit[1])]})

  def tree(self, repo, rev, path=None):
    commit = self._commit(repo, rev)
    if commit:
      lfs = self.hub.repos[repo].lfs
      prefix = path.rstrip("/") + "/" if path else ""
      self._send(200, [
          {"type": "file", "path": p, "size": len(b), "oid": git_blob_sha(b),
           **({"lfs": {"oid": hashlib.sha256(b).hexdigest(), "size": len(b), "pointerSize": 134}}
              if p in lfs else {})}
          for p, b in sorted(commit[1].items()) if p.startswith(prefix)])

  def resolve(self, repo, rev, path):
    commit = self._commit(repo, rev)
    if not commit:
      return
    if path not in commit[1]:
      self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
      return
    data = commit[1][path]
    etag = hashlib.sha256(data).hexdigest() if path in self.hub.repos[repo].lfs else (
        git_blob_sha(data))
    self._send(200, headers={"X-Repo-Commit": commit[0], "ETag": f'"{etag}"',
                             "Content-Type": "application/octet-stream"}, body=data)


ROUTES = [
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", _Handler.commit),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})", _Handler.lfs_put),
    ("POST", r"/lfs/(?P<oid>[0-9a-f]{64})/verify", _Handler.lfs_verify),
    ("GET", rf"/api/models/{REPO}/revision/(?P<rev>[^/]+)", _Handler.revision),
    ("GET", rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", _Handler.tree),
    ("GET", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
    ("HEAD", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]


def serve(token: str) -> tuple[Hub, http.server.ThreadingHTTPServer]:
  """Starts the stand-in on a free 127.0.0.1 port; call `server.shutdown()` when done."""
  hub = Hub(token)
  handler = type("Handler", (_Handler,), {"hub": hub})
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  hub.url = f"http://127.0.0.1:{server.server_address[1]}"
  threading.Thread(target=server.serve_forever, daemon=True).start()
  return hub, server
