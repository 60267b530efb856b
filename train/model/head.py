"""The VLG decode head (docs/method.md §4), written for export from day one.

Differences from the reference that change no numbers: the einsum similarity is a broadcast matmul, the
final upsample targets the size the caller passes (the reference hard-codes the crop), attention is an explicit
matmul-softmax-matmul (TensorRT fuses this pattern into MHA), and nothing is done in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _groups(channels: int) -> int:
    # The reference uses channels/16 groups everywhere (8, 4, 2 at full width); tiny heads keep >= 1.
    return max(1, channels // 16)


def _conv_gn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
        nn.GroupNorm(_groups(cout), cout),
        nn.ReLU(),
    )


class ASPP(nn.Module):
    """Atrous pyramid over one class map at a time; the caller adds the residual."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_gn_relu(channels, channels, 1)] + [_conv_gn_relu(channels, channels, 3, d) for d in dilations]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_gn_relu(channels, channels, 1))
        self.project = _conv_gn_relu(channels * (len(dilations) + 2), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q * (c // self.num_heads) ** -0.5) @ k.transpose(-2, -1), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TransformerLayer(nn.Module):
    """Pre-norm encoder layer (LayerNorm eps 1e-5, GELU FFN of `hidden` channels) as in the reference head."""

    def __init__(self, dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class SemanticTransformer(nn.Module):
    """Self-attention across the N class tokens at each pooled location, then back to full size, residual."""

    def __init__(self, channels: int, text_channels: int, num_heads: int, pool_size: tuple[int, int]):
        super().__init__()
        self.channels = channels
        self.pool_size = pool_size
        # The FFN is 4 x the visual width, whatever the text width (docs/method.md §4).
        self.transformer = TransformerLayer(channels + text_channels, num_heads, 4 * channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor, batch: int) -> torch.Tensor:
        # x: [(B*N), C, h, w]; text: [N, Ct] (the same class vectors for every image)
        bn, c, h, w = x.shape
        n = bn // batch
        pooled = F.avg_pool2d(x, self.pool_size)
        ph, pw = pooled.shape[-2:]
        tokens = pooled.reshape(batch, n, c, ph * pw).permute(0, 3, 1, 2).reshape(batch * ph * pw, n, c)
        text_tokens = text.unsqueeze(0).expand(batch * ph * pw, n, text.shape[-1])
        tokens = self.transformer(torch.cat([tokens, text_tokens], dim=-1))[..., : self.channels]
        tokens = tokens.reshape(batch, ph * pw, n, c).permute(0, 2, 3, 1).reshape(bn, c, ph, pw)
        return x + F.interpolate(tokens, size=(h, w), mode="bilinear", align_corners=True)


class Up(nn.Module):
    """Transposed-conv x2, concat the (per-class repeated) skip map, two conv-GN-ReLU."""

    def __init__(self, cin: int, skip_channels: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin - skip_channels, 2, stride=2)
        self.conv = nn.Sequential(_conv_gn_relu(cin, cout), _conv_gn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        b = skip.shape[0]
        skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=True)
        skip = skip.unsqueeze(1).expand(b, x.shape[0] // b, *skip.shape[1:]).reshape(x.shape[0], *skip.shape[1:])
        return self.conv(torch.cat([x, skip], dim=1))


class VLGHead(nn.Module):
    """Class-agnostic decoding of per-class cosine-similarity maps (docs/method.md §4).

    ``feats`` is the backbone's tapped list: the last map is compared with the class vectors, the others are skip
    maps consumed deepest first. Cost grows linearly with the class count because classes are folded into the batch.
    """

    def __init__(
        self,
        img_channels: int,
        skip_in_channels: tuple[int, ...],
        text_in_channels: int,
        *,
        channels: int = 128,
        text_channels: int = 128,
        up_channels: tuple[int, ...] = (64, 32),
        skip_channels: tuple[int, ...] = (32, 16),
        num_layers: int = 2,
        num_heads: int = 4,
        pool_size: tuple[int, int] = (4, 4),
        conv1_ksize: int = 7,
    ):
        super().__init__()
        if not (len(skip_in_channels) == len(up_channels) == len(skip_channels)):
            raise ValueError("skip_in_channels, up_channels and skip_channels must have the same length")
        self.img_channels = img_channels
        self.text_in_channels = text_in_channels
        self.conv1 = nn.Conv2d(1, channels, conv1_ksize, padding=conv1_ksize // 2)
        self.aspp = ASPP(channels)
        self.text_proj = nn.Sequential(nn.Linear(text_in_channels, text_channels), nn.ReLU())
        self.layers = nn.ModuleList(
            SemanticTransformer(channels, text_channels, num_heads, pool_size) for _ in range(num_layers)
        )
        # Skip maps are consumed deepest first: skip_in_channels[0] is the map just before the last one.
        self.skip_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())
            for cin, cout in zip(skip_in_channels, skip_channels)
        )
        ups, cin = [], channels
        for skip_ch, cout in zip(skip_channels, up_channels):
            ups.append(Up(cin, skip_ch, cout))
            cin = cout
        self.ups = nn.ModuleList(ups)
        self.head = nn.Conv2d(cin, 1, 3, padding=1)

    def forward(self, feats: list[torch.Tensor], text: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        return self.decode_folded(feats, *self.fold_text(text), out_size)

    def fold_text(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The half of the head that depends only on the class vectors: (normalised [N, Ct], projected [N, C]).

        Constant at inference, so `co2s.export` computes it once and bakes both into the graph.
        """
        # Non-finite entries clamp to +-1e4 as in the reference, so an overflowing entry still points the way
        # (nan_to_num's default, the float maximum, would overflow the norm and zero the whole vector).
        text = F.normalize(torch.nan_to_num(text, nan=0.0, posinf=1e4, neginf=-1e4), dim=-1)
        return text, self.text_proj(text)

    def decode_folded(
        self, feats: list[torch.Tensor], text: torch.Tensor, text_feats: torch.Tensor, out_size: tuple[int, int]
    ) -> torch.Tensor:
        """`forward` with the class vectors already folded by `fold_text`."""
        img, skips = feats[-1], feats[:-1][::-1]
        b, _, h, w = img.shape
        n = text.shape[0]
        sim = torch.matmul(text, F.normalize(img, dim=1).flatten(2))  # cosine similarity [B, N, h*w]
        x = self.conv1(sim.reshape(b * n, 1, h, w))
        x = x + self.aspp(x)
        for layer in self.layers:
            x = layer(x, text_feats, b)
        for up, proj, skip in zip(self.ups, self.skip_proj, skips):
            x = up(x, proj(skip))
        logits = self.head(x).reshape(b, n, x.shape[-2], x.shape[-1])
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
