"""A small U-Net denoiser of images (Ronneberger et al. 2015, as DDPM uses it: Ho et al. 2020), batched over chains.

Per resolution one residual block (GroupNorm, SiLU, 3x3 convolution, twice, with the time embedding
added between), average pooling down and nearest-neighbour upsampling back, skip connections
concatenated on the way up. The time t in (0, 1] enters as a sinusoidal embedding through a two-layer
MLP; a class-conditional net adds a learned embedding of the label, with one extra "no label" entry
that classifier-free guidance trains on dropped labels (Ho & Salimans 2022).

Chains as in nn/vae.py: S independent nets are ONE module, maps are (B, S*C, H, W) with chain s owning
channels s*C .. (s+1)*C - 1, convolutions grouped (groups = S), and every parameter has a leading chain
axis (the trainer keeps each chain's best weights by indexing it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .denoise import reset_uniform, sinusoid_freqs, time_embedding
from .vae import ChainConv2d, ChainLinear


def unet_fits(image_shape: tuple[int, int], levels: int) -> bool:
    """Whether `levels` resolutions (levels - 1 halvings) divide the image evenly."""
    step = 2 ** (levels - 1)
    return all(n % step == 0 and n // step >= 1 for n in image_shape)


class ChainGroupNorm(nn.Module):
    """GroupNorm of (B, S*C, H, W) with `groups` groups per chain (never across chains); affine (S, C)."""

    def __init__(self, chains: int, channels: int, groups: int):
        super().__init__()
        self.groups = chains * math.gcd(groups, channels)
        self.weight = nn.Parameter(torch.ones(chains, channels))
        self.bias = nn.Parameter(torch.zeros(chains, channels))

    def extra_repr(self) -> str:
        return f"chains={self.weight.shape[0]}, channels={self.weight.shape[1]}, groups={self.groups}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.group_norm(x, self.groups, eps=1e-5)
        return h * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


def chain_cat(a: torch.Tensor, b: torch.Tensor, chains: int) -> torch.Tensor:
    """Concatenate channels chain by chain: (B, S*Ca, H, W), (B, S*Cb, H, W) -> (B, S*(Ca+Cb), H, W)."""
    n, _, h, w = a.shape
    return torch.cat([a.reshape(n, chains, -1, h, w), b.reshape(n, chains, -1, h, w)], 2).reshape(n, -1, h, w)


def per_channel(v: torch.Tensor) -> torch.Tensor:
    """(S, B, C) -> (B, S*C, 1, 1), to add to a map."""
    s, b, c = v.shape
    return v.transpose(0, 1).reshape(b, s * c, 1, 1)


class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x))) + emb))), with a 1x1 convolution on the skip when widths differ."""

    def __init__(self, chains: int, c_in: int, c_out: int, embed: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = ChainGroupNorm(chains, c_in, groups), ChainConv2d(chains, c_in, c_out, 3, stride=1)
        self.emb = ChainLinear(chains, embed, c_out)
        self.norm2, self.conv2 = ChainGroupNorm(chains, c_out, groups), ChainConv2d(chains, c_out, c_out, 3, stride=1)
        self.skip = ChainConv2d(chains, c_in, c_out, 1, stride=1) if c_in != c_out else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + per_channel(self.emb(emb))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class UNet(nn.Module):
    """S U-Nets (S, B, H*W) x (S, B) [x (S, B) labels] -> (S, B, H*W): the predicted noise or velocity."""

    def __init__(self, chains: int, image_shape: tuple[int, int], channels=(32, 64), embed: int = 64,
                 classes: int = 0, groups: int = 8):
        super().__init__()
        if not unet_fits(image_shape, len(channels)):
            raise ValueError(f"a U-Net of {len(channels)} resolutions needs height and width divisible by "
                             f"{2 ** (len(channels) - 1)}, got {image_shape[0]}x{image_shape[1]}")
        self.chains, self.image_shape, self.channels, self.classes = chains, tuple(image_shape), tuple(channels), classes
        self.register_buffer("freqs", sinusoid_freqs(embed), persistent=False)
        self.t1, self.t2 = ChainLinear(chains, embed, embed), ChainLinear(chains, embed, embed)
        # labels 0 .. classes - 1, and `classes` itself = no label (classifier-free guidance's null class)
        self.label = nn.Parameter(torch.zeros(chains, classes + 1, embed)) if classes else None
        c0 = channels[0]
        self.conv_in = ChainConv2d(chains, 1, c0, 3, stride=1)
        widths = [c0, *channels]
        self.down = nn.ModuleList(ResBlock(chains, a, b, embed, groups) for a, b in zip(widths[:-1], widths[1:]))
        self.mid = ResBlock(chains, channels[-1], channels[-1], embed, groups)
        ups, cur = [], channels[-1]
        for c in channels[::-1]:
            ups.append(ResBlock(chains, cur + c, c, embed, groups))
            cur = c
        self.up = nn.ModuleList(ups)
        self.norm_out = ChainGroupNorm(chains, c0, groups)
        self.conv_out = ChainConv2d(chains, c0, 1, 3, stride=1)

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, channels={self.channels}, classes={self.classes}"

    def reset_parameters(self, gen: torch.Generator) -> None:
        """PyTorch's default init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for convolutions and linear layers, norms at
        (1, 0), label embeddings N(0, 1) (nn.Embedding's), all from gen."""
        reset_uniform(self, gen)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, ChainGroupNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            if self.label is not None:
                self.label.copy_(torch.randn(self.label.shape, generator=gen))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        s, b, _ = x.shape
        emb = self.t2(F.silu(self.t1(time_embedding(t, self.freqs))))
        if self.label is not None:
            y = torch.full((s, b), self.classes, device=x.device) if y is None else y.long()
            emb = emb + torch.gather(self.label, 1, y[..., None].expand(-1, -1, emb.shape[-1]))
        h = self.conv_in(x.reshape(s, b, 1, *self.image_shape).transpose(0, 1).reshape(b, s, *self.image_shape))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            h = block(chain_cat(h, skips[-1 - i], s), emb)
            if i < len(self.up) - 1:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        out = self.conv_out(F.silu(self.norm_out(h)))          # (B, S, H, W)
        return out.reshape(b, s, -1).transpose(0, 1)
