"""Which model answers: the registry's ``champion`` (and ``challenger``), hot-swapped when an alias moves.

    models = ModelManager.from_registry("voiceloop-asr", shadow=True, canary_share=0.05)
    models.start()                          # polls the aliases every ``poll_s`` seconds
    slot = models.pick(request_id)          # champion, or the challenger for the canary share
    slot.recognizer.transcribe(wav)

A swap replaces one reference: a request that already picked a slot finishes on the model it
started with, and the next one gets the new model. Nothing is dropped and nothing waits on the
load (it happens on the polling thread). Rollback is moving ``champion`` back in the registry;
serving follows within one poll. A local checkpoint (``ModelManager.from_path``) never changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asr.inference import Recognizer
from collection.store import stable_fraction

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


def warmed(recognizer: Recognizer) -> Recognizer:
    """Decode one second of silence, so the first real request after a load or swap is not the slow one."""
    recognizer.transcribe(np.zeros(16000, dtype=np.float32))
    return recognizer


@dataclass(frozen=True)
class ModelSlot:
    alias: str  # champion | challenger (the route a request took)
    version: str  # "<name>/<version>" for registry models, the file name for a local checkpoint
    recognizer: Recognizer


# (alias) -> registry version string or None; (alias, version) -> Recognizer.
VersionLookup = Callable[[str], "str | None"]
Loader = Callable[[str, str], Recognizer]


class ModelManager:
    def __init__(self, lookup: VersionLookup | None, loader: Loader | None, *, shadow: bool = False,
                 canary_share: float = 0.0, poll_s: float = 10.0, static: ModelSlot | None = None) -> None:
        if not 0.0 <= canary_share <= 1.0:
            raise ValueError(f"canary_share must be within [0, 1], got {canary_share}")
        self._lookup, self._loader = lookup, loader
        self.shadow, self.canary_share, self.poll_s = shadow, canary_share, poll_s
        self._slots: dict[str, ModelSlot] = {CHAMPION: static} if static else {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0
        self.listeners: list[Callable[[ModelSlot], None]] = []  # called after a slot changes (metrics)

    @classmethod
    def from_path(cls, path: str, decoder: str = "greedy") -> ModelManager:
        """A fixed local checkpoint as the champion (tests, offline devices); no polling, no challenger."""
        recognizer = warmed(Recognizer.load(path, decoder=decoder))
        return cls(None, None, static=ModelSlot(CHAMPION, recognizer.version, recognizer))

    @classmethod
    def from_registry(cls, model_name: str, decoder: str = "greedy", **options) -> ModelManager:
        """``models:/<model_name>@champion`` (+ ``@challenger`` when shadowing or on canary); MLflow must be
        configured (``asr.registry.configure``) first."""
        from asr.registry import alias_version  # mlflow: only for registry serving

        def lookup(alias: str) -> str | None:
            return alias_version(model_name, alias)

        def loader(alias: str, version: str) -> Recognizer:
            return warmed(Recognizer.load(f"models:/{model_name}/{version}", decoder=decoder))

        manager = cls(lookup, loader, **options)
        manager.refresh()
        if manager.champion is None:  # serving starts anyway (not ready) and picks the model up when it appears
            log.warning("models:/%s@champion is not set yet; not ready until a model is registered "
                        "(voiceloop register --alias champion)", model_name)
        return manager

    # -- which model answers ---------------------------------------------------------------
    @property
    def champion(self) -> ModelSlot | None:
        return self._slots.get(CHAMPION)

    @property
    def challenger(self) -> ModelSlot | None:
        return self._slots.get(CHALLENGER)

    @property
    def ready(self) -> bool:
        return CHAMPION in self._slots

    def pick(self, request_id: str) -> ModelSlot:
        """The champion, or the challenger for ``canary_share`` of requests (hashed, so a retried
        request id lands on the same model)."""
        slots = self._slots  # one read: a swap in between cannot mix two generations
        challenger = slots.get(CHALLENGER)
        if challenger is not None and self.canary_share and stable_fraction("canary", request_id) < self.canary_share:
            return challenger
        try:
            return slots[CHAMPION]
        except KeyError:
            raise RuntimeError("no champion model loaded yet") from None

    def shadow_slot(self, served: ModelSlot) -> ModelSlot | None:
        """The challenger, when shadowing and it did not serve the request itself."""
        challenger = self.challenger
        if self.shadow and challenger is not None and challenger.version != served.version:
            return challenger
        return None

    # -- following the registry ------------------------------------------------------------
    def _wanted_aliases(self) -> tuple[str, ...]:
        return (CHAMPION, CHALLENGER) if (self.shadow or self.canary_share) else (CHAMPION,)

    def refresh(self) -> bool:
        """Look the aliases up once; load and swap in what moved. True when anything changed."""
        if self._lookup is None or self._loader is None:
            return False
        changed = False
        for alias in self._wanted_aliases():
            version = self._lookup(alias)
            current = self._slots.get(alias)
            if version is None:
                if current is not None and alias != CHAMPION:  # an unset challenger stops shadowing
                    self._slots = {k: v for k, v in self._slots.items() if k != alias}
                    changed = True
                continue
            if current is not None and current.version.rpartition("/")[2] == version:
                continue
            recognizer = self._loader(alias, version)  # slow part, before the swap
            slot = ModelSlot(alias, recognizer.version, recognizer)
            self._slots = {**self._slots, alias: slot}
            self.swaps += 1
            changed = True
            log.info("serving %s = %s", alias, slot.version)
            for listener in self.listeners:
                listener(slot)
        return changed

    def start(self) -> None:
        if self._lookup is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # a registry hiccup must not kill serving: keep the models we have
                log.exception("model refresh failed; still serving %s", {k: s.version for k, s in self._slots.items()})
