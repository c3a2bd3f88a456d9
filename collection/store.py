"""Content-addressed audio store behind an fsspec URL.

Keys are the sha256 of the file's bytes; objects live at ``<root>/<aa>/<sha256>.<ext>``. A
local directory is the default (``file:///…`` or a plain path); ``s3://bucket/prefix`` works
the same once ``s3fs`` is installed. Storing the same bytes twice writes them once.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import fsspec


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stable_fraction(seed: int, key: str) -> float:
    """``sha256(f"{seed}:{key}")`` mapped onto [0, 1): a choice that depends only on the key and the seed,
    the same on every run and machine (split assignment, double-transcription sampling)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class StoredAudio:
    sha256: str
    uri: str
    created: bool  # False when the bytes were already there


class AudioStore:
    def __init__(self, url: str | Path):
        url = str(url)
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        if self.protocol == "file":
            self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, sha256: str, ext: str) -> str:
        return f"{self.root}/{sha256[:2]}/{sha256}.{ext}"

    def uri(self, sha256: str, ext: str = "wav") -> str:
        path = self._path(sha256, ext)
        return path if self.protocol == "file" else f"{self.protocol}://{path}"

    def put(self, data: bytes, ext: str = "wav") -> StoredAudio:
        digest = sha256_bytes(data)
        path = self._path(digest, ext)
        if self.fs.exists(path):
            return StoredAudio(digest, self.uri(digest, ext), created=False)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        # A tmp name of its own per writer: two concurrent puts of the same bytes must not share
        # (and move away) one tmp file. Write then rename: readers never see half a file.
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)
        return StoredAudio(digest, self.uri(digest, ext), created=True)

    def get(self, uri: str) -> bytes:
        with fsspec.open(uri, "rb") as f:
            return f.read()

    def exists(self, sha256: str, ext: str = "wav") -> bool:
        return self.fs.exists(self._path(sha256, ext))

    def delete(self, sha256: str, ext: str = "wav") -> bool:
        path = self._path(sha256, ext)
        if not self.fs.exists(path):
            return False
        self.fs.rm(path)
        return True

    def keys(self) -> list[str]:
        """Every stored sha256 (for audits and deletion scans)."""
        if not self.fs.exists(self.root):
            return []
        return sorted(p.rsplit("/", 1)[-1].split(".", 1)[0] for p in self.fs.find(self.root) if ".tmp-" not in p)

    def unreferenced(self, referenced: set[str], min_age_s: float) -> list[str]:
        """Stored sha256 keys not in ``referenced`` whose file is older than ``min_age_s`` seconds (younger
        ones may belong to a catalog transaction still in flight)."""
        if not self.fs.exists(self.root):
            return []
        now, out = time.time(), []
        for path, info in self.fs.find(self.root, detail=True).items():
            key = path.rsplit("/", 1)[-1].split(".", 1)[0]
            if ".tmp-" in path or key in referenced:
                continue
            mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
            if isinstance(mtime, datetime):
                mtime = mtime.timestamp()
            if mtime is not None and max(now - float(mtime), 0.0) >= min_age_s:  # fs clocks may run ahead
                out.append(key)
        return sorted(out)

    def local_path(self, uri: str) -> Path | None:
        """The file's path when the store is local (for readers that need one), else None."""
        return Path(uri) if self.protocol == "file" else None
