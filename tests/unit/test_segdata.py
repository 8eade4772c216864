"""segdata: Ianvs index and Cityscapes readers, the torch wrapper, the importer and CLI,
on small datasets written here."""
from __future__ import annotations

import filecmp
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rfnet.preprocessing import (DEPTH_MEAN, DEPTH_STD, PreprocessConfig, depth_8bit_to_input,
                                 preprocess_depth, preprocess_rgb)
from rfnet.training_data import TorchSegmentationDataset

from segdata import (AugmentConfig, CityscapesDataset, DatasetError, IanvsIndexDataset, IanvsIndexSpec, LabelConfig,
                     Sample, augment_sample, open_dataset)
from segdata.__main__ import main
from segdata.depth import metres_to_mm16

H, W = 24, 32


def write(path: Path, image: np.ndarray) -> Path:
    """Write a PNG; colour images are given in RGB order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)
    return path


def read_raw(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def random_rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def random_labels(seed: int, high: int = 30) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, (H, W), dtype=np.uint8)


def net_input(depth_m: np.ndarray) -> np.ndarray:
    return preprocess_depth(depth_m, PreprocessConfig(depth_m.shape[0], depth_m.shape[1]))[0][0]


# --- Ianvs index files ---------------------------------------------------------------

def test_index_relative_absolute_paths_two_and_three_columns_and_comments(tmp_path, monkeypatch):
    data = tmp_path / "data"
    rgb_a, rgb_b = random_rgb(1), random_rgb(2)
    write(data / "rgb" / "a.png", rgb_a)
    write(data / "rgb" / "b.png", rgb_b)
    write(data / "depth" / "a.png", np.full((H, W), 1500, np.uint16))
    write(data / "label" / "a.png", random_labels(3))
    write(data / "label" / "b.png", random_labels(4))
    index = data / "lists" / "train.txt"
    index.parent.mkdir()
    # Relative paths are relative to the index file's folder, whatever the working directory.
    index.write_text("# rgb depth label\n"
                     "\n"
                     "../rgb/a.png  ../depth/a.png\t../label/a.png\n"
                     "   # indented comment\n"
                     f"{data / 'rgb' / 'b.png'} {data / 'label' / 'b.png'}\n")
    monkeypatch.chdir(tmp_path)

    ds = open_dataset(index)
    assert isinstance(ds, IanvsIndexDataset) and len(ds) == 2
    assert [e.line for e in ds.entries] == [3, 5]
    a, b = ds[0], ds[1]
    assert (a.name, b.name) == ("a", "b")
    np.testing.assert_array_equal(a.rgb, rgb_a)          # RGB order, not opencv's BGR
    np.testing.assert_array_equal(b.rgb, rgb_b)
    np.testing.assert_array_equal(a.labels, random_labels(3))
    assert a.depth_m.dtype == np.float32 and np.allclose(a.depth_m, 1.5)
    assert b.depth_m is None
    assert [s.name for s in ds] == ["a", "b"]             # iteration stops at the end


@pytest.mark.parametrize("line", ["rgb/a.png", "rgb/a.png depth/a.png label/a.png extra.png"])
def test_malformed_index_line_names_its_line_number(tmp_path, line):
    index = tmp_path / "train.txt"
    index.write_text(f"# header\n\n{line}\n")
    with pytest.raises(DatasetError, match=r"train\.txt, line 3: expected 'rgb \[depth\] label'"):
        open_dataset(index)


def test_missing_files_are_listed_with_their_lines(tmp_path):
    write(tmp_path / "rgb.png", random_rgb(0))
    write(tmp_path / "label.png", random_labels(0))
    (tmp_path / "train.txt").write_text("rgb.png label.png\nrgb.png nodepth.png label.png\nnorgb.png label.png\n")
    with pytest.raises(DatasetError, match="2 file") as e:
        open_dataset(tmp_path / "train.txt")
    assert f"line 2: {tmp_path / 'nodepth.png'}" in str(e.value)
    assert f"line 3: {tmp_path / 'norgb.png'}" in str(e.value)
    with pytest.raises(DatasetError, match="index file missing"):
        open_dataset(IanvsIndexSpec(tmp_path / "val.txt"))
    with pytest.raises(DatasetError, match="dataset not found"):
        open_dataset(tmp_path / "val.txt")


def test_unreadable_image_and_size_mismatch_name_the_file(tmp_path):
    write(tmp_path / "rgb.png", random_rgb(0))
    write(tmp_path / "small.png", random_labels(0)[:10])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    write(tmp_path / "colour_label.png", random_rgb(1))
    (tmp_path / "i.txt").write_text("broken.png small.png\nrgb.png small.png\nrgb.png colour_label.png\n")
    ds = open_dataset(tmp_path / "i.txt")
    with pytest.raises(DatasetError, match=f"unreadable rgb image.*{tmp_path / 'broken.png'}"):
        ds[0]
    with pytest.raises(DatasetError, match=f"labels is 32x10 .* but rgb is 32x24 .*{tmp_path / 'small.png'}"):
        ds[1]
    with pytest.raises(DatasetError, match="label image must have one channel.*colour_label.png"):
        ds[2]


def depth_scene_index(tmp_path: Path, encoding_file: str, depth: np.ndarray) -> Path:
    write(tmp_path / "rgb.png", random_rgb(0, *depth.shape))
    write(tmp_path / "label.png", np.zeros(depth.shape, np.uint8))
    write(tmp_path / encoding_file, depth)
    index = tmp_path / f"{Path(encoding_file).stem}.txt"
    index.write_text(f"rgb.png {encoding_file} label.png\n")
    return index


def test_mm16_scale8_and_auto_give_the_robots_network_input_for_one_scene(tmp_path):
    # Depths that both encodings hold exactly: v = 51 k on the 8-bit scale is 2 k metres.
    v = (np.arange(H * W).reshape(H, W) % 6 * 51).astype(np.uint8)
    mm = (v.astype(np.uint16) // 51 * 2000).astype(np.uint16)
    scale8 = depth_scene_index(tmp_path, "scale8.png", v)
    mm16 = depth_scene_index(tmp_path, "mm16.png", mm)
    expected = depth_8bit_to_input(v)[0]        # the original pipeline's 8-bit depth input
    inputs = {
        "scale8": open_dataset(scale8, depth_encoding="scale8")[0],
        "mm16": open_dataset(mm16, depth_encoding="mm16")[0],
        "auto8": open_dataset(scale8)[0],
        "auto16": open_dataset(mm16)[0],
    }
    for name, sample in inputs.items():
        np.testing.assert_allclose(net_input(sample.depth_m), expected, atol=1e-5, err_msg=name)
    # 0 is "no depth" in both encodings, as preprocess_depth understands it.
    assert np.all(inputs["mm16"].depth_m[v == 0] == 0) and np.all(inputs["scale8"].depth_m[v == 0] == 0)


def test_scale8_round_trips_every_value_through_preprocess_depth(tmp_path):
    v = np.arange(256, dtype=np.uint8).reshape(16, 16)
    sample = open_dataset(depth_scene_index(tmp_path, "d.png", v))[0]
    np.testing.assert_allclose(net_input(sample.depth_m), (v / 255.0 - DEPTH_MEAN) / DEPTH_STD, atol=1e-5)
    # Another trained scale: the reader's and the preprocessing's factors must match.
    sample = open_dataset(tmp_path / "d.txt", depth_units_per_metre=50.0)[0]
    got = preprocess_depth(sample.depth_m, PreprocessConfig(16, 16, depth_units_per_metre=50.0))[0][0]
    np.testing.assert_allclose(got, (v / 255.0 - DEPTH_MEAN) / DEPTH_STD, atol=1e-5)


def test_depth_encoding_that_contradicts_the_bit_depth_is_an_error(tmp_path):
    index = depth_scene_index(tmp_path, "d8.png", np.ones((H, W), np.uint8))
    with pytest.raises(DatasetError, match=f"mm16 needs a 16-bit PNG, {tmp_path / 'd8.png'} is 8-bit"):
        open_dataset(index, depth_encoding="mm16")[0]
    index = depth_scene_index(tmp_path, "d16.png", np.ones((H, W), np.uint16))
    with pytest.raises(DatasetError, match="scale8 needs a 8-bit PNG"):
        open_dataset(index, depth_encoding="scale8")[0]


def label_index(tmp_path: Path, labels: np.ndarray) -> Path:
    write(tmp_path / "rgb.png", random_rgb(0, *labels.shape))
    write(tmp_path / "label.png", labels)
    (tmp_path / "i.txt").write_text("rgb.png label.png\n")
    return tmp_path / "i.txt"


def test_labels_at_or_above_num_classes_become_ignore(tmp_path):
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    index = label_index(tmp_path, labels)
    got = open_dataset(index, labels=LabelConfig(num_classes=30))[0].labels
    np.testing.assert_array_equal(got, np.where(labels < 30, labels, 255))
    np.testing.assert_array_equal(open_dataset(index)[0].labels, labels)


def test_label_map_as_dict_or_lookup_table(tmp_path):
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    index = label_index(tmp_path, labels)
    got = open_dataset(index, labels=LabelConfig(label_map={10: 0, 20: 1, 30: 40}))[0].labels
    expected = np.full(256, 255, np.uint8)
    expected[[10, 20, 30]] = [0, 1, 40]                   # ids the dict does not list: ignore
    np.testing.assert_array_equal(got, expected[labels])
    # The map comes first, then num_classes.
    got = open_dataset(index, labels=LabelConfig(num_classes=2, label_map={10: 0, 20: 1, 30: 40}))[0].labels
    np.testing.assert_array_equal(got, np.where(expected < 2, expected, 255)[labels])
    lut = (255 - np.arange(256)).astype(np.uint8)
    np.testing.assert_array_equal(open_dataset(index, labels=LabelConfig(label_map=lut))[0].labels, lut[labels])
    with pytest.raises(ValueError, match="256 entries"):
        open_dataset(index, labels=LabelConfig(label_map=[0, 1, 2]))


# --- Cityscapes folders ------------------------------------------------------------

BASELINE, FX = 0.2, 1000.0


def cityscapes_sample(root: Path, split: str, city: str, frame: int, *, labels: np.ndarray | None = None,
                      kind: str = "labelTrainIds", disparity: np.ndarray | None = None,
                      camera: bool = True) -> str:
    name = f"{city}_000000_{frame:06d}"
    write(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", random_rgb(frame))
    write(root / "gtFine" / split / city / f"{name}_gtFine_{kind}.png",
          random_labels(frame, 19) if labels is None else labels)
    if disparity is not None:
        write(root / "disparity" / split / city / f"{name}_disparity.png", disparity)
        if camera:
            cam = root / "camera" / split / city / f"{name}_camera.json"
            cam.parent.mkdir(parents=True, exist_ok=True)
            cam.write_text(json.dumps({"extrinsic": {"baseline": BASELINE, "pitch": 0.04},
                                       "intrinsic": {"fx": FX, "fy": FX, "u0": W / 2, "v0": H / 2}}))
    return name


def disparity_png(d_pixels: np.ndarray) -> np.ndarray:
    """Cityscapes encoding of disparity in pixels: p = 256 d + 1."""
    return (np.asarray(d_pixels) * 256 + 1).astype(np.uint16)


def test_cityscapes_train_ids_and_disparity_in_metres(tmp_path):
    disparity = np.tile(disparity_png(np.array([10.0, 20.0, 40.0, 0.5])), (H, W // 4))
    disparity[0, :2] = [0, 1]                             # invalid, and zero disparity
    a = cityscapes_sample(tmp_path, "val", "lindau", 19, disparity=disparity)
    b = cityscapes_sample(tmp_path, "val", "frankfurt", 7, disparity=disparity)
    ds = open_dataset(tmp_path, split="val")
    assert isinstance(ds, CityscapesDataset) and ds.label_kind == "labelTrainIds"
    assert [s.name for s in ds] == sorted([a, b])         # paired by stem across cities
    s = ds[1]
    np.testing.assert_array_equal(s.rgb, random_rgb(19))
    np.testing.assert_array_equal(s.labels, random_labels(19, 19))
    expected = np.tile(np.float32([20.0, 10.0, 5.0, 400.0]), (H, W // 4))   # baseline * fx / d
    expected[0, :2] = 0
    np.testing.assert_allclose(s.depth_m, expected, rtol=1e-6)
    # Without disparity/ the samples simply have no depth.
    assert open_dataset(tmp_path, split="val", use_disparity=False)[0].depth_m is None


def test_cityscapes_label_ids_use_the_standard_train_id_table(tmp_path):
    label_ids = np.zeros((H, W), np.uint8)
    label_ids[0, :8] = [7, 8, 26, 33, 0, 9, 4, 23]         # road, sidewalk, car, bicycle, void, parking, static, sky
    cityscapes_sample(tmp_path, "train", "aachen", 1, labels=label_ids, kind="labelIds")
    ds = open_dataset(tmp_path)                            # the only split
    assert ds.split == "train" and ds.label_kind == "labelIds"
    assert ds[0].labels[0, :8].tolist() == [0, 1, 13, 18, 255, 255, 255, 10]
    assert ds[0].depth_m is None
    with pytest.raises(DatasetError, match="image without labelTrainIds labels"):
        open_dataset(tmp_path, label_kind="labelTrainIds")


def test_cityscapes_split_must_be_given_when_several_exist(tmp_path):
    cityscapes_sample(tmp_path, "train", "aachen", 1)
    cityscapes_sample(tmp_path, "val", "lindau", 2)
    with pytest.raises(DatasetError, match=r"give the split, leftImg8bit/ has \['train', 'val'\]"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no split 'test'"):
        open_dataset(tmp_path, split="test")
    assert len(open_dataset(tmp_path, split="val")) == 1


def test_cityscapes_unpaired_files_are_named(tmp_path):
    cityscapes_sample(tmp_path, "val", "lindau", 1)
    name = cityscapes_sample(tmp_path, "val", "lindau", 2)
    label = tmp_path / "gtFine" / "val" / "lindau" / f"{name}_gtFine_labelTrainIds.png"
    label.rename(label.with_name("lindau_000000_000099_gtFine_labelTrainIds.png"))
    with pytest.raises(DatasetError, match="2 unpaired") as e:
        open_dataset(tmp_path, split="val")
    msg = str(e.value)
    assert f"image without labelTrainIds labels: {tmp_path / 'leftImg8bit' / 'val' / 'lindau' / name}" in msg
    assert "labels without image: " in msg and "lindau_000000_000099_gtFine_labelTrainIds.png" in msg


def test_cityscapes_disparity_without_camera_is_an_error_or_no_depth(tmp_path):
    name = cityscapes_sample(tmp_path, "val", "lindau", 1, disparity=disparity_png(np.full((H, W), 8.0)),
                             camera=False)
    with pytest.raises(DatasetError, match=f"disparity without camera json: .*{name}_disparity.png"):
        open_dataset(tmp_path)
    ds = open_dataset(tmp_path, disparity_without_camera_is_missing=True)
    assert ds[0].depth_m is None


def test_open_dataset_says_what_it_needs(tmp_path):
    (tmp_path / "train.txt").write_text("")
    (tmp_path / "val.txt").write_text("")
    with pytest.raises(DatasetError, match="give one of its index files: train.txt, val.txt"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="dataset not found"):
        open_dataset(tmp_path / "nothing")


# --- torch wrapper and augmentation ---------------------------------------------------

def index_dataset(tmp_path: Path, rgb: np.ndarray, depth_mm: np.ndarray | None, labels: np.ndarray) -> Path:
    write(tmp_path / "rgb.png", rgb)
    write(tmp_path / "label.png", labels)
    if depth_mm is None:
        (tmp_path / "i.txt").write_text("rgb.png label.png\n")
    else:
        write(tmp_path / "depth.png", depth_mm)
        (tmp_path / "i.txt").write_text("rgb.png depth.png label.png\n")
    return tmp_path / "i.txt"


def test_torch_wrapper_shapes_dtypes_and_the_robots_normalization(tmp_path):
    rgb, labels = random_rgb(5), random_labels(6)
    depth_mm = np.random.default_rng(7).integers(0, 12000, (H, W)).astype(np.uint16)
    ds = open_dataset(index_dataset(tmp_path, rgb, depth_mm, labels))
    cfg = PreprocessConfig(input_height=12, input_width=16)
    item = TorchSegmentationDataset(ds, cfg)[0]
    assert item.rgb.shape == (3, 12, 16) and item.rgb.dtype == torch.float32
    assert item.depth.shape == (12, 16) and item.depth.dtype == torch.float32
    assert item.labels.shape == (12, 16) and item.labels.dtype == torch.int64
    assert item.has_depth
    np.testing.assert_array_equal(item.rgb.numpy(), preprocess_rgb(rgb, cfg)[0])
    np.testing.assert_allclose(item.depth.numpy(), preprocess_depth(depth_mm / 1000.0, cfg)[0][0], atol=1e-5)
    np.testing.assert_array_equal(item.labels.numpy(), labels[::2, ::2])      # nearest
    batch = next(iter(torch.utils.data.DataLoader(TorchSegmentationDataset(ds, cfg), batch_size=1)))
    assert batch.rgb.shape == (1, 3, 12, 16) and batch.has_depth.tolist() == [True]


def test_missing_depth_is_an_error_for_rgbd_or_no_return_everywhere(tmp_path):
    ds = open_dataset(index_dataset(tmp_path, random_rgb(1), None, random_labels(2)))
    cfg = PreprocessConfig(H, W)
    with pytest.raises(DatasetError, match="sample rgb has no depth image; RFNet is RGB-D"):
        TorchSegmentationDataset(ds, cfg)[0]
    item = TorchSegmentationDataset(ds, cfg, require_depth=False)[0]
    assert not item.has_depth
    np.testing.assert_allclose(item.depth.numpy(), -DEPTH_MEAN / DEPTH_STD, rtol=1e-6)


def x_coded_sample(h: int = 40, w: int = 64) -> Sample:
    """rgb, depth and labels are all a function of x, so any misalignment shows."""
    x = np.broadcast_to(np.arange(w), (h, w))
    labels = (x % 200).astype(np.uint8)
    rgb = np.stack([labels, np.full_like(labels, 7), 255 - labels], axis=-1)
    return Sample(rgb, ((x + 1) * 0.01).astype(np.float32), labels, "x")


def test_augmentation_keeps_rgb_depth_and_labels_aligned():
    sample = x_coded_sample()
    flips, sizes = set(), set()
    for seed in range(40):
        out = augment_sample(sample, np.random.default_rng(seed), AugmentConfig())
        valid = out.labels != 255
        np.testing.assert_array_equal(out.rgb[..., 0][valid], out.labels[valid])
        np.testing.assert_array_equal(out.rgb[..., 2][valid], 255 - out.labels[valid])
        np.testing.assert_allclose(out.depth_m[valid], (out.labels[valid] + 1) * 0.01, rtol=1e-6)
        # Padding is "no data" everywhere at once.
        assert np.all(out.rgb[~valid] == 0) and np.all(out.depth_m[~valid] == 0)
        row = out.labels[out.labels.shape[0] // 2][valid[valid.shape[0] // 2]].astype(int)
        steps = set(np.diff(row).tolist())
        assert steps in ({1}, {-1}), steps                # a contiguous run, forwards or mirrored
        flips.add(steps == {-1})
        sizes.add(out.size)
    assert flips == {True, False} and len(sizes) > 10     # both flips and many zooms were drawn


def test_flip_mirrors_all_three():
    sample = x_coded_sample()
    out = augment_sample(sample, np.random.default_rng(0), AugmentConfig(flip_probability=1.0, scale_range=(1, 1)))
    np.testing.assert_array_equal(out.labels, sample.labels[:, ::-1])
    np.testing.assert_array_equal(out.rgb, sample.rgb[:, ::-1])
    np.testing.assert_array_equal(out.depth_m, sample.depth_m[:, ::-1])


def test_augmented_tensors_stay_aligned_after_resizing_and_are_reproducible(tmp_path):
    # 16-pixel stripes: stripe k has label k, colour 30 k + 10 and depth 0.5 + 0.25 k metres.
    stripe = np.broadcast_to(np.arange(96) // 16, (48, 96)).astype(np.uint8)
    rgb = np.repeat((stripe * 30 + 10)[..., None], 3, axis=-1).astype(np.uint8)
    depth_mm = (500 + 250 * stripe.astype(np.uint16)).astype(np.uint16)
    ds = open_dataset(index_dataset(tmp_path, rgb, depth_mm, stripe))
    cfg = PreprocessConfig(input_height=48, input_width=96)
    torch_ds = TorchSegmentationDataset(ds, cfg, augment=True, seed=3)
    depth_of = {k: net_input(np.full((1, 1), 0.5 + 0.25 * k, np.float32))[0, 0] for k in range(6)}
    depth_of[255] = net_input(np.zeros((1, 1), np.float32))[0, 0]
    items = []
    for epoch in range(6):
        torch_ds.set_epoch(epoch)
        item = torch_ds[0]
        items.append(item)
        labels, depth = item.labels.numpy(), item.depth.numpy()
        # Depth and labels are resized with the same nearest rule: every pixel agrees
        # (stripes differ by 0.26 in normalized depth; the tolerance is float rounding).
        np.testing.assert_allclose(depth, np.vectorize(depth_of.get)(labels), atol=1e-5)
        # rgb is bilinear: compare away from edges (labels constant 2 pixels around, and
        # not at the border, where bilinear may blend in a source row just outside).
        red = item.rgb[0].numpy() * (255 * 0.229) + 255 * 0.485
        box = np.ones((5, 5), np.uint8)
        interior = cv2.erode(labels.astype(np.uint8), box) == cv2.dilate(labels.astype(np.uint8), box)
        interior[[0, 1, -2, -1]] = False
        interior[:, [0, 1, -2, -1]] = False
        expected_red = np.where(labels == 255, 0, labels * 30 + 10)
        np.testing.assert_allclose(red[interior], expected_red[interior], atol=0.01)
    assert len({item.labels.numpy().tobytes() for item in items}) > 1     # epochs differ
    torch_ds.set_epoch(2)
    again = torch_ds[0]
    assert all(torch.equal(a, b) for a, b in zip(again[:3], items[2][:3]))
    plain = TorchSegmentationDataset(ds, cfg)[0]
    np.testing.assert_array_equal(plain.labels.numpy(), stripe)


# --- importer and CLI ----------------------------------------------------------------

def assert_same_images(a: Path, b: Path) -> None:
    names = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert names == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    match, mismatch, errors = filecmp.cmpfiles(a, b, [str(n) for n in names], shallow=False)
    assert not mismatch and not errors


def test_cityscapes_import_round_trip(tmp_path, capsys):
    root, out = tmp_path / "cs", tmp_path / "out"
    disparity = disparity_png(np.random.default_rng(0).uniform(4, 200, (H, W)))  # 1 to 50 m
    disparity[:2] = 0
    names = [cityscapes_sample(root, "val", "lindau", i, disparity=disparity) for i in range(3)]
    assert main(["import", "--from", "cityscapes", str(root), "--split", "val", "--out", str(out)]) == 0
    assert "imported 3 samples" in capsys.readouterr().out
    assert (out / "val.txt").read_text().splitlines()[0] == \
        f"rgb/{names[0]}.png depth/{names[0]}.png label/{names[0]}.png"

    source, imported = open_dataset(root, split="val"), open_dataset(out / "val.txt")
    assert len(imported) == 3
    for s, t in zip(source, imported):
        assert s.name == t.name
        np.testing.assert_array_equal(t.rgb, s.rgb)
        np.testing.assert_array_equal(t.labels, s.labels)
        # Depth is stored in whole millimetres: the PNG holds exactly the rounded source.
        np.testing.assert_array_equal(read_raw(out / "depth" / f"{s.name}.png"), metres_to_mm16(s.depth_m))
        assert np.abs(t.depth_m - s.depth_m).max() <= 5e-4 and np.array_equal(t.depth_m == 0, s.depth_m == 0)
    # The canonical layout imports onto itself unchanged, byte for byte.
    assert main(["import", "--from", "ianvs", str(out / "val.txt"), "--out", str(tmp_path / "again")]) == 0
    assert_same_images(out, tmp_path / "again")
    assert (tmp_path / "again" / "val.txt").read_text() == (out / "val.txt").read_text()


def test_ianvs_import_round_trip_is_pixel_identical(tmp_path):
    src = tmp_path / "src"
    rgb = [random_rgb(i) for i in range(3)]
    labels = [random_labels(10 + i, 40) for i in range(3)]
    depth16 = np.random.default_rng(1).integers(0, 65535, (H, W)).astype(np.uint16)
    for i in range(3):
        write(src / "img" / f"f{i}.png", rgb[i])
        write(src / "gt" / f"f{i}.png", labels[i])
    write(src / "d" / "f0.png", depth16)
    (src / "train.txt").write_text("img/f0.png d/f0.png gt/f0.png\nimg/f1.png gt/f1.png\n"
                                   f"{src / 'img' / 'f2.png'} {src / 'gt' / 'f2.png'}\n")
    out = tmp_path / "out"
    assert main(["import", "--from", "ianvs", str(src / "train.txt"), "--out", str(out), "--num-classes", "30"]) == 0
    assert (out / "train.txt").read_text().splitlines()[1] == "rgb/f1.png label/f1.png"
    ds = open_dataset(out / "train.txt")
    for i, sample in enumerate(ds):
        np.testing.assert_array_equal(sample.rgb, rgb[i])
        np.testing.assert_array_equal(sample.labels, np.where(labels[i] < 30, labels[i], 255))
    np.testing.assert_array_equal(read_raw(out / "depth" / "f0.png"), depth16)   # mm16 stays byte-identical
    assert ds[1].depth_m is None


def test_import_without_unique_names_or_source_fails_clearly(tmp_path, capsys):
    write(tmp_path / "a" / "x.png", random_rgb(0))
    write(tmp_path / "b" / "x.png", random_rgb(1))
    write(tmp_path / "l.png", random_labels(0))
    (tmp_path / "i.txt").write_text("a/x.png l.png\nb/x.png l.png\n")
    assert main(["import", "--from", "ianvs", str(tmp_path / "i.txt"), "--out", str(tmp_path / "o")]) == 1
    assert "samples 0 and 1 are both named 'x'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "i.txt").exists()                  # no index for a partial import
    assert main(["import", "--from", "cityscapes", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1
    assert "not a Cityscapes folder" in capsys.readouterr().err


def test_metres_to_mm16_edge_cases():
    depth = np.float32([0, -1, np.nan, np.inf, 1e-4, 1.2344, 1.2346, 70.0])
    assert metres_to_mm16(depth).tolist() == [0, 0, 0, 0, 1, 1234, 1235, 65535]


def test_info_prints_counts_sizes_and_class_histogram(tmp_path, capsys):
    labels = np.zeros((H, W), np.uint8)
    labels[:, :8] = 3
    labels[0, 0] = 255
    index = index_dataset(tmp_path, random_rgb(0), np.full((H, W), 1000, np.uint16), labels)
    assert main(["info", str(index)]) == 0
    out = capsys.readouterr().out
    assert "samples: 1" in out and "size 32x24 (WxH): 1" in out and "with depth: 1 (100.0%" in out
    assert f"class   0: {H * W - H * 8}" in out and f"class   3: {H * 8 - 1}" in out
    assert "class 255 (ignore): 1" in out
    assert main(["info", str(tmp_path)]) == 1
    assert "give one of its index files: i.txt" in capsys.readouterr().err
