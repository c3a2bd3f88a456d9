"""Release decisions in the catalog: each step of a release (offline gate, shadow, canary, promotion,
rollback) with the numbers that decided it, for the ops dashboard. MLflow holds the same numbers on the
candidate's run; the catalog row is what pages list without asking MLflow."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ReleaseDecision

STAGES = ("gate", "shadow", "canary", "promote", "rollback")
VERDICTS = ("pass", "fail", "wait", "promoted", "rolled_back", "refused")


def record_decision(session: Session, *, model_name: str, run_id: str | None, stage: str, verdict: str,
                    run_key: str, model_version: str | None = None, champion_version: str | None = None,
                    decision: Any = None, summary: str | None = None) -> ReleaseDecision:  # noqa: ANN401
    """Store one step (or update it: the same model, run, stage and run key is one row, so a retried task
    does not add a second). ``decision``: an ``asr.gate.GateDecision`` (its numbers are stored)."""
    if stage not in STAGES:
        raise ValueError(f"unknown release stage {stage!r}; valid: {list(STAGES)}")
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; valid: {list(VERDICTS)}")
    row = session.scalar(select(ReleaseDecision).where(
        ReleaseDecision.model_name == model_name, ReleaseDecision.run_id == run_id,
        ReleaseDecision.stage == stage, ReleaseDecision.run_key == run_key))
    if row is None:
        row = ReleaseDecision(model_name=model_name, run_id=run_id, stage=stage, run_key=run_key)
        session.add(row)
    row.verdict, row.model_version, row.champion_version = verdict, model_version, champion_version
    row.summary = summary if summary is not None else (decision.summary if decision is not None else "")
    row.reasons = list(decision.reasons) if decision is not None else []
    row.numbers = decision.to_dict() if decision is not None else {}
    session.flush()
    return row


def release_history(session: Session, model_name: str, *, limit: int = 50) -> list[ReleaseDecision]:
    """The newest release steps of a model, newest first."""
    return list(session.scalars(select(ReleaseDecision).where(ReleaseDecision.model_name == model_name)
                                .order_by(ReleaseDecision.created_at.desc(), ReleaseDecision.id).limit(limit)))
