"""A variational autoencoder batched over chains, written as pytorch/examples' vae/main.py.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes": an encoder
q(z|x) = N(mu(x), diag(exp(logvar(x)))), a prior p(z) = N(0, I), a decoder
p(x|z), and the loss -ELBO = reconstruction + KL(q(z|x) || p(z)) with the KL in
closed form (their Appendix B). Shumailov et al. (Nature 2024) train such a VAE
on MNIST, sample from its prior and train the next VAE on those samples.

Chains: S independent VAEs are ONE module. A linear layer holds (S, in, out)
weights applied with ``torch.baddbmm``, a convolution is a grouped convolution
with groups = S, every activation is (S, B, ...), and ``loss`` returns the S
per-chain mean losses: their sum gives each chain exactly its own gradient, and
Adam, being elementwise, updates each chain as S separate optimisers would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = 0.1307, 0.3081  # MNIST pixel mean/std on [0, 1]; W2 normalises every image set with these


def normalise(raw: torch.Tensor) -> torch.Tensor:
    """0..255 pixels (any dtype) -> the network's input scale (x/255 - MEAN)/STD, float32."""
    return (raw.float() * (1.0 / 255.0) - MEAN) * (1.0 / STD)


class ChainLinear(nn.Module):
    """S independent linear layers: (S, B, in) -> (S, B, out)."""

    def __init__(self, chains: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(chains, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(chains, 1, out_features))
        self.fan_in = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return "chains={}, in_features={}, out_features={}".format(*self.weight.shape)


class ChainConv2d(nn.Module):
    """S independent 2-d convolutions (or transposed ones) as one grouped convolution.

    Maps are (B, S*C, H, W): chain s owns channels s*C .. (s+1)*C - 1. Weights are
    (S, Cout, Cin, k, k), or (S, Cin, Cout, k, k) when transposed. stride 2 halves the map (a
    transposed one doubles it); stride 1 keeps it (padding k // 2, odd k: the U-Net's convolutions).
    """

    def __init__(self, chains: int, c_in: int, c_out: int, k: int, transpose: bool = False, stride: int = 2):
        super().__init__()
        shape = (c_in, c_out) if transpose else (c_out, c_in)
        self.weight = nn.Parameter(torch.empty(chains, *shape, k, k))
        self.bias = nn.Parameter(torch.empty(chains, c_out))
        self.transpose, self.chains, self.stride = transpose, chains, stride
        self.padding = 1 if stride == 2 else k // 2
        self.fan_in = c_in * k * k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight.flatten(0, 1), self.bias.flatten()
        if self.transpose:  # 4x4 stride 2 doubles the map
            return F.conv_transpose2d(x, w, b, stride=2, padding=1, groups=self.chains)
        return F.conv2d(x, w, b, stride=self.stride, padding=self.padding, groups=self.chains)

    def extra_repr(self) -> str:
        return (f"chains={self.chains}, weight={tuple(self.weight.shape[1:])}, transpose={self.transpose}, "
                f"stride={self.stride}")


def _dense(chains: int, dims: list[int], relu_last: bool) -> nn.Sequential:
    """ChainLinear layers through widths dims, ReLU between (and after the last if relu_last)."""
    layers: list[nn.Module] = []
    for j, (i, o) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(ChainLinear(chains, i, o))
        if j < len(dims) - 2 or relu_last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """S chain-batched VAEs: an MLP, or two stride-2 convs before the dense layers (arch="conv")."""

    def __init__(self, chains: int, image_shape: tuple[int, int], hidden=(128, 128), latent: int = 20,
                 arch: str = "mlp", channels=(32, 64), decoder: str = "gaussian"):
        super().__init__()
        self.chains, self.image_shape, self.latent = chains, tuple(image_shape), latent
        self.arch, self.channels, self.decoder_kind = arch, tuple(channels), decoder
        maps = [self.image_shape]                     # conv: spatial size after each conv, e.g. 28, 14, 7
        for _ in channels if arch == "conv" else ():
            maps.append(tuple((n - 1) // 2 + 1 for n in maps[-1]))
        self.maps = maps
        pixels = image_shape[0] * image_shape[1]
        feat = pixels if arch == "mlp" else channels[-1] * maps[-1][0] * maps[-1][1]
        chans = [1, *channels]
        # Registration order = init draw order: econv, enc, head, dec, dconv.
        self.econv = nn.ModuleList([ChainConv2d(chains, i, o, 3) for i, o in zip(chans[:-1], chans[1:])]
                                   if arch == "conv" else [])
        self.enc = _dense(chains, [feat, *hidden], relu_last=True)
        self.head = ChainLinear(chains, hidden[-1], 2 * latent)    # -> [mu, logvar]
        self.dec = _dense(chains, [latent, *hidden[::-1], feat], relu_last=arch == "conv")
        self.dconv = nn.ModuleList([ChainConv2d(chains, i, o, 4, transpose=True)
                                    for i, o in zip(chans[::-1][:-1], chans[::-1][1:])] if arch == "conv" else [])

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, latent={self.latent}, decoder={self.decoder_kind}"

    def reset_parameters(self, gen: torch.Generator) -> None:
        """PyTorch's default layer init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, from gen."""
        for m in self.modules():
            if isinstance(m, (ChainLinear, ChainConv2d)):
                bound = 1.0 / math.sqrt(m.fan_in)
                with torch.no_grad():
                    for p in (m.weight, m.bias):
                        p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))

    def _maps(self, h: torch.Tensor, c: int, hw) -> torch.Tensor:
        """(S, B, c*h*w) -> (B, S*c, h, w): chains become channel groups."""
        s, b = h.shape[:2]
        return h.reshape(s, b, c, *hw).transpose(0, 1).reshape(b, s * c, *hw)

    def _flat(self, m: torch.Tensor) -> torch.Tensor:
        """(B, S*c, h, w) -> (S, B, c*h*w)."""
        return m.reshape(m.shape[0], self.chains, -1).transpose(0, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (S, B, P) -> latent mean and log-variance, each (S, B, latent)."""
        if self.econv:
            h = self._maps(x, 1, self.maps[0])
            for conv in self.econv:
                h = torch.relu(conv(h))
            x = self._flat(h)
        return self.head(self.enc(x)).chunk(2, dim=-1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps (K&W 2014, Sec. 2.4); eps (S, B, latent) ~ N(0, I) comes from the caller's generator."""
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (S, B, latent) -> (S, B, P): the normalised mean image, or Bernoulli logits."""
        h = self.dec(z)
        if not self.dconv:
            return h
        h = self._maps(h, self.channels[-1], self.maps[-1])
        for j, (conv, hw) in enumerate(zip(self.dconv, self.maps[:-1][::-1])):
            h = conv(h)[..., :hw[0], :hw[1]]          # crop odd sizes (7 -> 14 fine, 2 -> 4 fine)
            if j < len(self.dconv) - 1:
                h = torch.relu(h)
        return self._flat(h)

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        """Normalised images (S, B, P) -> decoder output (S, B, P), mu and logvar (S, B, latent)."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, eps)), mu, logvar

    def loss_terms(self, raw: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and KL per image, each (S, B), of raw pixels (S, B, P) on 0..255."""
        x = normalise(raw)
        out, mu, logvar = self(x, eps)
        if self.decoder_kind == "bernoulli":                   # BCE on [0, 1]
            recon = F.binary_cross_entropy_with_logits(out, raw.float() * (1.0 / 255.0), reduction="none").sum(-1)
        else:                                                  # W2: sum of squares on the normalised scale
            recon = (out - x).square().sum(-1)
        kl = -0.5 * (1.0 + logvar - mu.square() - logvar.exp()).sum(-1)   # K&W 2014, Appendix B
        return recon, kl

    def loss(self, raw: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Per-chain mean -ELBO over a batch: raw (S, B, P), eps (S, B, latent) -> (S,)."""
        recon, kl = self.loss_terms(raw, eps)
        return (recon + kl).mean(1)

    def to_pixels(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> mean image on 0..255, float32 (S, B, P)."""
        if self.decoder_kind == "bernoulli":
            return torch.sigmoid(out) * 255.0
        return (out * STD + MEAN).clamp(0.0, 1.0) * 255.0
