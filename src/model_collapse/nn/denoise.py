"""The MLP denoiser of vectors and the time embedding every denoiser shares (the U-Net of images: nn/unet.py)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .vae import ChainLinear


def sinusoid_freqs(embed: int) -> torch.Tensor:
    """The embed // 2 frequencies of a sinusoidal embedding (Vaswani et al. 2017)."""
    half = embed // 2
    return torch.exp(-math.log(10000.0) * torch.arange(half) / half)


def time_embedding(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """(S, B) times in (0, 1] -> (S, B, 2 * len(freqs)): sines and cosines of 1000 t at each frequency."""
    a = (1000.0 * t)[..., None] * freqs
    return torch.cat([torch.sin(a), torch.cos(a)], -1)


def reset_uniform(module: nn.Module, gen: torch.Generator) -> None:
    """PyTorch's default layer init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases of every chain
    layer (anything with a fan_in), from gen, in registration order."""
    for m in module.modules():
        if hasattr(m, "fan_in"):
            bound = 1.0 / math.sqrt(m.fan_in)
            with torch.no_grad():
                for p in (m.weight, m.bias):
                    p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))


class MLPDenoiser(nn.Module):
    """S MLPs (S, B, d) x (S, B) -> (S, B, d) of the point and an embedding of the time (SiLU between)."""

    def __init__(self, chains: int, dim: int, hidden: tuple, embed: int):
        super().__init__()
        widths = [dim + embed, *hidden]
        self.layers = nn.ModuleList(ChainLinear(chains, a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = ChainLinear(chains, widths[-1], dim)
        self.register_buffer("freqs", sinusoid_freqs(embed), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        h = torch.cat([x, time_embedding(t, self.freqs)], -1)
        for layer in self.layers:
            h = torch.nn.functional.silu(layer(h))
        return self.out(h)

    def reset_parameters(self, gen: torch.Generator) -> None:
        reset_uniform(self, gen)
