"""Training augmentations (docs/method.md §5).

Randomness is drawn on the CPU, per sample, from an explicit numpy Generator (see `sampling.py` for how those are
seeded), while the strong photometric ops run batched on torch tensors on the training device. The ops themselves
are deterministic functions of the drawn parameters, so a run resumes and shards across processes exactly.

* geometric (both labelled and unlabelled): random rescale x U(0.5, 2), pad to the crop, random crop, h-flip;
* strong views: ColorJitter(0.5, 0.5, 0.5, 0.25) p=0.8 in a random op order, grayscale p=0.2, Gaussian blur
  sigma U(0.1, 2) p=0.5, and a CutMix box p=0.5 (area U(0.02, 0.4), aspect U(0.3, 1/0.3), fully inside).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from co2s.bundle.formats import IGNORE_INDEX

SCALE_RANGE = (0.5, 2.0)
BLUR_SIGMA = (0.1, 2.0)
BLUR_RADIUS = math.ceil(3 * BLUR_SIGMA[1])  # one kernel size for the whole batch; 3 sigma covers >99.7 %
JITTER = {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.25}
JITTER_OPS = tuple(JITTER)  # op ids 0..3 in `order`


# ---------------------------------------------------------------------------------------------------- geometric
def scale_crop_flip(
    image: np.ndarray,
    label: np.ndarray | None,
    crop: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [crop, crop, 3], label uint8 [crop, crop]) with padding marked IGNORE_INDEX in the label.

    An unlabelled image passes label=None; its returned "label" is then only the padding mask (0 or IGNORE_INDEX), which
    is what UniMatch's 254-padding turns into (docs/method.md §5.2).
    """
    h, w = image.shape[:2]
    if label is None:
        label = np.zeros((h, w), np.uint8)
    s = rng.uniform(*scale_range)
    nh, nw = max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))
    image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
    ph, pw = max(crop - nh, 0), max(crop - nw, 0)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    y = int(rng.integers(0, image.shape[0] - crop + 1))
    x = int(rng.integers(0, image.shape[1] - crop + 1))
    image, label = image[y : y + crop, x : x + crop], label[y : y + crop, x : x + crop]
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def cutmix_box(size: int, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """UniMatch's box: with probability p one rectangle, area U(0.02, 0.4)*size^2, h/w U(0.3, 1/0.3), inside."""
    box = np.zeros((size, size), dtype=bool)
    if rng.random() > p:
        return box
    area = rng.uniform(0.02, 0.4) * size * size
    while True:  # resample the shape and place until it fits, as the reference does
        ratio = rng.uniform(0.3, 1 / 0.3)
        bw, bh = int(np.sqrt(area / ratio)), int(np.sqrt(area * ratio))
        x, y = int(rng.integers(0, size)), int(rng.integers(0, size))
        if x + bw <= size and y + bh <= size:
            break
    box[y : y + bh, x : x + bw] = True
    return box


def cutmix(base: torch.Tensor, partner: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Inside the box take the partner's value. Works for images [B,C,H,W] and per-pixel maps [B,H,W]."""
    if base.ndim == 4:
        box = box.unsqueeze(1)
    return torch.where(box, partner, base)


# ---------------------------------------------------------------------------------------------------- photometric
def sample_photometric(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Parameters of one strong view (torchvision ColorJitter / RandomGrayscale / PIL blur semantics)."""
    return {
        "jitter": np.array(rng.random() < 0.8),
        "order": rng.permutation(len(JITTER_OPS)),
        "factors": np.array(
            [
                rng.uniform(1 - JITTER[k], 1 + JITTER[k]) if k != "hue" else rng.uniform(-JITTER[k], JITTER[k])
                for k in JITTER_OPS
            ],
            dtype=np.float32,
        ),
        "gray": np.array(rng.random() < 0.2),
        "blur": np.array(rng.random() < 0.5),
        "sigma": np.array(rng.uniform(*BLUR_SIGMA), dtype=np.float32),
    }


def strong_photometric(images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply the drawn strong-view parameters to a batch of RGB images in [0, 1], [B, 3, H, W], on any device."""
    params = {k: v.to(images.device) for k, v in params.items()}
    x = images.float()
    for slot in range(len(JITTER_OPS)):  # each sample runs the four jitter ops in its own order
        for op_id, op in enumerate(JITTER_OPS):
            idx = (params["jitter"] & (params["order"][:, slot] == op_id)).nonzero().squeeze(1)
            if idx.numel():
                x = x.index_copy(0, idx, _JITTER_FNS[op](x[idx], params["factors"][idx, op_id]))
    idx = params["gray"].nonzero().squeeze(1)
    if idx.numel():
        x = x.index_copy(0, idx, _gray(x[idx]).expand(-1, 3, -1, -1))
    idx = params["blur"].nonzero().squeeze(1)
    if idx.numel():
        x = x.index_copy(0, idx, gaussian_blur(x[idx], params["sigma"][idx]))
    return x


def _gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = f.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp(0, 1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), f)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x), f)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb((h + f.view(-1, 1, 1)) % 1.0, s, v)


_JITTER_FNS = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation, "hue": _hue}


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return h, s, maxc


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)  # R, G, B
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * (torch.minimum(k, 4 - k).clamp(0, 1))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (grouped conv; edge pixels extended, as PIL does)."""
    b, c, h, w = x.shape
    t = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma.view(-1, 1).to(x.dtype)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B*C, K]
    y = F.pad(x.reshape(1, b * c, h, w), (BLUR_RADIUS,) * 4, mode="replicate")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.reshape(b, c, h, w)
