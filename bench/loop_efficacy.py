"""Loop efficacy (issue 6): does ONE turn of the loop close the dialect and older-speaker gap?

    .venv/bin/python bench/loop_efficacy.py                  # the recipe: 2400-step champion, 16/cell, fine-tune 2000
    .venv/bin/python bench/loop_efficacy.py --mode scratch --retrain-steps 2400      # retrain from scratch instead
    .venv/bin/python bench/loop_efficacy.py --per-cell 6 --retrain-steps 1000 --tag small   # a cheaper recipe
    .venv/bin/python bench/loop_efficacy.py --mix version    # fine-tune on the dataset version alone

Phases (each timed; re-runs reuse what exists under ``--work``, so recipes can be compared cheaply):

1. synthesize the demo studio plan (collection/plans/demo.yaml): standard speakers for train/dev/test,
   Gyeongsang/Jeolla and 60s/70s+ speakers only in ``test_heldout``;
2. train the baseline champion on the studio's ``train`` split (``--baseline-steps``);
3. evaluate it (beam + LM): standard = test_seen + test_unseen, weak slices from test_heldout;
4. re-collect through the loop's real data path: ``voiceloop.loop.write_recollection_plan`` for the weak
   slices (``--per-cell`` utterances per cell) → ``collection.synthetic.collect_synthetic`` (studio → QC →
   catalog, SQLite) → label tasks → ``voiceloop.collect.simulated_labeling`` (error rate 0.05) →
   ``voiceloop.collect.freeze_dataset`` (a dataset version, splits by speaker);
5. retrain on studio train + the version's train split: fine-tune the champion at a low learning rate
   (``--mode finetune``, default) or train from scratch (``--mode scratch``);
6. evaluate again; print slice, n, CER before/after, gap before/after, gap reduction, standard CER change.

Target (issue 6): the gap (slice CER − standard CER) of each weak slice shrinks by ≥ 70 % while standard
CER rises by at most 0.5 points. Writes ``bench/out/loop_efficacy.json`` and
``bench/out/loop_efficacy.png`` (per-slice CER before/after).

Fine-tuning uses ``asr/configs/finetune.yaml`` with ``init_from`` = the champion's checkpoint (what the
retrain DAG does once there is a champion); ``--lr``, ``--warmup-steps`` and ``--spec-augment-from`` override
it. Budgets: ``--*-steps`` fixes the work (the numbers do not depend on how busy the machine is); without
it, ``--*-minutes`` of training time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.logging import RichHandler

from asr.evaluate import EvalReport, evaluate
from asr.inference import Recognizer
from asr.train import load_train_config
from collection.dataplan import load_dataplan
from collection.manifest import RECORDINGS, SUPERVISIONS, load_split, read_jsonl, write_jsonl
from collection.studio import synthesize_plan
from voiceloop.collect import collect_for_plan, freeze_dataset, queue_for_labeling, simulated_labeling
from voiceloop.efficacy import Phases, gap_rows, gap_table, plot_gaps, standard_slip, target_met, verdict
from voiceloop.loop import write_recollection_plan
from voiceloop.pipeline import train_model
from voiceloop.settings import Settings

OUT = Path(__file__).resolve().parent / "out"
STUDIO_PLAN = "demo"  # collection/plans/demo.yaml
DATA_PLAN = "demo"  # collection/dataplans/demo.yaml: the cells re-collection draws from
# What curate_feedback would hand write_recollection_plan after the drift alerts on these slices.
WEAK_SLICES = [("dialect", "gyeongsang"), ("dialect", "jeolla"), ("age_band", "60s"), ("age_band", "70s+")]
RECOLLECT_DAY = datetime(2026, 1, 1)  # fixed: the plan name (recollect-20260101) and its personas are stable
LABEL_ROUNDS = 4  # simulated labeling rounds at most (each relabels what the reviewer rejected)
console = Console(width=None if sys.stdout.isatty() else 160)
log = logging.getLogger("loop_efficacy")


# -- evaluation --------------------------------------------------------------------------------------
def evaluate_checkpoint(checkpoint: Path, studio: Path, cache: Path) -> dict[str, EvalReport]:
    """{"standard": test_seen + test_unseen, "heldout": test_heldout}, beam + LM; cached in ``cache`` next
    to the checkpoint's size and mtime, so a re-run of the benchmark does not decode twice."""
    stamp = f"{checkpoint.stat().st_size}-{checkpoint.stat().st_mtime_ns}"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("stamp") == stamp:
            return {k: EvalReport.from_dict(v) for k, v in cached["reports"].items()}
    recognizer = Recognizer.load(str(checkpoint), decoder="beam")
    reports = {
        "standard": evaluate(recognizer, load_split(studio / "test_seen") + load_split(studio / "test_unseen")),
        "heldout": evaluate(recognizer, load_split(studio / "test_heldout")),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"stamp": stamp, "reports": {k: r.to_dict() for k, r in reports.items()}},
                                ensure_ascii=False))
    return reports


def slice_cers(reports: dict[str, EvalReport]) -> dict[str, tuple[int, float]]:
    """(n, CER) of standard (new standard speakers 20s–50s) and each weak slice of test_heldout."""
    out = {"standard": reports["standard"].overall}
    for key, value in WEAK_SLICES:
        out[f"{key}={value}"] = reports["heldout"].slices[key][value]
    return {name: (m.n, m.cer) for name, m in out.items()}


# -- re-collection through the loop's data path ------------------------------------------------------
def recollect(settings: Settings, per_cell: int, workers: int) -> tuple[str, Path, dict]:
    """Re-collection plan for the weak slices → studio → QC → catalog → simulated labels → dataset version.
    Returns (version id, version root, counts)."""
    plan_path = write_recollection_plan(settings, load_dataplan(DATA_PLAN), WEAK_SLICES, RECOLLECT_DAY, per_cell)
    if plan_path is None:
        raise ValueError(f"no cell of data plan {DATA_PLAN!r} matches {WEAK_SLICES}")
    collected = collect_for_plan(settings, plan_path, workers=workers)
    console.print(f"{plan_path.stem}: {collected.accepted} accepted, {collected.rejected} refused by QC "
                  f"{collected.rejections or ''}, {collected.remaining} still missing")
    queued = queue_for_labeling(settings)  # no pre-labels: the simulated labelers answer from the prompt
    submitted = reviewed = rounds = 0
    for rounds in range(1, LABEL_ROUNDS + 1):  # rejected labels are re-queued: people label them again
        people = simulated_labeling(settings, seed=rounds)
        submitted, reviewed = submitted + people.submitted, reviewed + people.reviewed
        if people.submitted == 0:
            break
    version = freeze_dataset(settings, "recollect")
    console.print(f"{queued} label tasks; {rounds} labeling round(s): {submitted} submitted, {reviewed} reviewed; "
                  f"dataset version {version.id}")
    counts = {split: sum(c.get("dialect", {}).values()) for split, c in version.counts.items()}
    return version.id, Path(version.manifest_uri), {"plan": plan_path.stem, "accepted": collected.accepted,
                                                   "refused": collected.rejected, "splits": counts}


def speaker_overlap(settings: Settings, per_cell: int) -> int:
    """How many re-collected personas sound exactly like an evaluation persona (same eSpeak voice, rate,
    pitch and pitch range): the catalog draws personas independently of the studio plan's splits."""
    from collection.studio import load_plan, plan_utterances
    from collection.synthetic import SentencePicker, make_job

    plan = load_dataplan(settings.data_dir / "plans" / f"recollect-{RECOLLECT_DAY:%Y%m%d}.yaml")
    picker = SentencePicker(plan)
    collected = {make_job(plan, cell, i, plan.seed, picker).spec.persona for cell in plan.cells
                 for i in range(0, per_cell, plan.utterances.per_speaker)}
    test = {s.persona for split, specs in plan_utterances(load_plan(STUDIO_PLAN)).items() if split.startswith("test")
            for s in specs}

    def sig(p):  # noqa: ANN001, ANN202
        return p.voice, p.rate, p.pitch, p.pitch_range

    return len({sig(p) for p in collected} & {sig(p) for p in test})


def write_mix(out: Path, parts: list[Path]) -> Path:
    """One manifest root with ``train`` and ``dev`` = the concatenation of ``parts``' splits (audio paths
    made absolute, so each part keeps its own audio)."""
    for split in ("train", "dev"):
        recs, sups = [], []
        for part in parts:
            root = (part / split).resolve().parent
            for r in read_jsonl(part / split / RECORDINGS):
                r["sources"] = [{**s, "source": str((root / s["source"]).resolve())} for s in r["sources"]]
                recs.append(r)
            sups += list(read_jsonl(part / split / SUPERVISIONS))
        write_jsonl(out / split / RECORDINGS, recs)
        write_jsonl(out / split / SUPERVISIONS, sups)
    return out


def budget(minutes: float, steps: int) -> dict:
    """Training-config overrides: a step budget when ``steps`` > 0 (minutes then unlimited), else minutes."""
    return {"max_minutes": 0.0, "max_steps": steps} if steps > 0 else {"max_minutes": minutes}


def budget_name(minutes: float, steps: int) -> str:
    return f"{steps}steps" if steps > 0 else f"{minutes:g}min"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("data/loop_efficacy"), help="studio, catalog, runs")
    ap.add_argument("--baseline-steps", type=int, default=2400,
                    help="step budget of the champion (≈ 6 min on 2 idle cores); 0 = use --baseline-minutes")
    ap.add_argument("--retrain-steps", type=int, default=2000,
                    help="step budget of the retraining (≈ 5 min); 0 = use --retrain-minutes")
    ap.add_argument("--baseline-minutes", type=float, default=7.0, help="training minutes when --baseline-steps 0")
    ap.add_argument("--retrain-minutes", type=float, default=5.0, help="training minutes when --retrain-steps 0")
    ap.add_argument("--mode", choices=("finetune", "scratch"), default="finetune")
    ap.add_argument("--mix", choices=("studio+version", "version"), default="studio+version",
                    help="retraining data: the studio's standard train split + the dataset version, or the version "
                         "alone")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate of the fine-tuning (default: "
                    "asr/configs/finetune.yaml's)")
    ap.add_argument("--warmup-steps", type=int, default=None)
    ap.add_argument("--spec-augment-from", type=float, default=None,
                    help="fraction of the retraining budget before SpecAugment (default: the config's)")
    ap.add_argument("--per-cell", type=int, default=16, help="re-collected utterances per weak data-plan cell")
    ap.add_argument("--workers", type=int, default=2, help="rendering processes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--tag", default="", help="suffix of the retraining run directory (compare recipes)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console)])
    for noisy in ("alembic", "mlflow", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    work = args.work.resolve()
    settings = Settings(data_dir=work / f"loop-per{args.per_cell}")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    phases = Phases(console)
    phase = phases.phase
    studio = work / "studio"

    with phase("synthesize the studio plan"):
        synthesize_plan(STUDIO_PLAN, studio, workers=args.workers)

    with phase(f"train the champion ({budget_name(args.baseline_minutes, args.baseline_steps)})"):
        base_cfg = load_train_config("baseline", **budget(args.baseline_minutes, args.baseline_steps))
        base_dir = work / "runs" / f"baseline-{budget_name(args.baseline_minutes, args.baseline_steps)}"
        champion = train_model(settings.with_data_dir(work), studio, base_cfg, base_dir, resume=True,
                               run_name="loop-efficacy-baseline").result

    with phase("evaluate the champion"):
        before = slice_cers(evaluate_checkpoint(champion.checkpoint, studio, base_dir / "eval.json"))

    with phase(f"re-collect the weak slices ({args.per_cell} per cell), label, freeze"):
        version, version_root, collected = recollect(settings, args.per_cell, args.workers)
        overlap = speaker_overlap(settings, args.per_cell)
        console.print(f"re-collected personas that sound like an evaluation persona: {overlap}")

    mode = "finetune" if args.mode == "finetune" else "scratch"
    with phase(f"retrain: {mode} ({budget_name(args.retrain_minutes, args.retrain_steps)})"):
        parts = [studio, version_root] if args.mix == "studio+version" else [version_root]
        mix = write_mix(settings.data_dir / "mix" / f"{version}-{args.mix}", parts)
        overrides = {**budget(args.retrain_minutes, args.retrain_steps), "spec_augment_from": args.spec_augment_from}
        if mode == "finetune":
            overrides |= {"lr": args.lr, "warmup_steps": args.warmup_steps, "init_from": str(champion.checkpoint)}
        cfg = load_train_config(mode if mode == "finetune" else "baseline", **overrides)
        name = (f"{mode}-{budget_name(args.retrain_minutes, args.retrain_steps)}-on-{args.mix}-from-"
                f"{budget_name(args.baseline_minutes, args.baseline_steps)}" + (f"-{args.tag}" if args.tag else ""))
        run_dir = settings.data_dir / "runs" / name
        retrained = train_model(settings, mix, cfg, run_dir, resume=True, run_name=f"loop-efficacy-{name}").result

    with phase("evaluate the retrained model"):
        after = slice_cers(evaluate_checkpoint(retrained.checkpoint, studio, run_dir / "eval.json"))

    rows = gap_rows(before, after, "standard")
    console.print(gap_table(rows, "one turn of the loop: CER per slice (beam + LM)"))
    console.print(phases.table())
    console.print(verdict(rows))
    passed = target_met(rows)
    result = {
        "recipe": {"mode": mode, "mix": args.mix, "per_cell": args.per_cell,
                   "baseline_budget": budget_name(args.baseline_minutes, args.baseline_steps),
                   "retrain_budget": budget_name(args.retrain_minutes, args.retrain_steps),
                   "weak_slices": [f"{k}={v}" for k, v in WEAK_SLICES],
                   "retrain_config": asdict(cfg)},
        "baseline": {"steps": champion.steps, "train_minutes": champion.train_minutes},
        "retrain": {"steps": retrained.steps, "train_minutes": retrained.train_minutes, "run_dir": str(run_dir),
                    "history": retrained.history},
        "recollected": {**collected, "dataset_version": version, "personas_sounding_like_test": overlap},
        "rows": [asdict(r) for r in rows],
        "standard_cer_change": standard_slip(rows),
        "target_met": passed,
        "phase_seconds": phases.seconds,
        "total_wall_s": round(sum(phases.seconds.values()), 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loop_efficacy.json").write_text(json.dumps(result, indent=1, default=str))
    png = plot_gaps(rows, args.out / "loop_efficacy.png",
               f"one loop: {mode} {budget_name(args.retrain_minutes, args.retrain_steps)} on "
               f"{args.mix} ({args.per_cell}/cell re-collected)", decoder="beam")
    console.print(f"wrote {args.out / 'loop_efficacy.json'} and {png}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
