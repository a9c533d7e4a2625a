"""A local stand-in for the Hugging Face Hub, speaking the part of its HTTP API that huggingface_hub 2.x uses to
list a repository and download files (read from huggingface_hub's `hf_api.model_info`, `file_download.
get_hf_file_metadata` and `http_get`):

- `GET /api/{models|datasets}/{repo}/revision/{rev}?blobs=true`: `sha` (the commit) and `siblings` with `size`,
  `blobId` and, for LFS files, `lfs: {sha256, size, pointerSize}`;
- `HEAD /[datasets/]{repo}/resolve/{rev}/{path}`: `X-Repo-Commit`, `ETag` (the git blob id), and for LFS files
  `X-Linked-Etag` (the sha256) and `X-Linked-Size`;
- `GET` of the same URL, honouring `Range: bytes=N-` with a 206 and `Content-Range`.

Every request is recorded, so tests can assert what was (not) downloaded and that a Range was asked for.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    repo_type: str = "model"
    # bytes sent instead of the real ones, while the metadata describes the real ones: a bad mirror, or (shorter)
    # a connection that dropped
    served: dict[str, bytes] = field(default_factory=dict)

    @property
    def commit(self) -> str:
        digest = hashlib.sha1(self.repo_id.encode())
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.files[name])
        return digest.hexdigest()

    @staticmethod
    def is_lfs(filename: str) -> bool:
        return filename.endswith(LFS_SUFFIXES)

    def sibling(self, filename: str) -> dict:
        data = self.files[filename]
        if not self.is_lfs(filename):
            return {"rfilename": filename, "size": len(data), "blobId": git_blob_id(data)}
        pointer = lfs_pointer(data)
        return {"rfilename": filename, "size": len(data), "blobId": git_blob_id(pointer),
                "lfs": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}}


@dataclass
class Request:
    method: str
    path: str
    range: str | None


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)  # a short poll: shutdown() waits for it

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[(repo.repo_type, repo.repo_id)] = repo
        return repo

    def downloads(self) -> list[Request]:
        """File GETs (not HEADs, not API listings): what actually moved bytes."""
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path]

    def downloaded_files(self) -> list[str]:
        return ["/".join(r.path.split("/")[6 if r.path.startswith("/datasets/") else 5:]) for r in self.downloads()]

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- routing ----------------------------------------------------------------------------------------------
    def route(self, path: str) -> tuple[FakeRepo, str, str | None] | None:
        """(repo, revision, filename or None for the API listing), or None for an unknown repo / revision."""
        parts = [unquote(p) for p in path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) == 6 and parts[4] == "revision":
            repo_type, repo_id, revision, filename = parts[1][:-1], "/".join(parts[2:4]), parts[5], None
        else:
            repo_type = "dataset" if parts[:1] == ["datasets"] else "model"
            parts = parts[1:] if repo_type == "dataset" else parts
            if len(parts) < 5 or parts[2] != "resolve":
                return None
            repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or revision not in ("main", repo.commit):
            return None
        return repo, revision, filename


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            path = urlsplit(self.path).path
            hub.requests.append(Request(self.command, path, self.headers.get("Range")))
            routed = hub.route(path)
            if routed is None:
                return self._send(404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "not found"}', body)
            repo, _, filename = routed
            if filename is None:
                listing = {"id": repo.repo_id, "sha": repo.commit,
                           "siblings": [repo.sibling(name) for name in sorted(repo.files)]}
                return self._send(200, {"Content-Type": "application/json"}, json.dumps(listing).encode(), body)
            if filename not in repo.files:
                return self._send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit},
                                  b'{"error": "entry not found"}', body)
            self._send_file(repo, filename, body)

        def _send_file(self, repo: FakeRepo, filename: str, body: bool) -> None:
            data = repo.served.get(filename, repo.files[filename])
            info = repo.sibling(filename)
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{info["blobId"]}"', "Accept-Ranges": "bytes"}
            if "lfs" in info:
                headers |= {"X-Linked-Etag": f'"{info["lfs"]["sha256"]}"', "X-Linked-Size": str(info["size"])}
            start = _range_start(self.headers.get("Range")) if body else 0
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(206, headers, data[start:], body)
            self._send(200, headers, data, body)

        def _send(self, status: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

    return Handler


def refusing_endpoint() -> str:
    """The URL of a local port that refuses connections, what an air-gapped machine or a firewall that rejects
    looks like to a client: bound, its number read, then closed, so nothing listens there."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _range_start(header: str | None) -> int:
    """`bytes=N-`, the only form huggingface_hub sends when it continues a download."""
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return 0
    return int(header[len("bytes="):-1])
