"""Training configuration: the fields of a run, the methods (Co2S and its baselines) and the presets.

`paper` follows the reference (docs/method.md §9): crop = the dataset's crop, batch 2 per GPU for WHDLD and 1 otherwise, 80 epochs
(150 for MER) of floor(ceil(|U| / 4) / batch) iterations (the reference ran 4 GPUs; the iteration count is
global, so match it with 4 ranks x this batch to see the same number of images), evaluation once per epoch.
`tiny` is the same code path at a size a 2-core CPU trains in minutes (tests, demo, benchmarks): 128 px crops,
batch 2, 200 iterations, and backbone lr x1 (randomly initialised students have no pretrained features to protect).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from co2s.bundle.formats import check_model_input
from co2s.errors import Co2SInputError


@dataclass(frozen=True)
class Method:
    students: tuple[str, ...]  # student kinds, see co2s.train.model.student_names
    semi: bool  # UniMatch unlabelled streams
    stability: bool  # L_sta between the two students


METHODS: dict[str, Method] = {
    "co2s": Method(("clip", "dinov3"), semi=True, stability=True),
    "supervised": Method(("clip", "dinov3"), semi=False, stability=False),  # both students, labelled crops only
    "unimatch-clip": Method(("clip",), semi=True, stability=False),
    "unimatch-dinov3": Method(("dinov3",), semi=True, stability=False),
    "homogeneous": Method(("dinov3", "dinov3"), semi=True, stability=True),  # two DINOv3 students + L_sta
}


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    out: str
    data_root: str | None = None
    split: str = "1_8"
    preset: str = "tiny"
    method: str = "co2s"
    iters: int | None = None  # None: from the preset
    batch_size: int | None = None  # per process
    eval_every: int | None = None
    crop: int | None = None
    seed: int = 0
    # optimisation (docs/method.md §9.1)
    lr: float = 1e-4
    weight_decay: float = 0.01
    backbone_lr_mult: float | None = None  # None: from the preset (paper 0.01, tiny 1)
    head_lr_mult: float = 10.0
    poly_power: float = 0.9
    amp: str | None = None  # None, "bf16" or "fp16" (CUDA only)
    # semi-supervision (docs/method.md §6-§7)
    tau: float = 0.95
    fp_rate: float = 0.5
    sta_peak: float = 0.5
    sta_ramp: float = 0.2
    sta_grad: bool = True
    sta_ignore_padding: bool = True  # False: padded pixels take part in L_sta, as in the reference
    # inputs
    clip_weights: str | None = None
    dinov3_weights: str | None = None
    prototypes: str | None = None
    # synthetic / generated splits (None: the dataset's defaults)
    num_labeled: int | None = None
    num_unlabeled: int | None = None
    num_val: int | None = None
    image_size: int | None = None
    # running
    workers: int | None = None
    log_every: int = 10
    fusion: str = "mean"  # how the "fused" prediction (and best.pt) is scored

    @property
    def method_spec(self) -> Method:
        return METHODS[self.method]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Schedule:
    """The preset-dependent values resolved for one dataset split."""

    iters: int
    batch_size: int
    eval_every: int
    crop: int
    workers: int
    backbone_lr_mult: float = 0.01


def paper_schedule(dataset: str, num_unlabeled: int, crop_size: int) -> Schedule:
    """docs/method.md §9.2: bs 2 (WHDLD) or 1, 80 epochs (MER: 150) of floor(ceil(|U| / 4 GPUs) / bs) iterations."""
    batch = 2 if dataset == "whdld" else 1
    per_epoch = max(math.ceil(num_unlabeled / 4) // batch, 1)
    epochs = 150 if dataset == "mer" else 80
    return Schedule(per_epoch * epochs, batch, per_epoch, crop_size, workers=4)


# Tiny students have no pretrained weights to protect, so their (attention-only) backbone trains at the base lr:
# at x0.01 a random backbone would stay a fixed random projection.
TINY = Schedule(iters=200, batch_size=2, eval_every=50, crop=128, workers=0, backbone_lr_mult=1.0)


def resolve(cfg: TrainConfig, *, dataset_name: str, crop_size: int, num_unlabeled: int) -> TrainConfig:
    """Fill every None schedule field from the preset; check the result."""
    if cfg.method not in METHODS:
        raise Co2SInputError(f"--method: unknown method {cfg.method!r}; expected one of {', '.join(METHODS)}")
    if cfg.preset == "paper":
        preset = paper_schedule(dataset_name, num_unlabeled, crop_size)
    elif cfg.preset == "tiny":
        preset = TINY
    else:
        raise Co2SInputError(f"--preset: unknown preset {cfg.preset!r}; expected paper or tiny")
    cfg = replace(
        cfg,
        iters=cfg.iters if cfg.iters is not None else preset.iters,
        batch_size=cfg.batch_size if cfg.batch_size is not None else preset.batch_size,
        eval_every=cfg.eval_every if cfg.eval_every is not None else preset.eval_every,
        crop=cfg.crop if cfg.crop is not None else preset.crop,
        workers=cfg.workers if cfg.workers is not None else preset.workers,
        backbone_lr_mult=cfg.backbone_lr_mult if cfg.backbone_lr_mult is not None else preset.backbone_lr_mult,
    )
    for name in ("iters", "batch_size", "eval_every", "log_every"):
        if getattr(cfg, name) < 1:
            raise Co2SInputError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(cfg, name)}")
    check_model_input(cfg.crop, "--crop")
    if cfg.amp not in (None, "bf16", "fp16"):
        raise Co2SInputError(f"--amp: expected bf16 or fp16, got {cfg.amp!r}")
    if not 0 < cfg.tau <= 1:
        raise Co2SInputError(f"--tau: expected a confidence in (0, 1], got {cfg.tau}")
    return cfg
