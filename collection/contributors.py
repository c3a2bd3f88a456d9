"""Volunteer contributors of the recording page: the consent form, registration, prompts and uploads.

The form is built from a data plan (:mod:`collection.dataplan`): its consent terms (text version,
retention, scopes), its legal checklist (each item its own checkbox, shown verbatim) and the
project's vocabularies for the demographics (age band, gender, the plan grammar's dialect regions).
:func:`validate_consent` checks a submitted form against exactly that — every checklist item ticked,
each value one the form offered, the text version and scopes the ones shown — and names every problem.
:func:`register_contributor` then adds the :class:`~collection.models.Speaker` (persona ``real``,
source ``upload``, a random external id) and the :class:`~collection.models.Consent`.

Prompts come from the plan (grammar sentences or its prompt list); :func:`next_prompt` hands each
contributor the least-recorded prompts first, and :func:`suggest_environment` the environment whose
quota cell for the contributor's demographics is emptiest. :func:`submit_recording` ingests an upload
through :func:`collection.ingest.ingest` with the plan's duration limit; the client's submission id makes
a retried upload return the first result instead of storing the audio twice.
"""

from __future__ import annotations

import random
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .consent import active_consent, grant_consent
from .dataplan import DataPlan, known_dialects
from .ingest import IngestResult, ensure_speaker, ingest
from .models import Recording, Speaker
from .qc import QcConfig
from .store import AudioStore
from .studio.environments import ENVIRONMENTS
from .studio.grammar import STANDARD, load_grammar, sentence_id
from .studio.personas import AGE_BANDS, GENDERS

SOURCE = "upload"
DEVICE = "browser"
SUBMISSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# The form's field names; anything else in a submission was not on the form.
CONSENT_FIELDS = ("text_version", "scope", "checklist", "age_band", "gender", "dialect")
ENVIRONMENT_LABELS = {"quiet": "a quiet room", "tv": "a room with the TV on", "kitchen": "a kitchen (cooking, water)",
                      "far_field": "a few metres from the microphone"}


class ContributorError(ValueError):
    """A recording-page request that cannot be done. ``code``: invalid / forbidden / not_found / conflict
    (routes answer 422 / 403 / 404 / 409); ``problems`` lists each thing wrong with a form."""

    def __init__(self, code: str, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.code = code
        self.problems = list(problems) or [message]


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


@dataclass(frozen=True)
class ConsentForm:
    """What the recording page shows before anything is recorded, all from the data plan."""

    plan: str
    language: str
    text_version: str
    retention_days: int
    scopes: tuple[str, ...]
    checklist: tuple[Choice, ...]  # value: item id; label: the item's text, verbatim
    age_bands: tuple[Choice, ...]
    genders: tuple[Choice, ...]
    dialects: tuple[Choice, ...]
    environments: tuple[Choice, ...]


@dataclass(frozen=True)
class ContributorAnswers:
    """A validated consent form: the ticked checklist items and the demographics."""

    checklist: tuple[str, ...]
    age_band: str
    gender: str
    dialect: str


def _dialect_label(plan: DataPlan, dialect: str) -> str:
    if plan.utterances.grammar:
        rules = load_grammar(plan.utterances.grammar).dialects.get(dialect)
        if rules is not None and rules.label != dialect:
            return f"{dialect} ({rules.label})"
    return dialect


def consent_form(plan: DataPlan) -> ConsentForm:
    """The consent and demographics form for ``plan``."""
    dialects = known_dialects(plan.utterances.grammar)
    return ConsentForm(
        plan=plan.name, language=plan.language, text_version=plan.consent.text_version,
        retention_days=plan.consent.retention_days, scopes=plan.consent.scopes,
        checklist=tuple(Choice(item.id, item.text) for item in plan.checklist),
        age_bands=tuple(Choice(a, a) for a in AGE_BANDS), genders=tuple(Choice(g, g) for g in GENDERS),
        dialects=tuple(Choice(d, _dialect_label(plan, d)) for d in dialects),
        environments=tuple(Choice(e, ENVIRONMENT_LABELS.get(e, e)) for e in ENVIRONMENTS))


def _one(fields: Mapping[str, Sequence[str]], name: str, valid: Sequence[Choice], problems: list[str]) -> str:
    values = list(fields.get(name, ()))
    options = [c.value for c in valid]
    if len(values) != 1 or not values[0]:
        problems.append(f"{name}: choose exactly one of {options}")
        return ""
    if values[0] not in options:
        problems.append(f"{name}: {values[0]!r} is not an option; valid: {options}")
    return values[0]


def validate_consent(form: ConsentForm, fields: Mapping[str, Sequence[str]]) -> ContributorAnswers:
    """Check a submitted form (field name → submitted values) against ``form``.

    Raises ContributorError("invalid") listing every problem: a field the form does not have, a
    checklist item not ticked or not on the form, a scope other than the plan's, a text version other
    than the one shown, or a demographic value outside the vocabulary.
    """
    problems: list[str] = []
    unknown = sorted(set(fields) - set(CONSENT_FIELDS))
    if unknown:
        problems.append(f"unexpected field(s) {unknown}; the form has {list(CONSENT_FIELDS)}")
    version = list(fields.get("text_version", ()))
    if version != [form.text_version]:
        problems.append(f"text_version: the form shown is version {form.text_version!r}, got {version}; "
                        "reload the page to see the current consent text")
    scopes = list(fields.get("scope", ()))
    if sorted(scopes) != sorted(form.scopes):
        problems.append(f"scope: this form asks for exactly {list(form.scopes)}, got {scopes}")
    items = [c.value for c in form.checklist]
    ticked = list(fields.get("checklist", ()))
    if extra := sorted(set(ticked) - set(items)):
        problems.append(f"checklist: unknown item(s) {extra}; this form's items are {items}")
    if missing := [i for i in items if i not in ticked]:
        problems.append(f"checklist: item(s) {missing} not ticked; every item must be ticked to take part")
    answers = ContributorAnswers(
        checklist=tuple(i for i in items if i in ticked),
        age_band=_one(fields, "age_band", form.age_bands, problems),
        gender=_one(fields, "gender", form.genders, problems),
        dialect=_one(fields, "dialect", form.dialects, problems))
    if problems:
        raise ContributorError("invalid", "the consent form is not valid: " + "; ".join(problems), problems)
    return answers


def register_contributor(session: Session, form: ConsentForm, answers: ContributorAnswers) -> Speaker:
    """A new speaker (persona ``real``, source ``upload``, random external id) with the consent given."""
    speaker = ensure_speaker(session, source=SOURCE, external_id=f"web-{secrets.token_hex(8)}",
                             age_band=answers.age_band, gender=answers.gender, dialect=answers.dialect,
                             persona="real")
    grant_consent(session, subject_type="speaker", subject_id=speaker.id, text_version=form.text_version,
                  scope_training="training" in form.scopes, scope_human_review="human_review" in form.scopes,
                  retention_days=form.retention_days, checklist=answers.checklist,
                  required=[c.value for c in form.checklist], actor="recording-page")
    return speaker


@lru_cache(maxsize=8)
def _prompts(grammar: str | None, prompts: tuple[str, ...] | None, language: str) -> tuple[tuple[Prompt, str], ...]:
    """(prompt, its normalised text) in plan order; the normalised text is what ingest stores."""
    from asr.text import get_language_pack

    pack = get_language_pack(language)
    if grammar:
        items = [Prompt(s.id, s.text) for s in load_grammar(grammar).sentences if s.dialect == STANDARD]
    else:
        items = [Prompt(sentence_id("prompt", p), p) for p in prompts or ()]  # the studio's ids for the same prompts
    return tuple((p, pack.normalize(p.text)) for p in items)


def plan_prompts(plan: DataPlan) -> dict[str, Prompt]:
    """Every prompt of ``plan`` by id (grammar sentence ids, or ``p-<hash>`` for a prompt list)."""
    return {p.id: p for p, _ in _prompts(plan.utterances.grammar, plan.utterances.prompts, plan.language)}


def contributor(session: Session, speaker_id: str) -> Speaker:
    """The recording-page speaker, if their consent is still in force; else ContributorError."""
    speaker = session.get(Speaker, speaker_id)
    if speaker is None or speaker.source != SOURCE:
        raise ContributorError("not_found", "unknown contributor: start again from the consent form")
    if active_consent(session, "speaker", speaker.id, scope="scope_training") is None:
        raise ContributorError("forbidden", "this contributor's consent was withdrawn or has expired; "
                                            "nothing more can be recorded under it")
    return speaker


def _accepted(session: Session, speaker_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Recording).where(
        Recording.source == SOURCE, Recording.speaker_id == speaker_id)) or 0


def next_prompt(session: Session, plan: DataPlan, speaker_id: str, *, skip: Sequence[str] = ()) -> Prompt | None:
    """The next prompt for a contributor, or None once they recorded the plan's ``per_speaker``.

    Among the prompts this speaker has not recorded (nor asked to ``skip``), one of those recorded
    least often on the recording page; the choice among equals is seeded by the plan seed, speaker
    and progress, so a reload shows the same prompt.
    """
    done = _accepted(session, speaker_id)
    if done >= plan.utterances.per_speaker:
        return None
    items = _prompts(plan.utterances.grammar, plan.utterances.prompts, plan.language)
    counts = dict(session.execute(select(Recording.prompt_text, func.count()).where(
        Recording.source == SOURCE, Recording.plan == plan.name).group_by(Recording.prompt_text)).all())
    mine = set(session.scalars(select(Recording.prompt_text).where(Recording.source == SOURCE,
                                                                   Recording.speaker_id == speaker_id)))
    candidates = [(p, norm) for p, norm in items if norm not in mine and p.id not in skip] or list(items)
    fewest = min(counts.get(norm, 0) for _, norm in candidates)
    pool = [p for p, norm in candidates if counts.get(norm, 0) == fewest]
    return random.Random(f"{plan.seed}|{speaker_id}|{done}|{len(skip)}").choice(pool)


def suggest_environment(session: Session, plan: DataPlan, speaker: Speaker) -> str:
    """The environment whose quota cell for this speaker's age band, gender and dialect needs most."""
    from .quota import plan_status

    mine = [s for s in plan_status(session, plan)
            if (s.cell.age_band, s.cell.gender, s.cell.dialect) == (speaker.age_band, speaker.gender, speaker.dialect)]
    if not mine:
        return next(iter(ENVIRONMENTS))
    return max(mine, key=lambda s: (s.remaining, -list(ENVIRONMENTS).index(s.cell.environment))).cell.environment


def submit_recording(
    session: Session,
    store: AudioStore,
    plan: DataPlan,
    *,
    speaker_id: str,
    submission_id: str,
    prompt_id: str,
    environment: str,
    audio: bytes,
    erasure_secret: str | None = None,
) -> IngestResult:
    """QC and store one upload of the recording page (any container :func:`collection.qc.decode` reads,
    e.g. the browser's WebM/Opus). ``submission_id`` is the client's id for this take: sending it again
    returns the first result. Bad audio is not an exception: the result is ``rejected`` with the QC
    reason, and the rejection is stored.

    Raises:
        ContributorError: unknown or withdrawn contributor, malformed submission id, unknown prompt or
            environment, or the contributor already recorded the plan's ``per_speaker`` prompts.
    """
    speaker = contributor(session, speaker_id)
    problems = []
    if not SUBMISSION_ID.match(submission_id or ""):
        problems.append(f"submission_id must be 8-64 characters of letters, digits, '_' or '-', got {submission_id!r}")
    prompt = plan_prompts(plan).get(prompt_id)
    if prompt is None:
        problems.append(f"prompt_id {prompt_id!r} is not a prompt of plan {plan.name!r}")
    if environment not in ENVIRONMENTS:
        problems.append(f"environment {environment!r} is not an option; valid: {list(ENVIRONMENTS)}")
    if problems:
        raise ContributorError("invalid", "; ".join(problems), problems)
    assert prompt is not None
    external_id = f"{speaker.id}:{submission_id}"  # scoped per speaker: ids cannot collide across people
    retry = session.scalar(select(Recording.id).where(Recording.source == SOURCE, Recording.external_id == external_id))
    if retry is None and _accepted(session, speaker.id) >= plan.utterances.per_speaker:
        raise ContributorError("conflict", f"this contributor already recorded {plan.utterances.per_speaker} prompts, "
                                           "all the plan asks of one speaker: thank you!")
    return ingest(session, store, audio, source=SOURCE, speaker_id=speaker.id, external_id=external_id,
                  environment=environment, device=DEVICE, text=prompt.text, language=plan.language, plan=plan.name,
                  qc=QcConfig(max_seconds=plan.utterances.max_seconds), erasure_secret=erasure_secret)
