"""Backbones: registry, tap shapes, the CLIP value path against a hand-written version, DINOv3 taps against
timm's blocks, parameter counts and the attention-only freeze rule against the reference (docs/method.md §2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from co2s.errors import Co2SInputError
from co2s.train.backbones import build_backbone, count_parameters, list_backbones
from co2s.train.backbones.clip import resize_pos_embed

# The registry's own list, not names written out: a variant registered later is tested too (and fails until
# its expected values are added to the tables below).
TINY = [n for n in list_backbones() if n.endswith("_tiny")]
TINY_TAPS = {  # name -> (out_channels, text_dim, pixel_mean)
    "clip_tiny": ((64, 64, 64), 64, (0.48145466, 0.4578275, 0.40821073)),
    "dinov3_tiny": ((64, 64, 64), 64, (0.485, 0.456, 0.406)),
}


def _tiny(name: str, img_size: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone(name, img_size=img_size).eval()


def _attn_params(module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if "attn" in n)


def test_registry_lists_all_variants():
    assert set(list_backbones()) == {"clip_vitb16", "dinov3_vitb16", "clip_tiny", "dinov3_tiny"}
    assert set(TINY) == set(TINY_TAPS)  # every tiny variant has its expected taps


@pytest.mark.parametrize(("name", "img_size"), [("nope", 64), ("clip_tiny", 100), ("dinov3_tiny", 0)])
def test_bad_name_or_size_is_rejected(name, img_size):
    with pytest.raises(Co2SInputError):
        build_backbone(name, img_size=img_size)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [64, 128])
def test_tiny_tap_shapes(name, size):
    chans, text_dim, mean = TINY_TAPS[name]
    m = _tiny(name)
    assert (m.name, m.out_channels, m.text_dim, m.patch_size, m.pixel_mean) == (name, chans, text_dim, 16, mean)
    assert len(m.pixel_std) == 3 and len(m.taps) == len(chans)
    with torch.no_grad():
        outs = m(torch.randn(2, 3, size, size))
    assert [tuple(o.shape) for o in outs] == [(2, c, size // 16, size // 16) for c in chans]
    assert all(torch.isfinite(o).all() for o in outs)


def test_clip_value_path_matches_a_hand_written_maskclip():
    m = _tiny("clip_tiny")
    vis = m.visual
    blocks = vis.transformer.resblocks
    x = torch.randn(2, 3, 64, 96)

    def vpath(blk, t):  # the reference's formulation: full in_proj, split in three, keep v
        q, k, v = F.linear(blk.ln_1(t), blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)
        t = t + F.linear(v, blk.attn.out_proj.weight, blk.attn.out_proj.bias)
        h = F.linear(blk.ln_2(t), blk.mlp.c_fc.weight, blk.mlp.c_fc.bias)
        h = h * torch.sigmoid(1.702 * h)  # QuickGELU, as the OpenAI weights were trained
        return t + F.linear(h, blk.mlp.c_proj.weight, blk.mlp.c_proj.bias)

    def to_map(t):
        return t[:, 1:].reshape(2, 4, 6, -1).permute(0, 3, 1, 2)

    with torch.no_grad():
        t = F.conv2d(x, vis.conv1.weight, stride=16).flatten(2).transpose(1, 2)
        t = torch.cat([vis.class_embedding.expand(2, 1, -1), t], 1)
        t = vis.ln_pre(t + resize_pos_embed(vis.positional_embedding, (4, 4), (4, 6)))
        want = []
        for i in range(3):
            if i in (0, 1):
                want.append(to_map(vpath(blocks[i], t)))
            t = blocks[i](t)
        emb = vis.ln_post(vpath(blocks[3], t)) @ vis.proj
        want.append(to_map(emb / emb.norm(dim=-1, keepdim=True)))
        got = m(x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[-1].norm(dim=1), torch.ones(2, 4, 6))


def test_clip_last_block_ordinary_path_is_not_computed():
    m = _tiny("clip_tiny")
    calls = []
    for i, blk in enumerate(m.visual.transformer.resblocks):
        blk.register_forward_hook(lambda *_, i=i: calls.append(i))
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
    assert calls == [0, 1, 2]  # block 3 only runs its value path (docs/method.md §2.1: its regular path feeds nothing)


def test_clip_run_time_position_resize_matches_a_model_built_for_that_size():
    small, big = _tiny("clip_tiny", 64), _tiny("clip_tiny", 128, seed=1)
    state = dict(small.state_dict())
    state["visual.positional_embedding"] = resize_pos_embed(state["visual.positional_embedding"], (4, 4), (8, 8))
    big.load_state_dict(state)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(small(x), big(x)):
            assert torch.equal(a, b)


def test_dinov3_taps_are_final_normed_blocks_without_prefix_tokens():
    m = _tiny("dinov3_tiny")
    vit = m.vit
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        t, rope = vit._pos_embed(vit.patch_embed(x))
        want = []
        for i, blk in enumerate(vit.blocks):
            t = blk(t, rope=rope)
            if i in (1, 2, 3):
                want.append(vit.norm(t)[:, 5:].reshape(2, 4, 5, -1).permute(0, 3, 1, 2))
        got = m(x)
    assert vit.num_prefix_tokens == 5  # CLS + 4 registers
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_clip_tiny_exports_to_onnx(tmp_path):
    # The value path is written without tensor_split / in-place ops so the exporter takes it as is.
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    m = _tiny("clip_tiny")
    x = torch.randn(1, 3, 64, 64)
    path = tmp_path / "clip_tiny.onnx"
    torch.onnx.export(m, (x,), path, dynamo=True, opset_version=18, verbose=False)
    sess = ort.InferenceSession(str(path))
    outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        for o, r in zip(outs, m(x)):
            torch.testing.assert_close(torch.from_numpy(o), r, rtol=1e-4, atol=1e-4)


# ---- full size: one instance per family and size, one forward each ----


@pytest.fixture(scope="module")
def clip256():
    return build_backbone("clip_vitb16", img_size=256).eval()


@pytest.fixture(scope="module")
def dinov3_512():
    return build_backbone("dinov3_vitb16", img_size=512).eval()


def test_full_clip_shapes_counts_and_freeze_rule(clip256):
    m = clip256
    assert (m.out_channels, m.text_dim, m.taps) == ((768, 768, 512), 512, (0, 4, 11))
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 256, 256))
        outs512 = m(torch.randn(1, 3, 512, 512))  # position grid resized at run time
    assert [tuple(o.shape) for o in outs] == [(1, 768, 16, 16), (1, 768, 16, 16), (1, 512, 16, 16)]
    assert [tuple(o.shape) for o in outs512] == [(1, 768, 32, 32), (1, 768, 32, 32), (1, 512, 32, 32)]
    # The reference's analytic count: 86.24 M at 256; the position embedding holds (1 + hw) * 768 so it grows with the crop.
    assert count_parameters(m) == (86_238_720, 86_238_720)
    assert count_parameters(m)[0] + (32 * 32 - 16 * 16) * 768 == 86_828_544  # 86.83 M at 512
    assert _attn_params(m) == 28_348_416  # docs/method.md §2.3: 12 x 2,362,368


def test_full_dinov3_shapes_counts_and_freeze_rule(dinov3_512):
    m = dinov3_512
    assert (m.out_channels, m.text_dim, m.taps) == ((768,) * 3, 768, (2, 7, 11))
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 512, 512))
        outs256 = m(torch.randn(1, 3, 256, 256))
    assert [tuple(o.shape) for o in outs] == [(1, 768, 32, 32)] * 3
    assert [tuple(o.shape) for o in outs256] == [(1, 768, 16, 16)] * 3
    assert count_parameters(m)[0] == 85_659_648  # the reference: 85.66 M (Meta's module adds a 768-d mask_token)
    # Meta's module counts 28,348,416: its 12 x 768 k-biases are multiplied by a zero mask; timm's qkvb
    # variant keeps the k-bias as a zero buffer instead, so it is not a parameter here.
    assert _attn_params(m) == 28_339_200
    assert all(float(b.abs().max()) == 0 for n, b in m.named_buffers() if n.endswith("attn.k_bias"))
