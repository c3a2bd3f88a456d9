"""The training loop: CTC on prepared utterances, CPU by default, CUDA with mixed precision when present,
several GPUs/nodes through ``torchrun`` (DDP) with no code change. Reads top to bottom in ``train``.

Budgets are steps and/or minutes of training (evaluation time excluded); the learning rate follows a
warm-up then a cosine decay over whichever budget runs out first, so a 10-minute and a 30-minute run
both end at a low learning rate. Resuming continues the same schedule from ``train_state.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .backends import build_model, load_checkpoint, save_checkpoint
from .data import Example, batches, pad_batch, prepare_examples
from .decoding import greedy_decode
from .evaluate import corpus_cer
from .lm import NgramLM
from .text import get_language_pack, make_tokenizer

if TYPE_CHECKING:  # the manifest types only; asr does not need collection at run time
    from collection.manifest import Utterance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    backend: str = "conformer_ctc"
    model: dict = field(default_factory=dict)  # overrides of the backend's config dataclass
    language: str = "ko"
    max_minutes: float = 20.0  # training minutes (evaluation excluded); 0 = no time budget
    max_steps: int = 0  # 0 = no step budget
    max_frames: int = 16_000  # input frames per batch (padded), e.g. 16k mel frames = 160 s of audio
    lr: float = 2e-3
    warmup_steps: int = 300
    final_lr_ratio: float = 0.02
    weight_decay: float = 1e-2
    grad_clip: float = 5.0
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    # SpecAugment slows the first minutes a lot (measured: dev CER 64 % vs 20 % after 4 minutes), so it
    # starts once this fraction of the budget is spent; 1.0 = never. Speed perturbation is always on.
    spec_augment_from: float = 0.5
    trim_silence: bool = True  # cut leading/trailing silence of training audio (asr.audio.trim_silence)
    eval_every_minutes: float = 2.0  # dev CER on the learning curve
    eval_every_steps: int = 0  # used instead of minutes when > 0 (tests)
    dev_limit: int = 200  # dev utterances decoded per evaluation
    checkpoint_every_minutes: float = 5.0
    lm_order: int = 6  # token n-gram LM of the training transcripts stored with the model; 0 = none
    seed: int = 0
    # fine-tuning: start from this checkpoint's weights and tokenizer (the champion's, say) instead of a
    # random init; the optimizer and learning-rate schedule start fresh (use a low ``lr``: a high one
    # wrecks what the model knew). A run already in progress resumes from its own checkpoint instead.
    init_from: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        if "speed_factors" in d:
            d["speed_factors"] = tuple(d["speed_factors"])
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - valid
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; valid: {sorted(valid)}")
        return cls(**d)


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def load_train_config(path_or_name: str | Path, **overrides) -> TrainConfig:
    """A training config YAML by path or by name in ``asr/configs`` (``baseline``); ``overrides`` win."""
    path = Path(path_or_name)
    if not path.is_file():
        path = CONFIG_DIR / f"{path_or_name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no training config {path_or_name!r}; give a YAML path or one of {names}")
    data = yaml.safe_load(path.read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data)


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    train_minutes: float
    history: list[dict]  # learning curve: {"step", "minutes", "loss", "dev_cer"}


def get_lr(cfg: TrainConfig, step: int, progress: float) -> float:
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    decay = cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * warm * decay


def get_progress(cfg: TrainConfig, step: int, seconds: float) -> float:
    """Fraction of the budget used: the larger of the step and time fractions."""
    by_steps = step / cfg.max_steps if cfg.max_steps else 0.0
    by_time = seconds / (cfg.max_minutes * 60) if cfg.max_minutes else 0.0
    return max(by_steps, by_time)


def setup_device() -> tuple[torch.device, int, int]:
    """(device, rank, world size). Under torchrun (WORLD_SIZE set) joins the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world


def get_batch(group: Sequence[Example], model, rng: random.Random, augment: bool, generator: torch.Generator):
    """Pick a random speed variant per example, SpecAugment it if ``augment``, pad.

    Returns inputs, lengths, targets, target lengths."""
    inputs = []
    for ex in group:
        x = ex.variants[rng.randrange(len(ex.variants))]
        inputs.append(model.augment(x, generator) if augment else x)
    x, lengths = pad_batch(inputs)
    targets = torch.tensor([t for ex in group for t in ex.targets])
    target_lengths = torch.tensor([len(ex.targets) for ex in group])
    return x, lengths, targets, target_lengths


@torch.no_grad()
def estimate_dev_cer(model, examples: Sequence[Example], tokenizer, device, max_frames: int) -> float:
    """Greedy-decoded CER on ``examples`` (their unperturbed variant)."""
    model.eval()
    refs, hyps = [], []
    rng = random.Random(0)
    for group in batches(examples, max_frames, rng):
        x, lengths = pad_batch([ex.variants[len(ex.variants) // 2] for ex in group])
        log_probs, out_lengths = model(x.to(device), lengths.to(device))
        for ex, lp, n in zip(group, log_probs.float().cpu(), out_lengths.cpu(), strict=True):
            hyps.append(greedy_decode(lp[:n], tokenizer).text)
            refs.append(tokenizer.decode(ex.targets))
    model.train()
    return corpus_cer(refs, hyps)


def train(
    cfg: TrainConfig,
    train_utts: Sequence[Utterance],
    dev_utts: Sequence[Utterance],
    out_dir: str | Path,
    *,
    resume: bool = False,
    tracker=None,
) -> TrainResult:
    """Train a fresh model (or resume ``out_dir``'s) and write ``out_dir/model.pt``.

    ``tracker`` (see ``asr.registry.MlflowTracker``) receives params, the learning curve and the checkpoint.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device, rank, world = setup_device()
    is_main = rank == 0
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed + rank)

    pack = get_language_pack(cfg.language)
    tokenizer = make_tokenizer(pack, [pack.normalize(u.text) for u in train_utts])
    model = build_model(cfg.backend, cfg.model, len(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, train_seconds, epoch, history = 0, 0.0, 0, []
    state_path, last_path = out_dir / "train_state.pt", out_dir / "last.pt"
    if cfg.init_from and not (resume and state_path.exists()):
        start = load_checkpoint(cfg.init_from)
        if start.model.name != model.name or dataclasses.asdict(start.model.cfg) != dataclasses.asdict(model.cfg):
            raise ValueError(f"init_from {cfg.init_from}: a {start.model.name} {dataclasses.asdict(start.model.cfg)}, "
                             f"not the configured {model.name} {dataclasses.asdict(model.cfg)}")
        model.load_state_dict(start.model.state_dict())
        tokenizer = start.tokenizer
        log.info("fine-tuning from %s", cfg.init_from)
    if resume and state_path.exists():
        loaded = load_checkpoint(last_path)
        model.load_state_dict(loaded.model.state_dict())
        tokenizer = loaded.tokenizer
        state = torch.load(state_path, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        step, train_seconds, epoch, history = state["step"], state["train_seconds"], state["epoch"], state["history"]
        rng.setstate(state["rng"])
        log.info("resumed at step %d (%.1f training minutes)", step, train_seconds / 60)

    norm = pack.normalize
    examples = prepare_examples(train_utts, model, tokenizer, norm, cfg.speed_factors, "preparing train audio",
                                cfg.trim_silence)
    dev = prepare_examples(list(dev_utts)[: cfg.dev_limit], model, tokenizer, norm, (1.0,), "preparing dev audio")
    lm = NgramLM.build([ex.targets for ex in examples], cfg.lm_order, len(tokenizer)) if cfg.lm_order else None
    model.to(device)
    model.train()
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    use_amp = device.type == "cuda"
    ctc = torch.nn.CTCLoss(blank=tokenizer.blank_id, zero_infinity=True)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("training %s (%d parameters) on %s x%d", cfg.backend, n_params, device, world)
    if tracker and is_main:
        tracker.log_params({"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model.cfg),
                            "n_params": n_params, "n_train_utts": len(examples), "device": str(device), "world": world})

    def save(final: bool) -> Path:
        meta = {"step": step, "train_minutes": train_seconds / 60, "train_config": dataclasses.asdict(cfg)}
        path = out_dir / ("model.pt" if final else "last.pt")
        save_checkpoint(path, model, tokenizer, cfg.language, lm=lm, **meta)
        if not final:
            # temp file + rename, like the checkpoint: a process killed mid-write leaves the previous state
            tmp = state_path.with_suffix(".pt.tmp")
            torch.save({"optimizer": optimizer.state_dict(), "step": step, "train_seconds": train_seconds,
                        "epoch": epoch, "history": history, "rng": rng.getstate()}, tmp)
            tmp.replace(state_path)
        return path

    def record(loss: float) -> None:
        cer = estimate_dev_cer(model, dev, tokenizer, device, cfg.max_frames) if dev else float("nan")
        minutes = round(train_seconds / 60, 3)
        point = {"step": step, "minutes": minutes, "loss": round(loss, 4), "dev_cer": round(cer, 4)}
        history.append(point)
        log.info("step %d  %.1f min  loss %.3f  dev CER %.3f", step, train_seconds / 60, loss, cer)
        if tracker:
            tracker.log_metrics({"train_loss": loss, "dev_cer": cer, "train_minutes": train_seconds / 60}, step=step)

    last_eval, last_ckpt, loss_avg = train_seconds, train_seconds, float("nan")
    done = get_progress(cfg, step, train_seconds) >= 1.0  # a resumed run may have finished already
    bar = Progress(TextColumn("training"), BarColumn(), TextColumn("{task.percentage:>3.0f}% of budget"),
                   TimeElapsedColumn(), TextColumn("step {task.fields[step]} loss {task.fields[loss]:.3f}"),
                   disable=not is_main)
    task = bar.add_task("train", total=1.0, step=step, loss=float("nan"))
    with bar:  # the context stops the live display even when training fails
        while not done:
            epoch_rng = random.Random(cfg.seed * 1000 + epoch)
            epoch_batches = list(batches(examples, cfg.max_frames, epoch_rng, rank, world))
            if not epoch_batches:
                raise ValueError(f"{len(examples)} training utterances make no batch for each of {world} processes")
            for group in epoch_batches:
                t0 = time.perf_counter()
                progress = get_progress(cfg, step, train_seconds)
                lr = get_lr(cfg, step, progress)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                augment = progress >= cfg.spec_augment_from
                x, lengths, targets, target_lengths = (t.to(device) for t in get_batch(group, model, rng, augment,
                                                                                       generator))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    log_probs, out_lengths = ddp_model(x, lengths)
                loss = ctc(log_probs.float().transpose(0, 1), targets, out_lengths, target_lengths)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                step += 1
                loss_avg = loss.item() if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss.item()
                train_seconds += time.perf_counter() - t0
                if world > 1:  # every rank must agree on the clock so they stop together
                    t = torch.tensor([train_seconds], device=device)
                    dist.all_reduce(t, op=dist.ReduceOp.MAX)
                    train_seconds = float(t)
                done = get_progress(cfg, step, train_seconds) >= 1.0
                bar.update(task, completed=min(1.0, get_progress(cfg, step, train_seconds)), step=step, loss=loss_avg)
                due = (step % cfg.eval_every_steps == 0) if cfg.eval_every_steps else (
                    train_seconds - last_eval >= cfg.eval_every_minutes * 60)
                if is_main and (due or done):
                    record(loss_avg)
                    last_eval = train_seconds
                if is_main and (done or train_seconds - last_ckpt >= cfg.checkpoint_every_minutes * 60):
                    save(final=False)
                    last_ckpt = train_seconds
                if done:
                    break
            epoch += 1

    result_path = out_dir / "model.pt"
    if is_main:
        save(final=True)
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        if tracker:
            tracker.log_artifact(result_path, "checkpoint")
            tracker.log_artifact(out_dir / "history.json", "")
    if world > 1:
        dist.barrier()
    return TrainResult(result_path, step, train_seconds / 60, history)
