"""What one training iteration sees, as a pure function of (seed, iteration, slot).

Nothing here keeps state between iterations: the data order is a per-epoch permutation seeded by (seed, stream,
epoch), and every random draw of a sample comes from a Generator seeded by (seed, iteration, global slot). So
`--resume` reproduces the uninterrupted run exactly, DataLoader workers may run in any order, and a torchrun job
with W ranks x b images sees the same samples and augmentations as one process with W*b (rank r takes the global
slots r*b .. r*b+b-1, like DistributedSampler).

The mixing partner of the strong views is drawn from its own shuffle of the unlabelled set, so it is (almost always)
a different image; the reference reuses the same images under new augmentation (docs/method.md §5.4).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .augment import cutmix_box, sample_photometric, scale_crop_flip

_STREAMS = {"labeled": 1, "unlabeled": 2, "partner": 3}


def seed_for(*keys: int) -> int:
    """A 63-bit seed from any tuple of non-negative ints (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@lru_cache(maxsize=16)
def _epoch_order(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def stream_index(seed: int, stream: str, position: int, n: int) -> int:
    """The dataset index at `position` of an endless stream of shuffled epochs over n items."""
    epoch, offset = divmod(position, n)
    return int(_epoch_order(seed, _STREAMS[stream], epoch, n)[offset])


class IterationBatches(torch.utils.data.Dataset):
    """Map-style dataset over iterations: item t is this rank's batch for iteration t.

    Keys: `x`, `y` (labelled crops, labels with 255 = ignore/padding) and, when `semi`: `u`, `u_ignore` (weak
    unlabelled crops and their padding mask), `o`, `o_ignore` (mixing-partner crops), `box1`, `box2` (CutMix boxes
    of strong views 1 and 2), `photo_<view>.<param>` (photometric parameters of the strong views s1, s2 of u and
    o1, o2 of the partner; see `photometric_params`) and `fp_seed` (per-sample feature-perturbation seed).
    Images are uint8 [b, 3, crop, crop]; the step converts them on the device.
    """

    def __init__(
        self,
        labeled,
        unlabeled,
        *,
        crop: int,
        batch_size: int,
        seed: int,
        total: int,
        rank: int = 0,
        world: int = 1,
        semi: bool = True,
    ):
        self.labeled, self.unlabeled = labeled, unlabeled
        self.crop, self.batch_size, self.seed, self.total = crop, batch_size, seed, total
        self.rank, self.world, self.semi = rank, world, semi

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, iteration: int) -> dict[str, torch.Tensor]:
        samples = [self._sample(iteration, self.rank * self.batch_size + j) for j in range(self.batch_size)]
        return {k: torch.as_tensor(np.stack([s[k] for s in samples])) for k in samples[0]}

    def _sample(self, iteration: int, slot: int) -> dict[str, np.ndarray]:
        position = iteration * self.world * self.batch_size + slot
        rng = np.random.default_rng([self.seed, iteration, slot])
        image, label = self.labeled[stream_index(self.seed, "labeled", position, len(self.labeled))]
        x, y = scale_crop_flip(image, label, self.crop, rng)
        out = {"x": x.transpose(2, 0, 1), "y": y}
        if not self.semi:
            return out
        for key, stream in (("u", "unlabeled"), ("o", "partner")):
            image, _ = self.unlabeled[stream_index(self.seed, stream, position, len(self.unlabeled))]
            crop, ignore = scale_crop_flip(image, None, self.crop, rng)
            out[key], out[f"{key}_ignore"] = crop.transpose(2, 0, 1), ignore
        out["box1"], out["box2"] = cutmix_box(self.crop, rng), cutmix_box(self.crop, rng)
        for view in ("s1", "s2", "o1", "o2"):
            out.update({f"photo_{view}.{k}": v for k, v in sample_photometric(rng).items()})
        out["fp_seed"] = np.array(rng.integers(0, 2**62), dtype=np.int64)
        return out


def photometric_params(batch: dict[str, torch.Tensor], view: str) -> dict[str, torch.Tensor]:
    """The parameters of strong view `view` ('s1', 's2', 'o1', 'o2') from a collated batch."""
    prefix = f"photo_{view}."
    return {k[len(prefix) :]: v for k, v in batch.items() if k.startswith(prefix)}
