"""Train or fine-tune RFNet on segmentation datasets (CPU here, GPU on a server).

Used by the base-training command and by the cloud's lifelong retraining: the caller
chooses the data (e.g. new hard samples plus a rehearsal subset of earlier data) and
this module runs seeded, progress-reporting epochs and writes Ianvs-format
checkpoints, so the original tooling can read them.

  python -m rfnet.training --train data/daylight_campus/train.txt --val data/daylight_campus/val.txt \
      --out runs/base.pth --epochs 20 --height 240 --width 320
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .network import RFNet, RFNetConfig
from .preprocessing import PreprocessConfig

log = logging.getLogger(__name__)
IGNORE = 255
PRECISIONS = ("fp32", "bf16", "auto")
CLASS_WEIGHTS = ("none", "enet")
DECODER_PREFIXES = ("backbone.spp", "backbone.upsample", "logits")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3                  # decoder (SPP, upsampling, head)
    encoder_lr_factor: float = 0.25   # encoders learn slower: they carry the general features
    weight_decay: float = 1e-4
    input_height: int = 240
    input_width: int = 320
    depth_units_per_metre: float = PreprocessConfig.depth_units_per_metre
    augment: bool = True
    # With augment: photometric and sensor-noise changes too (segdata.PhotometricConfig),
    # so the model holds up when the light and the camera's noise change.
    photometric: bool = False
    freeze_bn: bool = False           # keep BatchNorm statistics (small fine-tuning batches)
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"
    # Arithmetic of the forward pass: "fp32", "bf16" (autocast; weights and optimizer stay
    # fp32) or "auto" (bf16 where the processor computes it natively, see bf16_native).
    # bench/training_speed.py on this project's 2-core Xeon with AMX: a 128x160 RGB-D step
    # of 8 frames 0.58 s in fp32, 0.40 s in bf16.
    precision: str = "fp32"
    # Loss weight per class: "none", or "enet": 1 / ln(1.02 + p), p the class's share of the
    # training set's labelled pixels (Paszke et al. 2016, ENet; RFNet's own training offers
    # it as balanced weights). mIoU counts every class alike, and without weights a class
    # that covers 0.1 % of the pixels is never predicted.
    class_weights: str = "none"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights {self.class_weights!r}: use one of {', '.join(CLASS_WEIGHTS)}")

    @property
    def autocast_bf16(self) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and bf16_native(self.device))

    @property
    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(self.input_height, self.input_width, self.depth_units_per_metre)

    @property
    def augment_config(self):
        from segdata import AugmentConfig, PhotometricConfig

        return AugmentConfig(photometric=PhotometricConfig() if self.photometric else None)


@dataclass
class EpochStats:
    epoch: int
    loss: float
    seconds: float
    val_miou: float | None = None


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    best_miou: float | None = None


def bf16_native(device: str) -> bool:
    """Whether `device` computes bf16 in hardware: a CUDA GPU that says so, or a CPU with
    AMX or AVX512-BF16 (elsewhere oneDNN emulates bf16 and it is slower than fp32)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def param_groups(model: RFNet, cfg: TrainConfig) -> list[dict]:
    decoder, encoder = [], []
    for name, p in model.named_parameters():
        (decoder if name.startswith(DECODER_PREFIXES) else encoder).append(p)
    return [{"params": decoder, "lr": cfg.lr}, {"params": encoder, "lr": cfg.lr * cfg.encoder_lr_factor}]


def enet_class_weights(dataset, num_classes: int) -> torch.Tensor:
    """ENet's weights 1 / ln(1.02 + p_c) from the label shares of `dataset` (a
    TorchSegmentationDataset; its underlying samples, unaugmented)."""
    counts = np.zeros(num_classes, np.int64)
    for i in range(len(dataset.dataset)):
        labels = dataset.dataset[i].labels
        if labels is not None:
            counts += np.bincount(labels[labels < num_classes], minlength=num_classes)
    if counts.sum() == 0:
        raise ValueError("class_weights=enet: the training set has no labelled pixel")
    return torch.from_numpy(1.0 / np.log(1.02 + counts / counts.sum())).float()


def _batches(dataset, cfg: TrainConfig, shuffle: bool, epoch: int):
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    return torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, drop_last=shuffle,
                                       num_workers=cfg.num_workers, generator=generator)


@torch.inference_mode()
def evaluate(model: RFNet, dataset, cfg: TrainConfig, num_classes: int, progress: bool = False):
    """Confusion matrix of `model` on a TorchSegmentationDataset (network input resolution)."""
    from segmetrics import ConfusionMatrix

    model.eval()
    cm = ConfusionMatrix(num_classes)
    for batch in tqdm(_batches(dataset, cfg, shuffle=False, epoch=0), desc="eval", disable=not progress,
                      leave=False):
        rgb, depth, labels = batch.rgb.to(cfg.device), batch.depth.to(cfg.device), batch.labels
        pred = model(rgb, depth).argmax(1).cpu().numpy()
        cm.update(pred, labels.numpy())
    return cm


class Trainer:
    def __init__(self, model: RFNet, cfg: TrainConfig):
        self.model = model.to(cfg.device)
        self.cfg = cfg
        self.loss = nn.CrossEntropyLoss(ignore_index=IGNORE)

    def _train_mode(self) -> None:
        self.model.train()
        if self.cfg.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()

    def fit(self, train, val=None, checkpoint: Path | None = None, progress: bool = True) -> TrainResult:
        """Train on `train` (a TorchSegmentationDataset); keep the best (by val mIoU, else the last)
        weights in the model and, if given, in `checkpoint`."""
        cfg = self.cfg
        seed_everything(cfg.seed)
        steps_per_epoch = max(1, len(train) // cfg.batch_size)
        total = cfg.epochs * steps_per_epoch
        if cfg.class_weights == "enet":
            weight = enet_class_weights(train, self.model.num_classes).to(cfg.device)
            self.loss = nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE)
        opt = torch.optim.AdamW(param_groups(self.model, cfg), weight_decay=cfg.weight_decay)
        base_lrs = [g["lr"] for g in opt.param_groups]
        result, best_state, step = TrainResult(), None, 0
        bf16 = cfg.autocast_bf16
        for epoch in range(1, cfg.epochs + 1):
            if hasattr(train, "set_epoch"):
                train.set_epoch(epoch)
            self._train_mode()
            t0, losses = time.monotonic(), []
            bar = tqdm(_batches(train, cfg, shuffle=True, epoch=epoch), total=steps_per_epoch,
                       desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
            for batch in bar:
                # Cosine decay from the base rates to zero over the whole run.
                scale = 0.5 * (1 + math.cos(math.pi * step / total))
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * scale
                with torch.autocast(torch.device(cfg.device).type, torch.bfloat16, enabled=bf16):
                    logits = self.model(batch.rgb.to(cfg.device), batch.depth.to(cfg.device))
                loss = self.loss(logits.float(), batch.labels.to(cfg.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                step += 1
            stats = EpochStats(epoch, float(np.mean(losses)) if losses else float("nan"), time.monotonic() - t0)
            if val is not None:
                stats.val_miou = evaluate(self.model, val, cfg, self.model.num_classes).miou()
            result.history.append(stats)
            log.info("epoch %d: loss %.4f%s, %.0f s", epoch, stats.loss,
                     "" if stats.val_miou is None else f", val mIoU {stats.val_miou:.4f}", stats.seconds)
            better = val is None or result.best_miou is None or stats.val_miou > result.best_miou
            if better:
                result.best_miou = stats.val_miou
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                if checkpoint is not None:
                    save_checkpoint(self.model, checkpoint, epoch=epoch, best_pred=stats.val_miou or 0.0)
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return result


def open_labelled(path: str | Path, num_classes: int):
    """A dataset (Ianvs index or Cityscapes folder) whose ids >= num_classes read as ignore."""
    from segdata import LabelConfig, open_dataset

    if Path(path).suffix == ".txt":
        return open_dataset(path, labels=LabelConfig(num_classes=num_classes))
    return open_dataset(path, num_classes=num_classes)


def main(argv=None) -> int:
    from segdata import DatasetError

    from .training_data import TorchSegmentationDataset

    ap = argparse.ArgumentParser(description="Train or fine-tune RFNet (checkpoints in the Ianvs format).")
    ap.add_argument("--train", required=True, help="Ianvs index file or Cityscapes-style folder")
    ap.add_argument("--val", help="held-out data for model selection")
    ap.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pth)")
    ap.add_argument("--init", type=Path, help="start from this checkpoint (default: random init)")
    ap.add_argument("--num-classes", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--height", type=int, default=TrainConfig.input_height)
    ap.add_argument("--width", type=int, default=TrainConfig.input_width)
    ap.add_argument("--freeze-bn", action="store_true")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--photometric", action="store_true", help="photometric and sensor-noise augmentation too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32",
                    help="bf16: autocast the forward pass; auto: bf16 where the hardware has it")
    ap.add_argument("--class-weights", choices=CLASS_WEIGHTS, default="none",
                    help="enet: weight each class's loss by 1 / ln(1.02 + its share of the training pixels)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, input_height=args.height,
                      input_width=args.width, augment=not args.no_augment, photometric=args.photometric,
                      freeze_bn=args.freeze_bn, seed=args.seed, device=args.device, precision=args.precision,
                      class_weights=args.class_weights)
    try:
        train = TorchSegmentationDataset(open_labelled(args.train, args.num_classes), cfg.preprocess,
                                         augment=cfg.augment, seed=cfg.seed, augment_cfg=cfg.augment_config)
        val = (TorchSegmentationDataset(open_labelled(args.val, args.num_classes), cfg.preprocess)
               if args.val else None)
    except DatasetError as e:
        print(f"training: {e}", file=sys.stderr)
        return 2
    seed_everything(cfg.seed)
    model = load_checkpoint(args.init).model if args.init else RFNet(RFNetConfig(num_classes=args.num_classes))
    result = Trainer(model, cfg).fit(train, val, checkpoint=args.out)
    print(f"wrote {args.out}; best val mIoU {result.best_miou}" if val else f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
