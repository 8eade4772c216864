"""The trainer learns, is seeded, and writes checkpoints the Ianvs tooling can read."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from rfnet.checkpoint import load_checkpoint
from rfnet.network import RFNet, RFNetConfig
from rfnet.training import TrainConfig, Trainer, enet_class_weights, evaluate, open_labelled
from rfnet.training_data import TorchSegmentationDataset

H, W = 64, 96


def write_dataset(root, n=4):
    """Two-class scenes whose labels follow from depth and colour (learnable in a few steps)."""
    for sub in ("rgb", "depth", "label"):
        (root / sub).mkdir(parents=True)
    lines = []
    rng = np.random.default_rng(0)
    for i in range(n):
        split = int(H * (0.3 + 0.1 * i))
        labels = np.zeros((H, W), np.uint8)
        labels[:split] = 10                                   # sky above, road below
        rgb = np.where(labels[..., None] == 10, [70, 130, 180], [90, 90, 95]).astype(np.float32)
        rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
        depth_mm = np.where(labels == 10, 0, 3000).astype(np.uint16)
        cv2.imwrite(str(root / "rgb" / f"{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "depth" / f"{i}.png"), depth_mm)
        cv2.imwrite(str(root / "label" / f"{i}.png"), labels)
        lines.append(f"rgb/{i}.png depth/{i}.png label/{i}.png")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root / "train.txt"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"))


def config(**kw):
    return TrainConfig(**{"epochs": 6, "batch_size": 2, "lr": 3e-3, "input_height": H, "input_width": W,
                          "augment": False, **kw})


def test_training_learns_and_keeps_the_best_checkpoint(index, tmp_path):
    cfg = config()
    data = TorchSegmentationDataset(open_labelled(index, 30), cfg.preprocess)
    torch.manual_seed(0)
    model = RFNet(RFNetConfig(num_classes=30))
    before = evaluate(model, data, cfg, 30).miou()
    result = Trainer(model, cfg).fit(data, val=data, checkpoint=tmp_path / "m.pth", progress=False)
    after = evaluate(model, data, cfg, 30).miou()
    assert result.history[-1].loss < result.history[0].loss
    assert after > max(0.6, before + 0.5), (before, after)
    assert result.best_miou == pytest.approx(after)
    ckpt = torch.load(tmp_path / "m.pth", weights_only=False)
    assert set(ckpt) == {"epoch", "state_dict", "optimizer", "best_pred"}
    reloaded = load_checkpoint(tmp_path / "m.pth").model
    assert evaluate(reloaded, data, cfg, 30).miou() == pytest.approx(after)


def test_bf16_training_learns_and_keeps_fp32_weights(index, tmp_path):
    """precision=bf16 autocasts the forward pass (fast on CPUs with AMX, emulated and
    slower elsewhere, but correct everywhere); the weights and checkpoint stay fp32."""
    cfg = config(precision="bf16")
    data = TorchSegmentationDataset(open_labelled(index, 30), cfg.preprocess)
    torch.manual_seed(0)
    model = RFNet(RFNetConfig(num_classes=30))
    before = evaluate(model, data, cfg, 30).miou()
    Trainer(model, cfg).fit(data, val=data, checkpoint=tmp_path / "m.pth", progress=False)
    assert evaluate(model, data, cfg, 30).miou() > max(0.6, before + 0.5)
    assert all(p.dtype == torch.float32 for p in load_checkpoint(tmp_path / "m.pth").model.parameters())
    with pytest.raises(ValueError, match="precision 'fp16'"):
        config(precision="fp16")


def test_enet_class_weights_favour_the_rare_class_and_training_uses_them(index):
    """The fixture's scenes are about 45 % sky (10) and 55 % road (0): 1 / ln(1.02 + share)."""
    cfg = config(class_weights="enet", epochs=2)
    data = TorchSegmentationDataset(open_labelled(index, 30), cfg.preprocess)
    labels = np.concatenate([data.dataset[i].labels.ravel() for i in range(len(data))])
    share_sky = float(np.mean(labels == 10))
    w = enet_class_weights(data, 30)
    assert w[10] == pytest.approx(1 / np.log(1.02 + share_sky), rel=1e-5)
    assert w[0] == pytest.approx(1 / np.log(1.02 + 1 - share_sky), rel=1e-5)
    assert w[10] > w[0] and w[5] == pytest.approx(1 / np.log(1.02), rel=1e-5)
    trainer = Trainer(RFNet(RFNetConfig(num_classes=30)), cfg)
    trainer.fit(data, progress=False)
    assert torch.equal(trainer.loss.weight, w)
    with pytest.raises(ValueError, match="class_weights 'median'"):
        config(class_weights="median")


def test_training_is_seeded(index):
    cfg = config(epochs=1)
    data = TorchSegmentationDataset(open_labelled(index, 30), cfg.preprocess, augment=True, seed=1)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = RFNet()
        Trainer(model, cfg).fit(data, progress=False)
        states.append(model.state_dict()["logits.conv.weight"].clone())
    assert torch.equal(states[0], states[1])


def test_cli_writes_a_checkpoint_and_explains_bad_data(index, tmp_path):
    out = tmp_path / "cli.pth"
    run = subprocess.run([sys.executable, "-m", "rfnet.training", "--train", str(index), "--out", str(out),
                          "--epochs", "1", "--batch-size", "2", "--height", str(H), "--width", str(W)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert load_checkpoint(out).num_classes == 30
    bad = subprocess.run([sys.executable, "-m", "rfnet.training", "--train", str(tmp_path / "none.txt"),
                          "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "none.txt" in bad.stderr
