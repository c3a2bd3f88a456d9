"""Recognised text → the AI speaker's command {intent, device, room, action, value}, from the grammar.

The grammar (collection/grammar/<name>.yaml) already knows every sentence it can produce and the
command each one means, so parsing is look-up: the exact sentence first (spaces ignored, as CER
ignores them), else the closest indexed sentence by edit distance when it is close enough. The
index holds the standard sentences plus a few renderings of each in every dialect of the grammar,
so "거실 불 꺼도" (Gyeongsang) parses like "거실 불 꺼줘". Below ``min_score`` the answer is no
command (out of grammar) rather than a guess: a wrong action is worse than "sorry?".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from collection.studio.grammar import load_grammar

DIALECT_RENDERINGS = 4  # per standard sentence and dialect; random surface forms, fixed seed


@dataclass(frozen=True)
class ParsedCommand:
    intent: str
    device: str | None
    room: str | None
    action: str | None
    value: Any
    score: float  # 1.0 = an indexed sentence exactly; lower = the closest one, by edit distance

    def to_dict(self) -> dict[str, Any]:
        return {"intent": self.intent, "device": self.device, "room": self.room, "action": self.action,
                "value": self.value, "score": round(self.score, 3)}


def _key(text: str) -> str:
    return "".join(text.split())


class CommandParser:
    def __init__(self, grammar: str = "ko_commands", min_score: float = 0.8, seed: int = 0) -> None:
        g = load_grammar(grammar)
        rng = np.random.default_rng(seed)
        index: dict[str, dict[str, Any]] = {}
        for sentence in g.sentences:
            index.setdefault(_key(sentence.text), dict(sentence.command))
            for dialect in g.dialects:
                for _ in range(DIALECT_RENDERINGS):
                    index.setdefault(_key(g.render(sentence, dialect, rng).text), dict(sentence.command))
        self.grammar, self.min_score = g.name, min_score
        self._keys = list(index)
        self._commands = list(index.values())
        self._exact = {k: i for i, k in enumerate(self._keys)}

    def __len__(self) -> int:
        return len(self._keys)

    def parse(self, text: str) -> ParsedCommand | None:
        """The command ``text`` means, or None when nothing in the grammar is close enough."""
        key = _key(text)
        if not key:
            return None
        i, score = self._exact.get(key), 1.0
        if i is None:
            best = process.extractOne(key, self._keys, scorer=fuzz.ratio, score_cutoff=self.min_score * 100)
            if best is None:
                return None
            _, raw, i = best
            score = raw / 100
        c = self._commands[i]
        return ParsedCommand(c["intent"], c.get("device"), c.get("room"), c.get("action"), c.get("value"), score)


@lru_cache(maxsize=4)
def command_parser(grammar: str = "ko_commands") -> CommandParser:
    """One parser per grammar per process (building the index takes about a second)."""
    return CommandParser(grammar)
