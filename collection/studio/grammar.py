"""Command grammar: load the YAML language pack, expand it to sentences, render dialects.

The grammar is data (``collection/grammar/<name>.yaml`` + its dialect file); this module only
knows the template syntax documented at the top of that YAML. Expansion is deterministic:
the same YAML always gives the same sentences, in the same order, with the same ids.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

GRAMMAR_DIR = Path(__file__).resolve().parent.parent / "grammar"
STANDARD = "standard"
COMMAND_KEYS = ("intent", "device", "room", "action", "value")

_TEMPLATE_KEYS = {"text", "devices", "device", "rooms", "action", "actions", "verbs", "numbers", "choices", "value"}
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{([^{}]*)\}")


class GrammarError(ValueError):
    """The grammar YAML is malformed; the message names the intent/template and the key."""


@dataclass(frozen=True)
class Sentence:
    """One thing a user says. ``text`` is what is spoken (a dialect form for dialect
    sentences); ``standard_text`` its standard-language equivalent; ``command`` the
    structured meaning {intent, device, room, action, value}."""

    id: str
    text: str
    standard_text: str
    dialect: str
    command: Mapping[str, Any] = field(hash=False)

    @property
    def intent(self) -> str:
        return self.command["intent"]


def sentence_id(intent: str, text: str) -> str:
    """Stable id from content, so ids survive reordering or extending the grammar."""
    return f"{intent}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


class NumberSpeller:
    """Spells integers as words from the `numerals` table of a grammar (no digits ever).

    ``sino``: positional digits + unit words (Korean: 이십사, 백). ``native``: counting words
    in attributive form, the form used right before a counter (Korean: 한 시, 스무 살).
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        try:
            sino, native = spec["sino"], spec["native"]
            self._digits = list(sino["digits"])
            self._units = sorted(((int(k), v) for k, v in sino["units"].items()), reverse=True)
            self._omit_one = bool(sino.get("omit_one_before_unit", False))
            self._ones = list(native["ones"])
            self._tens = list(native["tens"])
            self._attributive = dict(native.get("attributive", {}))
        except (KeyError, TypeError) as e:
            raise GrammarError(f"numerals: missing or malformed key {e}; need sino.digits, sino.units, "
                               "native.ones, native.tens") from e

    def sino(self, n: int) -> str:
        if n < 0 or n >= self._units[0][0] * 10:
            raise GrammarError(f"cannot spell {n} with sino numerals")
        if n == 0:
            return self._digits[0]
        words = []
        for unit, word in self._units:
            d, n = divmod(n, unit)
            if d:
                words.append(("" if d == 1 and self._omit_one else self._digits[d]) + word)
        if n:
            words.append(self._digits[n])
        return "".join(words)

    def native(self, n: int) -> str:
        if not 1 <= n < 10 * len(self._tens):
            raise GrammarError(f"cannot spell {n} with native numerals")
        tens, ones = divmod(n, 10)
        tens_word = self._tens[tens] or ""
        if ones:
            return tens_word + self._attributive.get(self._ones[ones], self._ones[ones])
        return self._attributive.get(tens_word, tens_word)

    def spell(self, n: int, system: str) -> str:
        if system == "sino":
            return self.sino(n)
        if system == "native":
            return self.native(n)
        raise GrammarError(f"unknown numeral system {system!r}; valid: sino, native")


def _final_consonant(ch: str) -> str:
    """'vowel', 'rieul' or 'consonant' for the final (batchim) of a Hangul syllable."""
    code = ord(ch) - 0xAC00
    if not 0 <= code < 11172:
        raise GrammarError(f"particle after non-Hangul character {ch!r}")
    final = code % 28
    return "vowel" if final == 0 else "rieul" if final == 8 else "consonant"


def _resolve_particles(text: str, particles: Mapping[str, Mapping[str, str]]) -> str:
    for token, forms in particles.items():
        while (i := text.find(token)) > 0:
            text = text[:i] + forms[_final_consonant(text[i - 1])] + text[i + len(token):]
    return text


def _fill(text: str, device_form: str | None, others: list[str]) -> str:
    """Replace the slots of ``text`` left to right: {device} by ``device_form``, the rest by
    ``others`` in order."""
    rest = iter(others)
    return _SLOT.sub(lambda m: (device_form or "") if m.group(1) == "device" else next(rest), text)


def _optional_variants(text: str) -> list[str]:
    """All texts obtained by keeping or dropping each ``[...]`` segment."""
    parts = _OPTIONAL.split(text)  # literal, optional, literal, optional, ...
    choices = [[p] if i % 2 == 0 else [p, ""] for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


@dataclass(frozen=True)
class DialectRules:
    """Regional surface forms (see the header of the dialect YAML for the four steps)."""

    name: str
    label: str
    words: Mapping[str, tuple[str, ...]]
    insert: Mapping[str, Any] | None
    endings: tuple[tuple[re.Pattern, tuple[str, ...]], ...]
    prefix_probability: float
    prefix_any: tuple[str, ...]
    prefix_contexts: tuple[tuple[Mapping[str, Any], tuple[str, ...]], ...]

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any]) -> DialectRules:
        try:
            prefixes = spec.get("prefixes") or {}
            return cls(
                name=name,
                label=str(spec.get("label", name)),
                words={k: tuple(v) for k, v in (spec.get("words") or {}).items()},
                insert=spec.get("insert"),
                endings=tuple((re.compile(e["pattern"]), tuple(e["options"])) for e in spec.get("endings") or ()),
                prefix_probability=float(prefixes.get("probability", 0.0)),
                prefix_any=tuple(prefixes.get("any") or ()),
                prefix_contexts=tuple((dict(c["when"]), tuple(c["options"])) for c in prefixes.get("contexts") or ()),
            )
        except (KeyError, TypeError, re.error) as e:
            raise GrammarError(f"dialect {name!r}: malformed rule ({e})") from e

    def _apply(self, sentence: Sentence, rng: np.random.Generator) -> str:
        pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
        words = [pick(self.words[w]) if w in self.words else w for w in sentence.standard_text.split()]
        ins = self.insert
        if (ins and len(words) >= 2 and sentence.intent not in ins.get("skip_intents", ())
                and not set(words) & set(ins.get("unless_present", ())) and rng.random() < ins["probability"]):
            words.insert(len(words) - 1, ins["word"])
        text = " ".join(words)
        for pattern, options in self.endings:
            if pattern.search(text):
                text = pattern.sub(pick(options), text, count=1)
                break
        if self.prefix_probability and rng.random() < self.prefix_probability:
            contextual = [o for when, opts in self.prefix_contexts
                          if all(sentence.command.get(k) == v for k, v in when.items()) for o in opts]
            options = contextual or list(self.prefix_any)
            if options:
                text = f"{pick(options)} {text}"
        return text

    def render(self, sentence: Sentence, rng: np.random.Generator, attempts: int = 4) -> Sentence:
        """A dialect version of a standard sentence; random choices come from ``rng``.
        Tries a few times to differ from the standard text (some sentences cannot)."""
        text = sentence.standard_text
        for _ in range(attempts):
            text = self._apply(sentence, rng)
            if text != sentence.standard_text:
                break
        suffix = hashlib.sha1(text.encode()).hexdigest()[:6]
        return Sentence(f"{sentence.id}.{self.name}.{suffix}", text, sentence.standard_text, self.name,
                        sentence.command)


class _Expander:
    """Expands one template of one intent into (text, command) pairs."""

    def __init__(self, spec: Mapping[str, Any], numbers: NumberSpeller) -> None:
        self.rooms: dict[str, list[str]] = {k: list(v) for k, v in spec["rooms"].items()}
        self.devices: dict[str, Mapping[str, Any]] = dict(spec["devices"])
        self.verbs: dict[str, list[str]] = {str(k): list(v) for k, v in spec["verbs"].items()}
        self.particles: dict[str, dict[str, str]] = dict(spec.get("particles") or {})
        self.numbers = numbers

    def expand(self, intent: str, t: Mapping[str, Any], where: str) -> Iterator[tuple[str, dict]]:
        unknown = set(t) - _TEMPLATE_KEYS
        if unknown:
            raise GrammarError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(_TEMPLATE_KEYS)}")
        if "text" not in t:
            raise GrammarError(f"{where}: missing key 'text'")
        for name in list(t.get("devices") or []) + ([t["device"]] if t.get("device") else []):
            if name not in self.devices:
                raise GrammarError(f"{where}: unknown device {name!r}; valid: {sorted(self.devices)}")
        for variant in _optional_variants(t["text"]):
            yield from self._expand_variant(intent, t, variant, where)

    def _domain(self, slot: str, t: Mapping[str, Any], device: str | None, where: str) -> list[tuple[str, dict]]:
        if "|" in slot:
            return [(alt, {}) for alt in slot.split("|")]
        if slot == "room":
            ids = t.get("rooms") or (self.devices[device].get("rooms", []) if device else list(self.rooms))
            return [(form, {"room": r}) for r in ids for form in self.rooms[r]]
        if slot == "verb":
            actions = t.get("actions") if "actions" in t else [t.get("action")]
            overrides = t.get("verbs") or {}
            try:
                return [(form, {"action": a}) for a in actions for form in overrides.get(a, self.verbs[a])]
            except KeyError as e:
                raise GrammarError(f"{where}: no verb forms for action {e}; valid: {sorted(self.verbs)}") from e
        if slot in (t.get("numbers") or {}):
            spec = t["numbers"][slot]
            if "values" in spec:
                values = list(spec["values"])
            else:
                lo, hi = spec["range"]
                values = list(range(lo, hi + 1, spec.get("step", 1)))
            return [(self.numbers.spell(v, spec.get("numeral", "sino")), {slot: v}) for v in values]
        if slot in (t.get("choices") or {}):
            return [(surface, {slot: value}) for surface, value in t["choices"][slot].items()]
        raise GrammarError(f"{where}: slot {{{slot}}} is not defined (numbers/choices/room/device/verb)")

    def _expand_variant(self, intent: str, t: Mapping[str, Any], text: str, where: str) -> Iterator[tuple[str, dict]]:
        slots = _SLOT.findall(text)
        if "device" in slots:
            device_choices = [(form, d) for d in t.get("devices") or () for form in self.devices[d]["forms"]]
            if not device_choices:
                raise GrammarError(f"{where}: text has {{device}} but no 'devices' list")
        else:
            device_choices = [(None, t.get("device"))]
        others = [s for s in slots if s != "device"]
        for device_form, device in device_choices:
            domains = [self._domain(s, t, device, where) for s in others]
            for combo in itertools.product(*domains):
                bindings: dict[str, Any] = {}
                for _, b in combo:
                    bindings.update(b)
                out = _fill(text, device_form, [surface for surface, _ in combo])
                out = _resolve_particles(" ".join(out.split()), self.particles)
                yield out, self._command(intent, t, device, bindings, where)

    def _command(self, intent: str, t: Mapping[str, Any], device: str | None, b: dict, where: str) -> dict:
        action = b.get("action", t.get("action"))
        if isinstance(action, Mapping):
            action = b[action["slot"]]
        return {"intent": intent, "device": device, "room": b.get("room"), "action": action,
                "value": self._value(t.get("value"), b, where)}

    @staticmethod
    def _value(spec: Any, b: dict, where: str) -> Any:
        if not isinstance(spec, Mapping):
            return spec
        get = lambda x: b[x] if isinstance(x, str) else x  # noqa: E731 - slot name or literal
        try:
            if "slot" in spec:
                return b[spec["slot"]] if spec["slot"] in b or "default" not in spec else spec["default"]
            if "time" in spec:
                ts = spec["time"]
                hour = get(ts["hour"]) % 12 + (get(ts["period"]) if "period" in ts else 0)
                hour = 12 if "period" not in ts and hour == 0 else hour  # "열두 시" as said
                return f"{hour:02d}:{get(ts.get('minute', 0)):02d}"
            if "seconds" in spec:
                s = spec["seconds"]
                return 3600 * get(s.get("hours", 0)) + 60 * get(s.get("minutes", 0)) + get(s.get("seconds", 0))
        except KeyError as e:
            raise GrammarError(f"{where}: value refers to undefined slot {e}") from e
        raise GrammarError(f"{where}: value must be a literal, {{slot}}, {{time}} or {{seconds}}; got {spec!r}")


@dataclass(frozen=True)
class Grammar:
    """An expanded grammar: its standard sentences (sorted by intent, then text) and dialects."""

    name: str
    language: str
    sentences: tuple[Sentence, ...]
    dialects: Mapping[str, DialectRules]

    def by_intent(self) -> dict[str, list[Sentence]]:
        out: dict[str, list[Sentence]] = {}
        for s in self.sentences:
            out.setdefault(s.intent, []).append(s)
        return out

    def render(self, sentence: Sentence, dialect: str, rng: np.random.Generator) -> Sentence:
        """``sentence`` as spoken in ``dialect`` ("standard" returns it unchanged)."""
        if dialect == STANDARD:
            return sentence
        if dialect not in self.dialects:
            raise ValueError(f"unknown dialect {dialect!r}; valid: {sorted([STANDARD, *self.dialects])}")
        return self.dialects[dialect].render(sentence, rng)


def expand(spec: Mapping[str, Any], name: str = "grammar", dialect_spec: Mapping[str, Any] | None = None) -> Grammar:
    """Expand a parsed grammar YAML into a :class:`Grammar`. Raises GrammarError when two
    templates give the same text different commands, or a template yields nothing."""
    for key in ("language", "numerals", "rooms", "devices", "verbs", "intents"):
        if key not in spec:
            raise GrammarError(f"{name}: missing top-level key {key!r}")
    expander = _Expander(spec, NumberSpeller(spec["numerals"]))
    commands: dict[str, dict] = {}
    for intent, templates in spec["intents"].items():
        for i, t in enumerate(templates):
            where = f"{name}: intents.{intent}[{i}] ({t.get('text')!r})"
            produced = 0
            for text, command in expander.expand(intent, t, where):
                produced += 1
                if any(ch.isdigit() for ch in text):
                    raise GrammarError(f"{where}: produced a digit in {text!r}; spell numbers out")
                if text in commands and commands[text] != command:
                    raise GrammarError(f"{where}: {text!r} is ambiguous: {commands[text]} vs {command}")
                commands[text] = command
            if not produced:
                raise GrammarError(f"{where}: template produces no sentences")
    sentences = sorted((Sentence(sentence_id(c["intent"], text), text, text, STANDARD, c)
                        for text, c in commands.items()), key=lambda s: (s.intent, s.text))
    dialects = {n: DialectRules.from_spec(n, d) for n, d in (dialect_spec or {}).items() if n != STANDARD}
    return Grammar(name, str(spec["language"]), tuple(sentences), dialects)


def available_grammars() -> list[str]:
    return sorted(p.stem for p in GRAMMAR_DIR.glob("*.yaml") if not p.stem.endswith("_dialects"))


def resolve_grammar_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path.resolve()
    candidate = GRAMMAR_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    raise ValueError(f"unknown grammar {str(name_or_path)!r}; available: {available_grammars()} "
                     f"(or a path to a grammar YAML)")


@lru_cache(maxsize=8)
def _load(path: Path) -> Grammar:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    dialect_spec = None
    if spec.get("dialects_file"):
        dialect_spec = yaml.safe_load((path.parent / spec["dialects_file"]).read_text(encoding="utf-8"))
    return expand(spec, path.stem, dialect_spec)


def load_grammar(name_or_path: str | Path = "ko_commands") -> Grammar:
    """Load and expand a grammar by name (``collection/grammar/<name>.yaml``) or path. Cached."""
    return _load(resolve_grammar_path(name_or_path))


def command_lexicon(name_or_path: str | Path = "ko_commands") -> list[str]:
    """The grammar's device and room names: the words a decoder's beam is biased toward."""
    spec = yaml.safe_load(resolve_grammar_path(name_or_path).read_text(encoding="utf-8"))
    words = {form for forms in spec.get("rooms", {}).values() for form in forms}
    words |= {form for device in spec.get("devices", {}).values() for form in device["forms"]}
    return sorted(words)
