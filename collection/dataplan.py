"""Data plans: how many utterances the catalog should hold per speaker/environment cell, and under which consent.

A data plan (YAML, see ``collection/dataplans/demo.yaml`` and ``docs/data-plans.md``) names the
target cells — age band × gender × dialect region × environment, each with a target count —
what is said (a domain grammar or an explicit prompt list), the consent terms a speaker agrees
to and the legal checklist a reviewer ticks. :func:`validate_dataplan` turns the parsed YAML into
a frozen :class:`DataPlan` (errors name the key and the valid options); :func:`write_dataplan`
writes one back (cells as an explicit list), so a plan survives a round trip unchanged.

Not to be confused with the studio's plans (``collection/plans``), which lay out the train/dev/test
splits of a synthetic data set; a data plan is about quotas in the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from collection.studio.environments import ENVIRONMENTS
from collection.studio.grammar import STANDARD, available_grammars, load_grammar
from collection.studio.personas import AGE_BANDS, GENDERS

DATAPLAN_DIR = Path(__file__).resolve().parent / "dataplans"
AXES = ("age_band", "gender", "dialect", "environment")
GRID_KEYS = {"age_bands", "genders", "dialects", "environments", "count", "overrides"}
PLAN_KEYS = {"name", "description", "language", "seed", "quota_scope", "parent", "cells", "utterances", "consent",
             "checklist"}
UTTERANCE_KEYS = {"grammar", "prompts", "max_seconds", "per_speaker"}
CONSENT_KEYS = {"text_version", "retention_days", "scopes"}
CONSENT_SCOPES = ("training", "human_review")
# all: every accepted recording in a cell counts, whatever its source or plan; plan: only recordings
# collected under this plan's name (or its gap plans') — what a re-collection plan needs.
QUOTA_SCOPES = ("all", "plan")
MAX_NAME = 64  # Recording.plan is String(64)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ITEM_ID = re.compile(r"^[a-z][a-z0-9_]*$")


class DataPlanError(ValueError):
    """A data plan is malformed; the message names the key, what was wrong and the valid options."""


@dataclass(frozen=True)
class Cell:
    """One quota cell: who (age band, gender, dialect region) in which environment; ``target`` utterances."""

    age_band: str
    gender: str
    dialect: str
    environment: str
    target: int

    @property
    def key(self) -> str:
        """``20s/male/standard/quiet``: stable, used in external ids and tables."""
        return "/".join(self.axes)

    @property
    def axes(self) -> tuple[str, str, str, str]:
        return (self.age_band, self.gender, self.dialect, self.environment)


@dataclass(frozen=True)
class UtterancePlan:
    """What is said: sentences of a domain ``grammar`` (collection/grammar/<name>.yaml) or a fixed
    ``prompts`` list (exactly one of the two). ``max_seconds``: longest accepted utterance (s);
    ``per_speaker``: utterances each speaker records before a new speaker takes over."""

    grammar: str | None = None
    prompts: tuple[str, ...] | None = None
    max_seconds: float = 10.0
    per_speaker: int = 5


@dataclass(frozen=True)
class ConsentTerms:
    """The consent a speaker gives: the form's text version, retention in days, granted scopes."""

    text_version: str
    retention_days: int
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class ChecklistItem:
    """One legal checklist line: a stable ``id`` and the text shown on the form, verbatim."""

    id: str
    text: str


@dataclass(frozen=True)
class DataPlan:
    name: str
    language: str
    cells: tuple[Cell, ...]
    utterances: UtterancePlan
    consent: ConsentTerms
    checklist: tuple[ChecklistItem, ...]
    description: str = ""
    seed: int = 0
    quota_scope: str = "all"
    parent: str | None = None  # the plan a re-collection plan was derived from

    @property
    def total_target(self) -> int:
        return sum(c.target for c in self.cells)

    def cell(self, key: str) -> Cell:
        for c in self.cells:
            if c.key == key:
                return c
        raise KeyError(f"plan {self.name!r} has no cell {key!r}")

    def to_dict(self) -> dict[str, Any]:
        """The YAML schema with cells as an explicit list (what :func:`validate_dataplan` reads back)."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.parent:
            out["parent"] = self.parent
        out |= {"language": self.language, "seed": self.seed, "quota_scope": self.quota_scope}
        u = self.utterances
        utt: dict[str, Any] = {"grammar": u.grammar} if u.grammar else {"prompts": list(u.prompts or ())}
        out["utterances"] = utt | {"max_seconds": u.max_seconds, "per_speaker": u.per_speaker}
        out["consent"] = {"text_version": self.consent.text_version, "retention_days": self.consent.retention_days,
                          "scopes": list(self.consent.scopes)}
        out["checklist"] = [{"id": i.id, "text": i.text} for i in self.checklist]
        out["cells"] = [{"age_band": c.age_band, "gender": c.gender, "dialect": c.dialect,
                         "environment": c.environment, "count": c.target} for c in self.cells]
        return out


def _fail(key: str, problem: str, valid: Any = None) -> DataPlanError:
    hint = f"; valid: {list(valid)}" if valid is not None else ""
    return DataPlanError(f"data plan key {key!r}: {problem}{hint}")


def _unknown(where: str, spec: Mapping[str, Any], valid: set[str]) -> None:
    bad = sorted(set(spec) - valid)
    if bad:
        raise _fail(f"{where}{bad[0]}", "unknown key", sorted(valid))


def _count(key: str, value: Any, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(key, f"must be an integer ≥ {minimum}, got {value!r}")
    return value


def _values(key: str, values: Any, valid: tuple[str, ...]) -> tuple[str, ...]:
    """A value or a non-empty list of values, each one of ``valid``, duplicates removed (order kept)."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list | tuple) or not values:
        raise _fail(key, f"must be a non-empty list, got {values!r}", valid)
    bad = [v for v in values if v not in valid]
    if bad:
        raise _fail(key, f"unknown value(s) {bad}", valid)
    return tuple(dict.fromkeys(values))


@lru_cache(maxsize=8)
def known_dialects(grammar: str | None = None) -> tuple[str, ...]:
    """Dialect regions a plan may target: ``standard`` plus the dialects of ``grammar`` (its
    dialect file renders them), or of every packaged grammar when the plan uses a prompt list."""
    names = [grammar] if grammar else available_grammars()
    dialects = [d for g in names for d in load_grammar(g).dialects]
    return (STANDARD, *dict.fromkeys(dialects))


def _vocab(dialects: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {"age_band": AGE_BANDS, "gender": GENDERS, "dialect": dialects, "environment": tuple(ENVIRONMENTS)}


def _grid_cells(spec: Mapping[str, Any], vocab: dict[str, tuple[str, ...]]) -> list[Cell]:
    """The compact form: every combination of the axis lists at ``count``, then ``overrides``
    (each a selector over some axes + a count; later overrides win; count 0 drops a cell)."""
    _unknown("cells.", spec, GRID_KEYS)
    axes = {a: _values(f"cells.{a}s", spec.get(f"{a}s", list(vocab[a])), vocab[a]) for a in AXES}
    default = _count("cells.count", spec.get("count"), 0)
    targets = {(a, g, d, e): default for a in axes["age_band"] for g in axes["gender"]
               for d in axes["dialect"] for e in axes["environment"]}
    overrides = spec.get("overrides") or []
    if not isinstance(overrides, list):
        raise _fail("cells.overrides", f"must be a list of {{<axis>s: [...], count: N}}, got {overrides!r}")
    for i, o in enumerate(overrides):
        where = f"cells.overrides[{i}]"
        if not isinstance(o, Mapping):
            raise _fail(where, "must be a mapping", sorted({f"{a}s" for a in AXES} | {"count"}))
        _unknown(f"{where}.", o, {f"{a}s" for a in AXES} | {"count"})
        count = _count(f"{where}.count", o.get("count"), 0)
        # An override may only narrow the grid: values outside the plan's axis lists are an error.
        select = {a: set(_values(f"{where}.{a}s", o[f"{a}s"], axes[a])) for a in AXES if f"{a}s" in o}
        if not select:
            raise _fail(where, "selects nothing: name at least one axis", [f"{a}s" for a in AXES])
        for cell in targets:
            if all(cell[AXES.index(a)] in vals for a, vals in select.items()):
                targets[cell] = count
    return [Cell(*axes_, target=n) for axes_, n in targets.items() if n > 0]


def _list_cells(spec: list[Any], vocab: dict[str, tuple[str, ...]]) -> list[Cell]:
    """The explicit form: one mapping per cell (what :func:`write_dataplan` writes)."""
    cells: dict[tuple[str, ...], Cell] = {}
    for i, c in enumerate(spec):
        where = f"cells[{i}]"
        if not isinstance(c, Mapping):
            raise _fail(where, "must be a mapping", [*AXES, "count"])
        _unknown(f"{where}.", c, {*AXES, "count"})
        for a in AXES:
            if a not in c:
                raise _fail(f"{where}.{a}", "is required", vocab[a])
            if c[a] not in vocab[a]:
                raise _fail(f"{where}.{a}", f"unknown value {c[a]!r}", vocab[a])
        cell = Cell(c["age_band"], c["gender"], c["dialect"], c["environment"],
                    _count(f"{where}.count", c.get("count"), 1))
        if cell.axes in cells:
            raise _fail(where, f"cell {cell.key} is listed twice")
        cells[cell.axes] = cell
    return list(cells.values())


def _utterances(spec: Any, language: str | None) -> tuple[UtterancePlan, str]:
    if not isinstance(spec, Mapping):
        raise _fail("utterances", "must be a mapping with grammar or prompts", sorted(UTTERANCE_KEYS))
    _unknown("utterances.", spec, UTTERANCE_KEYS)
    if ("grammar" in spec) == ("prompts" in spec):
        raise _fail("utterances", "give exactly one of 'grammar' (a domain grammar name) or 'prompts' (a list)",
                    available_grammars())
    max_seconds = spec.get("max_seconds", 10.0)
    if not isinstance(max_seconds, int | float) or isinstance(max_seconds, bool) or not 0.5 <= max_seconds <= 30:
        raise _fail("utterances.max_seconds", f"must be seconds in [0.5, 30], got {max_seconds!r}")
    per_speaker = _count("utterances.per_speaker", spec.get("per_speaker", 5), 1)
    if "grammar" in spec:
        try:
            grammar = load_grammar(spec["grammar"])
        except ValueError as e:
            raise _fail("utterances.grammar", str(e)) from e
        if language is not None and language != grammar.language:
            raise _fail("language", f"is {language!r} but grammar {spec['grammar']!r} is {grammar.language!r}")
        return UtterancePlan(str(spec["grammar"]), None, float(max_seconds), per_speaker), grammar.language
    prompts = spec["prompts"]
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise _fail("utterances.prompts", "must be a non-empty list of non-empty strings")
    if language is None:
        raise _fail("language", "is required when utterances are a prompt list (a grammar names its own)")
    prompts_ = tuple(dict.fromkeys(" ".join(p.split()) for p in prompts))
    return UtterancePlan(None, prompts_, float(max_seconds), per_speaker), language


def _consent(spec: Any) -> ConsentTerms:
    if not isinstance(spec, Mapping):
        raise _fail("consent", "must be a mapping", sorted(CONSENT_KEYS))
    _unknown("consent.", spec, CONSENT_KEYS)
    version = spec.get("text_version")
    if not isinstance(version, str | int) or not str(version).strip():
        raise _fail("consent.text_version", f"must name the consent form's text version, got {version!r}")
    if len(str(version)) > 64:  # consents.text_version is String(64)
        raise _fail("consent.text_version", f"is {len(str(version))} characters; at most 64")
    retention = _count("consent.retention_days", spec.get("retention_days"), 1)
    scopes = _values("consent.scopes", spec.get("scopes"), CONSENT_SCOPES)
    return ConsentTerms(str(version), retention, scopes)


def _checklist(spec: Any) -> tuple[ChecklistItem, ...]:
    if not isinstance(spec, list) or not spec:
        raise _fail("checklist", "must be a non-empty list of {id, text}: the items a reviewer ticks")
    items: dict[str, ChecklistItem] = {}
    for i, item in enumerate(spec):
        where = f"checklist[{i}]"
        if not isinstance(item, Mapping):
            raise _fail(where, "must be a mapping {id, text}")
        _unknown(f"{where}.", item, {"id", "text"})
        item_id, text = item.get("id"), item.get("text")
        if not isinstance(item_id, str) or not _ITEM_ID.match(item_id):
            raise _fail(f"{where}.id", f"must be a lower_snake_case id, got {item_id!r}")
        if item_id in items:
            raise _fail(f"{where}.id", f"{item_id!r} is used twice")
        if not isinstance(text, str) or not text.strip():
            raise _fail(f"{where}.text", "must be the text shown on the form")
        items[item_id] = ChecklistItem(item_id, text.strip())
    return tuple(items.values())


def validate_name(name: Any, key: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > MAX_NAME:
        raise _fail(key, f"must be 1-{MAX_NAME} characters of letters, digits, '.', '_' or '-', got {name!r}")
    return name


def validate_dataplan(spec: Mapping[str, Any]) -> DataPlan:
    """Check a parsed data plan and return it frozen; raises :class:`DataPlanError` naming the bad key."""
    if not isinstance(spec, Mapping):
        raise DataPlanError(f"a data plan must be a mapping, got {type(spec).__name__}")
    _unknown("", spec, PLAN_KEYS)
    for key in ("name", "cells", "utterances", "consent", "checklist"):
        if key not in spec:
            raise _fail(key, "is required")
    name = validate_name(spec["name"])
    language = spec.get("language")
    if language is not None and (not isinstance(language, str) or not language):
        raise _fail("language", f"must be a language code, got {language!r}")
    utterances, language = _utterances(spec["utterances"], language)
    vocab = _vocab(known_dialects(utterances.grammar))
    cells_spec = spec["cells"]
    if isinstance(cells_spec, Mapping):
        cells = _grid_cells(cells_spec, vocab)
        if not cells:
            raise _fail("cells", "every cell has count 0: nothing to collect")
    elif isinstance(cells_spec, list):
        cells = _list_cells(cells_spec, vocab)  # may be empty: a re-collection plan of a filled plan
    else:
        raise _fail("cells", "must be a grid ({age_bands, genders, dialects, environments, count, overrides}) "
                    f"or a list of {{{', '.join(AXES)}, count}}, got {type(cells_spec).__name__}")
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _fail("seed", f"must be an integer, got {seed!r}")
    scope = spec.get("quota_scope", "all")
    if scope not in QUOTA_SCOPES:
        raise _fail("quota_scope", f"unknown value {scope!r}", QUOTA_SCOPES)
    parent = spec.get("parent")
    return DataPlan(name=name, language=language, cells=tuple(cells), utterances=utterances,
                    consent=_consent(spec["consent"]), checklist=_checklist(spec["checklist"]),
                    description=str(spec.get("description") or "").strip(), seed=seed, quota_scope=scope,
                    parent=validate_name(parent, "parent") if parent is not None else None)


def available_dataplans() -> list[str]:
    """Names of the packaged data plans (``collection/dataplans/*.yaml``)."""
    return sorted(p.stem for p in DATAPLAN_DIR.glob("*.yaml"))


def load_dataplan(plan: str | Path | Mapping[str, Any] | DataPlan, search: tuple[Path, ...] = ()) -> DataPlan:
    """A data plan from a dict, a YAML path, or a name looked up in ``search`` directories and then
    among the packaged plans (``demo``, ``tiny``)."""
    if isinstance(plan, DataPlan):
        return plan
    if isinstance(plan, Mapping):
        return validate_dataplan(plan)
    path = Path(plan)
    if not path.is_file():
        candidates = [d / f"{plan}.yaml" for d in (*search, DATAPLAN_DIR)]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            extra = f" or a plan in {', '.join(str(d) for d in search)}" if search else ""
            raise DataPlanError(f"data plan {str(plan)!r} not found; give a YAML path{extra} or one of "
                                f"{available_dataplans()}")
        path = found
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataPlanError(f"data plan {path}: not valid YAML ({e})") from e
    try:
        return validate_dataplan(spec)
    except DataPlanError as e:
        raise DataPlanError(f"{path}: {e}") from e


def write_dataplan(plan: DataPlan, path: str | Path) -> Path:
    """Write ``plan`` as YAML (cells as an explicit list); :func:`load_dataplan` reads back the same plan."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Data plan {plan.name} (collection/dataplan.py; docs/data-plans.md).\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + yaml.safe_dump(plan.to_dict(), allow_unicode=True, sort_keys=False, width=120),
                   encoding="utf-8")
    tmp.replace(path)
    return path
