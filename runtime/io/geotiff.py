"""GeoTIFF (and other GDAL rasters) through rasterio: windowed reads and writes, georeferencing kept.

A scene is read one tile window at a time and written one block-aligned row strip at a time, so memory stays
at a few tile rows whatever the scene size. Outputs are internally tiled, deflate-compressed GeoTIFFs with the
input's CRS and transform; the labels file carries the bundle's palette as a colour map and 255 as nodata.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np

from co2s.errors import WRITE_ERRNOS, Co2SInputError, Co2SOutputError, output_error
from co2s.files import remove_quietly

from ..tiling import NODATA_LABEL
from .base import InputOptions, RasterSource, apply_stretch, needs_stretch_error, select_bands, stretch_limits
from .sinks import OutputPaths, Sink, palette_lut, preview_step, quicklook

log = logging.getLogger("co2s.runtime")
BLOCK = 256  # output block size (GDAL's default tiled GeoTIFF block)
# Confidence is stored as uint8 round(254 * p) with band scale 1/254 (255 = nodata): a quarter of float32's bytes
# and deflate time, and 0.4 % steps are plenty for "where should a labeller look".
CONF_SCALE, CONF_NODATA = 254, 255
STATS_SAMPLE_SIDE = 1024  # stretch statistics come from a decimated read of about this size
MAX_BLOCK_BYTES = 256 << 20  # largest internal block (TIFF strip or tile) accepted; see _check_block_size


GDAL_CACHE_MB = 128  # default block cache when the user has not set GDAL_CACHEMAX


def _rasterio():
    # GDAL caches blocks up to 5 % of RAM by default (over 1 GB on a server, the whole budget on a Jetson); a
    # streaming pass reads each block about once and writes each once, so a small cache loses nothing.
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    try:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning
    except ImportError:
        raise Co2SInputError("GeoTIFF input/output needs rasterio: pip install 'co2s[geo]'") from None
    # plain (non-geo) TIFFs are fine here: their outputs simply carry no CRS either
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    return rasterio


class GeoTiffSource(RasterSource):
    windowed = True  # read window by window, outputs written as GeoTIFF

    def __init__(self, path: Path, options: InputOptions):
        rio = _rasterio()
        from rasterio.enums import ColorInterp, MaskFlags

        self.path, self.options = Path(path), options
        if self.path.is_dir():
            raise Co2SInputError(f"{path}: is a folder, not an image")
        try:
            if self.path.stat().st_size == 0:
                raise Co2SInputError(f"{path}: empty file (0 bytes)")
        except OSError as e:
            raise Co2SInputError(f"{path}: cannot read ({e.strerror or e})") from None
        try:
            self.ds = rio.open(self.path)
        except _gdal_errors() as e:
            raise Co2SInputError(f"{path}: not a readable raster ({_gdal_msg(e)})") from None
        try:
            ds = self.ds
            self.height, self.width = ds.height, ds.width
            if self.height == 0 or self.width == 0 or ds.count == 0:
                raise Co2SInputError(f"{path}: empty raster ({ds.width}x{ds.height}, {ds.count} bands)")
            complex_bands = [t for t in ds.dtypes if t.startswith("complex")]
            if complex_bands:
                raise Co2SInputError(
                    f"{path}: complex-valued raster ({complex_bands[0]}); the model takes real-valued "
                    f"imagery (convert it first, e.g. to amplitude)"
                )
            _check_block_size(self.path, ds)
            # an alpha band is the nodata mask (read through read_masks below), not a band to choose from
            colour = [i for i, ci in enumerate(ds.colorinterp) if ci != ColorInterp.alpha] or list(range(ds.count))
            picked = select_bands(len(colour), options, self.path, "raster ", np.result_type(*ds.dtypes))
            idx0 = tuple(colour[i] for i in picked)
            self.unique = sorted(set(idx0))
            self.order = [self.unique.index(i) for i in idx0]  # positions of R, G, B in the unique read
            self.indexes = [i + 1 for i in self.unique]  # rasterio counts bands from 1
            dtypes = {ds.dtypes[i] for i in self.unique}
            self.dtype = np.result_type(*dtypes)
            self.nodata = options.nodata
            self.use_masks = options.nodata is None and any(
                MaskFlags.all_valid not in ds.mask_flag_enums[i] for i in self.unique
            )
            self.lo = self.hi = None
            if self.dtype != np.uint8 or options.stretch is not None:
                if options.stretch is None:
                    raise needs_stretch_error(self.path, self.dtype)
                self.lo, self.hi = self._stretch_limits()
            if ds.width > 2 * BLOCK and not ds.profile.get("tiled", False):
                log.warning(
                    "%s is striped, not internally tiled: every tile window re-reads whole strips. "
                    "For large scenes convert once: gdal_translate -co TILED=YES -co COMPRESS=DEFLATE in out",
                    self.path,
                )
        except _gdal_errors() as e:  # a header that opens but whose tags GDAL cannot decode
            self.ds.close()
            raise Co2SInputError(f"{path}: damaged raster header ({_gdal_msg(e)})") from None
        except BaseException:
            self.ds.close()
            raise

    @property
    def crs(self):
        return self.ds.crs

    @property
    def transform(self):
        return self.ds.transform

    def _read(self, where: str, **region) -> tuple[np.ndarray, np.ndarray | None]:
        """The selected bands [k, h, w] of `region` (rasterio's window= or out_shape=) and their valid mask. A pixel
        is nodata only when every selected band is (rasterio's dataset_mask convention): a dark pixel with one zero
        band is still data."""
        try:
            data = self.ds.read(self.indexes, **region)
            valid = None
            if self.nodata is not None:
                valid = ~np.all(data == np.asarray(self.nodata, dtype=data.dtype), axis=0)
            elif self.use_masks:
                valid = np.any(self.ds.read_masks(self.indexes, **region) > 0, axis=0)
        except _gdal_errors() as e:
            raise Co2SInputError(f"{self.path}: read failed {where} (truncated or corrupt? {_gdal_msg(e)})") from None
        return data, valid

    def _decimated(self, max_side: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Unique bands [k, h', w'] read at reduced resolution (GDAL uses overviews when present). This read
        (stretch statistics, quick-look) touches every block, so it is where a damaged scene usually shows first."""
        step = max(1, math.ceil(max(self.height, self.width) / max_side))
        shape = (len(self.indexes), max(1, self.height // step), max(1, self.width // step))
        return self._read(f"while sampling the whole scene at 1/{step} scale", out_shape=shape)

    def _stretch_limits(self) -> tuple[np.ndarray, np.ndarray]:
        data, valid = self._decimated(STATS_SAMPLE_SIDE)
        lo, hi = stretch_limits(data, self.options.stretch, valid)
        return lo[self.order], hi[self.order]

    def _to_rgb(self, data: np.ndarray) -> np.ndarray:
        pixels = np.moveaxis(data[self.order], 0, 2)
        if self.lo is not None:
            return apply_stretch(pixels, self.lo, self.hi)
        return np.ascontiguousarray(pixels)

    def read(self, y0: int, x0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
        from rasterio.windows import Window

        data, valid = self._read(f"at rows {y0}-{y0 + h}, columns {x0}-{x0 + w}", window=Window(x0, y0, w, h))
        return self._to_rgb(data), valid

    def preview(self, max_side: int) -> np.ndarray:
        data, _ = self._decimated(max_side)
        return self._to_rgb(data)

    def close(self) -> None:
        self.ds.close()


def _check_block_size(path: Path, ds) -> None:
    """GDAL decodes a whole internal block (a strip, in a striped TIFF) for any read that touches it. A header can
    declare a strip of billions of pixels in a few bytes, and even a real one that size cannot be read in windows."""
    bh, bw = ds.block_shapes[0]
    itemsize = max(np.dtype(t).itemsize for t in ds.dtypes)
    need = bh * bw * ds.count * itemsize
    if need > MAX_BLOCK_BYTES:
        raise Co2SInputError(
            f"{path}: one internal block is {bw}x{bh} pixels x {ds.count} band(s) = {need / 2**20:,.0f} MB, and every "
            f"read decodes a whole block (limit {MAX_BLOCK_BYTES >> 20} MB); if the file is intact convert it to a "
            f"tiled GeoTIFF first: gdal_translate -co TILED=YES -co COMPRESS=DEFLATE in.tif out.tif"
        )


def _gdal_msg(e: BaseException) -> str:
    """First line of GDAL's own message (rasterio chains it as the cause of a generic 'Read failed')."""
    while e.__cause__ is not None and "previous exception" in str(e):
        e = e.__cause__
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _IncompleteOutput(Exception):
    """A closed output is missing blocks, overviews or its TIFF directory (see GeoTiffSink._check_complete)."""


def _gdal_errors() -> tuple[type[BaseException], ...]:
    """What a failed GDAL call raises: RasterioErrors (RasterioIOError is an OSError with no errno; GDAL's message
    is its cause) and rasterio's CPLE_* errors, which escape unwrapped from some property getters (a damaged
    colour-interpretation tag raises CPLE_AppDefinedError from `colorinterp`)."""
    rio = _rasterio()
    errors: tuple[type[BaseException], ...] = (rio.errors.RasterioError,)
    try:
        from rasterio._err import CPLE_BaseError

        errors += (CPLE_BaseError,)
    except ImportError:  # private module; the public errors above still cover the usual cases
        pass
    return errors


def _write_errors() -> tuple[type[BaseException], ...]:
    """What a failed GDAL write raises: any GDAL error, an OSError, or an output found incomplete after close."""
    return (OSError, _IncompleteOutput, *_gdal_errors())


LOW_SPACE_BYTES = 1 << 20  # a write that failed with less than this free on the file system counts as a full disk


def _write_errno(e: BaseException, folder: Path) -> int | None:
    """errno of a failed output write. GDAL keeps the OS error only in its message (if at all: libtiff prints
    "No space left on device" straight to stderr and GDAL reports "Write error at scanline N"), so after the
    errno itself and the messages, a file system with (almost) no space left means the disk is full."""
    if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
        return e.errno
    texts, seen, x = [], set(), e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        texts.append(str(x).lower())
        x = x.__cause__ or x.__context__
    text = " ".join(texts)
    for code in sorted(WRITE_ERRNOS):
        if os.strerror(code).lower() in text:
            return code
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return errno.ENOSPC if st.f_bavail * st.f_frsize < LOW_SPACE_BYTES else None


class GeoTiffSink(Sink):
    """Labels (uint8, palette, nodata 255) and confidence (uint8 x 254, band scale 1/254, nodata 255) GeoTIFFs,
    written in full-width strips aligned to the output block rows so each compressed block is written once.
    A write that fails (disk full, no permission, read-only file system) raises a Co2SOutputError naming the
    output file, after every temporary file was removed; a closed file is read back before it is renamed into
    place, since GDAL does not report every failure (see _check_complete)."""

    def __init__(
        self,
        source: GeoTiffSource,
        paths: OutputPaths,
        palette: np.ndarray,
        classes: list[str],
        *,
        overviews: bool = True,
        cog: bool = False,
    ):
        rio = _rasterio()
        super().__init__(paths)
        self.source, self.palette, self.classes = source, palette, classes
        self.overviews = overviews
        self.cog = cog
        self.height, self.width = source.height, source.width
        base = dict(
            driver="GTiff",
            width=self.width,
            height=self.height,
            count=1,
            crs=source.crs,
            transform=source.transform,
            tiled=True,
            blockxsize=BLOCK,
            blockysize=BLOCK,
            compress="deflate",
            BIGTIFF="IF_SAFER",
        )
        self._datasets = {}
        final = paths.labels
        try:
            for final in (paths.labels, paths.confidence):
                if final is None:
                    continue
                tmp = self._temp(final)
                if final == paths.labels:
                    ds = rio.open(tmp, "w", **base, dtype="uint8", nodata=NODATA_LABEL, predictor=2)
                    self._datasets["labels"] = (ds, tmp, final)
                    ds.write_colormap(1, {i: (*map(int, c), 255) for i, c in enumerate(palette_lut(palette))})
                    ds.update_tags(CO2S_CLASSES=json.dumps(list(classes)))
                    ds.set_band_description(1, "class index (255 = nodata)")
                else:
                    ds = rio.open(tmp, "w", **base, dtype="uint8", nodata=CONF_NODATA, predictor=2)
                    self._datasets["confidence"] = (ds, tmp, final)
                    ds.scales, ds.offsets = (1.0 / CONF_SCALE,), (0.0,)
                    ds.set_band_description(1, f"confidence x {CONF_SCALE} (apply the band scale; 255 = nodata)")
                if source.transform.is_identity and source.ds.gcps[0]:  # a placed video frame has no ds
                    ds.gcps = source.ds.gcps
        except _write_errors() as e:
            raise self._failed(final, e) from None
        except BaseException:
            self.abort()
            raise
        self._pending_y0 = 0
        self._pending: list[tuple[np.ndarray, np.ndarray | None]] = []

    def write_strip(self, y0, y1, labels, confidence) -> None:
        from rasterio.windows import Window

        if y0 != self._pending_y0 + sum(p[0].shape[0] for p in self._pending):
            raise RuntimeError(f"strips must arrive in order (got rows {y0}-{y1})")
        self._pending.append((labels, confidence))
        rows = sum(p[0].shape[0] for p in self._pending)
        end = self._pending_y0 + rows
        cut = end if end == self.height else (end // BLOCK) * BLOCK
        if cut <= self._pending_y0:
            return
        lab = np.concatenate([p[0] for p in self._pending], axis=0)
        conf = None
        if "confidence" in self._datasets:
            conf = np.concatenate([p[1] for p in self._pending], axis=0)
            q = np.clip(np.rint(conf * CONF_SCALE), 0, CONF_SCALE).astype(np.uint8)
            conf = np.where(lab == NODATA_LABEL, np.uint8(CONF_NODATA), q)
        n = cut - self._pending_y0
        win = Window(0, self._pending_y0, self.width, n)
        final = self.paths.labels
        try:
            self._datasets["labels"][0].write(lab[:n], 1, window=win)
            if conf is not None:
                final = self.paths.confidence
                self._datasets["confidence"][0].write(conf[:n], 1, window=win)
        except _write_errors() as e:
            raise self._failed(final, e) from None
        except BaseException:
            self.abort()
            raise
        self._pending = [(lab[n:], None if conf is None else conf[n:])] if n < lab.shape[0] else []
        self._pending_y0 = cut

    def commit(self) -> list[Path]:
        final = self.paths.labels
        try:
            if self._pending_y0 != self.height:
                raise RuntimeError(f"only rows 0-{self._pending_y0} of {self.height} were written")
            factors = self._overview_factors() if self.overviews and not self.cog else []
            for key, (ds, tmp, _final) in self._datasets.items():
                if factors:
                    self._build_overviews(key, ds, factors)
                ds.close()
                self._check_complete(tmp, len(factors))
            pairs = []
            for key, (_ds, tmp, final) in self._datasets.items():
                pairs.append((self._to_cog(key, tmp, final) if self.cog else tmp, final))
            if self.paths.overlay is not None:
                final = self.paths.overlay
                tmp = self._temp(final)
                self._write_overlay(tmp, self._datasets["labels"][1])
                pairs.append((tmp, final))
        except _write_errors() as e:
            raise self._failed(final, e) from None
        except BaseException:
            self.abort()
            raise
        done = self._move_into_place(pairs)
        if self.cog:  # the strip-written files the COGs were copied from
            remove_quietly(tmp for _, tmp, _ in self._datasets.values())
        return done

    def _to_cog(self, key: str, tmp: Path, final: Path) -> Path:
        """Copy a finished strip-written GeoTIFF into a Cloud-Optimized GeoTIFF with GDAL's COG driver (which
        only copies, never writes in strips): tiled, overviews (nearest for class indices, average for
        confidence), colour table, tags, scale and nodata carried over. Returns the COG's temporary name; the
        intermediate file is kept until commit (the labels temp is read back by finished_rows)."""
        from rasterio.shutil import copy as rio_copy

        cog = self._temp(final)
        with _rasterio().Env():  # GDAL's notes go to logging, not stderr
            rio_copy(
                tmp,
                cog,
                driver="COG",
                BLOCKSIZE=512,
                COMPRESS="DEFLATE",
                PREDICTOR="YES",
                RESAMPLING="NEAREST" if key == "labels" else "AVERAGE",
                OVERVIEWS="AUTO" if self.overviews else "NONE",
                BIGTIFF="IF_SAFER",
            )
        with _rasterio().open(cog) as r:  # GDAL logs some write failures instead of raising them
            if (r.width, r.height) != (self.width, self.height):
                raise _IncompleteOutput(f"the COG copy is {r.width}x{r.height}, expected {self.width}x{self.height}")
        return cog

    def finished_rows(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Read back from the closed temporary files (products run after commit closed them)."""
        from rasterio.windows import Window

        rio, win = _rasterio(), Window(0, y0, self.width, y1 - y0)
        with rio.open(self._datasets["labels"][1]) as ds:
            labels = ds.read(1, window=win)
        conf = None
        if "confidence" in self._datasets:
            with rio.open(self._datasets["confidence"][1]) as ds:
                q = ds.read(1, window=win)
            conf = np.where(q == CONF_NODATA, 0, q).astype(np.float32) / CONF_SCALE
        return labels, conf

    def _overview_factors(self) -> list[int]:
        """x2, x4, ... down to ~256 px (none for a scene that fits one block)."""
        factors, f = [], 2
        while max(self.height, self.width) / f >= BLOCK:
            factors.append(f)
            f *= 2
        return factors

    @staticmethod
    def _build_overviews(key: str, ds, factors: list[int]) -> None:
        """Internal overviews so GIS viewers open a large result instantly: majority class for labels, mean for
        confidence; GDAL builds them block by block."""
        from rasterio.enums import Resampling

        how = Resampling.mode if key == "labels" else Resampling.average
        # inside an Env GDAL's messages go to Python logging ("rasterio._env") instead of raw stderr: the coarser
        # levels are computed from the finer ones, which carry no colour table, and GDAL warns about that although
        # the majority rule on class indices is exactly what is wanted
        with _rasterio().Env():
            ds.build_overviews(factors, how)
        ds.update_tags(ns="rio_overview", resampling=how.name)

    def _check_complete(self, tmp: Path, levels: int) -> None:
        """Reopen a closed output and check every block of every level reached the file. GDAL writes cached blocks,
        overviews and the TIFF directory when the dataset is closed, and a failure there (a full disk) is only
        logged: rasterio's close() and build_overviews() return normally and leave a truncated file behind."""
        rio = _rasterio()
        try:
            size = tmp.stat().st_size
            for level in (None, *range(levels)):
                kw = {} if level is None else {"overview_level": level}
                with rio.open(tmp, **kw) as r:
                    if level is None and (
                        (r.width, r.height, r.count) != (self.width, self.height, 1) or len(r.overviews(1)) != levels
                    ):
                        raise _IncompleteOutput(
                            f"{r.width}x{r.height}x{r.count} with {len(r.overviews(1))} "
                            f"overview levels, expected {self.width}x{self.height}x1 "
                            f"with {levels}"
                        )
                    bh, bw = r.block_shapes[0]
                    for by in range(-(-r.height // bh)):
                        for bx in range(-(-r.width // bw)):
                            offset = int(r.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=1) or 0)
                            nbytes = int(r.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=1) or 0)
                            if not offset or offset + nbytes > size:  # never written, or cut off
                                where = "full resolution" if level is None else f"overview level {level + 1}"
                                raise _IncompleteOutput(f"block {bx},{by} of the {where} is missing")
        except _IncompleteOutput:
            raise
        except _write_errors() as e:
            raise _IncompleteOutput(f"it cannot be read back ({_gdal_msg(e)})") from None

    def _failed(self, final: Path, e: BaseException) -> Co2SOutputError:
        """The error that names the output, then drop every temporary file. Worked out before the temporary files
        are removed: while they are there a full disk still shows as full."""
        try:
            code = _write_errno(e, final.parent)
            if code is not None:
                err = output_error(final, OSError(code, os.strerror(code)))
            elif isinstance(e, _IncompleteOutput):
                err = Co2SOutputError(f"{final}: cannot write: GDAL could not complete the file ({e})")
            else:
                err = output_error(
                    final,
                    OSError(
                        None,
                        e.strerror if isinstance(e, OSError) and e.strerror and e.errno is not None else _gdal_msg(e),
                    ),
                )
        finally:
            self.abort()
        return err

    def _write_overlay(self, tmp: Path, labels_tmp: Path) -> None:
        """Decimated quick-look PNG: the scene and its labels at most PREVIEW_MAX_SIDE pixels on a side."""
        from PIL import Image

        rio = _rasterio()
        step = preview_step(self.height, self.width)
        rgb = self.source.preview(math.ceil(max(self.height, self.width) / step))
        with rio.open(labels_tmp) as ds:
            from rasterio.enums import Resampling

            labels = ds.read(1, out_shape=rgb.shape[:2], resampling=Resampling.nearest)
        Image.fromarray(quicklook(rgb, labels, self.palette, self.classes)).save(tmp, format="PNG", compress_level=1)

    def abort(self) -> None:
        for ds, _, _ in self._datasets.values():
            try:
                ds.close()
            except Exception:  # noqa: BLE001 - already failing; the temp file is removed below
                pass
        super().abort()
