"""The project's RFNet loads Ianvs/RFNet checkpoints unchanged and computes the same function."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import read_reference_keys, reference_state_dict, write_ianvs_checkpoint
from rfnet.checkpoint import CheckpointError, load_checkpoint
from rfnet.network import RFNet, RFNetConfig

MODES = [("rgbd", True), ("rgb", False)]


def test_state_dict_layout_matches_original():
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in RFNet().state_dict().items()}
    ref = {k: (shape, dtype) for k, shape, dtype in read_reference_keys()}
    assert ours == ref


@pytest.mark.parametrize("mode,use_depth", MODES)
def test_reproduces_reference_outputs(reference_checkpoint, reference_outputs, mode, use_depth):
    model = load_checkpoint(reference_checkpoint).model
    rgb = torch.from_numpy(reference_outputs["rgb"])
    depth = torch.from_numpy(reference_outputs["depth"]) if use_depth else None
    with torch.no_grad():
        logits = model(rgb, depth).numpy()
    assert logits.shape == (1, 30, 192, 256)
    max_diff = np.abs(logits[..., ::4, ::4] - reference_outputs[f"logits_{mode}_stride4"]).max()
    agreement = (logits.argmax(1) == reference_outputs[f"argmax_{mode}"]).mean()
    assert max_diff <= 1e-2, f"max |logit difference| {max_diff}"
    assert agreement >= 0.999, f"argmax agreement {agreement:.5f}"


def test_depth_changes_the_output(reference_checkpoint, reference_outputs):
    """Guards against a fusion path that silently ignores depth."""
    model = load_checkpoint(reference_checkpoint).model
    rgb = torch.from_numpy(reference_outputs["rgb"])
    with torch.no_grad():
        a = model(rgb, torch.from_numpy(reference_outputs["depth"]))
        b = model(rgb, torch.zeros(1, 192, 256))
    assert (a - b).abs().max() > 1.0


def test_checkpoint_metadata_and_version(reference_checkpoint):
    ckpt = load_checkpoint(reference_checkpoint)
    assert ckpt.num_classes == 30 and ckpt.epoch == 1
    assert len(ckpt.version) == 12 and ckpt.sha256.startswith(ckpt.version)


def test_plain_and_dataparallel_state_dicts_load(tmp_path):
    sd = reference_state_dict()
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "dp.pth")
    model = load_checkpoint(tmp_path / "dp.pth").model
    assert torch.equal(model.state_dict()["logits.conv.weight"], sd["logits.conv.weight"])


@pytest.mark.parametrize("num_classes,hw", [(19, (96, 160)), (30, (120, 200))])
def test_class_count_and_input_size_are_parameters(tmp_path, num_classes, hw):
    torch.manual_seed(0)
    model = RFNet(RFNetConfig(num_classes=num_classes)).eval()
    path = write_ianvs_checkpoint(tmp_path / "m.pth", model.state_dict())
    loaded = load_checkpoint(path, num_classes=num_classes).model
    with torch.no_grad():
        out = loaded(torch.randn(1, 3, *hw), torch.randn(1, *hw))
    assert out.shape == (1, num_classes, *hw)


def test_wrong_class_count_is_explained(reference_checkpoint):
    with pytest.raises(CheckpointError, match="predicts 30 classes but the class file lists 19"):
        load_checkpoint(reference_checkpoint, num_classes=19)


def test_wrong_keys_are_explained(tmp_path):
    sd = reference_state_dict()
    sd.pop("backbone.layer1.0.conv1.weight")
    sd["backbone.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="1 missing keys.*1 unexpected keys"):
        load_checkpoint(write_ianvs_checkpoint(tmp_path / "bad.pth", sd))


def test_wrong_shape_is_explained(tmp_path):
    sd = reference_state_dict()
    sd["backbone.conv1.weight"] = torch.zeros(64, 4, 7, 7)
    with pytest.raises(CheckpointError, match="wrong shape.*backbone.conv1.weight"):
        load_checkpoint(write_ianvs_checkpoint(tmp_path / "bad.pth", sd))


def test_missing_and_garbage_files_are_explained(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save({"state_dict": {"x": 1}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="no RFNet state dict"):
        load_checkpoint(tmp_path / "odd.pth")


def test_numpy_best_pred_checkpoints_load(tmp_path):
    """The original trainer stores best_pred as a NumPy float64."""
    torch.save({"epoch": 3, "state_dict": reference_state_dict(), "optimizer": {},
                "best_pred": np.float64(0.61)}, tmp_path / "np.pth")
    assert load_checkpoint(tmp_path / "np.pth").epoch == 3
