"""Stand-ins for the world around a release in the DAG tests: two registered tiny models, and devices plus
labelers — requests the champion answered (shadowed by the challenger) or that each answered (canary),
their audio kept and transcribed by people. The deploy DAG's sensors judge these rows as they would real
traffic; the serving side that writes such rows is tested in tests/serving (test_rollout, test_model_lifecycle)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from _labeled_traffic import labeled_request

from asr.backends import build_model, save_checkpoint
from asr.registry import MlflowTracker, register, set_alias
from asr.text import JamoTokenizer
from collection.db import session_scope
from collection.models import ShadowResult

TINY = {"d_model": 32, "n_heads": 2, "ffn_dim": 64, "n_layers": 1, "conv_kernel": 7, "dropout": 0.0}
COMMANDS = ["거실 불 켜 줘", "볼륨 올려 줘", "에어컨 꺼 줘", "티비 채널 바꿔 줘", "내일 날씨 알려 줘"]


def register_two(experiment_id: str, tmp: Path, name: str) -> tuple[str, str]:
    """Two tiny untrained checkpoints registered as ``name`` 1 (@champion) and 2 (@challenger)."""
    import torch

    versions = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        path = tmp / f"seed-{seed}" / "model.pt"
        save_checkpoint(path, build_model("conformer_ctc", TINY, vocab_size=len(JamoTokenizer())).eval(),
                        JamoTokenizer(), "ko")
        tracker = MlflowTracker.start(experiment_id, run_name=f"tiny-{seed}")
        tracker.log_artifact(path, "checkpoint")
        tracker.finish()
        versions.append(register(tracker.run_id, name))
    set_alias(name, "champion", versions[0])
    set_alias(name, "challenger", versions[1])
    return versions[0], versions[1]


def _labeled_request(session, version: str, ref: str, hyp: str) -> str:  # noqa: ANN001
    return labeled_request(session, version=version, ref=ref, hyp=hyp, age_band=None,
                           dialect="jeolla" if uuid.uuid4().int % 2 else "standard")


class Traffic(threading.Thread):
    """Writes a small burst of labelled traffic every ``every_s`` seconds until stopped: shadowed by the
    challenger while the rollout tags say shadow, split between the two during a canary."""

    def __init__(self, catalog: str, name: str, champion: str, challenger: str,
                 challenger_says: Callable[[str], str], every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.catalog, self.name = catalog, name
        self.champion, self.challenger = f"{name}/{champion}", f"{name}/{challenger}"
        self.challenger_says, self.every_s = challenger_says, every_s
        self.halt = threading.Event()

    def run(self) -> None:
        from serving.rollout import rollout_state

        i = 0
        while not self.halt.wait(self.every_s):
            state = rollout_state(self.name)
            with session_scope(self.catalog) as session:
                for _ in range(5):
                    ref = COMMANDS[i % len(COMMANDS)]
                    i += 1
                    if state.shadow:
                        rid = _labeled_request(session, self.champion, ref, ref[:-1] + "가")  # champion: one slip
                        session.add(ShadowResult(request_id=rid, model_version=self.challenger,
                                                 hypothesis=self.challenger_says(ref), confidence=0.9,
                                                 latency_ms=85.0))
                    elif state.canary_share:
                        _labeled_request(session, self.champion, ref, ref[:-1] + "가")
                        _labeled_request(session, self.challenger, ref, self.challenger_says(ref))

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)
