"""Load Ianvs/RFNet checkpoints (and write them in the same format).

The Ianvs cloud-robotics example saves `{'epoch', 'state_dict', 'optimizer',
'best_pred'}` with `torch.save`; `torch.load(p)['state_dict']` holds the
RFNet weights. Plain state dicts and `module.`-prefixed keys (DataParallel)
are accepted too, because users have both lying around.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from durable_files import file_sha256

from .network import RFNet, RFNetConfig

LOGITS_WEIGHT = "logits.conv.weight"


class CheckpointError(RuntimeError):
    """The checkpoint is missing or does not fit; the message says what to do."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: RFNet
    path: Path
    sha256: str
    num_classes: int
    epoch: int | None

    @property
    def version(self) -> str:
        return version_of_digest(self.sha256)


def version_of_digest(sha256_hex: str) -> str:
    """The model version id of a file with this sha256: its first 12 hex digits.

    The one rule robot and cloud name models by: hard frames carry the robot's version,
    the bridge finds its copy of that model by it, decision records and logs quote it."""
    return sha256_hex[:12]


def model_version(path: str | Path) -> str:
    """The version id of the model file at `path` (see version_of_digest)."""
    return version_of_digest(file_sha256(path))


def _torch_load(path: Path) -> object:
    # weights_only refuses arbitrary pickles; original checkpoints store
    # best_pred as a NumPy scalar, so allow exactly those types.
    safe = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32))]
    scalar = getattr(getattr(np, "_core", np), "multiarray").scalar
    with torch.serialization.safe_globals(safe + [scalar]):
        return torch.load(path, map_location="cpu", weights_only=True)


def require_checkpoint_file(path: Path) -> Path:
    if not path.is_file():
        raise CheckpointError(
            f"RFNet checkpoint not found: {path}. Give the path of an Ianvs/RFNet .pth file "
            "(e.g. the Ianvs example's pretrain_model.pth).")
    return path


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = require_checkpoint_file(Path(path))
    try:
        blob = _torch_load(path)
    except Exception as e:  # torch raises many types for a bad file
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {e}). "
                              "Is it a complete .pth file written by torch.save?") from e
    meta: dict = {}
    if isinstance(blob, dict) and "state_dict" in blob:
        meta = {k: v for k, v in blob.items() if k != "state_dict"}
        blob = blob["state_dict"]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"{path} holds no RFNet state dict: expected {{'state_dict': {{name: tensor}}}} "
                              "as written by the Ianvs/RFNet trainer.")
    state = {k.removeprefix("module."): v for k, v in blob.items()}
    return state, meta


def build_from_state_dict(state: dict[str, torch.Tensor], num_classes: int | None = None,
                          source: str = "checkpoint") -> RFNet:
    if LOGITS_WEIGHT not in state:
        raise CheckpointError(f"{source} has no '{LOGITS_WEIGHT}': not an RFNet checkpoint "
                              f"(first keys: {sorted(state)[:5]}).")
    found = int(state[LOGITS_WEIGHT].shape[0])
    if num_classes is not None and found != num_classes:
        raise CheckpointError(
            f"{source} predicts {found} classes but the class file lists {num_classes}. "
            "Use the class file the model was trained with, or a checkpoint trained for these classes.")
    model = RFNet(RFNetConfig(num_classes=found))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match RFNet (ResNet-18 RGB-D): {len(missing)} missing keys "
            f"{missing[:4]}, {len(unexpected)} unexpected keys {unexpected[:4]}. "
            "Is it a checkpoint of another network?")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{source}: {len(bad)} tensors have the wrong shape, e.g. {k} is "
                              f"{tuple(state[k].shape)}, RFNet expects {tuple(expected[k].shape)}.")
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_checkpoint(path: str | Path, num_classes: int | None = None) -> LoadedCheckpoint:
    """Load an RFNet checkpoint for inference (eval mode, CPU, float32)."""
    path = Path(path)
    state, meta = read_state_dict(path)
    model = build_from_state_dict(state, num_classes, source=str(path))
    epoch = meta.get("epoch")
    return LoadedCheckpoint(model=model, path=path, sha256=file_sha256(path),
                            num_classes=model.num_classes,
                            epoch=int(epoch) if isinstance(epoch, (int, np.integer)) else None)


def save_checkpoint(model: RFNet, path: str | Path, epoch: int = 0, best_pred: float = 0.0,
                    optimizer_state: dict | None = None) -> Path:
    """Write in the Ianvs/RFNet training format, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"epoch": epoch, "state_dict": model.state_dict(),
                "optimizer": optimizer_state or {}, "best_pred": float(best_pred)}, tmp)
    tmp.replace(path)
    return path
