"""Which model answers: the registry's ``champion`` (and ``challenger``), hot-swapped when an alias moves.

    models = ModelManager.from_registry("voiceloop-asr", shadow=True, canary_share=0.05)
    models.start()                          # polls the aliases every ``poll_s`` seconds
    slot = models.pick(request_id)          # champion, or the challenger for the canary share
    slot.recognizer.transcribe(wav)

A swap replaces one reference: a request that already picked a slot finishes on the model it
started with, and the next one gets the new model. Nothing is dropped and nothing waits on the
load (it happens on the polling thread). Rollback is moving ``champion`` back in the registry;
serving follows within one poll. A local checkpoint (``ModelManager.from_path``) never changes.

Shadow and canary share follow the registry too: each poll also reads the rollout state
(``serving.rollout``: tags on the registered model that the ``deploy`` DAG writes). Precedence, per field:
the tag (while ``@challenger`` is the version it was set for) > the ``shadow``/``canary_share`` given here
(the service's settings) > off. The challenger is loaded and warmed before the new state is published,
and slots, shadow and share are published as one snapshot, so a request never sees a share without the
model behind it. A retried request id lands on the same model while the share stays put; raising the share
only moves requests from the champion to the challenger (the hash threshold rises), never back and forth.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asr.inference import Recognizer
from collection.store import stable_fraction
from serving.rollout import RolloutState

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


# (alias) -> registry version string or None; (alias, version) -> Recognizer; (defaults) -> the registry's
# rollout state, each unset field read from the defaults (the settings).
VersionLookup = Callable[[str], "str | None"]
Loader = Callable[[str, str], Recognizer]
RolloutLookup = Callable[[RolloutState], RolloutState]


@dataclass(frozen=True)
class _Serving:
    """What answers requests, published as one reference (read once per request)."""

    slots: dict[str, ModelSlot]
    rollout: RolloutState


class ModelManager:
    def __init__(self, lookup: VersionLookup | None, loader: Loader | None, *, shadow: bool = False,
                 canary_share: float = 0.0, poll_s: float = 10.0, static: ModelSlot | None = None,
                 rollout: RolloutLookup | None = None) -> None:
        if not 0.0 <= canary_share <= 1.0:
            raise ValueError(f"canary_share must be within [0, 1], got {canary_share}")
        self._lookup, self._loader, self._rollout = lookup, loader, rollout
        self.defaults = RolloutState(bool(shadow), float(canary_share))  # the settings: used while no tag is set
        self.poll_s = poll_s
        self._serving = _Serving({CHAMPION: static} if static else {}, self.defaults)
        self._refreshing = threading.Lock()  # the poll thread and a direct refresh() never load twice
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
    def from_registry(cls, model_name: str, decoder: str = "greedy", *, follow_rollout: bool = True,
                      **options) -> ModelManager:
        """``models:/<model_name>@champion`` (+ ``@challenger`` when shadowing or on canary); MLflow must be
        configured (``asr.registry.configure``) first. ``shadow``/``canary_share`` in ``options`` are the
        defaults; with ``follow_rollout`` the registry's rollout tags override them on every refresh."""
        from asr.registry import alias_version  # mlflow: only for registry serving
        from serving.rollout import rollout_state

        def lookup(alias: str) -> str | None:
            return alias_version(model_name, alias)

        def loader(alias: str, version: str) -> Recognizer:
            return warmed(Recognizer.load(f"models:/{model_name}/{version}", decoder=decoder))

        def rollout(defaults: RolloutState) -> RolloutState:
            return rollout_state(model_name, defaults)

        manager = cls(lookup, loader, rollout=rollout if follow_rollout else None, **options)
        manager.refresh()
        if manager.champion is None:  # serving starts anyway (not ready) and picks the model up when it appears
            log.warning("models:/%s@champion is not set yet; not ready until a model is registered "
                        "(voiceloop register --alias champion)", model_name)
        return manager

    # -- which model answers ---------------------------------------------------------------
    @property
    def champion(self) -> ModelSlot | None:
        return self._serving.slots.get(CHAMPION)

    @property
    def challenger(self) -> ModelSlot | None:
        return self._serving.slots.get(CHALLENGER)

    @property
    def ready(self) -> bool:
        return CHAMPION in self._serving.slots

    @property
    def rollout(self) -> RolloutState:
        """The shadow/canary state in force (registry tags, else the defaults)."""
        return self._serving.rollout

    @property
    def shadow(self) -> bool:
        return self._serving.rollout.shadow

    @property
    def canary_share(self) -> float:
        return self._serving.rollout.canary_share

    def pick(self, request_id: str) -> ModelSlot:
        """The champion, or the challenger for ``canary_share`` of requests (hashed, so a retried
        request id lands on the same model)."""
        serving = self._serving  # one read: a swap in between cannot mix two generations
        challenger, share = serving.slots.get(CHALLENGER), serving.rollout.canary_share
        if challenger is not None and share and stable_fraction("canary", request_id) < share:
            return challenger
        try:
            return serving.slots[CHAMPION]
        except KeyError:
            raise RuntimeError("no champion model loaded yet") from None

    def shadow_slot(self, served: ModelSlot) -> ModelSlot | None:
        """The challenger, when shadowing and it did not serve the request itself."""
        serving = self._serving
        challenger = serving.slots.get(CHALLENGER)
        if serving.rollout.shadow and challenger is not None and challenger.version != served.version:
            return challenger
        return None

    # -- following the registry ------------------------------------------------------------
    def _wanted_rollout(self) -> RolloutState:
        """The registry's rollout state; a malformed tag must not stop alias following: defaults then."""
        if self._rollout is None:
            return self.defaults
        try:
            return self._rollout(self.defaults)
        except ValueError:
            log.warning("ignoring the registry's rollout state; serving with the defaults %s", self.defaults,
                        exc_info=True)
            return self.defaults

    def refresh(self) -> bool:
        """Look the rollout state and the aliases up once; load what moved, then publish the new models
        and rollout state together. True when anything changed."""
        if self._lookup is None or self._loader is None:
            return False
        with self._refreshing:
            wanted = self._wanted_rollout()
            versions = {CHAMPION: self._lookup(CHAMPION)}
            if wanted.uses_challenger or self.defaults.uses_challenger:
                versions[CHALLENGER] = self._lookup(CHALLENGER)
            rollout = wanted.for_challenger(versions.get(CHALLENGER), self.defaults)
            if not rollout.uses_challenger:
                versions[CHALLENGER] = None  # nothing routes to it: free its memory
            current = self._serving
            slots, loaded = dict(current.slots), []
            for alias, version in versions.items():
                slot = slots.get(alias)
                if version is None:
                    if slot is not None and alias != CHAMPION:  # an unset challenger stops shadowing
                        del slots[alias]
                    continue
                if slot is not None and slot.version.rpartition("/")[2] == version:
                    continue
                recognizer = self._loader(alias, version)  # slow part, before anything routes to it
                slots[alias] = ModelSlot(alias, recognizer.version, recognizer)
                loaded.append(slots[alias])
            changed = bool(loaded) or slots.keys() != current.slots.keys() or rollout != current.rollout
            if changed:
                self._serving = _Serving(slots, rollout)
            if rollout != current.rollout:
                log.info("rollout: shadow=%s canary_share=%s (challenger %s)", rollout.shadow, rollout.canary_share,
                         rollout.challenger or "any")
            for slot in loaded:
                self.swaps += 1
                log.info("serving %s = %s", slot.alias, slot.version)
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
                log.exception("model refresh failed; still serving %s",
                              {k: s.version for k, s in self._serving.slots.items()})
