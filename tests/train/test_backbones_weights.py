"""Weight loading: official key layouts written from random tiny models load into differently seeded models
and reproduce their features exactly; bad files fail with Co2SInputError naming the file and key (docs/method.md §2.4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from co2s.errors import Co2SInputError
from co2s.train.backbones import build_backbone, list_backbones
from co2s.train.backbones._checkpoint import verify_loaded
from co2s.train.backbones.clip import build_text_tower


def _perturbed(name: str, img_size: int = 64, seed: int = 0) -> nn.Module:
    """A tiny model whose every tensor is distinctive (fresh inits have zero biases and constant norms)."""
    torch.manual_seed(seed)
    m = build_backbone(name, img_size=img_size).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m


def _features(m: nn.Module, size: int = 64) -> list[torch.Tensor]:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return m(x)


def _assert_same_features(a: nn.Module, b: nn.Module, size: int = 64) -> None:
    for fa, fb in zip(_features(a, size), _features(b, size)):
        assert torch.equal(fa, fb)


# ---- CLIP ----


def _openai_clip_state(m: nn.Module) -> dict[str, torch.Tensor]:
    """Full CLIP state dict in the OpenAI / open_clip naming: `visual.*` plus top-level text tower keys."""
    text = build_text_tower("clip_tiny", seed=7)
    state = {f"visual.{k}": v for k, v in m.visual.state_dict().items()}
    state.update(text.state_dict())
    state["logit_scale"] = torch.tensor(4.6052)
    return state


def test_clip_open_clip_checkpoint_round_trip(tmp_path):
    src = _perturbed("clip_tiny")
    path = tmp_path / "open_clip.pt"
    wrapped = {f"module.{k}": v for k, v in _openai_clip_state(src).items()}  # DDP-saved training checkpoint
    torch.save({"epoch": 3, "state_dict": wrapped}, path)
    torch.manual_seed(99)
    dst = build_backbone("clip_tiny", path, img_size=64).eval()
    _assert_same_features(src, dst)


def test_clip_bare_vision_tower_state_dict(tmp_path):
    src = _perturbed("clip_tiny")
    path = tmp_path / "visual.pt"
    torch.save(src.visual.state_dict(), path)
    torch.manual_seed(99)
    _assert_same_features(src, build_backbone("clip_tiny", path, img_size=64).eval())


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
def test_clip_torchscript_archive_like_openai(tmp_path):
    # OpenAI distributes ViT-B-16.pt as a TorchScript archive of the whole CLIP model, in fp16.
    src = _perturbed("clip_tiny")
    text = build_text_tower("clip_tiny", seed=7)

    class OpenAIClip(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = src.visual
            for k in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
                setattr(self, k, getattr(text, k))

        def forward(self, x):
            return x * self.text_projection.sum()

    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.trace(OpenAIClip().half(), torch.ones(1, dtype=torch.half)), str(path))
    src.float()  # now holds the fp16-rounded values, which is what the archive stores
    torch.manual_seed(99)
    _assert_same_features(src, build_backbone("clip_tiny", path, img_size=64).eval())


def test_clip_position_embedding_resized_from_224_checkpoint(tmp_path):
    src = _perturbed("clip_tiny", img_size=224)
    path = tmp_path / "clip224.pt"
    torch.save(src.visual.state_dict(), path)
    dst = build_backbone("clip_tiny", path, img_size=128).eval()
    pos = src.visual.positional_embedding.detach()
    grid = pos[1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(64, -1)
    assert torch.equal(dst.visual.positional_embedding, torch.cat([pos[:1], grid]))
    # the 224 model resizes the same way at run time, so both agree on a 128 input
    _assert_same_features(src, dst, size=128)


# ---- DINOv3 ----


def _to_meta(vit: nn.Module) -> dict[str, torch.Tensor]:
    """timm names -> Meta's official DINOv3 layout (what dinov3_vitb16_pretrain_lvd1689m.pth holds)."""
    d = vit.embed_dim
    sd = vit.state_dict()
    out = {}
    for k, v in sd.items():
        if k.endswith("attn.v_bias"):
            continue
        if k.endswith("attn.q_bias"):
            base = k[: -len("q_bias")]
            k_bias = torch.randn(d)  # masked off by bias_mask: must not reach the features
            out[base + "qkv.bias"] = torch.cat([v, k_bias, sd[base + "v_bias"]])
            out[base + "qkv.bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
            continue
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k] = v
    out["mask_token"] = torch.zeros(1, d)
    out["rope_embed.periods"] = vit.rope.periods.to(torch.bfloat16).float()  # Meta stores bf16-rounded periods
    return out


def test_dinov3_meta_checkpoint_round_trip(tmp_path):
    src = _perturbed("dinov3_tiny")
    meta = _to_meta(src.vit)
    assert {"cls_token", "storage_tokens", "blocks.0.ls1.gamma", "blocks.0.attn.qkv.bias_mask"} <= set(meta)
    path = tmp_path / "dinov3_meta.pth"
    torch.save(meta, path)
    torch.manual_seed(99)
    _assert_same_features(src, build_backbone("dinov3_tiny", path, img_size=64).eval())


def test_dinov3_timm_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    src = _perturbed("dinov3_tiny")
    path = tmp_path / "dinov3.safetensors"
    save_file({k: v.contiguous() for k, v in src.vit.state_dict().items()}, str(path))
    torch.manual_seed(99)
    _assert_same_features(src, build_backbone("dinov3_tiny", path, img_size=64).eval())


def test_dinov3_meta_k_bias_must_be_masked(tmp_path):
    meta = _to_meta(_perturbed("dinov3_tiny").vit)
    meta["blocks.2.attn.qkv.bias_mask"] = torch.ones_like(meta["blocks.2.attn.qkv.bias_mask"])
    path = tmp_path / "bad_mask.pth"
    torch.save(meta, path)
    with pytest.raises(Co2SInputError, match=r"bad_mask\.pth.*'blocks\.2\.attn\.qkv\.bias_mask'"):
        build_backbone("dinov3_tiny", path, img_size=64)


def test_dinov3_meta_rope_periods_must_match(tmp_path):
    meta = _to_meta(_perturbed("dinov3_tiny").vit)
    meta["rope_embed.periods"] = meta["rope_embed.periods"] * 2
    path = tmp_path / "bad_rope.pth"
    torch.save(meta, path)
    with pytest.raises(Co2SInputError, match=r"bad_rope\.pth.*'rope_embed\.periods'"):
        build_backbone("dinov3_tiny", path, img_size=64)


# ---- errors shared by both families ----
# Parametrised by the registry's own list of tiny variants; the per-variant keys are in tables keyed by name, so
# a newly registered variant fails here until it has its entries.
TINY = [n for n in list_backbones() if n.endswith("_tiny")]
A_MLP_WEIGHT = {"clip_tiny": "visual.transformer.resblocks.1.mlp.c_fc.weight", "dinov3_tiny": "blocks.1.mlp.fc1.weight"}
A_FINAL_NORM_BIAS = {"clip_tiny": "visual.ln_post.bias", "dinov3_tiny": "norm.bias"}


def _save_state(name: str, path) -> dict[str, torch.Tensor]:
    m = _perturbed(name)
    state = _openai_clip_state(m) if name == "clip_tiny" else _to_meta(m.vit)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("name", TINY)
def test_missing_file(tmp_path, name):
    with pytest.raises(Co2SInputError, match=r"nothere\.pt.*not found"):
        build_backbone(name, tmp_path / "nothere.pt", img_size=64)


@pytest.mark.parametrize("name", TINY)
def test_truncated_file(tmp_path, name):
    path = tmp_path / "truncated.pt"
    _save_state(name, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Co2SInputError, match=r"truncated\.pt"):
        build_backbone(name, path, img_size=64)


@pytest.mark.parametrize("name", TINY)
def test_one_tensor_of_the_wrong_shape(tmp_path, name):
    key = A_MLP_WEIGHT[name]
    path = tmp_path / "wrong_shape.pt"
    state = _save_state(name, path)
    state[key] = torch.zeros(7, 64)
    torch.save(state, path)
    want = list(_save_state(name, tmp_path / "ok.pt")[key].shape)
    with pytest.raises(Co2SInputError) as e:
        build_backbone(name, path, img_size=64)
    msg = str(e.value)
    assert str(path) in msg and f"'{key}'" in msg and "[7, 64]" in msg and str(want) in msg


@pytest.mark.parametrize("name", TINY)
def test_missing_key(tmp_path, name):
    key = A_FINAL_NORM_BIAS[name]
    path = tmp_path / "missing_key.pt"
    state = _save_state(name, path)
    del state[key]
    torch.save(state, path)
    with pytest.raises(Co2SInputError, match=rf"missing_key\.pt: missing key '{key}'"):
        build_backbone(name, path, img_size=64)


def test_unexpected_key(tmp_path):
    path = tmp_path / "extra.pt"
    state = _save_state("dinov3_tiny", path)
    state["blocks.4.norm1.weight"] = torch.ones(64)  # one block too many: a deeper model
    torch.save(state, path)
    with pytest.raises(Co2SInputError, match=r"extra\.pt: unexpected key 'blocks\.4\.norm1\.weight'"):
        build_backbone("dinov3_tiny", path, img_size=64)


@pytest.mark.parametrize(
    ("name", "other"),
    [(a, b) for a in TINY for b in TINY if a.split("_")[0] != b.split("_")[0]],  # other family
)
def test_wrong_family(tmp_path, name, other):
    path = tmp_path / "other_family.pt"
    _save_state(other, path)
    with pytest.raises(Co2SInputError, match=r"other_family\.pt"):
        build_backbone(name, path, img_size=64)


def test_non_finite_weights_are_rejected(tmp_path):
    path = tmp_path / "nan.pt"
    state = _save_state("clip_tiny", path)
    state["visual.ln_pre.weight"][3] = float("nan")
    torch.save(state, path)
    with pytest.raises(Co2SInputError, match=r"nan\.pt: key 'visual\.ln_pre\.weight' contains NaN"):
        build_backbone("clip_tiny", path, img_size=64)


def test_verify_loaded_catches_a_tensor_that_did_not_load(tmp_path):
    a = {"w": torch.ones(3), "b": torch.zeros(2)}
    verify_loaded(tmp_path, a, {"w": torch.ones(3, dtype=torch.half), "b": torch.zeros(2)})
    with pytest.raises(RuntimeError, match="'b'"):
        verify_loaded(tmp_path, a, {"w": torch.ones(3), "b": torch.tensor([0.0, 1.0])})
