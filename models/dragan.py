"""The Make.Girls.Moe networks (arXiv 1708.05509, fig. 2): an SRResNet-like generator and
an ACGAN-style discriminator without BatchNorm. Every size comes from `ModelConfig`."""

from __future__ import annotations

import torch
from torch import nn

from tasks.params.train import ModelConfig


class GBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the input."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """z (z_dim) ++ tags (n_tags) -> linear to c x s/8 x s/8 -> residual blocks -> 3 x (conv,
    PixelShuffle x2, BN, ReLU), at g_up_channels widths -> 9x9 conv -> tanh: an s x s RGB image in [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        c, self.s0 = cfg.g_channels, cfg.image_size // 8
        self.fc = nn.Linear(cfg.z_dim + cfg.n_tags, c * self.s0 * self.s0)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[GBlock(c) for _ in range(cfg.g_blocks)])
        self.tail = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        up, cin = [], c
        for cout in cfg.g_up_channels or (c, c, c):
            up += [nn.Conv2d(cin, 4 * cout, 3, 1, 1), nn.PixelShuffle(2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.up = nn.Sequential(*up)
        self.out = nn.Conv2d(cin, 3, 9, 1, 4)

    def forward(self, z: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, tags.to(z.dtype)], dim=1)).view(z.shape[0], -1, self.s0, self.s0)
        h = self.head(h)
        h = h + self.tail(self.blocks(h))
        return torch.tanh(self.out(self.up(h)))


class DBlock(nn.Module):
    """conv-LReLU-conv, plus the input, LReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, c, 3, 1, 1))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class MinibatchStd(nn.Module):
    """One more feature map: the standard deviation of the features across a group of samples,
    averaged (ProGAN, Karras et al. 2018). Identical samples give 0 there, so D can tell a
    collapsed generator from the data."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.group, b)
        if b % g:
            raise ValueError(f"minibatch-stddev: a batch of {b} does not split into groups of {g}")
        y = x.float().reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean([1, 2, 3])  # (b/g,)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """Stride-2 stages (4x4 convs, the last 3x3) with residual blocks after each but the last,
    optionally a minibatch-stddev feature map; two linear heads: a real/fake logit (B,) and
    n_tags tag logits (B, n_tags)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        layers, cin = [], 3
        for i, c in enumerate(cfg.d_channels):
            last = i == len(cfg.d_channels) - 1
            layers += [nn.Conv2d(cin, c, 3 if last else 4, 2, 1), nn.LeakyReLU(0.2)]
            if not last:
                layers += [DBlock(c) for _ in range(cfg.d_blocks)]
            cin = c
        if cfg.d_mbstd_group:
            layers.append(MinibatchStd(cfg.d_mbstd_group))
            cin += 1
        self.features = nn.Sequential(*layers)
        side = cfg.image_size >> len(cfg.d_channels)
        self.adv = nn.Linear(cin * side * side, 1)
        self.cls = nn.Linear(cin * side * side, cfg.n_tags)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).flatten(1)
        return self.adv(h).squeeze(1), self.cls(h)


def build_models(cfg: ModelConfig) -> tuple[Generator, Discriminator]:
    return Generator(cfg), Discriminator(cfg)
