"""The re-collection plan curation writes: twins of the data plan's cells for each weak slice, except
the cells the plan already asks as much of."""

from __future__ import annotations

from datetime import datetime

from collection.dataplan import load_dataplan
from voiceloop.loop import write_recollection_plan
from voiceloop.settings import Settings


def test_recollection_targets_the_weak_slices_the_plan_underfills(tmp_path):
    settings = Settings(data_dir=tmp_path)
    plan = load_dataplan("loop")  # standard speakers 20s-50s, 80 per cell
    path = write_recollection_plan(settings, plan, [("dialect", "gyeongsang"), ("age_band", "30s"),
                                                    ("age_band", "70s+")], datetime(2026, 11, 30), per_cell=16)
    cells = load_dataplan(path).cells
    assert {(c.dialect, c.age_band) for c in cells} >= {("gyeongsang", "20s"), ("standard", "70s+")}
    assert not [c for c in cells if c.dialect == "standard" and c.age_band == "30s"]  # the plan fills those
    assert {c.target for c in cells} == {16} and len(cells) == 32 + 8  # 4 ages x 8 (gyeongsang), 8 (70s+)
    assert write_recollection_plan(settings, plan, [("age_band", "30s")], datetime(2026, 11, 30), 16) is None
