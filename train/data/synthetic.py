"""Synthetic remote-sensing scenes: a learnable, non-trivial stand-in for real data in tests and demos.

A scene is bare soil with blobby vegetation and water bodies (thresholded low-frequency noise),
roads as thick, gently curving lines, and buildings as (slightly rotated) rectangles with roof colours,
gable shading and cast shadows. Classes overlap a little in colour (grey roofs vs roads, pale roofs vs
soil) and every class has its own texture, plus illumination drift and sensor noise, so shape and
context matter. Feature sizes are fixed in pixels, so a small training scene looks like a crop of a
large one. Everything is drawn from one seed with numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from co2s.errors import Co2SInputError

from .base import Sample, SegmentationDataset
from .registry import get_dataset_info

SOIL, VEGETATION, WATER, BUILDING, ROAD = range(5)

_ROOF_COLORS = np.array(
    [(178, 74, 58), (150, 150, 148), (212, 206, 194), (92, 112, 140), (124, 92, 72)], dtype=np.float32
)
_FINE_TEXTURE = np.array([0.05, 0.25, 0.02, 0.03, 0.04], dtype=np.float32)  # per class: grain, tree crowns
_MID_TEXTURE = np.array([0.12, 0.15, 0.05, 0.00, 0.04], dtype=np.float32)  # per class: patches, soil moisture
_STRIP_ROWS = 512  # scenes are rendered in row strips: memory grows with the strip, not the scene


class _Noise:
    """Smooth random field: a coarse normal grid, smoothstep-interpolated, evaluated strip by strip."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, cell: float):
        self.cell = cell
        self.offset = rng.uniform(0, cell, size=2)  # decorrelates grid lines between fields
        shape = (int(height / cell) + 3, int(width / cell) + 3)
        self.grid = rng.standard_normal(shape, dtype=np.float32)

    def rows(self, y0: int, y1: int, width: int) -> np.ndarray:
        iy, ty = self._axis(y0, y1, self.offset[0])
        ix, tx = self._axis(0, width, self.offset[1])
        first = iy[0]
        grid = self.grid[first : iy[-1] + 2]
        along_x = grid[:, ix] * (1 - tx) + grid[:, ix + 1] * tx
        iy = iy - first
        return along_x[iy] * (1 - ty)[:, None] + along_x[iy + 1] * ty[:, None]

    def _axis(self, start: int, stop: int, offset: float) -> tuple[np.ndarray, np.ndarray]:
        pos = (np.arange(start, stop) + offset) / self.cell
        index = pos.astype(np.int64)
        t = (pos - index).astype(np.float32)
        return index, t * t * (3 - 2 * t)  # smoothstep hides the grid lines


def _octaves(rng, height, width, cells_and_weights) -> list[tuple[_Noise, float]]:
    return [(_Noise(rng, height, width, cell), weight) for cell, weight in cells_and_weights]


def _sample(octaves, y0, y1, width) -> np.ndarray:
    return sum(weight * noise.rows(y0, y1, width) for noise, weight in octaves)


@dataclass
class _Road:
    vertical: bool
    center: float  # across-position at the middle of the scene
    slope: float
    amplitude: float  # gentle meander
    period: float
    phase: float
    half_width: float


class _Plan:
    """Everything random about one scene, drawn up front: grids, roads, per-cell building parameters."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.height, self.width = height, width
        self.cell = int(rng.integers(24, 41))  # one building lot per cell
        self.grid_h, self.grid_w = -(-height // self.cell), -(-width // self.cell)
        self.padded_w = self.grid_w * self.cell
        self.strip = max(1, _STRIP_ROWS // self.cell) * self.cell
        ph, pw = self.grid_h * self.cell, self.padded_w

        self.vegetation = _octaves(rng, ph, pw, [(72, 1.0), (24, 0.45)])
        self.water = _octaves(rng, ph, pw, [(110, 1.0), (36, 0.35)])
        self.fine = _octaves(rng, ph, pw, [(2.5, 1.0)])
        self.mid = _octaves(rng, ph, pw, [(14, 1.0)])
        self.light = _octaves(rng, ph, pw, [(300, 1.0)])
        self.vegetation_threshold = rng.uniform(0.0, 0.7)
        self.water_threshold = rng.uniform(0.55, 1.0)

        self.roads = [
            self._road(rng, vertical)
            for vertical in (False, True)
            for _ in range(rng.poisson(0.4 + (width if vertical else height) / 400))
        ]

        # Buildings: one optional rectangle per cell, mostly aligned with a scene-wide street angle.
        cells = (self.grid_h, self.grid_w)
        urban = _sample(_octaves(rng, *cells, [(5, 1.0)]), 0, self.grid_h, self.grid_w)
        self.has_building = (urban > rng.uniform(-0.8, 0.3)) & (rng.random(cells) < 0.85)
        shadow_length = rng.uniform(1.5, 4.0)
        sun = rng.uniform(0, 2 * math.pi)
        self.shadow = (shadow_length * math.sin(sun), shadow_length * math.cos(sun))  # (dy, dx)
        reach = self.cell / 2 - 1 - shadow_length  # building + shadow stay inside the cell
        aligned = rng.uniform(-0.3, 0.3) + rng.normal(0, 0.05, cells)
        self.angle = np.where(rng.random(cells) < 0.2, rng.uniform(0, math.pi, cells), aligned)
        self.offset = rng.uniform(-0.15, 0.15, (2, *cells)) * reach
        half_u, half_v = rng.uniform(0.55, 0.95, cells) * reach, rng.uniform(0.4, 0.8, cells) * reach
        shrink = np.minimum(1, (reach - np.abs(self.offset).max(0)) / np.hypot(half_u, half_v))
        self.half_u, self.half_v = half_u * shrink, half_v * shrink
        self.gable = rng.random(cells) < 0.5
        roof = _ROOF_COLORS[rng.integers(0, len(_ROOF_COLORS), cells)]
        self.roof = np.clip(roof + rng.normal(0, 10, roof.shape), 0, 255).astype(np.float32)

        base = np.array(
            [(176, 150, 118), (62, 98, 52), (38, 70, 92), (150, 150, 150), (112, 112, 110)], dtype=np.float32
        )
        self.colors = (base * rng.uniform(0.9, 1.1, 3) + rng.normal(0, 8, base.shape)).astype(np.float32)
        self.sensor_noise = rng.uniform(2.0, 6.0)
        self.noise_seed = int(rng.integers(2**63))

    def _road(self, rng, vertical: bool) -> _Road:
        across = self.width if vertical else self.height
        curvy = rng.random() < 0.4
        return _Road(
            vertical=vertical,
            center=rng.uniform(0, across),
            slope=math.tan(rng.uniform(-0.45, 0.45)),
            amplitude=rng.uniform(5, 25) if curvy else 0.0,
            period=rng.uniform(250, 800),
            phase=rng.uniform(0, 2 * math.pi),
            half_width=rng.uniform(2.5, 6.5),
        )


def _draw_roads(plan: _Plan, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Road and lane-marking masks for rows y0..y1, rasterised along each road (cost ~ length x width)."""
    shape = (y1 - y0, plan.padded_w)
    road, marking = np.zeros(shape, bool), np.zeros(shape, bool)
    for r in plan.roads:
        along = np.arange(y0, y1) if r.vertical else np.arange(plan.padded_w)
        middle = (plan.height if r.vertical else plan.width) / 2
        wave = 2 * math.pi / r.period
        center = r.center + r.slope * (along - middle) + r.amplitude * np.sin(wave * along + r.phase)
        direction = r.slope + r.amplitude * wave * np.cos(wave * along + r.phase)
        half = r.half_width * np.sqrt(1 + direction**2)  # keep the perpendicular width constant
        reach = int(math.ceil(half.max())) + 1
        across = np.floor(center).astype(np.int64)[None, :] + np.arange(-reach, reach + 1)[:, None]
        distance = np.abs(across - center)
        on_road = distance <= half
        on_mark = (distance <= 0.7) & ((along // 9) % 2 == 0) & (r.half_width > 4)
        along = np.broadcast_to(along, across.shape)
        if r.vertical:
            rows, cols = along - y0, across
        else:
            rows, cols = across - y0, along
        inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
        road[rows[on_road & inside], cols[on_road & inside]] = True
        marking[rows[on_mark & inside], cols[on_mark & inside]] = True
    return road, marking


def _building_masks(plan: _Plan, y0: int, label: np.ndarray):
    """Per occupied cell in this strip: building and shadow masks [n, cell, cell] and gable shading.

    Works on the (cells_y, cell, cells_x, cell) view of the strip, so only occupied cells cost anything.
    Cells touched by water or road stay empty.
    """
    c = plan.cell
    cells = label.reshape(label.shape[0] // c, c, plan.grid_w, c)
    blocked = ((cells == WATER) | (cells == ROAD)).any(axis=(1, 3))
    g0 = y0 // c
    iy, ix = np.nonzero(plan.has_building[g0 : g0 + cells.shape[0]] & ~blocked)
    gy = iy + g0

    def rotated(dy: float, dx: float):
        local = np.arange(c, dtype=np.float32) - (c - 1) / 2
        ly = local[None, :, None] - plan.offset[0][gy, ix][:, None, None] - dy
        lx = local[None, None, :] - plan.offset[1][gy, ix][:, None, None] - dx
        cos, sin = np.cos(plan.angle[gy, ix])[:, None, None], np.sin(plan.angle[gy, ix])[:, None, None]
        u, v = lx * cos + ly * sin, ly * cos - lx * sin
        inside = (np.abs(u) <= plan.half_u[gy, ix][:, None, None]) & (np.abs(v) <= plan.half_v[gy, ix][:, None, None])
        return inside, v

    building, v = rotated(0.0, 0.0)
    shadow = rotated(*plan.shadow)[0] & ~building
    gable = np.where(plan.gable[gy, ix][:, None, None], np.where(v > 0, 1.12, 0.88), 1.0).astype(np.float32)
    return iy, ix, gy, building, shadow, gable


def _render(plan: _Plan, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and label for padded rows y0..y1 (a whole number of cells)."""
    width = plan.padded_w
    water = _sample(plan.water, y0, y1, width)
    label = np.where(_sample(plan.vegetation, y0, y1, width) > plan.vegetation_threshold, VEGETATION, SOIL)
    label = label.astype(np.uint8)
    label[water > plan.water_threshold] = WATER
    road, marking = _draw_roads(plan, y0, y1)
    label[road] = ROAD

    c = plan.cell
    iy, ix, gy, building, shadow, gable = _building_masks(plan, y0, label)
    cells = label.reshape(-1, c, plan.grid_w, c)
    cells[iy, :, ix, :] = np.where(building, BUILDING, cells[iy, :, ix, :])

    image = np.empty((*label.shape, 3), np.float32)
    for channel in range(3):  # three 1-D lookups are much faster than one row lookup
        image[..., channel] = plan.colors[:, channel][label]
    image_cells = image.reshape(-1, c, plan.grid_w, c, 3)
    roof = plan.roof[gy, ix][:, None, None, :] * gable[..., None]
    image_cells[iy, :, ix, :] = np.where(building[..., None], roof, image_cells[iy, :, ix, :])
    image[marking] = (225, 225, 215)

    shade = (
        1
        + _FINE_TEXTURE[label] * _sample(plan.fine, y0, y1, width)
        + _MID_TEXTURE[label] * _sample(plan.mid, y0, y1, width)
    )
    shade *= 1 + 0.07 * _sample(plan.light, y0, y1, width)
    depth = np.clip(water - plan.water_threshold, 0, 1)
    shade *= np.where(label == WATER, 1 - 0.35 * depth, 1)  # deeper water is darker
    shade_cells = shade.reshape(-1, c, plan.grid_w, c)
    shade_cells[iy, :, ix, :] *= np.where(shadow, 0.55, 1.0)
    image *= shade[..., None]

    # Uniform sensor noise with the chosen standard deviation: 4x cheaper to draw than normal noise.
    noise = np.random.default_rng((plan.noise_seed, y0)).random(image.shape, dtype=np.float32)
    image += (noise - 0.5) * np.float32(plan.sensor_noise * math.sqrt(12))
    return np.clip(image, 0, 255, out=image).astype(np.uint8), label


def make_scene(seed: int, size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic synthetic scene: (image uint8 [H, W, 3], label uint8 [H, W]) with the classes of
    the "synthetic" dataset (bare_soil, vegetation, water, building, road). `size` is H = W or (H, W)."""
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise Co2SInputError(f"synthetic scene size must be positive, got {size!r}")
    if seed < 0:
        raise Co2SInputError(f"synthetic scene seed must be >= 0, got {seed}")
    plan = _Plan(np.random.default_rng(seed), height, width)
    image = np.empty((height, width, 3), np.uint8)
    label = np.empty((height, width), np.uint8)
    for y0 in range(0, height, plan.strip):
        y1 = min(y0 + plan.strip, plan.grid_h * plan.cell)
        strip_image, strip_label = _render(plan, y0, y1)
        rows = min(height, y1) - y0
        image[y0 : y0 + rows] = strip_image[:rows, :width]
        label[y0 : y0 + rows] = strip_label[:rows, :width]
    return image, label


def make_large_scene(seed: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A big demo scene (e.g. 4096 x 4096), drawn in one piece so it is continuous; the strip-wise
    rendering keeps the working memory near that of a 512-row strip."""
    return make_scene(seed, (height, width))


class SyntheticDataset(SegmentationDataset):
    """`num` synthetic scenes; item i is make_scene(seed * 1_000_003 + i, size)."""

    _SEED_STRIDE = 1_000_003

    def __init__(self, num: int, size: int | tuple[int, int], seed: int, with_labels: bool = True):
        if not 0 < num <= self._SEED_STRIDE:
            raise Co2SInputError(f"synthetic dataset size must be 1..{self._SEED_STRIDE}, got {num}")
        self.num, self.size, self.seed, self.with_labels = num, size, seed, with_labels
        self.info = get_dataset_info("synthetic")
        self.source = f"synthetic scenes (seed {seed})"

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> Sample:
        if not -self.num <= index < self.num:
            raise IndexError(f"index {index} out of range for {self.num} synthetic scenes")
        image, label = make_scene(self._item_seed(index % self.num), self.size)
        return image, label if self.with_labels else None

    def _item_seed(self, index: int) -> int:
        return self.seed * self._SEED_STRIDE + index

    @property
    def names(self) -> list[str]:
        return [f"synthetic_{self._item_seed(i)}" for i in range(self.num)]


def synthetic_splits(
    num_labeled: int, num_unlabeled: int, num_val: int, size: int = 128, seed: int = 0
) -> dict[str, SyntheticDataset]:
    """labeled / unlabeled / val synthetic sets with disjoint scene seeds (unlabeled items have no label)."""
    return {
        "labeled": SyntheticDataset(num_labeled, size, 3 * seed),
        "unlabeled": SyntheticDataset(num_unlabeled, size, 3 * seed + 1, with_labels=False),
        "val": SyntheticDataset(num_val, size, 3 * seed + 2),
    }
