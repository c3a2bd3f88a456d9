"""Production slices and how they map to the slices of the offline evaluation (one place for both).

A production utterance carries the device owner's profile at request time (``dialect``, ``age_band``,
``environment``, ``device_type``); the offline evaluation (``asr.evaluate``, logged by
``voiceloop.pipeline.evaluate_splits``) breaks WER down by ``dialect``, ``age_band``, ``gender``,
``environment`` and ``source``. The vocabularies are the same (the studio and the device profile both use
standard/gyeongsang/jeolla/…, 20s/30s/…, quiet/tv/kitchen/far_field); where they ever differ, add the
alias here, never at a call site.
"""

from __future__ import annotations

# Every slice the drift job computes; ``all`` (value ``all``) is the whole traffic.
ALL = "all"
SLICE_KEYS = ("dialect", "age_band", "environment", "device_type")
# A missing profile field reads as this value (the evaluation does the same for missing labels).
UNKNOWN = "unknown"

# production slice key -> evaluation slice key; None: the offline evaluation has no such slice
# (test sets are not recorded per device type), so there is no offline baseline for it.
EVAL_SLICE_KEY: dict[str, str | None] = {"dialect": "dialect", "age_band": "age_band",
                                         "environment": "environment", "device_type": None}
# (production slice key, production value) -> evaluation value, where the names differ.
EVAL_SLICE_VALUE: dict[tuple[str, str], str] = {}


def eval_slice(slice_key: str, slice_value: str) -> tuple[str, str] | None:
    """The evaluation slice to compare a production slice with: ``("all", "all")`` for the whole
    traffic, ``(key, value)`` for a slice, None when the offline evaluation has no such slice."""
    if slice_key == ALL:
        return ALL, ALL
    if slice_key not in EVAL_SLICE_KEY:
        raise ValueError(f"unknown slice key {slice_key!r}; valid: {', '.join((ALL, *SLICE_KEYS))}")
    key = EVAL_SLICE_KEY[slice_key]
    if key is None:
        return None
    return key, EVAL_SLICE_VALUE.get((slice_key, slice_value), slice_value)
