"""The synthetic source: the studio fills a data plan's missing utterances into the catalog.

For every cell below target, :func:`collect_synthetic` draws personas of the cell's age band,
gender and dialect (``sample_persona``), picks sentences from the plan's grammar (rendered in the
cell's dialect) or prompt list, renders them in the cell's environment with the studio
(``render_utterance``) and ingests each one through :func:`collection.ingest.ingest` (QC, audio
store, catalog) with ``source="synthetic"`` and the plan's name.

Everything is keyed by the plan, the cell and an index within the cell
(``<plan>/<age>/<gender>/<dialect>/<environment>/<00003>``; speakers ``…/spk000``), and all
randomness comes from (seed, that key): re-running adds nothing, and a run cut short continues
where it stopped. An index QC refused is not tried again; the next free index replaces it.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from multiprocessing import get_context

import numpy as np
import soundfile as sf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from asr.audio import SAMPLE_RATE
from collection.dataplan import Cell, DataPlan
from collection.db import session_scope
from collection.ingest import IngestResult, ensure_speaker, ingest
from collection.models import Consent, Recording, Rejection, Speaker
from collection.qc import QcConfig
from collection.quota import CellStatus, plan_status
from collection.store import AudioStore
from collection.studio.environments import get_environment
from collection.studio.grammar import STANDARD, Sentence, load_grammar, sentence_id
from collection.studio.personas import Persona, sample_persona
from collection.studio.plan import UtteranceSpec, derive_seed
from collection.studio.synth import render_utterance, to_pcm16

logger = logging.getLogger(__name__)

SOURCE = "synthetic"
CHUNK = 32  # utterances rendered before they are ingested (bounds memory with several workers)
SYNTHETIC_NOTE = "synthetic studio persona: no person was asked; every item ticked on the plan's behalf"


@dataclass(frozen=True)
class Job:
    """One utterance to render: the ``index``-th of ``cell``, under ``external_id``."""

    cell: Cell
    index: int
    external_id: str
    spec: UtteranceSpec


@dataclass(frozen=True)
class CollectResult:
    """What one run did. ``remaining``: utterances still missing from the plan afterwards."""

    plan: str
    rendered: int
    accepted: int
    rejected: int
    remaining: int
    rejections: dict[str, int] = field(default_factory=dict)  # QC reason -> count


def external_id(plan: DataPlan, cell: Cell, index: int) -> str:
    return f"{plan.name}/{cell.key}/{index:05d}"


def speaker_external_id(plan: DataPlan, cell: Cell, index: int) -> str:
    """The persona saying the ``index``-th utterance of ``cell``: a new one every ``per_speaker``."""
    return f"{plan.name}/{cell.key}/spk{index // plan.utterances.per_speaker:03d}"


class SentencePicker:
    """Sentences for a plan: an intent uniformly, then one of its sentences, rendered in the
    speaker's dialect (grammar plans); or one prompt of the list, spoken as written."""

    def __init__(self, plan: DataPlan) -> None:
        self.grammar = load_grammar(plan.utterances.grammar) if plan.utterances.grammar else None
        self.by_intent = self.grammar.by_intent() if self.grammar else {}
        self.intents = sorted(self.by_intent)
        self.prompts = [Sentence(sentence_id("prompt", p), p, p, STANDARD, {"intent": "prompt"})
                        for p in plan.utterances.prompts or ()]

    def pick(self, dialect: str, rng: np.random.Generator) -> Sentence:
        if self.grammar is None:
            return self.prompts[int(rng.integers(len(self.prompts)))]
        pool = self.by_intent[self.intents[int(rng.integers(len(self.intents)))]]
        return self.grammar.render(pool[int(rng.integers(len(pool)))], dialect, rng)


def make_job(plan: DataPlan, cell: Cell, index: int, seed: int, sentences: SentencePicker) -> Job:
    """The utterance spec of one (cell, index): a pure function of its arguments."""
    eid = external_id(plan, cell, index)
    pid = speaker_external_id(plan, cell, index)
    persona = sample_persona(pid, cell.age_band, cell.gender, cell.dialect,
                             np.random.default_rng(derive_seed(seed, "persona", pid)))
    rng = np.random.default_rng(derive_seed(seed, "utterance", eid))
    sentence = sentences.pick(cell.dialect, rng)
    snr_db = round(float(rng.uniform(*get_environment(cell.environment).snr_db_range)), 2)
    spec = UtteranceSpec(eid, plan.name, persona, sentence, cell.environment, snr_db,
                         derive_seed(seed, "render", eid), True, plan.language, SAMPLE_RATE)
    return Job(cell, index, eid, spec)


def _taken(session: Session, plan: DataPlan) -> set[str]:
    """External ids of this plan already in the catalog, accepted or refused."""
    prefix = f"{plan.name}/"
    ids: set[str] = set()
    for model in (Recording, Rejection):
        ids.update(session.scalars(select(model.external_id).where(
            model.source == SOURCE, model.external_id.startswith(prefix, autoescape=True))))
    return ids


def plan_jobs(plan: DataPlan, statuses: Sequence[CellStatus], taken: set[str], seed: int,
              limit: int | None = None) -> list[Job]:
    """The utterances still missing, at most ``limit``: per cell the lowest free indices, least-filled
    cells first (fill = collected / target), so that a limited run spreads over every cell."""
    sentences = SentencePicker(plan)
    ranked: list[tuple[float, int, Cell, int]] = []
    for position, s in enumerate(statuses):
        i = k = 0
        while k < s.remaining:
            if external_id(plan, s.cell, i) not in taken:
                ranked.append(((s.collected + k) / s.target, position, s.cell, i))
                k += 1
            i += 1
    ranked.sort(key=lambda r: r[:2])
    return [make_job(plan, cell, i, seed, sentences) for _, _, cell, i in ranked[:limit]]


def _wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, to_pcm16(audio), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _speaker(session: Session, plan: DataPlan, persona: Persona) -> Speaker:
    """The persona as a catalog speaker with a consent under the plan's terms (created once)."""
    speaker = ensure_speaker(session, source=SOURCE, external_id=persona.id, persona="synthetic",
                             age_band=persona.age_band, gender=persona.gender, dialect=persona.dialect)
    if speaker.consent_id is None:
        terms = plan.consent
        consent = Consent(subject_type="speaker", subject_id=speaker.id, text_version=terms.text_version,
                          scope_training="training" in terms.scopes, scope_human_review="human_review" in terms.scopes,
                          retention_days=terms.retention_days,
                          checklist={"ticked": {i.id: i.text for i in plan.checklist}, "note": SYNTHETIC_NOTE})
        session.add(consent)
        session.flush()
        speaker.consent_id = consent.id
        session.flush()
    return speaker


def ingest_job(session: Session, store: AudioStore, plan: DataPlan, job: Job, audio: np.ndarray) -> IngestResult:
    """Catalog one rendered utterance (QC with the plan's longest duration)."""
    speaker = _speaker(session, plan, job.spec.persona)
    return ingest(session, store, _wav_bytes(audio, job.spec.sample_rate), source=SOURCE, speaker_id=speaker.id,
                  external_id=job.external_id, environment=job.cell.environment, text=job.spec.sentence.text,
                  language=plan.language, plan=plan.name, qc=QcConfig(max_seconds=plan.utterances.max_seconds))


class _Renderer(AbstractContextManager):
    """Renders jobs in this process, or in ``workers`` spawned processes (eSpeak keeps process-global
    state, so each worker loads its own copy); yields (job, audio) as they finish."""

    def __init__(self, workers: int) -> None:
        self.pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else None

    def __call__(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, np.ndarray]]:
        for start in range(0, len(jobs), CHUNK):
            chunk = jobs[start:start + CHUNK]
            if self.pool is None:
                yield from ((job, render_utterance(job.spec)) for job in chunk)
                continue
            futures = {self.pool.submit(render_utterance, job.spec): job for job in chunk}
            for future in as_completed(futures):
                yield futures[future], future.result()

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def collect_synthetic(catalog: Session | sessionmaker[Session], store: AudioStore, plan: DataPlan, *,
                      seed: int | None = None, limit: int | None = None, workers: int = 1, progress: bool = True,
                      batch: int = 100, console: Console | None = None) -> CollectResult:
    """Fill ``plan``'s missing utterances with studio speech; returns what the run did.

    ``catalog``: a Session (everything happens in its transaction; the caller commits) or a session
    factory (one transaction per ``batch`` utterances, so a long run never holds the write lock for
    long and an interrupted run keeps what it finished). ``seed``: default the plan's. ``limit``: at
    most this many utterances rendered. ``workers``: rendering processes. Utterances QC refuses are
    replaced by the next index of their cell, as long as each pass accepts something.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be ≥ 0, got {limit}")
    seed = plan.seed if seed is None else seed
    scope: Callable[[], AbstractContextManager[Session]]
    if isinstance(catalog, Session):
        scope, per_pass = (lambda: nullcontext(catalog)), None
    else:
        scope, per_pass = (lambda: session_scope(catalog)), batch
    budget = limit
    rendered = accepted = 0
    reasons: Counter[str] = Counter()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with _Renderer(workers) as render, Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task(f"plan {plan.name}", total=None)
        while budget is None or budget > 0:
            pass_accepted = 0
            with scope() as session:
                statuses = plan_status(session, plan)
                cap = min((n for n in (per_pass, budget) if n is not None), default=None)
                jobs = plan_jobs(plan, statuses, _taken(session, plan), seed, cap)
                if not jobs:
                    break
                if bar.tasks[0].total is None:
                    todo = sum(s.remaining for s in statuses)
                    bar.update(task, total=todo if budget is None else min(todo, budget))
                bar.update(task, total=max(bar.tasks[0].total or 0, rendered + len(jobs)))
                for job, audio in render(jobs):
                    result = ingest_job(session, store, plan, job, audio)
                    rendered += 1
                    if result.status == "rejected":
                        reasons[result.reason or "unknown"] += 1
                        logger.info("QC refused %s: %s", job.external_id, result.message)
                    else:
                        pass_accepted += 1
                    bar.advance(task)
            accepted += pass_accepted
            if budget is not None:
                budget -= len(jobs)
            if pass_accepted == 0:
                break  # everything refused: another pass would be refused the same way
    with scope() as session:
        remaining = sum(s.remaining for s in plan_status(session, plan))
    result = CollectResult(plan.name, rendered, accepted, sum(reasons.values()), remaining, dict(reasons))
    logger.debug("plan %s: rendered %d, accepted %d, refused %d by QC, %d still missing", plan.name, rendered,
                accepted, result.rejected, remaining)
    return result
