"""A variational autoencoder batched over chains, and its training step.

The VAE is Kingma & Welling (2014), "Auto-Encoding Variational Bayes": an
encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))), a prior p(z) = N(0, I), a
decoder p(x|z), and the loss -ELBO = reconstruction + KL(q(z|x) || p(z)) with
the KL in closed form (their Appendix B). Shumailov et al. (Nature 2024) train
such a VAE on MNIST, sample from its prior, and train the next VAE on those
samples; the family in ``families/vae.py`` drives that loop.

Chains: S independent VAEs are ONE batched model. Every weight has a leading
chain axis (a linear layer is (S, in, out), applied with ``torch.baddbmm``;
conv layers are grouped convolutions with groups = S), every activation is
(S, B, ...), and the loss is the sum of the S per-chain mean losses, so chain
s's gradient is exactly its own model's gradient and Adam, being elementwise,
updates each chain exactly as S separate optimisers would. What it buys depends
on how much of a step is fixed overhead: 4x the model-epochs/s for a small 8x8
VAE with 8 chains, but only ~1.1x for the W2 MNIST VAE at batch 128, whose
compiled single-chain step is already mostly matmul (benchmarks/bench_vae.py).

All weights live in one flat float32 buffer; the network functions take a
dict name -> (S, ...) view of it, so the same code serves autograd (eager),
``torch.func.grad`` (inside ``torch.compile``) and numpy state dicts.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MEAN, STD = 0.1307, 0.3081  # MNIST pixel mean/std on [0, 1]; W2 normalises every image set with these
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam defaults
EVAL_CHUNK = 4096  # items per chain per inference call: big, since inference keeps no graph

Params = dict[str, torch.Tensor]


@contextlib.contextmanager
def num_threads(n: int):
    """Temporarily use n torch intra-op threads (n = 0: leave torch's setting, i.e. all cores)."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(old)


def _conv_size(n: int) -> int:
    """Output length of a 3x3, stride-2, padding-1 convolution (28 -> 14 -> 7, 8 -> 4 -> 2)."""
    return (n - 1) // 2 + 1


@dataclass(frozen=True)
class VAENet:
    """Architecture of S chain-batched VAEs; pure functions of a params dict."""

    chains: int
    image_shape: tuple[int, int]
    hidden: tuple[int, ...] = (128, 128)
    latent: int = 20
    arch: str = "mlp"              # "mlp" or "conv"
    channels: tuple[int, ...] = (32, 64)   # conv only: two 3x3 stride-2 conv layers
    decoder: str = "gaussian"      # "gaussian" (sum of squares, normalised data) or "bernoulli" (BCE on [0, 1])

    @property
    def pixels(self) -> int:
        """P = H * W."""
        return self.image_shape[0] * self.image_shape[1]

    # ---- shapes -------------------------------------------------------------
    def conv_maps(self) -> list[tuple[int, int]]:
        """Spatial sizes after each encoder conv: [(H, W), (h1, w1), (h2, w2)]."""
        maps = [tuple(self.image_shape)]
        for _ in self.channels:
            h, w = maps[-1]
            maps.append((_conv_size(h), _conv_size(w)))
        return maps

    def feature_width(self) -> int:
        """Width of the flat encoder features that enter the dense layers."""
        if self.arch == "mlp":
            return self.pixels
        h, w = self.conv_maps()[-1]
        return self.channels[-1] * h * w

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape (leading chain axis S) of every parameter, in a fixed order."""
        s, out = self.chains, {}
        if self.arch == "conv":
            c_in = 1
            for j, c in enumerate(self.channels):     # conv2d weight (S, Cout, Cin, 3, 3)
                out[f"econv{j}.w"], out[f"econv{j}.b"] = (s, c, c_in, 3, 3), (s, c)
                c_in = c
        dims = [self.feature_width(), *self.hidden]
        for j, (i, o) in enumerate(zip(dims[:-1], dims[1:])):
            out[f"enc{j}.w"], out[f"enc{j}.b"] = (s, i, o), (s, 1, o)
        out["head.w"], out["head.b"] = (s, dims[-1], 2 * self.latent), (s, 1, 2 * self.latent)
        last = self.feature_width() if self.arch == "conv" else self.pixels
        dims = [self.latent, *self.hidden[::-1], last]
        for j, (i, o) in enumerate(zip(dims[:-1], dims[1:])):
            out[f"dec{j}.w"], out[f"dec{j}.b"] = (s, i, o), (s, 1, o)
        if self.arch == "conv":
            chans = [*self.channels[::-1], 1]
            for j, (i, o) in enumerate(zip(chans[:-1], chans[1:])):  # conv_transpose2d weight (S, Cin, Cout, 4, 4)
                out[f"dconv{j}.w"], out[f"dconv{j}.b"] = (s, i, o, 4, 4), (s, o)
        return out

    def flops_per_item(self) -> float:
        """Dense-layer FLOPs of one training step per item and chain (forward + backward = 3x forward; convs not counted)."""
        macs = sum(math.prod(v[1:]) for k, v in self.shapes().items() if k.endswith(".w") and "conv" not in k)
        return 6.0 * macs

    # ---- init ---------------------------------------------------------------
    def init(self, gen: torch.Generator) -> Params:
        """PyTorch's default layer init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from `gen`."""
        ps = {}
        for name, shape in self.shapes().items():
            wshape = shape if name.endswith(".w") else self.shapes()[name[:-2] + ".w"]
            if "dconv" in name:
                fan_in = wshape[1] * 16
            elif "conv" in name:
                fan_in = wshape[2] * 9
            else:
                fan_in = wshape[1]
            bound = 1.0 / math.sqrt(fan_in)
            ps[name] = torch.empty(shape).uniform_(-bound, bound, generator=gen)
        return ps

    # ---- forward ------------------------------------------------------------
    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """0..255 pixels (any dtype) -> the network's input scale, (x/255 - MEAN)/STD, float32."""
        return (raw.float() * (1.0 / 255.0) - MEAN) * (1.0 / STD)

    def _dense(self, ps: Params, h: torch.Tensor, prefix: str, n: int, relu_last: bool) -> torch.Tensor:
        """n batched linear layers (S, B, in) -> (S, B, out), ReLU between (and after, if relu_last)."""
        for j in range(n):
            h = torch.baddbmm(ps[f"{prefix}{j}.b"], h, ps[f"{prefix}{j}.w"])
            if j < n - 1 or relu_last:
                h = torch.relu(h)
        return h

    def _to_maps(self, h: torch.Tensor, c: int, hw: tuple[int, int]) -> torch.Tensor:
        """(S, B, c*h*w) -> (B, S*c, h, w): chains become channel groups."""
        s, b = h.shape[:2]
        return h.reshape(s, b, c, *hw).transpose(0, 1).reshape(b, s * c, *hw)

    def _from_maps(self, m: torch.Tensor) -> torch.Tensor:
        """(B, S*c, h, w) -> (S, B, c*h*w)."""
        b = m.shape[0]
        return m.reshape(b, self.chains, -1).transpose(0, 1)

    def encode(self, ps: Params, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (S, B, P) -> latent mean and log-variance, each (S, B, latent)."""
        h = x
        if self.arch == "conv":
            s, maps = self.chains, self.conv_maps()
            h = self._to_maps(x, 1, maps[0])
            for j, c in enumerate(self.channels):
                w, bias = ps[f"econv{j}.w"], ps[f"econv{j}.b"]
                h = torch.relu(F.conv2d(h, w.reshape(s * c, *w.shape[2:]), bias.reshape(-1),
                                        stride=2, padding=1, groups=s))
            h = self._from_maps(h)
        h = self._dense(ps, h, "enc", len(self.hidden), relu_last=True)
        stats = torch.baddbmm(ps["head.b"], h, ps["head.w"])            # (S, B, 2*latent)
        return stats[..., :self.latent], stats[..., self.latent:]

    def decode_raw(self, ps: Params, z: torch.Tensor) -> torch.Tensor:
        """Latents (S, B, latent) -> decoder output (S, B, P): normalised mean or Bernoulli logits."""
        n = len(self.hidden) + 1
        if self.arch == "mlp":
            return self._dense(ps, z, "dec", n, relu_last=False)
        s, maps = self.chains, self.conv_maps()
        h = self._to_maps(self._dense(ps, z, "dec", n, relu_last=True), self.channels[-1], maps[-1])
        sizes = maps[:-1][::-1]                                          # crop targets, e.g. (14,14), (28,28)
        for j, hw in enumerate(sizes):
            w, bias = ps[f"dconv{j}.w"], ps[f"dconv{j}.b"]
            # 4x4 stride-2 transposed conv doubles the map; crop odd sizes (7 -> 14 fine, 2 -> 4 fine).
            h = F.conv_transpose2d(h, w.reshape(s * w.shape[1], *w.shape[2:]), bias.reshape(-1),
                                   stride=2, padding=1, groups=s)[..., :hw[0], :hw[1]]
            if j < len(sizes) - 1:
                h = torch.relu(h)
        return self._from_maps(h)

    def to_pixels(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> mean image on 0..255, float32 (S, B, P)."""
        if self.decoder == "bernoulli":
            return torch.sigmoid(out) * 255.0
        return ((out * STD + MEAN).clamp(0.0, 1.0)) * 255.0

    def losses(self, ps: Params, raw: torch.Tensor, eps: torch.Tensor):
        """Per-chain mean -ELBO, reconstruction and KL over a batch: raw (S, B, P) 0..255, eps (S, B, latent) -> 3 x (S,)."""
        x = self.normalise(raw)
        mu, logvar = self.encode(ps, x)
        z = mu + torch.exp(0.5 * logvar) * eps                          # reparameterisation (K&W 2014, Sec. 2.4)
        out = self.decode_raw(ps, z)
        if self.decoder == "bernoulli":
            target = raw.float() * (1.0 / 255.0)
            recon = F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(-1)
        else:
            recon = (out - x).square().sum(-1)                           # W2: sum of squares, normalised scale
        kl = -0.5 * (1.0 + logvar - mu.square() - logvar.exp()).sum(-1)  # K&W 2014, Appendix B
        return (recon + kl).mean(1), recon.mean(1), kl.mean(1)


# ---- flat parameter buffer --------------------------------------------------
# All weights live in ONE contiguous float32 vector; each layer is a view of a
# segment (the segment holds that layer's (S, ...) tensor, chain-major). One
# buffer means one Adam kernel over all weights, and few tensors for
# torch.compile's guards to check on every call.
def layout(net: VAENet) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, offset into the flat buffer) of every parameter."""
    out, off = [], 0
    for name, shape in net.shapes().items():
        out.append((name, shape, off))
        off += math.prod(shape)
    return out


def unflatten(net: VAENet, flat: torch.Tensor) -> Params:
    """Views of the flat buffer (T,) as named (S, ...) parameters."""
    return {name: flat[off:off + math.prod(shape)].view(shape) for name, shape, off in layout(net)}


def init_flat(net: VAENet, gen: torch.Generator) -> torch.Tensor:
    """A fresh flat buffer (T,) with PyTorch's default layer init."""
    ps = net.init(gen)
    return torch.cat([ps[name].reshape(-1) for name, _, _ in layout(net)])


# ---- training steps ----------------------------------------------------------
def functional_step(net: VAENet, flat: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
                    hyper: torch.Tensor, raw: torch.Tensor, eps: torch.Tensor, acc: torch.Tensor) -> None:
    """One Adam step as a pure tensor program (torch.func.grad), so torch.compile builds ONE graph.

    flat, m, v: (T,) weights and Adam moments, updated in place; hyper (2,): this step's
    lr / (1 - b1^t) and 1 / sqrt(1 - b2^t) (computed outside: scalar pow inside the graph
    would be evaluated per element); raw (S, B, P) batch on 0..255; eps (S, B, latent);
    acc (S,) += the batch's per-chain losses.
    """
    def loss(ps):
        per = net.losses(ps, raw, eps)[0]
        return per.sum(), per.detach()           # sum over chains: each chain gets its own gradient
    grads, per = torch.func.grad(loss, has_aux=True)(unflatten(net, flat))
    # Gradient w.r.t. the named views, then one cat: each matmul writes straight into its
    # segment (differentiating w.r.t. `flat` itself would sum zero-padded slices per element).
    g = torch.cat([x.reshape(-1) for x in grads.values()])
    acc.add_(per)
    # torch.optim.Adam's update (no weight decay), written out so it fuses into one kernel.
    b1, b2 = BETAS
    m.lerp_(g, 1.0 - b1)
    v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
    flat.sub_(hyper[0] * m / (v.sqrt() * hyper[1] + ADAM_EPS))


def adam_schedule(start: int, steps: int, lr: float) -> torch.Tensor:
    """Bias-corrected Adam factors for steps start+1 .. start+steps: (steps, 2) float32."""
    t = torch.arange(start + 1, start + steps + 1, dtype=torch.float64)
    b1, b2 = BETAS
    return torch.stack([lr / (1 - b1 ** t), 1 / torch.sqrt(1 - b2 ** t)], 1).float()


class Trainer:
    """Adam over a chain-batched VAE: compiled functional step when possible, else eager autograd + fused Adam.

    The optimiser is created per fit (its moments start at zero each
    generation), so the weights alone determine what a fit does next.
    """

    _compiled: dict = {}   # net -> compiled step (or None after a failure), shared process-wide

    def __init__(self, net: VAENet, flat: torch.Tensor, lr: float, compile: bool):
        self.net, self.flat, self.lr, self.steps = net, flat, lr, 0
        self.fn = self._compiled_step() if compile else None
        if self.fn is not None:
            self.m, self.v = torch.zeros_like(flat), torch.zeros_like(flat)
        else:
            # Leaves that alias the flat buffer: autograd writes per-layer grads, fused Adam
            # updates the views in place, so `flat` always holds the current weights.
            self.leaves = {k: p.detach().requires_grad_(True) for k, p in unflatten(net, flat).items()}
            self.opt = _adam(list(self.leaves.values()), lr)

    def _compiled_step(self):
        """The torch.compile'd functional step for this architecture (cached per process), or None."""
        if self.net not in Trainer._compiled:
            try:
                fn = functools.partial(functional_step, self.net)
                Trainer._compiled[self.net] = torch.compile(fn, dynamic=False, fullgraph=True)
            except Exception as e:  # noqa: BLE001 - any compile failure falls back to eager
                warnings.warn(f"torch.compile unavailable ({e}); training the VAE eagerly", stacklevel=2)
                Trainer._compiled[self.net] = None
        return Trainer._compiled[self.net]

    def epoch(self, batches: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """One pass over batches (steps, S, B, P) on 0..255 with noise eps (steps, S, B, latent); mean loss (S,)."""
        acc = torch.zeros(self.net.chains)
        hyper = adam_schedule(self.steps, len(batches), self.lr)
        for i in range(len(batches)):
            self._step(batches[i], eps[i], hyper[i], acc)
            self.steps += 1
        return acc / max(len(batches), 1)

    def _step(self, raw: torch.Tensor, eps: torch.Tensor, hyper: torch.Tensor, acc: torch.Tensor) -> None:
        """One optimisation step on a batch raw (S, B, P); adds per-chain losses to acc (S,)."""
        if self.fn is not None:
            try:
                self.fn(self.flat, self.m, self.v, hyper, raw, eps, acc)
                return
            except Exception as e:  # noqa: BLE001 - e.g. no working C++ compiler: eager from now on
                if self.steps > 0:
                    raise
                warnings.warn(f"compiled VAE step failed ({type(e).__name__}: {e}); training eagerly",
                              stacklevel=2)
                Trainer._compiled[self.net] = None
                self.__init__(self.net, self.flat, self.lr, compile=False)
        per = self.net.losses(self.leaves, raw, eps)[0]
        self.opt.zero_grad(set_to_none=True)
        per.sum().backward()
        self.opt.step()
        acc.add_(per.detach())


def _adam(params: list, lr: float) -> torch.optim.Adam:
    """Fused Adam where this torch build has it (about 1.4x faster steps at batch 128 on CPU)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


@torch.inference_mode()
def evaluate(net: VAENet, flat: torch.Tensor, data: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-chain mean -ELBO, reconstruction and KL (each (S,)) of data (S, N, P) with fixed noise eps (S, N, latent)."""
    ps, n = unflatten(net, flat), data.shape[1]
    tot = torch.zeros(3, net.chains, dtype=torch.float64)
    for a in range(0, n, EVAL_CHUNK):
        b = min(n, a + EVAL_CHUNK)
        tot += torch.stack(net.losses(ps, data[:, a:b], eps[:, a:b])).double() * (b - a)
    return tuple(tot / n)
