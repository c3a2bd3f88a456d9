"""Importers for public speech corpora: Common Voice, Kaldi data dirs, Hugging Face audiofolder, lhotse.

Each format is a small strategy in :data:`IMPORTERS` that reads the corpus' own files and yields
:class:`CorpusItem` (audio file + span, transcript, speaker and what the format says about them);
:func:`import_corpus` sends every item through :func:`collection.ingest.ingest` (QC, canonical
16 kHz mono WAV, content-addressed store) with ``source="import"``.

Conventions (documented in docs/importers-and-qc.md):

- ``corpus`` names the corpus (default: the directory's name). Recording external ids are
  ``<fmt>:<corpus>/<item key>``; speakers are ``Speaker(source="import:<fmt>",
  external_id="<corpus>/<speaker id>")``. Common Voice clip names and client ids are unique
  across releases, so there the corpus part is left out: importing release 17 after 16 adds
  only the new clips, and one contributor stays one speaker.
- The corpus was published under its own licence and its contributors' consent, so one
  :class:`~collection.models.Consent` row stands for the corpus (``text_version``
  ``corpus:<fmt>:<corpus>``, training and human review in scope, ``retention_days``); every
  speaker the import creates points to it.
- Structural problems (a missing file or column, a shell pipe in ``wav.scp``) raise
  :class:`CorpusError` before anything is stored. A bad row (missing clip, undecodable audio,
  empty transcript) becomes a :class:`~collection.models.Rejection` with its reason; re-running
  the import skips what an earlier run accepted or refused (``retry_rejected`` looks again).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import soundfile as sf
from sqlalchemy import select
from sqlalchemy.orm import Session

from asr.audio import SAMPLE_RATE, AudioError

from .deletion import was_erased
from .ingest import ensure_speaker, ingest
from .manifest import read_jsonl
from .models import Consent, Recording, Rejection
from .qc import QcConfig, decode
from .store import AudioStore
from .studio.personas import AGE_BANDS

log = logging.getLogger(__name__)

UNKNOWN_SPEAKER = "_unknown"  # the speaker of items whose corpus names none


class CorpusError(ValueError):
    """The corpus cannot be read as the format says: a file or column is missing, or a line is malformed."""


@dataclass(frozen=True)
class CorpusItem:
    """One utterance as the corpus describes it. ``start``/``duration`` are seconds into ``audio``
    (``duration`` None = to the end of the file); ``gender`` is male/female, ``age_band`` one of
    AGE_BANDS, both None when the corpus does not say; ``meta`` keeps the row's other fields."""

    key: str  # the item's id inside the corpus (clip name, utterance id, file name)
    audio: Path | None
    text: str | None
    speaker: str | None = None
    gender: str | None = None
    age_band: str | None = None
    dialect: str | None = None
    start: float = 0.0
    duration: float | None = None
    persona: str = "real"
    meta: dict[str, Any] = field(default_factory=dict)
    problem: tuple[str, str] | None = None  # (qc reason, detail) for a row that cannot be used


# --- what corpora say about speakers → the catalog's vocabularies --------------------------

_GENDERS = {"male": "male", "m": "male", "male_masculine": "male", "man": "male",
            "female": "female", "f": "female", "female_feminine": "female", "woman": "female"}
# Common Voice's age words (note its spelling "fourties"); under-20s have no band in the plan.
_AGE_WORDS = {"twenties": "20s", "thirties": "30s", "fourties": "40s", "forties": "40s", "fifties": "50s",
              "sixties": "60s", "seventies": "70s+", "eighties": "70s+", "nineties": "70s+"}
_DIALECTS = ("standard", "gyeongsang", "jeolla", "chungcheong", "gangwon", "jeju")
# Free-text accent descriptions (Common Voice "accents") → dialect region, per language.
DIALECT_KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "ko": {"gyeongsang": ("경상", "부산", "대구", "울산", "창원", "busan", "daegu"),
           "jeolla": ("전라", "광주", "전주", "gwangju"), "chungcheong": ("충청", "대전", "청주", "daejeon"),
           "gangwon": ("강원",), "jeju": ("제주",), "standard": ("서울", "경기", "인천", "표준", "seoul")},
}


def map_gender(value: str | None) -> str | None:
    """male / female from the spellings corpora use (m, male_masculine, …); anything else None."""
    return _GENDERS.get((value or "").strip().lower())


def map_age(value: str | None) -> str | None:
    """An age band (20s … 70s+) from "fifties", "50s", "70s" or an age in years; None below 20 or unknown."""
    v = (value or "").strip().lower()
    if v in AGE_BANDS:
        return v
    if v in _AGE_WORDS:
        return _AGE_WORDS[v]
    m = re.fullmatch(r"(\d{1,3})s?\+?", v)
    if not m:
        return None
    decade = int(m.group(1)) // 10 * 10
    if decade < 20:
        return None
    return "70s+" if decade >= 70 else f"{decade}s"


def map_dialect(value: str | None, language: str) -> str | None:
    """A dialect region from a region name or a free-text accent description (keywords per language)."""
    v = (value or "").strip().lower()
    if not v:
        return None
    if v in _DIALECTS:
        return v
    for region, words in DIALECT_KEYWORDS.get(language, {}).items():
        if any(w in v for w in words):
            return region
    return None


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8", newline="")


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON lines of a corpus file (.gz too); a malformed line makes the corpus malformed."""
    try:
        yield from read_jsonl(path)
    except ValueError as e:  # names the file and the line
        raise CorpusError(str(e)) from e


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CorpusError(f"{path} not found: {what}")
    return path


def _first_column(columns: list[str], options: tuple[str, ...]) -> str | None:
    return next((c for c in options if c in columns), None)


def _clean(row: dict[str, Any], drop: set[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k is not None and k not in drop and v not in (None, "")}


# --- formats ---------------------------------------------------------------------------------


class CorpusFormat:
    """One corpus layout. ``items`` checks the layout before its first yield (so a structural
    error stores nothing) and then yields one CorpusItem per utterance."""

    name: ClassVar[str]
    # True when the format's clip and speaker ids are unique across corpora/releases.
    global_ids: ClassVar[bool] = False

    def corpus_name(self, path: Path) -> str:
        return (path if path.is_dir() else path.parent).resolve().name

    def items(self, path: Path, language: str) -> Iterator[CorpusItem]:
        raise NotImplementedError


class CommonVoice(CorpusFormat):
    """Mozilla Common Voice: ``<locale>/validated.tsv`` (or train/dev/test.tsv: give the file) +
    ``<locale>/clips/*.mp3``. Columns: client_id, path, sentence (required), sentence_id, up_votes,
    down_votes, age, gender, accents (``accent`` in old releases), variant, locale, segment."""

    name = "commonvoice"
    global_ids = True
    required = ("client_id", "path", "sentence")

    def corpus_name(self, path: Path) -> str:
        return (path.parent if path.is_file() else path).resolve().name

    def items(self, path: Path, language: str) -> Iterator[CorpusItem]:
        tsv = path if path.is_file() else _require(path / "validated.tsv", "a Common Voice locale directory "
                                                   "holds validated.tsv (or pass train.tsv/dev.tsv/test.tsv)")
        clips = tsv.parent / "clips"
        with _open_text(tsv) as f:
            # Sentences may hold quote characters: Common Voice's TSVs are not quoted.
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            columns = list(reader.fieldnames or [])
            missing = [c for c in self.required if c not in columns]
            if missing:
                raise CorpusError(f"{tsv}: missing column(s) {missing}; found {columns}")
            if not clips.is_dir():
                raise CorpusError(f"{clips} not found: Common Voice keeps the audio in clips/ next to {tsv.name}")
            accent_col = _first_column(columns, ("accents", "accent"))
            for line_no, row in enumerate(reader, 2):
                clip = (row.get("path") or "").strip()
                problem = None if clip else ("undecodable", f"{tsv.name} line {line_no}: no clip in column 'path'")
                yield CorpusItem(
                    key=clip or f"{tsv.name}:{line_no}", audio=clips / clip if clip else None,
                    text=row.get("sentence"), speaker=(row.get("client_id") or "").strip() or None,
                    gender=map_gender(row.get("gender")), age_band=map_age(row.get("age")),
                    dialect=map_dialect(row.get(accent_col) if accent_col else None, language),
                    meta=_clean(row, {"client_id", "path", "sentence"}), problem=problem)


class Kaldi(CorpusFormat):
    """A Kaldi data directory: ``wav.scp`` (utt or recording id → audio file), ``text`` (utt → words),
    ``utt2spk``; optional ``segments`` (utt → recording, start, end seconds) and ``spk2gender`` (m/f).
    Relative audio paths are resolved against the data dir, then its parent and grandparent (the
    recipe directory Kaldi scripts run from). Command pipes (``… |``) and ark offsets are refused:
    nothing here runs shell commands from corpus files."""

    name = "kaldi"

    @staticmethod
    def _table(path: Path, *, allow_empty: bool = False) -> dict[str, str]:
        """``<id> <rest of line>`` lines → {id: rest}."""
        out: dict[str, str] = {}
        with _open_text(path) as f:
            for line_no, line in enumerate(f, 1):
                parts = line.strip().split(maxsplit=1)
                if not parts:
                    continue
                if len(parts) < 2 and not allow_empty:
                    raise CorpusError(f"{path}:{line_no}: expected '<id> <value>', got {line.strip()!r}")
                out[parts[0]] = parts[1] if len(parts) > 1 else ""
        return out

    @staticmethod
    def _resolve(data_dir: Path, target: str, line: str) -> Path:
        if target.endswith("|"):
            raise CorpusError(f"{data_dir / 'wav.scp'}: {line!r} is a command pipe; voiceloop does not run shell "
                              f"commands from corpus files. Convert the audio to WAV/FLAC files first and list "
                              f"their paths in wav.scp")
        if re.search(r"\.ark:\d+$", target) or target.startswith("-"):
            raise CorpusError(f"{data_dir / 'wav.scp'}: {line!r} points into an archive or stdin; list plain "
                              f"audio file paths instead")
        p = Path(target)
        if p.is_absolute():
            return p
        for base in (data_dir, data_dir.parent, data_dir.parent.parent):
            if (base / p).exists():
                return base / p
        return data_dir / p  # missing: the item is rejected with the path in the detail

    def items(self, path: Path, language: str) -> Iterator[CorpusItem]:
        if not path.is_dir():
            raise CorpusError(f"{path} is not a directory; a Kaldi data dir holds wav.scp, text and utt2spk")
        wav_scp = self._table(_require(path / "wav.scp", "a Kaldi data dir needs wav.scp"))
        texts = self._table(_require(path / "text", "a Kaldi data dir needs text (utterance id → transcript)"),
                            allow_empty=True)
        utt2spk = self._table(_require(path / "utt2spk", "a Kaldi data dir needs utt2spk"))
        spk2gender = self._table(path / "spk2gender") if (path / "spk2gender").is_file() else {}
        files = {rec: self._resolve(path, target, f"{rec} {target}") for rec, target in wav_scp.items()}
        if (path / "segments").is_file():
            spans: dict[str, tuple[str, float, float | None]] = {}
            for utt, value in self._table(path / "segments").items():
                try:
                    rec, start, end = value.split()
                    s, e = float(start), float(end)
                except ValueError as err:
                    raise CorpusError(f"{path / 'segments'}: {utt!r}: expected '<recording> <start s> <end s>', "
                                      f"got {value!r}") from err
                spans[utt] = (rec, s, e - s if e > 0 else None)  # end -1: to the end of the recording
        else:
            spans = {utt: (utt, 0.0, None) for utt in wav_scp}
        for utt, (rec, start, duration) in spans.items():
            spk = utt2spk.get(utt)
            words = texts.get(utt)
            problem = None
            if rec not in files:
                problem = ("undecodable", f"recording {rec!r} of utterance {utt!r} is not in wav.scp")
            elif words is None:
                problem = ("bad_text", f"utterance {utt!r} has no line in text")
            yield CorpusItem(key=utt, audio=files.get(rec), text=words or "", speaker=spk,
                             gender=map_gender(spk2gender.get(spk or "")),
                             start=start, duration=duration, meta={"recording": rec} if rec != utt else {},
                             problem=problem)


class AudioFolder(CorpusFormat):
    """Hugging Face ``audiofolder``: ``metadata.csv`` (or ``metadata.jsonl``) with ``file_name`` and a
    transcript column (transcription, sentence, text or transcript) next to the audio, or one such
    folder per split (train/, test/…). Optional speaker_id/speaker/client_id, gender, age and
    dialect/accent(s) columns; every other column is kept as the recording's meta."""

    name = "audiofolder"
    text_columns = ("transcription", "sentence", "text", "transcript")
    speaker_columns = ("speaker_id", "speaker", "client_id")
    dialect_columns = ("dialect", "accents", "accent")

    @staticmethod
    def _metadata_files(path: Path) -> list[Path]:
        for base in ([path], sorted(p for p in path.iterdir() if p.is_dir())):
            found = [m for d in base for m in (d / "metadata.csv", d / "metadata.jsonl") if m.is_file()]
            if found:
                return found
        raise CorpusError(f"no metadata.csv or metadata.jsonl in {path} or its split folders")

    @staticmethod
    def _rows(meta: Path) -> tuple[list[str], list[dict[str, Any]]]:
        if meta.suffix == ".jsonl":
            rows = list(_jsonl(meta))
            return sorted({k for r in rows for k in r}), rows
        with meta.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)

    def items(self, path: Path, language: str) -> Iterator[CorpusItem]:
        if not path.is_dir():
            raise CorpusError(f"{path} is not a directory; an audiofolder holds metadata.csv next to the audio")
        plans = []
        for meta in self._metadata_files(path):  # check every split's columns before the first item
            columns, rows = self._rows(meta)
            text_col = _first_column(columns, self.text_columns)
            if "file_name" not in columns or text_col is None:
                raise CorpusError(f"{meta}: needs a 'file_name' column and one of {list(self.text_columns)}; "
                                  f"found {columns}")
            plans.append((meta, columns, rows, text_col))
        for meta, columns, rows, text_col in plans:
            spk_col = _first_column(columns, self.speaker_columns)
            dia_col = _first_column(columns, self.dialect_columns)
            prefix = "" if meta.parent == path else f"{meta.parent.name}/"
            for line_no, row in enumerate(rows, 2):
                name = str(row.get("file_name") or "").strip()
                speaker = str(row.get(spk_col) or "").strip() if spk_col else ""
                yield CorpusItem(
                    key=f"{prefix}{name}" if name else f"{prefix}{meta.name}:{line_no}",
                    audio=meta.parent / name if name else None, text=row.get(text_col),
                    speaker=speaker or None,
                    gender=map_gender(row.get("gender")), age_band=map_age(str(row.get("age") or "")),
                    dialect=map_dialect(row.get(dia_col) if dia_col else None, language),
                    meta=_clean(row, {"file_name", text_col}),
                    problem=None if name else ("undecodable", f"{meta.name} line {line_no}: empty 'file_name'"))


class Lhotse(CorpusFormat):
    """lhotse manifests: ``recordings.jsonl[.gz]`` + ``supervisions.jsonl[.gz]`` (also
    ``<prefix>_recordings_<part>.jsonl.gz`` pairs), in the directory or in its split folders — the
    layout :mod:`collection.manifest` and the synthetic studio write. Relative audio paths are
    resolved against the manifest root (the split folder's parent), then the split folder.
    Supervision spans inside a longer recording are cut out; ``custom`` supplies age_band/dialect."""

    name = "lhotse"

    @staticmethod
    def _pairs(path: Path) -> list[tuple[Path, Path]]:
        for base in ([path], sorted(p for p in path.iterdir() if p.is_dir())):
            pairs = []
            for d in base:
                for rec in sorted(d.glob("*recordings*.jsonl*")):
                    if rec.name.endswith((".jsonl", ".jsonl.gz")):
                        sup = rec.with_name(rec.name.replace("recordings", "supervisions"))
                        pairs.append((rec, _require(sup, f"supervisions belonging to {rec.name}")))
            if pairs:
                return pairs
        raise CorpusError(f"no recordings.jsonl[.gz] in {path} or its split folders")

    def _recording(self, rec_file: Path, d: dict[str, Any]) -> tuple[Path, float]:
        try:
            rid, sources, duration = d["id"], d["sources"], float(d["duration"])
        except (KeyError, TypeError, ValueError) as e:
            raise CorpusError(f"{rec_file}: recording {d.get('id')!r} lacks id/sources/duration ({e!r})") from e
        if not sources or sources[0].get("type") != "file":
            kinds = [s.get("type") for s in sources or []]
            raise CorpusError(f"{rec_file}: recording {rid!r} has audio sources {kinds}; only 'file' sources "
                              f"are imported (nothing is downloaded or run)")
        p = Path(sources[0]["source"])
        if not p.is_absolute():
            root = rec_file.parent
            p = next((b / p for b in (root.parent, root) if (b / p).exists()), root.parent / p)
        return p, duration

    def items(self, path: Path, language: str) -> Iterator[CorpusItem]:
        if not path.is_dir():
            raise CorpusError(f"{path} is not a directory of lhotse manifests")
        pairs = self._pairs(path)
        recordings = {(rf, d.get("id")): self._recording(rf, d) for rf, _ in pairs for d in _jsonl(rf)}
        for rec_file, sup_file in pairs:
            for line_no, d in enumerate(_jsonl(sup_file), 1):
                sid, rid = d.get("id") or f"{sup_file.name}:{line_no}", d.get("recording_id")
                audio, rec_duration = recordings.get((rec_file, rid), (None, 0.0))
                problem = None if audio else ("undecodable", f"{sup_file.name}: supervision {sid!r} names "
                                                             f"unknown recording {rid!r}")
                try:
                    start = float(d.get("start") or 0.0)
                    duration = None if d.get("duration") is None else float(d["duration"])
                except (TypeError, ValueError):
                    start, duration = 0.0, None
                    problem = problem or ("undecodable", f"{sup_file.name}: supervision {sid!r} has start "
                                                         f"{d.get('start')!r} / duration {d.get('duration')!r}")
                whole = start == 0.0 and (duration is None or abs(duration - rec_duration) < 1e-3)
                custom = dict(d.get("custom") or {})
                yield CorpusItem(
                    key=str(sid), audio=audio, text=d.get("text"), speaker=d.get("speaker"),
                    gender=map_gender(d.get("gender")), age_band=map_age(custom.get("age_band") or custom.get("age")),
                    dialect=map_dialect(custom.get("dialect"), language), start=0.0 if whole else start,
                    duration=None if whole else duration, meta={"recording": rid} if rid != sid else {},
                    persona="synthetic" if custom.get("source") == "synthetic" else "real", problem=problem)


IMPORTERS: dict[str, CorpusFormat] = {f.name: f for f in (CommonVoice(), Kaldi(), AudioFolder(), Lhotse())}


def get_importer(fmt: str) -> CorpusFormat:
    try:
        return IMPORTERS[fmt]
    except KeyError:
        raise ValueError(f"unknown corpus format {fmt!r}; available: {sorted(IMPORTERS)}") from None


# --- import -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportReport:
    """What one run did. ``accepted``/``rejected`` are this run's new rows; ``exists`` and
    ``previously_rejected`` are items an earlier run already decided. ``seconds`` of audio accepted."""

    fmt: str
    corpus: str
    path: str
    consent_id: str | None
    seen: int = 0
    accepted: int = 0
    exists: int = 0
    rejected: int = 0
    previously_rejected: int = 0
    erased: int = 0  # items of people a deletion request erased: skipped, nothing recorded
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    speakers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def item_audio(item: CorpusItem) -> bytes:
    """The bytes ingest receives: the file itself, or the item's span cut out as a float WAV at the
    file's own rate (so QC still sees the original sample rate; formats libsndfile cannot read are
    decoded to 16 kHz first and cut there). Raises AudioError."""
    if item.audio is None or not item.audio.is_file():
        raise AudioError(f"{item.audio}: no such file")
    if item.start == 0.0 and item.duration is None:
        return item.audio.read_bytes()
    try:
        info = sf.info(str(item.audio))
    except (sf.LibsndfileError, RuntimeError) as e:  # not libsndfile's: decode (to 16 kHz) and cut there
        wav, sr = decode(item.audio.read_bytes(), max_seconds=float("inf")).wav, SAMPLE_RATE
        total = len(wav) / sr
        log.debug("cutting %s after decoding it: %s", item.audio, e)
    else:
        sr, total, wav = info.samplerate, info.frames / info.samplerate, None
    end = total if item.duration is None else item.start + item.duration
    if item.start < 0 or item.start >= total or end > total + 0.01 or end <= item.start:
        raise AudioError(f"{item.audio}: span {item.start:.2f}-{end:.2f} s lies outside the recording "
                         f"(0-{total:.2f} s)")
    a, b = round(item.start * sr), round(min(end, total) * sr)
    if wav is None:
        wav, _ = sf.read(str(item.audio), start=a, stop=b, dtype="float32", always_2d=True)
    else:
        wav = wav[a:b]
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def corpus_consent(session: Session, fmt: str, corpus: str, *, retention_days: int = 3650,
                   licence: str | None = None, path: str = "") -> Consent:
    """The one Consent row standing for a published corpus (created on the first import). Raises
    ValueError if that consent was revoked: a withdrawn corpus is not imported again."""
    tag = f"corpus:{fmt}:{corpus}"[:64]
    consent = session.scalar(select(Consent).where(Consent.subject_type == "speaker", Consent.subject_id == tag,
                                                   Consent.text_version == tag).order_by(Consent.granted_at.desc()))
    if consent is not None and consent.revoked_at is not None:
        raise ValueError(f"the consent for corpus {corpus!r} ({fmt}) was revoked at {consent.revoked_at:%Y-%m-%d}; "
                         f"refusing to import it again")
    if consent is None:
        consent = Consent(subject_type="speaker", subject_id=tag, text_version=tag, scope_training=True,
                          scope_human_review=True, retention_days=retention_days,
                          checklist={"corpus": corpus, "format": fmt, "licence": licence, "path": path})
        session.add(consent)
        session.flush()
    return consent


def import_corpus(
    session: Session,
    store: AudioStore,
    fmt: str,
    path: str | Path,
    *,
    language: str,
    limit: int | None = None,
    corpus: str | None = None,
    licence: str | None = None,
    retention_days: int = 3650,
    retry_rejected: bool = False,
    commit_every: int | None = None,
    qc: QcConfig = QcConfig(),
    progress: bool = True,
    erasure_secret: str | None = None,
) -> ImportReport:
    """Import up to ``limit`` items of the corpus at ``path`` (format ``fmt``, see :data:`IMPORTERS`).

    Re-runnable: items an earlier run accepted or refused are skipped without reading their
    audio; ``retry_rejected`` deletes earlier refusals and examines those items again.
    ``commit_every`` commits after that many items so an interrupted import keeps its work
    (leave None inside :func:`collection.db.session_scope`: the caller owns the transaction).
    Raises CorpusError for a malformed corpus (before storing anything) and ValueError for an
    unknown format or a revoked corpus consent. With ``erasure_secret``, speakers and audio that a
    deletion request erased are skipped (counted as ``erased``, nothing recorded about them).
    """
    importer = get_importer(fmt)
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path} does not exist")
    corpus = corpus or importer.corpus_name(path)
    items = importer.items(path, language)
    first = next(items, None)  # the layout is checked before the first item: nothing stored yet
    consent = corpus_consent(session, fmt, corpus, retention_days=retention_days, licence=licence,
                             path=str(path.resolve())) if first is not None else None
    scope = "" if importer.global_ids else f"{corpus}/"
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    speakers: dict[str, str] = {}
    seconds = 0.0

    def speaker_of(item: CorpusItem) -> str:
        # Items without a speaker id share one "_unknown" speaker per corpus: datasets split by
        # speaker, and one shared id keeps possibly-the-same people out of both train and test.
        name = item.speaker or UNKNOWN_SPEAKER
        if name not in speakers:
            known = name != UNKNOWN_SPEAKER
            speakers[name] = ensure_speaker(
                session, source=f"import:{fmt}", external_id=f"{scope}{name}"[:128], persona=item.persona,
                gender=item.gender if known else None, age_band=item.age_band if known else None,
                dialect=item.dialect if known else None, consent_id=consent.id if consent else None).id
        return speakers[name]

    def one(item: CorpusItem) -> tuple[str, str | None]:
        """(status, rejection reason) of one item."""
        external_id = f"{fmt}:{scope}{item.key}"[:256]
        if session.scalar(select(Recording.id).where(Recording.source == "import",
                                                     Recording.external_id == external_id)) is not None:
            return "exists", None
        refused = session.scalar(select(Rejection).where(Rejection.source == "import",
                                                         Rejection.external_id == external_id))
        if refused is not None and not retry_rejected:
            return "previously_rejected", None
        if refused is not None:
            session.delete(refused)
            session.flush()
        if erasure_secret is not None and item.speaker and was_erased(
                session, erasure_secret, source=f"import:{fmt}", external_id=f"{scope}{item.speaker}"[:128]):
            return "erased", None
        speaker_id = speaker_of(item)
        problem = item.problem
        if problem is None and not (item.text or "").strip():
            problem = ("bad_text", f"{item.key}: no transcript")
        if problem is None:
            try:
                data = item_audio(item)
            except AudioError as e:
                problem = ("undecodable", str(e))
        if problem is not None:
            session.add(Rejection(source="import", external_id=external_id, speaker_id=speaker_id,
                                  reason=problem[0], detail=problem[1]))
            session.flush()
            return "rejected", problem[0]
        result = ingest(session, store, data, source="import", speaker_id=speaker_id, external_id=external_id,
                        text=item.text, language=language, qc=qc, erasure_secret=erasure_secret)
        if result.status == "accepted":
            nonlocal seconds
            seconds += float(result.metrics.get("duration", 0.0))
            if item.meta:
                session.get(Recording, result.recording_id).meta = item.meta
        return result.status, result.reason

    def stream() -> Iterator[CorpusItem]:
        if first is not None:
            yield first
            yield from items

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} items"),
                  TimeElapsedColumn(), disable=not progress, transient=True) as bar:
        task = bar.add_task(f"importing {fmt}:{corpus}", total=limit)
        for item in stream():
            if limit is not None and counts["seen"] >= limit:
                break
            status, reason = one(item)
            counts["seen"] += 1
            counts[status] += 1
            if status == "rejected":
                reasons[reason or "unknown"] += 1
            bar.advance(task)
            if commit_every and counts["seen"] % commit_every == 0:
                session.commit()
    if commit_every:
        session.commit()
    report = ImportReport(fmt=fmt, corpus=corpus, path=str(path), consent_id=consent.id if consent else None,
                          seen=counts["seen"], accepted=counts["accepted"], exists=counts["exists"],
                          rejected=counts["rejected"], previously_rejected=counts["previously_rejected"],
                          erased=counts["erased"], reasons=dict(reasons), seconds=round(seconds, 3),
                          speakers=len(speakers))
    log.debug("imported %s:%s: %d accepted, %d already there, %d rejected %s", fmt, corpus, report.accepted,
             report.exists, report.rejected, report.reasons or "")
    return report
