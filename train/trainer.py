"""The training run: data, model, optimiser, schedule, loop, evaluation, checkpoints, resume, DDP, logging.

Outputs under `out/`: config.yaml (the resolved TrainConfig), metrics.csv (one row per evaluation), tb/ (TensorBoard
events), last.pt (resumable) and best.pt (best fused val mIoU; no optimiser state). Only rank 0 writes. config.yaml,
metrics.csv and the checkpoints are replaced atomically (co2s.files.atomic_write), so a kill at any moment leaves the
previous complete version; temporary files of a killed run are removed when the next run starts in that folder.

Reproducibility: the batch of iteration t and the global torch seed during it are functions of (seed, t) only
(see sampling.py), and the optimiser state travels in last.pt, so `resume=True` continues bit-for-bit on CPU (on
CUDA, cudnn autotuning makes runs close but not bitwise equal).
"""

from __future__ import annotations

import csv
import io
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from tqdm import tqdm

from co2s.errors import Co2SError, Co2SInputError, ensure_writable_dir
from co2s.files import atomic_write_text, remove_stale_temps

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, resolve
from .evaluate import FUSED, EvalResult, evaluate
from .losses import stability_weight
from .model import Co2S, build_co2s, get_preset
from .sampling import IterationBatches, seed_for
from .step import StepOptions, TrainForward, train_step

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this call created the process group, so it also destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: str | None = None) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the group (env://; NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://")
    return Dist(dist.get_rank() if world > 1 else 0, world, dev, owns)


def close_distributed(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _broadcast_error(d: Dist, error: str | None) -> None:
    """Rank 0 checks the inputs; every rank stops with its message (nobody hangs in a collective)."""
    if d.enabled:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error:
        raise Co2SInputError(error)


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
    error = None
    try:
        splits = build_splits(cfg.dataset, cfg.data_root, cfg.split, seed=cfg.seed, parts=parts, **extra)
        if "labeled" in splits and len(splits["labeled"]) == 0:
            raise Co2SInputError(f"dataset {cfg.dataset!r}, split {cfg.split!r}: the labelled split is empty")
        if d.is_main:
            for part in check:
                validate = getattr(splits[part], "validate", None)
                if validate is not None:
                    validate(progress=True)
    except Co2SInputError as e:
        if not d.enabled:
            raise
        error, splits = str(e), None
    _broadcast_error(d, error)
    return splits


def class_prototypes(cfg: TrainConfig, info) -> np.ndarray | None:
    """Class vectors of the CLIP student: --prototypes, else CLIP text prototypes of the dataset's concepts.

    Without CLIP weights there is no text tower worth asking: a randomly initialised one maps every prompt to
    nearly the same vector (cosine ~0.99 between the synthetic classes), which leaves the class-agnostic head
    almost nothing to tell classes apart by. So the weightless case (tests, the tiny preset) uses seeded random
    unit vectors instead: meaningless too, but distinct, as trained prototypes are.
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


def build_optimizer(model: Co2S, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, one group per student part: backbone x0.01 (attention only trains), head x10, guidance x1."""
    mults = {"backbone": cfg.backbone_lr_mult, "head": cfg.head_lr_mult, "guidance": 1.0}
    groups = []
    for name, student in model.students.items():
        for part, mult in mults.items():
            params = [p for p in getattr(student, part).parameters() if p.requires_grad]
            if params:
                groups.append(
                    {"params": params, "lr": cfg.lr * mult, "initial_lr": cfg.lr * mult, "name": f"{name}.{part}"}
                )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def poly_lr(optimizer: torch.optim.Optimizer, iteration: int, total: int, power: float) -> float:
    """lr = lr0 * (1 - t/T)^power for every group; returns the base-group factor times cfg.lr for logging."""
    factor = (1 - iteration / total) ** power
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor
    return factor


# ---------------------------------------------------------------------------------------------------- outputs
class RunLog:
    """metrics.csv rows and TensorBoard scalars (rank 0 only; other ranks get a no-op instance)."""

    def __init__(self, out: Path, enabled: bool, start: int):
        self.enabled = enabled
        self.csv_path = out / "metrics.csv"
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=start or None)

    def scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def row(self, row: dict[str, float | int]) -> None:
        if not self.enabled:
            return
        new = not self.csv_path.exists()
        if not new:  # resumed runs append with the header already there (rows past the resume point dropped)
            with self.csv_path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) < row["iteration"]]
            fieldnames = list(rows[0]) if rows else list(row)
        else:
            rows, fieldnames = [], list(row)
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=fieldnames, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows + [row])
        atomic_write_text(self.csv_path, text.getvalue())  # a kill mid-write keeps the previous rows

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def _check_out(out: Path, d: Dist) -> None:
    """Before anything expensive: the run folder can be written (rank 0 checks, every rank stops on failure), and
    temporary files a killed run left there are removed."""
    error = None
    if d.is_main:
        try:
            ensure_writable_dir(out, f"--out {out}: cannot write to this folder")
        except Co2SError as e:
            if not d.enabled:
                raise
            error = str(e)
        else:
            stale = remove_stale_temps(out)
            if stale:
                print(
                    f"removed {len(stale)} temporary file(s) left by an interrupted run in {out}: "
                    + ", ".join(p.name for p in stale)
                )
    _broadcast_error(d, error)


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


# ---------------------------------------------------------------------------------------------------- the run
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
    out = Path(cfg.out)
    info = get_dataset_info(cfg.dataset)
    _check_out(out, d)
    ckpt = None
    if resume:
        last = out / "last.pt"
        ckpt = load_checkpoint(last, num_classes=info.num_classes, dataset=info.name)
        if "train_config" not in ckpt or "optimizer" not in ckpt:
            raise Co2SInputError(f"{last}: not a resumable training checkpoint (no 'train_config'/'optimizer')")
        cfg = _resume_config(cfg, ckpt, last)
    splits = load_splits(cfg, d)
    cfg = resolve(cfg, dataset_name=info.name, crop_size=info.crop_size, num_unlabeled=len(splits["unlabeled"]))
    method = cfg.method_spec

    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_co2s(
        info.num_classes,
        preset=cfg.preset,
        students=method.students,
        prototypes=class_prototypes(cfg, info),
        clip_weights=cfg.clip_weights,
        dinov3_weights=cfg.dinov3_weights,
        img_size=cfg.crop,
    ).to(d.device)
    optimizer = build_optimizer(model, cfg)
    use_cuda = d.device.type == "cuda"
    amp_dtype = AMP_DTYPES.get(cfg.amp) if use_cuda else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
    start, best = 0, {"best_miou": -1.0, "best_iteration": -1}  # best fused val mIoU so far
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt.get("scaler") or {})
        start, best = ckpt["iteration"], dict(ckpt["metrics"]["best"])
        if ckpt.get("world_size", 1) * ckpt["train_config"]["batch_size"] != d.world * cfg.batch_size and d.is_main:
            print("resume: the global batch (ranks x batch) differs from the interrupted run; the data order will too")
    if cfg.amp and not use_cuda and d.is_main:
        print(f"--amp {cfg.amp} ignored: mixed precision is used on CUDA only")
    if use_cuda:
        torch.backends.cudnn.benchmark = True

    forwards: dict[str, nn.Module] = {}
    for i, (name, student) in enumerate(model.students.items()):
        fwd = TrainForward(student, stream=i)
        forwards[name] = (
            nn.parallel.DistributedDataParallel(fwd, device_ids=[d.device.index] if use_cuda else None)
            if d.enabled
            else fwd
        )
    opts = StepOptions(
        semi=method.semi, stability=method.stability, sta_grad=cfg.sta_grad, tau=cfg.tau, fp_rate=cfg.fp_rate
    )

    def reduce_counts(c: torch.Tensor) -> torch.Tensor:
        if not d.enabled:
            return c
        c = c.clone()
        dist.all_reduce(c)
        return c / d.world  # DDP averages gradients over ranks; this makes the average the global-batch loss

    end = cfg.iters if stop_after is None else min(cfg.iters, start + stop_after)
    batches = IterationBatches(
        splits["labeled"],
        splits["unlabeled"],
        crop=cfg.crop,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        total=cfg.iters,
        rank=d.rank,
        world=d.world,
        semi=method.semi,
    )
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, end), num_workers=cfg.workers, pin_memory=use_cuda
    )
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log = RunLog(out, d.is_main, start)

    def checkpoint(iteration: int, metrics: dict, *, with_optimizer: bool) -> dict:
        payload = {
            "model_config": model_config(cfg, info.num_classes),
            "dataset": {"name": info.name, "classes": list(info.classes), "palette": [list(c) for c in info.palette]},
            "model": model.state_dict(),
            "train_config": cfg.to_dict(),
            "iteration": iteration,
            "metrics": metrics,
            "world_size": d.world,
        }
        if with_optimizer:
            payload.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict())
        return payload

    last_eval: dict[str, float] = {}

    def evaluate_and_save(done: int, lr: float, train_logs: dict[str, list[float]]) -> None:
        nonlocal last_eval
        result = evaluate(
            model,
            splits["val"],
            window=cfg.crop,
            fusion=cfg.fusion,
            device=d.device,
            rank=d.rank,
            world=d.world,
            amp_dtype=amp_dtype,
        )
        model.train()
        last_eval = result.miou
        improved = last_eval[FUSED] > best["best_miou"]
        if improved:
            best.update(best_miou=last_eval[FUSED], best_iteration=done)
        log.scalars({f"miou_{k}": v for k, v in last_eval.items()}, done, "val")
        log.row(
            {
                "iteration": done,
                "time_s": round(time.time() - t0, 1),
                "lr": lr,
                **{k: float(np.mean(v)) for k, v in train_logs.items()},
                **{f"miou_{k}": v for k, v in last_eval.items()},
            }
        )
        if d.is_main:
            bar.write(f"iteration {done}: val mIoU " + ", ".join(f"{k} {v:.2f}" for k, v in last_eval.items()))
            bar.write(result.table())
            metrics = {"best": dict(best), "last": last_eval}
            # best.pt first: a kill between the two saves then resumes from the previous last.pt and redoes this
            # evaluation, instead of resuming with a best score whose best.pt was never written
            if improved:
                save_checkpoint(out / "best.pt", checkpoint(done, metrics, with_optimizer=False))
            save_checkpoint(out / "last.pt", checkpoint(done, metrics, with_optimizer=True))

    bar = tqdm(
        total=cfg.iters,
        initial=start,
        disable=not (progress and d.is_main),
        dynamic_ncols=True,
        desc=f"{cfg.method} {info.name}",
    )
    window: dict[str, list[float]] = {}  # since the last TensorBoard write
    since_eval: dict[str, list[float]] = {}  # since the last metrics.csv row
    t0 = time.time()
    try:  # closed on errors too, so an error message starts on a line of its own, not after the bar
        model.train()
        for iteration, batch in zip(range(start, end), loader):
            torch.manual_seed(seed_for(cfg.seed, iteration, d.rank))  # anything left drawing from the global RNG
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            lr = cfg.lr * poly_lr(optimizer, iteration, cfg.iters, cfg.poly_power)
            with torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else nullcontext():
                loss, logs = train_step(
                    forwards,
                    dict(model.students),
                    batch,
                    opts=opts,
                    reduce_counts=reduce_counts,
                    sta_weight=stability_weight(iteration, cfg.iters, cfg.sta_peak, cfg.sta_ramp),
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            logs = {"loss": loss.item(), **logs}
            for k, v in logs.items():
                window.setdefault(k, []).append(v)
                since_eval.setdefault(k, []).append(v)
            bar.update(1)
            bar.set_postfix_str(
                " ".join(
                    [f"loss {logs['loss']:.3f}"]
                    + [f"{n} x {logs[f'{n}/x']:.3f}" for n in model.students]
                    + [f"lr {lr:.2e}"]
                ),
                refresh=False,
            )
            done = iteration + 1
            if done % cfg.log_every == 0 or done == end:
                log.scalars({**{k: float(np.mean(v)) for k, v in window.items()}, "lr": lr}, done, "train")
                window.clear()
            if done % cfg.eval_every == 0 or done == cfg.iters:
                evaluate_and_save(done, lr, since_eval)
                since_eval.clear()
            elif done == end and d.is_main:  # stopped between evaluations: keep the state to resume from
                save_checkpoint(
                    out / "last.pt", checkpoint(done, {"best": dict(best), "last": last_eval}, with_optimizer=True)
                )
    finally:
        bar.close()
        log.close()
    close_distributed(d)
    return {"iteration": end, **best, "last": last_eval}


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
