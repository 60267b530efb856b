"""Reading weight files and checking them key by key, shared by the backbone families and the text tower.

Every problem a user can fix (missing or unreadable file, wrong family or size) raises `Co2SInputError`
naming the file and the first offending key with its expected/found shape (docs/method.md §2.4).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path

import torch

from co2s.errors import Co2SInputError

StateDict = dict[str, torch.Tensor]


def _is_torchscript(path: Path) -> bool:
    # TorchScript archives (e.g. OpenAI's ViT-B-16.pt) are zips holding compiled code + constants.pkl;
    # plain torch.save zips never contain constants.pkl.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in zf.namelist())


def read_state_dict(path: str | os.PathLike) -> tuple[Path, StateDict]:
    """Load a weight file on CPU and return (path, flat state dict of tensors).

    Accepts safetensors, plain `torch.save` state dicts (loaded with weights_only=True) and TorchScript
    archives (OpenAI CLIP). Unwraps `{'state_dict': ...}` / `{'model': ...}` and a DDP `module.` prefix.
    """
    p = Path(path)
    if not p.is_file():
        raise Co2SInputError(f"{p}: weights file not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        elif _is_torchscript(p):
            with warnings.catch_warnings():  # torch.jit is deprecated, but OpenAI's archive needs it
                warnings.simplefilter("ignore", FutureWarning)
                obj = torch.jit.load(str(p), map_location="cpu").state_dict()
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated/corrupt/unsupported files surface as many exception types
        raise Co2SInputError(
            f"{p}: cannot read weights: truncated, corrupt or not a PyTorch/safetensors file ({type(e).__name__}: {e})"
        ) from e

    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise Co2SInputError(f"{p}: expected a state dict, found {type(obj).__name__}")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise Co2SInputError(f"{p}: no tensors found in the weights file")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return p, sd


def check_state_dict(
    path: Path,
    expected: Mapping[str, torch.Size],
    found: Mapping[str, torch.Tensor],
    *,
    family: str,
    prefix: str = "",
    optional: Collection[str] = (),
) -> None:
    """Raise Co2SInputError on the first missing, mis-shaped, non-finite or unexpected key.

    `prefix` is prepended to key names in messages so they read as the file spells them.
    """
    for key, shape in expected.items():
        if key not in found:
            if key in optional:
                continue
            raise Co2SInputError(
                f"{path}: missing key '{prefix}{key}' (expected shape {list(shape)}); is this a {family} checkpoint?"
            )
        t = found[key]
        if t.shape != shape:
            raise Co2SInputError(
                f"{path}: key '{prefix}{key}' has shape {list(t.shape)}, expected {list(shape)} "
                f"(a different model size or family than {family}?)"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise Co2SInputError(f"{path}: key '{prefix}{key}' contains NaN or Inf values")
    for key, t in found.items():
        if key not in expected:
            raise Co2SInputError(f"{path}: unexpected key '{prefix}{key}' (shape {list(t.shape)}) for {family}")


def verify_loaded(path: Path, module_state: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor]) -> None:
    """Assert that every tensor of the module now equals its source tensor exactly (docs/method.md §2.4)."""
    for key, t in module_state.items():
        src = source.get(key)
        if src is None or not torch.equal(t, src.to(device=t.device, dtype=t.dtype)):
            raise RuntimeError(f"{path}: weight '{key}' did not load (module tensor differs from the file)")
