"""A tiny stand-in for the Hugging Face Hub, enough for ``hf_hub_download``: it answers
``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` with the headers huggingface_hub reads
(``X-Repo-Commit``, ``X-Linked-Etag``/``ETag``, ``X-Linked-Size``, ``Content-Length``) and the
``X-Error-Code`` it uses to tell a missing repo, revision or file apart.

It binds 127.0.0.1 only, on a free port, in a daemon thread; it stops when its ``with`` block
ends, and in any case after ``max_lifetime`` seconds, so a failed test can never leave it running.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class FakeHub:
    def __init__(self, max_lifetime: float = 120.0):
        self.files: dict[tuple[str, str], dict[str, bytes]] = {}  # (repo, commit) -> {filename: bytes}
        self.branches: dict[tuple[str, str], str] = {}  # (repo, branch) -> commit
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.lie_about_size: int | None = None  # announce this size instead of the real one
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._timer = threading.Timer(max_lifetime, self.stop)
        self._timer.daemon = True
        self._stopped = False

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo: str, commit: str, filename: str, data: bytes, branch: str | None = None) -> None:
        self.files.setdefault((repo, commit), {})[filename] = data
        if branch:
            self.branches[(repo, branch)] = commit

    def count(self, method: str, filename: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and (filename is None or p.endswith("/" + filename)))

    def start(self) -> FakeHub:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._timer.cancel()
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _lookup(self, path: str) -> tuple[int, dict[str, str], bytes]:
        parts = unquote(path.split("?", 1)[0]).lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return 404, {"X-Error-Code": "RepoNotFound"}, b""
        repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if not any(r == repo for r, _ in self.files):
            return 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        commit = self.branches.get((repo, revision), revision)
        if (repo, commit) not in self.files:
            return 404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}, b""
        data = self.files[(repo, commit)].get(filename)
        if data is None:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b""
        sha = hashlib.sha256(data).hexdigest()
        size = str(self.lie_about_size if self.lie_about_size is not None else len(data))
        headers = {"X-Repo-Commit": commit, "ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": size}
        return 200, headers, data

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                with hub._lock:
                    hub.requests.append((self.command, self.path))
                status, headers, body = hub._lookup(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(with_body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(with_body=True)

            def log_message(self, *args) -> None:
                pass

        return Handler
