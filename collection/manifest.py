"""lhotse-compatible JSONL manifests: the contract between data collection and training.

Layout of a dataset root ``<out>``::

    <out>/audio/<recording_id>.wav          16 kHz mono PCM16
    <out>/<split>/recordings.jsonl          one Recording per line
    <out>/<split>/supervisions.jsonl        one Supervision per line

Recording and Supervision lines use lhotse's field names (``Recording.from_dict`` /
``SupervisionSegment.from_dict`` accept them). Audio paths in ``sources`` are relative to
``<out>``; :func:`load_split` resolves them to absolute paths (lhotse itself would resolve
them against the working directory).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORDINGS = "recordings.jsonl"
SUPERVISIONS = "supervisions.jsonl"
SLICE_KEYS = ("dialect", "age_band", "gender", "environment", "source")


@dataclass(frozen=True)
class AudioSource:
    """Where a recording's samples live; ``source`` is relative to the manifest root."""

    type: str
    channels: list[int]
    source: str


@dataclass(frozen=True)
class Recording:
    """One audio file. ``duration`` is in seconds; ``sampling_rate`` in Hz."""

    id: str
    sources: list[AudioSource]
    sampling_rate: int
    num_samples: int
    duration: float
    channel_ids: list[int] = field(default_factory=lambda: [0])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recording:
        return cls(id=d["id"], sources=[AudioSource(**s) for s in d["sources"]],
                   sampling_rate=int(d["sampling_rate"]), num_samples=int(d["num_samples"]),
                   duration=float(d["duration"]), channel_ids=list(d.get("channel_ids", [0])))


@dataclass(frozen=True)
class Supervision:
    """What is said in a recording, by whom. ``start``/``duration`` in seconds; ``custom``
    carries age_band, dialect, environment, snr_db, persona, voice, sentence_id,
    standard_text, command, split, seen_sentence and source."""

    id: str
    recording_id: str
    start: float
    duration: float
    channel: int
    text: str
    language: str
    speaker: str
    gender: str
    custom: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Supervision:
        return cls(id=d["id"], recording_id=d["recording_id"], start=float(d["start"]),
                   duration=float(d["duration"]), channel=int(d["channel"]), text=d["text"],
                   language=d["language"], speaker=d["speaker"], gender=d["gender"],
                   custom=dict(d.get("custom") or {}))


@dataclass(frozen=True)
class Utterance:
    """A supervision joined with its recording, as the trainer consumes it."""

    recording: Recording
    supervision: Supervision
    root: Path

    @property
    def id(self) -> str:
        return self.supervision.id

    @property
    def audio_path(self) -> Path:
        """Absolute path of the audio file."""
        return (self.root / self.recording.sources[0].source).resolve()

    @property
    def text(self) -> str:
        return self.supervision.text

    @property
    def speaker(self) -> str:
        return self.supervision.speaker

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.supervision.duration

    @property
    def command(self) -> dict[str, Any]:
        return dict(self.supervision.custom.get("command") or {})

    @property
    def slices(self) -> dict[str, str]:
        """The slice labels WER is broken down by: dialect, age_band, gender, environment, source."""
        c = self.supervision.custom
        values = {"gender": self.supervision.gender, **{k: c.get(k) for k in SLICE_KEYS if k != "gender"}}
        return {k: str(values[k]) if values[k] is not None else "unknown" for k in SLICE_KEYS}


def _dumps(d: Mapping[str, Any]) -> str:
    return json.dumps(d, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def write_jsonl(path: str | Path, items: Iterable[Recording | Supervision | Mapping[str, Any]]) -> Path:
    """Write one JSON object per line (UTF-8, sorted keys), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for item in items:
            f.write(_dumps(item if isinstance(item, Mapping) else item.to_dict()) + "\n")
    os.replace(tmp, path)
    return path


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Lazily yield the JSON objects of a JSONL file, gzipped when it ends in ``.gz`` (blank lines skipped)."""
    path = Path(path)
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e


def load_split(split_dir: str | Path) -> list[Utterance]:
    """Join ``supervisions.jsonl`` with ``recordings.jsonl`` of one split directory. The
    manifest root (audio paths are relative to it) is the split directory's parent."""
    split_dir = Path(split_dir)
    for name in (RECORDINGS, SUPERVISIONS):
        if not (split_dir / name).exists():
            raise FileNotFoundError(f"{split_dir / name} not found; is {split_dir} a split directory?")
    recordings = {r.id: r for r in map(Recording.from_dict, read_jsonl(split_dir / RECORDINGS))}
    root = split_dir.resolve().parent
    out = []
    for sup in map(Supervision.from_dict, read_jsonl(split_dir / SUPERVISIONS)):
        if sup.recording_id not in recordings:
            raise ValueError(f"{split_dir / SUPERVISIONS}: supervision {sup.id} names unknown "
                             f"recording {sup.recording_id}")
        out.append(Utterance(recordings[sup.recording_id], sup, root))
    return out


def manifest_files(split_dir_or_root: str | Path) -> list[Path]:
    """The manifest files of a split directory, or of every split under a dataset root."""
    base = Path(split_dir_or_root)
    if (base / RECORDINGS).exists() or (base / SUPERVISIONS).exists():
        dirs = [base]
    else:
        dirs = sorted(p for p in base.iterdir() if p.is_dir() and (p / RECORDINGS).exists())
    if not dirs:
        raise FileNotFoundError(f"no {RECORDINGS} in {base} or its subdirectories")
    return [d / name for d in dirs for name in (RECORDINGS, SUPERVISIONS) if (d / name).exists()]


def manifest_hash(split_dir_or_root: str | Path) -> str:
    """sha256 over the sorted manifest lines (each file's lines sorted, files in path order,
    each prefixed by its path relative to the argument). Stable across re-runs and machines."""
    base = Path(split_dir_or_root)
    h = hashlib.sha256()
    for path in manifest_files(base):
        h.update(f"# {path.relative_to(base).as_posix()}\n".encode())
        lines = sorted(line for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        for line in lines:
            h.update(line.encode("utf-8") + b"\n")
    return h.hexdigest()
