"""Collection plans: which speakers say which sentences in which environments, per split.

A plan (YAML or dict, see ``collection/plans/demo.yaml``) is validated into a frozen
:class:`Plan`; :func:`plan_utterances` turns it into :class:`UtteranceSpec` lists, one per
split, deterministically from the plan's seed. Splits never share a speaker, and sentences
held out for ``unseen`` splits never occur in any other split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from collection.studio.environments import ENVIRONMENTS
from collection.studio.grammar import STANDARD, Grammar, Sentence, load_grammar
from collection.studio.personas import AGE_BANDS, GENDERS, VOICE_POOLS, Persona, sample_persona

PLAN_DIR = Path(__file__).resolve().parent.parent / "plans"
SENTENCE_POOLS = ("seen", "unseen", "in_train", "any")
PLAN_KEYS = {"name", "seed", "language", "grammar", "sample_rate", "sentence_holdout", "train_split",
             "environments", "snr_db", "splits", "description"}
SPLIT_KEYS = {"sentences", "utterances_per_speaker", "environments", "speakers"}
GROUP_KEYS = {"count", "dialects", "age_bands", "genders", "voices"}
RENDER_VERSION = 1  # bump when the rendering chain changes, so re-runs do not skip stale audio


@dataclass(frozen=True)
class SpeakerGroup:
    count: int
    dialects: tuple[str, ...]
    age_bands: tuple[str, ...]
    genders: tuple[str, ...]
    voices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SplitPlan:
    name: str
    sentences: str
    utterances_per_speaker: int
    environments: tuple[tuple[str, float], ...]
    speakers: tuple[SpeakerGroup, ...]


@dataclass(frozen=True)
class Plan:
    """A validated plan. sample_rate in Hz; snr_db maps environment -> (low, high) dB."""

    name: str
    seed: int
    language: str
    grammar: str
    sample_rate: int
    sentence_holdout: float
    train_split: str
    snr_db: tuple[tuple[str, tuple[float, float]], ...]
    splits: tuple[SplitPlan, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything needed to render one utterance; the audio depends only on this."""

    recording_id: str
    split: str
    persona: Persona
    sentence: Sentence
    environment: str
    snr_db: float
    seed: int
    seen_sentence: bool
    language: str
    sample_rate: int


def _fail(key: str, problem: str, valid: Any = None) -> ValueError:
    hint = f"; valid: {valid}" if valid is not None else ""
    return ValueError(f"plan key {key!r}: {problem}{hint}")


def _choices(key: str, values: Any, valid: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list | tuple) or not values:
        raise _fail(key, f"must be a non-empty list, got {values!r}", list(valid))
    bad = [v for v in values if v not in valid]
    if bad:
        raise _fail(key, f"unknown value(s) {bad}", list(valid))
    return tuple(values)


def _weights(key: str, spec: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(spec, Mapping) or not spec:
        raise _fail(key, f"must map environment -> weight, got {spec!r}", sorted(ENVIRONMENTS))
    bad = [k for k in spec if k not in ENVIRONMENTS]
    if bad:
        raise _fail(key, f"unknown environment(s) {bad}", sorted(ENVIRONMENTS))
    if any(not isinstance(w, int | float) or w < 0 for w in spec.values()) or sum(spec.values()) <= 0:
        raise _fail(key, "weights must be non-negative numbers with a positive sum")
    total = float(sum(spec.values()))
    return tuple((k, float(w) / total) for k, w in spec.items())


def _unknown(key: str, spec: Mapping[str, Any], valid: set[str]) -> None:
    bad = sorted(set(spec) - valid)
    if bad:
        raise _fail(f"{key}{bad[0]}", "unknown key", sorted(valid))


def validate_plan(spec: Mapping[str, Any]) -> Plan:
    """Check a parsed plan and return it as a :class:`Plan`; raises ValueError naming the bad key."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a plan must be a mapping, got {type(spec).__name__}")
    _unknown("", spec, PLAN_KEYS)
    for key in ("name", "seed", "splits"):
        if key not in spec:
            raise _fail(key, "is required")
    if not isinstance(spec["seed"], int) or isinstance(spec["seed"], bool):
        raise _fail("seed", f"must be an integer, got {spec['seed']!r}")
    try:
        grammar = load_grammar(spec.get("grammar", "ko_commands"))
    except ValueError as e:
        raise _fail("grammar", str(e)) from e
    dialects = [STANDARD, *grammar.dialects]
    holdout = spec.get("sentence_holdout", 0.15)
    if not isinstance(holdout, int | float) or not 0 <= holdout < 1:
        raise _fail("sentence_holdout", f"must be a fraction in [0, 1), got {holdout!r}")
    sample_rate = spec.get("sample_rate", 16000)
    if sample_rate not in (8000, 16000, 22050):
        raise _fail("sample_rate", f"unsupported {sample_rate!r}", [8000, 16000, 22050])
    default_env = _weights("environments", spec.get("environments", {"quiet": 1.0}))
    snr = dict((name, env.snr_db_range) for name, env in ENVIRONMENTS.items())
    for name, rng_ in (spec.get("snr_db") or {}).items():
        if name not in ENVIRONMENTS:
            raise _fail(f"snr_db.{name}", "unknown environment", sorted(ENVIRONMENTS))
        if not isinstance(rng_, list | tuple) or len(rng_) != 2 or rng_[0] > rng_[1]:
            raise _fail(f"snr_db.{name}", f"must be [low_db, high_db], got {rng_!r}")
        snr[name] = (float(rng_[0]), float(rng_[1]))
    if not isinstance(spec["splits"], Mapping) or not spec["splits"]:
        raise _fail("splits", "must map split name -> split spec")
    splits = []
    for name, s in spec["splits"].items():
        where = f"splits.{name}"
        if not isinstance(s, Mapping):
            raise _fail(where, "must be a mapping")
        _unknown(f"{where}.", s, SPLIT_KEYS)
        pool = s.get("sentences", "seen")
        if pool not in SENTENCE_POOLS:
            raise _fail(f"{where}.sentences", f"unknown pool {pool!r}", list(SENTENCE_POOLS))
        per = s.get("utterances_per_speaker")
        if not isinstance(per, int) or per < 1:
            raise _fail(f"{where}.utterances_per_speaker", f"must be a positive integer, got {per!r}")
        groups = s.get("speakers")
        if not isinstance(groups, list) or not groups:
            raise _fail(f"{where}.speakers", "must be a non-empty list of speaker groups "
                        "({count, dialects, age_bands, genders[, voices]})")
        parsed = []
        for i, g in enumerate(groups):
            gw = f"{where}.speakers[{i}]"
            if not isinstance(g, Mapping):
                raise _fail(gw, "must be a mapping", sorted(GROUP_KEYS))
            _unknown(f"{gw}.", g, GROUP_KEYS)
            count = g.get("count")
            if not isinstance(count, int) or count < 1:
                raise _fail(f"{gw}.count", f"must be a positive integer, got {count!r}")
            all_voices = sorted({v for pool_ in VOICE_POOLS.values() for v in pool_})
            voices = _choices(f"{gw}.voices", g["voices"], all_voices) if "voices" in g else None
            parsed.append(SpeakerGroup(count, _choices(f"{gw}.dialects", g.get("dialects", [STANDARD]), dialects),
                                       _choices(f"{gw}.age_bands", g.get("age_bands", list(AGE_BANDS)), AGE_BANDS),
                                       _choices(f"{gw}.genders", g.get("genders", list(GENDERS)), GENDERS),
                                       voices))
        env = _weights(f"{where}.environments", s["environments"]) if "environments" in s else default_env
        splits.append(SplitPlan(str(name), pool, per, env, tuple(parsed)))
    if holdout == 0 and any(s.sentences == "unseen" for s in splits):
        raise _fail("sentence_holdout", "is 0, but a split uses sentences: unseen (nothing is held out)")
    train_split = spec.get("train_split", "train")
    names = [s.name for s in splits]
    if any(s.sentences == "in_train" for s in splits) and train_split not in names:
        raise _fail("train_split", f"{train_split!r} is not a split, but a split uses sentences: in_train", names)
    return Plan(name=str(spec["name"]), seed=int(spec["seed"]), language=str(spec.get("language", grammar.language)),
                grammar=str(spec.get("grammar", "ko_commands")), sample_rate=int(sample_rate),
                sentence_holdout=float(holdout), train_split=str(train_split),
                snr_db=tuple(sorted(snr.items())), splits=tuple(splits))


def available_plans() -> list[str]:
    return sorted(p.stem for p in PLAN_DIR.glob("*.yaml"))


def load_plan(plan: str | Path | Mapping[str, Any]) -> Plan:
    """A plan from a dict, a YAML path, or a bundled plan name ("demo", "tiny")."""
    if isinstance(plan, Mapping):
        return validate_plan(plan)
    path = Path(plan)
    if not path.exists():
        if (PLAN_DIR / f"{plan}.yaml").exists():
            path = PLAN_DIR / f"{plan}.yaml"
        else:
            raise ValueError(f"plan {str(plan)!r} not found; give a YAML path or one of {available_plans()}")
    return validate_plan(yaml.safe_load(path.read_text(encoding="utf-8")))


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any JSON-able parts (stable across runs, platforms and orderings)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def holdout_sentences(grammar: Grammar, fraction: float, seed: int) -> set[str]:
    """Ids of standard sentences reserved for ``unseen`` splits: ``fraction`` of each intent
    (rounded, at least one when the intent has ≥ 2 sentences), chosen by ``seed``."""
    held: set[str] = set()
    for sentences in grammar.by_intent().values():
        k = int(round(fraction * len(sentences)))
        k = max(k, 1) if fraction > 0 and len(sentences) >= 2 else k
        ranked = sorted(sentences, key=lambda s: derive_seed(seed, "holdout", s.id))
        held.update(s.id for s in ranked[:k])
    return held


def _allocate(weights: tuple[tuple[str, float], ...], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` labels in the given proportions (largest remainder), shuffled."""
    exact = [w * n for _, w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:
        counts[i] += 1
    labels = [name for (name, _), c in zip(weights, counts, strict=True) for _ in range(c)]
    return [labels[i] for i in rng.permutation(len(labels))]


def _personas(plan: Plan, split: SplitPlan, rng: np.random.Generator, taken: set[tuple]) -> list[Persona]:
    """The split's speakers, balanced over each group's dialect x age x gender combinations.
    ``taken`` holds the voice signatures of earlier splits: no two speakers sound the same."""
    personas = []
    for g in split.speakers:
        combos = [(d, a, s) for d in g.dialects for a in g.age_bands for s in g.genders]
        order = rng.permutation(len(combos))
        for k in range(g.count):
            dialect, age, gender = combos[order[k % len(combos)]]
            pid = f"{plan.name}-{split.name}-{len(personas) + 1:03d}"
            for _ in range(100):
                p = sample_persona(pid, age, gender, dialect, rng, g.voices)
                if (signature := (p.voice, p.rate, p.pitch, p.pitch_range)) not in taken:
                    break
            taken.add(signature)
            personas.append(p)
    return personas


def _pick_sentences(pool: dict[str, list[Sentence]], n: int, rng: np.random.Generator) -> list[Sentence]:
    """``n`` sentences: an intent uniformly, then an unused sentence of it (repeats only
    once a speaker has said every sentence of that intent)."""
    intents = sorted(pool)
    used: dict[str, set[int]] = {i: set() for i in intents}
    out = []
    for _ in range(n):
        intent = intents[int(rng.integers(len(intents)))]
        candidates = [j for j in range(len(pool[intent])) if j not in used[intent]] or list(range(len(pool[intent])))
        j = candidates[int(rng.integers(len(candidates)))]
        used[intent].add(j)
        out.append(pool[intent][j])
    return out


def plan_utterances(plan: Plan) -> dict[str, list[UtteranceSpec]]:
    """Expand a plan into utterance specs per split (train split first, then in plan order)."""
    grammar = load_grammar(plan.grammar)
    held = holdout_sentences(grammar, plan.sentence_holdout, plan.seed)
    standard = list(grammar.sentences)
    pools: dict[str, list[Sentence]] = {
        "seen": [s for s in standard if s.id not in held],
        "unseen": [s for s in standard if s.id in held],
        "any": standard,
    }
    snr = dict(plan.snr_db)
    order = sorted(plan.splits, key=lambda s: s.name != plan.train_split)
    train_ids: set[str] = set()  # standard sentence ids spoken in the training split
    taken: set[tuple] = set()
    out: dict[str, list[UtteranceSpec]] = {}
    for split in order:
        rng = np.random.default_rng(derive_seed(plan.seed, "split", split.name))
        candidates = pools[split.sentences] if split.sentences != "in_train" else [
            s for s in standard if s.id in train_ids]
        if not candidates:
            raise ValueError(f"split {split.name!r}: sentence pool {split.sentences!r} is empty")
        by_intent: dict[str, list[Sentence]] = {}
        for s in candidates:
            by_intent.setdefault(s.intent, []).append(s)
        personas = _personas(plan, split, rng, taken)
        envs = _allocate(split.environments, len(personas) * split.utterances_per_speaker, rng)
        specs: list[UtteranceSpec] = []
        used: set[str] = set()
        for persona in personas:
            for k, std in enumerate(_pick_sentences(by_intent, split.utterances_per_speaker, rng)):
                env = envs[len(specs)]
                sentence = grammar.render(std, persona.dialect, rng)
                snr_db = round(float(rng.uniform(*snr[env])), 2)
                seed = derive_seed(plan.seed, split.name, persona.id, k)
                content = [RENDER_VERSION, persona.to_dict(), sentence.text, env, snr_db, seed, plan.sample_rate]
                rid = f"{persona.id}-{k:03d}-{hashlib.sha1(json.dumps(content).encode()).hexdigest()[:8]}"
                specs.append(UtteranceSpec(rid, split.name, persona, sentence, env, snr_db, seed,
                                           split.name == plan.train_split or std.id in train_ids,
                                           plan.language, plan.sample_rate))
                used.add(std.id)
        if split.name == plan.train_split:
            train_ids = used
        out[split.name] = specs
    return {s.name: out[s.name] for s in plan.splits}
