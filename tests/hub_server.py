"""A small stand-in of the Hugging Face Hub's HTTP endpoints on 127.0.0.1, for download and upload tests.

It answers the requests ``huggingface_hub`` makes (read from the client's source: ``hf_api.py``,
``file_download.py``, ``_commit_api.py``, ``_snapshot_download.py``) with the JSON shapes and headers the client
parses, and keeps repos in memory: ``create_repo`` (POST /api/repos/create), ``create_branch``, ``upload_folder``
(preupload, which here answers ``regular`` for every file so that the contents travel in the commit itself, the
Hub's path for small files; the commit's NDJSON), ``repo_info`` / ``model_info``, ``list_repo_tree`` and
``hf_hub_download`` (HEAD + GET on /resolve/). Errors carry the Hub's ``X-Error-Code`` header (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``), which the client turns into its own exception classes. Writes and private
repos need ``Authorization: Bearer <token>``. What it does not do: LFS or Xet transfers, pagination, pull requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {path: content}


class FakeHub:
    """``with FakeHub(token="t") as hub: ...`` serves on ``hub.url``; ``hub.requests`` logs (method, path)."""

    def __init__(self, token: str = "hf_test_token"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ plumbing
    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: Any = None, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if "Content-Type" not in (headers or {}):
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, msg: str) -> None:
        self._reply(h, status, {"error": msg}, {"X-Error-Code": code, "X-Error-Message": msg})

    def _authorized(self, h: BaseHTTPRequestHandler) -> bool:
        return h.headers.get("Authorization") == f"Bearer {self.token}"

    def _repo(self, h: BaseHTTPRequestHandler, repo_id: str) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(h)):
            self._error(h, 404, "RepoNotFound", f"Repository Not Found for url: {h.path}")
            return None
        return repo

    def _commit(self, h: BaseHTTPRequestHandler, repo: Repo, rev: str) -> str | None:
        commit = repo.branches.get(rev) or (rev if rev in repo.commits else None)
        if commit is None:
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    # ------------------------------------------------------------------ routes
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(h.path).path
        self.requests.append((method, path))
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if method == "POST" and path == "/api/validate-yaml":
            return self._reply(h, 200, {"errors": [], "warnings": []})
        if method == "POST" and path == "/api/repos/create":
            return self._create(h, json.loads(body))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree|preupload|commit|branch)/(.+?))?/?", path)
        if m:
            repo_id, action, rest = m.group(1), m.group(2), unquote(m.group(3) or "main")
            if action in ("preupload", "commit", "branch") and not self._authorized(h):
                return self._error(h, 401, "Unauthorized", "Invalid credentials in Authorization header")
            repo = self._repo(h, repo_id)
            if repo is None:
                return None
            if action == "preupload":
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._reply(h, 200, {"files": modes, "commitOid": repo.branches.get(rest)})
            if action == "commit":
                return self._receive_commit(h, repo_id, repo, rest, body)
            if action == "branch":
                repo.branches[rest] = repo.branches["main"]
                return self._reply(h, 200, {})
            rev, _, sub = rest.partition("/") if action == "tree" else (rest, "", "")
            commit = self._commit(h, repo, rev)
            if commit is None:
                return None
            files = repo.commits[commit]
            if action == "tree":
                listing = [
                    {"type": "file", "oid": git_oid(d), "size": len(d), "path": p}
                    for p, d in sorted(files.items())
                    if p.startswith(sub)
                ]
                return self._reply(h, 200, listing)
            info = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": repo.private,
                    "siblings": [{"rfilename": p} for p in sorted(files)]}  # fmt: skip
            return self._reply(h, 200, info)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and method in ("GET", "HEAD"):
            repo = self._repo(h, m.group(1))
            if repo is None:
                return None
            commit = self._commit(h, repo, unquote(m.group(2)))
            if commit is None:
                return None
            data = repo.commits[commit].get(unquote(m.group(3)))
            if data is None:
                return self._error(h, 404, "EntryNotFound", f"Entry not found: {m.group(3)}")
            headers = {
                "X-Repo-Commit": commit,
                "ETag": f'"{git_oid(data)}"',
                "Content-Type": "application/octet-stream",
            }
            return self._reply(h, 200, data, headers)
        return self._error(h, 404, "NotFound", f"no route {method} {path}")

    def _create(self, h: BaseHTTPRequestHandler, doc: dict[str, Any]) -> None:
        if not self._authorized(h):
            return self._error(h, 401, "Unauthorized", "Invalid credentials in Authorization header")
        repo_id = f"{doc['organization']}/{doc['name']}" if doc.get("organization") else doc["name"]
        if repo_id in self.repos:
            return self._reply(
                h, 409, {"error": "You already created this model repo", "url": self.url + "/" + repo_id}
            )
        empty = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = Repo(
            private=doc.get("visibility") == "private" or bool(doc.get("private")),
            branches={"main": empty},
            commits={empty: {}},
        )
        return self._reply(h, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _receive_commit(self, h: BaseHTTPRequestHandler, repo_id: str, repo: Repo, branch: str, body: bytes) -> None:
        files = dict(repo.commits[repo.branches[branch]])
        summary = ""
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"].get("summary", "")
            elif item["key"] == "file":
                v = item["value"]
                files[v["path"]] = (
                    base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
                )
            else:
                return self._error(h, 400, "BadRequest", f"this stand-in does not take {item['key']!r} operations")
        commit = hashlib.sha1((repo.branches[branch] + summary + repr(sorted(files))).encode()).hexdigest()
        repo.commits[commit] = files
        repo.branches[branch] = commit
        url = f"{self.url}/{repo_id}/commit/{commit}"
        return self._reply(h, 200, {"commitUrl": url, "commitOid": commit, "pullRequestUrl": None})
