"""RFNet: RGB-D real-time fusion network (Sun et al., RA-L 2020).

Two ResNet-18 encoders (RGB and depth) whose stage outputs are fused by channel
attention, a spatial pyramid pooling (SPP) context module and a three-step
upsampling decoder with skip connections from the RGB encoder. Module and
parameter names follow the original implementation, so Ianvs/RFNet checkpoints
(`torch.load(p)['state_dict']`) load unchanged.

Behaviour kept from the original, because checkpoints were trained with it:
- BasicBlock applies its final ReLU in place, so the decoder skip is the
  post-ReLU stage output.
- In RGB-D mode the decoder skips come from the RGB encoder only; the fused
  features feed the next stage.
- SPP pools on grids of (g, round(g * W/H)) for g in (8, 4, 2).

Deliberately not kept: the original's `.detach()` calls between stages (they
silently freeze most of the encoder during training); freezing is a training
choice and lives in the trainer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SPP_GRIDS = (8, 4, 2)
DECODER_FEATURES = 128
BN_MOMENTUM_SPP = 0.01 / 2


@dataclass(frozen=True)
class RFNetConfig:
    """Architecture hyper-parameters. The defaults are the Ianvs/RFNet ones."""

    num_classes: int = 30
    num_features: int = DECODER_FEATURES
    use_bn: bool = True


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _adaptive_pool_matrix(in_size: int, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """Averaging matrix (out_size, in_size) with PyTorch's adaptive-pool bins.

    Bin i covers [floor(i*n/m), ceil((i+1)*n/m)). Written as a matmul because
    ONNX and TensorRT have no adaptive pooling for sizes that do not divide.
    """
    m = torch.zeros(out_size, in_size, dtype=like.dtype, device=like.device)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool2d(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph = _adaptive_pool_matrix(h, out_hw[0], x)
    pw = _adaptive_pool_matrix(w, out_hw[1], x)
    return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))


class BNReluConv(nn.Sequential):
    """BatchNorm -> ReLU -> Conv (pre-activation), the original's `_BNReluConv`."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, use_bn: bool = True,
                 bn_momentum: float = 0.1):
        super().__init__()
        if use_bn:
            self.add_module("norm", nn.BatchNorm2d(c_in, momentum=bn_momentum))
        self.add_module("relu", nn.ReLU(inplace=use_bn))
        self.add_module("conv", nn.Conv2d(c_in, c_out, kernel_size=k, padding=k // 2, bias=False))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1, use_bn: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out) if use_bn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out) if use_bn else nn.Identity()
        self.downsample = None
        if stride != 1 or c_in != c_out:
            layers = [nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)]
            if use_bn:
                layers.append(nn.BatchNorm2d(c_out))
            self.downsample = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


def _stage(c_in: int, c_out: int, stride: int, use_bn: bool) -> nn.Sequential:
    return nn.Sequential(BasicBlock(c_in, c_out, stride, use_bn), BasicBlock(c_out, c_out, 1, use_bn))


def _attention(channels: int) -> nn.Sequential:
    # Index 1 is the conv: checkpoint keys are attention_k.1.weight / .bias.
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels, 1), nn.Sigmoid())


class SpatialPyramidPooling(nn.Module):
    def __init__(self, c_in: int, num_features: int, use_bn: bool):
        super().__init__()
        level_size = num_features // len(SPP_GRIDS)
        self.spp = nn.Sequential()
        self.spp.add_module("spp_bn", BNReluConv(c_in, num_features, 1, use_bn, BN_MOMENTUM_SPP))
        for i in range(len(SPP_GRIDS)):
            self.spp.add_module(f"spp{i}", BNReluConv(num_features, level_size, 1, use_bn, BN_MOMENTUM_SPP))
        fused = num_features + level_size * len(SPP_GRIDS)
        self.spp.add_module("spp_fuse", BNReluConv(fused, num_features, 1, use_bn, BN_MOMENTUM_SPP))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        x = self.spp[0](x)
        levels = [x]
        for grid, conv in zip(SPP_GRIDS, list(self.spp)[1:-1]):
            pooled = adaptive_avg_pool2d(x, (grid, max(1, round(w / h * grid))))
            levels.append(upsample(conv(pooled), (h, w)))
        return self.spp[-1](torch.cat(levels, 1))


class Upsample(nn.Module):
    """Decoder step: project the skip, upsample the coarse map to it, add, blend."""

    def __init__(self, c_coarse: int, c_skip: int, c_out: int, use_bn: bool):
        super().__init__()
        self.bottleneck = BNReluConv(c_skip, c_coarse, 1, use_bn)
        self.blend_conv = BNReluConv(c_coarse, c_out, 3, use_bn)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        skip = self.bottleneck(skip)
        return self.blend_conv(upsample(x, skip.shape[-2:]) + skip)


class DualResNet18(nn.Module):
    """The `backbone` of the checkpoint: both encoders, fusion, SPP and decoder."""

    CHANNELS = (64, 128, 256, 512)

    def __init__(self, num_features: int = DECODER_FEATURES, use_bn: bool = True):
        super().__init__()
        bn = (lambda c: nn.BatchNorm2d(c)) if use_bn else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = bn(64)
        self.conv1_d = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1_d = bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c_prev = 64
        for i, c in enumerate(self.CHANNELS, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", _stage(c_prev, c, stride, use_bn))
            setattr(self, f"layer{i}_d", _stage(c_prev, c, stride, use_bn))
            setattr(self, f"attention_{i}", _attention(c))
            setattr(self, f"attention_{i}_d", _attention(c))
            c_prev = c
        self.spp = SpatialPyramidPooling(512, num_features, use_bn)
        # Coarse to fine: skips from stage 3, 2, 1.
        self.upsample = nn.ModuleList(
            [Upsample(num_features, c, num_features, use_bn) for c in reversed(self.CHANNELS[:3])])
        self.num_features = num_features

    def _stem(self, x, conv, norm):
        return self.maxpool(self.relu(norm(conv(x))))

    def _encode_rgb(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        x = self._stem(rgb, self.conv1, self.bn1)
        skips = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            skips.append(x)
        return skips[:3] + [self.spp(x)]

    def _encode_rgbd(self, rgb: torch.Tensor, depth: torch.Tensor) -> list[torch.Tensor]:
        x = self._stem(rgb, self.conv1, self.bn1)
        y = self._stem(depth.unsqueeze(1), self.conv1_d, self.bn1_d)
        skips = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            y = getattr(self, f"layer{i}_d")(y)
            skips.append(x)
            # The depth stream goes on attention-weighted; the RGB stream goes on fused.
            y = y * getattr(self, f"attention_{i}_d")(y)
            x = x * getattr(self, f"attention_{i}")(x) + y
        return skips[:3] + [self.spp(x)]

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        feats = self._encode_rgb(rgb) if depth is None else self._encode_rgbd(rgb, depth)
        x = feats[3]
        for skip, up in zip(reversed(feats[:3]), self.upsample):
            x = up(x, skip)
        return x


class RFNet(nn.Module):
    """forward(rgb (B,3,H,W), depth (B,H,W) or None) -> logits (B,C,H,W)."""

    def __init__(self, config: RFNetConfig = RFNetConfig()):
        super().__init__()
        self.config = config
        self.backbone = DualResNet18(config.num_features, config.use_bn)
        self.logits = BNReluConv(config.num_features, config.num_classes, 3, config.use_bn)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        return upsample(self.logits(self.backbone(rgb, depth)), rgb.shape[-2:])
