"""The public recording page: consent and demographics first, then prompts recorded in the browser.

No login: contributors are volunteers. ``POST /record/consent`` answers a signed contributor token
bound to the new speaker; every later call carries it (form field ``token``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, Response, UploadFile

from collection import contributors
from collection.contributors import ContributorError, Prompt
from collection.users import issue_token
from serving.api.deps import (
    CONTRIBUTOR_AUDIENCE,
    ConsentFormDep,
    ContributorId,
    PlanDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    http_error,
    render,
)

router = APIRouter(tags=["record"])
CONTRIBUTOR_TOKEN_SECONDS = 6 * 3600


async def form_fields(request: Request) -> dict[str, list[str]]:
    """Every submitted form field with all its values (text fields only)."""
    form = await request.form()
    return {key: [v for v in form.getlist(key) if isinstance(v, str)] for key in form}


FormFields = Annotated[dict[str, list[str]], Depends(form_fields)]


def _prompt(prompt: Prompt | None) -> dict[str, str] | None:
    return {"id": prompt.id, "text": prompt.text} if prompt else None


@router.get("/record")
def record_page(request: Request, form: ConsentFormDep, plan: PlanDep):
    return render(request, "record.html", form=form, per_speaker=plan.utterances.per_speaker,
                  max_seconds=plan.utterances.max_seconds, user=None)


@router.post("/record/consent", status_code=201)
def give_consent(fields: FormFields, form: ConsentFormDep, plan: PlanDep, session: SessionDep,
                 settings: SettingsDep) -> dict[str, object]:
    try:
        answers = contributors.validate_consent(form, fields)
        speaker = contributors.register_contributor(session, form, answers)
        prompt = contributors.next_prompt(session, plan, speaker.id)
        environment = contributors.suggest_environment(session, plan, speaker)
    except ContributorError as e:
        raise http_error(e) from e
    session.commit()
    token = issue_token(speaker.id, settings.session_secret, CONTRIBUTOR_TOKEN_SECONDS, audience=CONTRIBUTOR_AUDIENCE)
    # The speaker id is the withdrawal reference: random, meaningless to others, and what
    # `voiceloop consent revoke` takes.
    return {"token": token, "reference": speaker.id, "prompt": _prompt(prompt), "environment": environment,
            "per_speaker": plan.utterances.per_speaker}


@router.post("/record/prompt")
def another_prompt(speaker_id: ContributorId, plan: PlanDep, session: SessionDep,
                   skip: Annotated[list[str], Form()] = []) -> dict[str, object]:  # noqa: B006
    try:
        contributors.contributor(session, speaker_id)
        prompt = contributors.next_prompt(session, plan, speaker_id, skip=skip)
    except ContributorError as e:
        raise http_error(e) from e
    return {"prompt": _prompt(prompt), "done": prompt is None}


@router.post("/record/upload", status_code=201)
def upload(response: Response, speaker_id: ContributorId, plan: PlanDep, session: SessionDep, store: StoreDep,
           settings: SettingsDep,
           audio: Annotated[UploadFile, File()], submission_id: Annotated[str, Form()],
           prompt_id: Annotated[str, Form()], environment: Annotated[str, Form()]) -> dict[str, object]:
    """201: stored; 200: this submission id was stored before (a retry); 409: the same audio is already
    stored; 422: refused by QC (the reason is stored too) or a bad field; 413: over the size limit."""
    try:
        result = contributors.submit_recording(session, store, plan, speaker_id=speaker_id,
                                               submission_id=submission_id, prompt_id=prompt_id,
                                               environment=environment, audio=audio.file.read(),
                                               erasure_secret=settings.erasure_secret)
        session.commit()  # a rejection is kept too
        if not result.ok:
            raise HTTPException(409 if result.reason == "duplicate" else 422,
                                {"reason": result.reason, "message": result.message})
        prompt = contributors.next_prompt(session, plan, speaker_id)
    except ContributorError as e:
        raise http_error(e) from e
    if result.status == "exists":
        response.status_code = 200
    return {"status": result.status, "recording_id": result.recording_id, "next_prompt": _prompt(prompt),
            "done": prompt is None}
