"""The training run: build the data and the pair, then the loop (step, evaluation, checkpoints) with exact resume.

Outputs under `out/`: config.yaml (the resolved TrainConfig), metrics.csv (one row per evaluation), tb/ (TensorBoard
events), last.pt (resumable) and best.pt (best fused val mIoU; no optimiser state). Only rank 0 writes. config.yaml,
metrics.csv and the checkpoints are replaced atomically (co2s.files.atomic_write), so a kill at any moment leaves the
previous complete version; temporary files of a killed run are removed when the next run starts in that folder.

Reproducibility: the batch of iteration t and the global torch seed during it are functions of (seed, t) only
(see sampling.py), and the optimiser state travels in last.pt, so `resume=True` continues bit-for-bit on CPU (on
CUDA, cudnn autotuning makes runs close but not bitwise equal).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from co2s.errors import Co2SInputError

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, resolve
from .distributed import Dist, close_distributed, count_reducer, init_distributed, stop_together, wrap
from .evaluate import FUSED, EvalResult, evaluate
from .losses import stability_weight
from .model import Co2S, build_co2s, get_preset
from .optim import MixedPrecision, build_optimizer, poly_lr
from .runlog import RunLog, prepare_run_folder, write_run_config
from .sampling import IterationBatches, seed_for
from .step import StepOptions, TrainForward, train_step

if TYPE_CHECKING:
    from .data import DatasetInfo


def fit(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Train; returns {"iteration", "best_miou", "best_iteration", "last": {name: mIoU}}.

    `stop_after`: end this invocation after that many iterations (saving last.pt), e.g. for time-sliced jobs.
    """
    from .data import get_dataset_info

    d = init_distributed(device)
    out, info = Path(cfg.out), get_dataset_info(cfg.dataset)
    prepare_run_folder(out, d)
    ckpt = _resumable_checkpoint(out / "last.pt", info) if resume else None
    if ckpt is not None:
        cfg = _resume_config(cfg, ckpt, out / "last.pt")
    splits = load_splits(cfg, d)
    cfg = resolve(cfg, dataset_name=info.name, crop_size=info.crop_size, num_unlabeled=len(splits["unlabeled"]))
    model = _build_pair(cfg, info).to(d.device)
    optimizer, amp = build_optimizer(model, cfg), MixedPrecision(cfg.amp, d.device)
    saver = _Checkpoints(out, cfg, info, model, optimizer, amp.scaler, d)
    start, best, last_eval = 0, {"best_miou": -1.0, "best_iteration": -1}, {}  # best: best fused val mIoU so far
    if ckpt is not None:
        start, best = saver.restore(ckpt)
        if d.is_main:  # said in words too: the progress bar draws only on a terminal
            print(f"resume: continuing at iteration {start} of {cfg.iters} from {out / 'last.pt'}")
    _setup_notes(cfg, d)
    forwards = {name: wrap(TrainForward(s, stream=i), d) for i, (name, s) in enumerate(model.students.items())}
    students, opts, reduce_counts = dict(model.students), step_options(cfg), count_reducer(d)
    end = cfg.iters if stop_after is None else min(cfg.iters, start + stop_after)
    loader = _loader(cfg, splits, d, start, end)
    write_run_config(out, cfg, d)
    log = RunLog(
        out,
        enabled=d.is_main,
        start=start,
        end=end,
        total=cfg.iters,
        log_every=cfg.log_every,
        desc=f"{cfg.method} {info.name}",
        progress=progress,
    )

    def evaluate_and_save(done: int, lr: float) -> dict[str, float]:
        shard = dict(device=d.device, rank=d.rank, world=d.world)  # each rank scores every world-th image
        result = evaluate(model, splits["val"], window=cfg.crop, fusion=cfg.fusion, amp_dtype=amp.dtype, **shard)
        model.train()
        improved = result.miou[FUSED] > best["best_miou"]
        if improved:
            best.update(best_miou=result.miou[FUSED], best_iteration=done)
        log.evaluation(done, lr, result)
        saver.save(done, best, result.miou, improved=improved)
        return result.miou

    try:
        model.train()
        for iteration, batch in zip(range(start, end), loader):
            torch.manual_seed(seed_for(cfg.seed, iteration, d.rank))  # anything left drawing from the global RNG
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            lr = cfg.lr * poly_lr(optimizer, iteration, cfg.iters, cfg.poly_power)
            sta_weight = stability_weight(iteration, cfg.iters, cfg.sta_peak, cfg.sta_ramp)
            with amp.autocast():
                loss, logs = train_step(
                    forwards, students, batch, opts=opts, sta_weight=sta_weight, reduce_counts=reduce_counts
                )
            amp.step(loss, optimizer)
            done = iteration + 1
            log.step(done, {"loss": loss.item(), **logs}, lr)
            if done % cfg.eval_every == 0 or done == cfg.iters:
                last_eval = evaluate_and_save(done, lr)
            elif done == end:  # stopped between evaluations: keep the state to resume from
                saver.save(done, best, last_eval, improved=False)
    finally:
        log.close()
    close_distributed(d)
    return {"iteration": end, **best, "last": last_eval}


def step_options(cfg: TrainConfig) -> StepOptions:
    method = cfg.method_spec
    return StepOptions(
        semi=method.semi,
        stability=method.stability,
        sta_grad=cfg.sta_grad,
        sta_ignore_padding=cfg.sta_ignore_padding,
        tau=cfg.tau,
        fp_rate=cfg.fp_rate,
    )


# ---------------------------------------------------------------------------------------------------- building
def load_splits(
    cfg: TrainConfig,
    d: Dist,
    check: tuple[str, ...] = ("labeled", "unlabeled", "val"),
    parts: tuple[str, ...] = ("labeled", "unlabeled", "val"),
) -> dict:
    """The `parts` of labeled / unlabeled / val; the `check` parts have every file read once (on rank 0) up
    front, so a bad file stops the run before the first iteration."""
    from .data import build_splits

    extra = {k: getattr(cfg, k) for k in ("num_labeled", "num_unlabeled", "num_val") if getattr(cfg, k) is not None}
    if cfg.image_size is not None:
        extra["size"] = cfg.image_size

    def build() -> dict:
        splits = build_splits(cfg.dataset, cfg.data_root, cfg.split, seed=cfg.seed, parts=parts, **extra)
        if "labeled" in splits and len(splits["labeled"]) == 0:
            raise Co2SInputError(f"dataset {cfg.dataset!r}, split {cfg.split!r}: the labelled split is empty")
        if d.is_main:
            for part in check:
                validate = getattr(splits[part], "validate", None)
                if validate is not None:
                    validate(progress=True)
        return splits

    return stop_together(d, build)


def _build_pair(cfg: TrainConfig, info: DatasetInfo) -> Co2S:
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    return build_co2s(
        info.num_classes,
        preset=cfg.preset,
        students=cfg.method_spec.students,
        prototypes=class_prototypes(cfg, info),
        clip_weights=cfg.clip_weights,
        dinov3_weights=cfg.dinov3_weights,
        img_size=cfg.crop,
    )


def class_prototypes(cfg: TrainConfig, info: DatasetInfo) -> np.ndarray | None:
    """Class vectors of the CLIP student: --prototypes, else CLIP text prototypes of the dataset's concepts.

    Without CLIP weights there is no text tower worth asking: a randomly initialised one maps every prompt to
    nearly the same vector, which leaves the class-agnostic head almost nothing to tell classes apart by. So the
    weightless case (tests, the tiny preset) uses seeded random unit vectors instead: meaningless too, but distinct,
    as trained prototypes are.
    """
    if "clip" not in cfg.method_spec.students:
        return None
    from .backbones import build_backbone
    from .prototypes import load_prototypes, text_prototypes

    if cfg.prototypes:
        return load_prototypes(cfg.prototypes, class_names=list(info.classes))
    clip = get_preset(cfg.preset).backbones["clip"]
    if cfg.clip_weights:
        return text_prototypes(info.concepts, clip=clip, weights=cfg.clip_weights, seed=cfg.seed)
    dim = build_backbone(clip, img_size=cfg.crop).text_dim
    vectors = np.random.default_rng(cfg.seed).standard_normal((info.num_classes, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def model_config(cfg: TrainConfig, num_classes: int) -> dict:
    return {
        "num_classes": num_classes,
        "preset": cfg.preset,
        "students": list(cfg.method_spec.students),
        "img_size": cfg.crop,
    }


def _loader(cfg: TrainConfig, splits: dict, d: Dist, start: int, end: int) -> torch.utils.data.DataLoader:
    """Iterations start..end-1 of this rank: item t is a pure function of (seed, t), so any start resumes exactly."""
    sizes = dict(crop=cfg.crop, batch_size=cfg.batch_size, seed=cfg.seed, total=cfg.iters, semi=cfg.method_spec.semi)
    batches = IterationBatches(splits["labeled"], splits["unlabeled"], rank=d.rank, world=d.world, **sizes)
    return torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, end), num_workers=cfg.workers, pin_memory=d.device.type == "cuda"
    )


def _setup_notes(cfg: TrainConfig, d: Dist) -> None:
    if d.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif cfg.amp and d.is_main:
        print(f"--amp {cfg.amp} ignored: mixed precision is used on CUDA only")


# ---------------------------------------------------------------------------------------------------- checkpoints
def _resumable_checkpoint(last: Path, info: DatasetInfo) -> dict:
    ckpt = load_checkpoint(last, num_classes=info.num_classes, dataset=info.name)
    if "train_config" not in ckpt or "optimizer" not in ckpt:
        raise Co2SInputError(f"{last}: not a resumable training checkpoint (no 'train_config'/'optimizer')")
    return ckpt


def _resume_config(cfg: TrainConfig, ckpt: dict, path: Path) -> TrainConfig:
    """The checkpoint's run settings win (same schedule, data order, seed); report what the command line changed."""
    saved = TrainConfig.from_dict(ckpt["train_config"])
    differs = [
        k
        for k, v in cfg.to_dict().items()
        if v is not None and k not in ("out", "workers", "log_every") and saved.to_dict().get(k) != v
    ]
    if differs:
        shown = ", ".join(f"{k}={saved.to_dict()[k]!r}" for k in differs)
        print(f"resume: keeping the settings stored in {path}: {shown}")
    return replace(
        saved, out=cfg.out, workers=cfg.workers if cfg.workers is not None else saved.workers, log_every=cfg.log_every
    )


@dataclass
class _Checkpoints:
    """last.pt (with the optimiser, to resume) and best.pt (without) of a run; rank 0 writes."""

    out: Path
    cfg: TrainConfig
    info: DatasetInfo
    model: Co2S
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    d: Dist

    def save(self, iteration: int, best: dict, last: dict[str, float], *, improved: bool) -> None:
        if not self.d.is_main:
            return
        metrics = {"best": dict(best), "last": last}
        # best.pt first: a kill between the two saves then resumes from the previous last.pt and redoes this
        # evaluation, instead of resuming with a best score whose best.pt was never written
        if improved:
            save_checkpoint(self.out / "best.pt", self._payload(iteration, metrics, with_optimizer=False))
        save_checkpoint(self.out / "last.pt", self._payload(iteration, metrics, with_optimizer=True))

    def restore(self, ckpt: dict) -> tuple[int, dict]:
        """Load last.pt's model, optimiser and scaler state; returns (start iteration, best so far)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt.get("scaler") or {})
        global_batch = ckpt.get("world_size", 1) * ckpt["train_config"]["batch_size"]
        if global_batch != self.d.world * self.cfg.batch_size and self.d.is_main:
            print("resume: the global batch (ranks x batch) differs from the interrupted run; the data order will too")
        return ckpt["iteration"], dict(ckpt["metrics"]["best"])

    def _payload(self, iteration: int, metrics: dict, *, with_optimizer: bool) -> dict:
        info = self.info
        payload = {
            "model_config": model_config(self.cfg, info.num_classes),
            "dataset": {"name": info.name, "classes": list(info.classes), "palette": [list(c) for c in info.palette]},
            "model": self.model.state_dict(),
            "train_config": self.cfg.to_dict(),
            "iteration": iteration,
            "metrics": metrics,
            "world_size": self.d.world,
        }
        if with_optimizer:
            payload.update(optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict())
        return payload


# ---------------------------------------------------------------------------------------------------- evaluation
def evaluate_checkpoint(
    path: str,
    dataset: str,
    *,
    data_root: str | None = None,
    part: str = "val",
    fusion: str = "mean",
    device: str | None = None,
    progress: bool = True,
    **split_overrides,
) -> EvalResult:
    """mIoU of each student and the fused prediction of a checkpoint on one part of a dataset split.

    Any dataset with the checkpoint's classes will do (cross-region evaluation). `part="val"` reads only the
    dataset's val split; "labeled" rebuilds the training split (split, seed, synthetic sizes from the
    checkpoint's train_config). `split_overrides` (split, seed, num_labeled, num_unlabeled, num_val, image_size)
    replace those values.
    """
    from .data import get_dataset_info
    from .model import co2s_from_state

    d = init_distributed(device)
    info = get_dataset_info(dataset)
    ckpt = load_checkpoint(path, num_classes=info.num_classes, classes=info.classes)
    saved = ckpt.get("train_config") or {}
    cfg = TrainConfig.from_dict({**saved, "dataset": dataset, "out": "", "data_root": data_root, **split_overrides})
    if part not in ("labeled", "val"):
        raise Co2SInputError(f"--split: expected labeled or val, got {part!r}")
    splits = load_splits(cfg, d, check=(part,), parts=(part,))
    data = splits[part]
    if getattr(data, "with_labels", True) is False:
        raise Co2SInputError(f"--split {part}: this part has no labels to score against")
    model = co2s_from_state(ckpt["model_config"], ckpt["model"]).to(d.device)
    window = (
        saved.get("crop") or ckpt["model_config"].get("img_size") or get_preset(ckpt["model_config"]["preset"]).tile
    )
    result = evaluate(
        model,
        data,
        window=window,
        fusion=fusion,
        device=d.device,
        rank=d.rank,
        world=d.world,
        progress=progress and d.is_main,
    )
    close_distributed(d)
    return result
