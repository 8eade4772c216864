"""Bag tools: dataset -> bag -> replay over DDS -> recorder process -> bag.

A small Ianvs-style dataset (PNG files + index) is turned into MCAP and sqlite3
bags, read back with rosbags and compared pixel for pixel with the PNGs. Then
bag_replay and bag_record run as separate processes in a private ROS domain:
every frame must arrive unchanged, re-stamped consistently across topics, at
about the requested rate, and the recording must be a readable bag after SIGINT.
"""
from __future__ import annotations

import signal
import time

import cv2
import numpy as np
import pytest
import yaml

from ros_processes import Proc, python_module, ros_env
from seg_edge_node import bag_from_dataset
from seg_edge_node.bag_from_dataset import DEPTH_TOPIC, INFO_TOPIC, LABELS_TOPIC, RGB_TOPIC, START_NS
from seg_edge_node.bag_io import BagError, open_reader, open_writer, storage_for, typestore
from seg_edge_node.bag_record import resolve_types
from seg_edge_node.bag_replay import Restamper, header_paths
from seg_harness.synthetic_camera import synthetic_frame
from seg_msgs.msg import SegmentationResult

pytestmark = [pytest.mark.ros, pytest.mark.timeout(60)]

H, W, N, RATE = 120, 160, 5, 10.0
CAMERA_TOPICS = [RGB_TOPIC, DEPTH_TOPIC, INFO_TOPIC, LABELS_TOPIC]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Index file and the pixels its PNGs hold: [(rgb, depth_mm, labels)] * N."""
    root = tmp_path_factory.mktemp("dataset")
    for sub in ("rgb", "depth", "label"):
        (root / sub).mkdir()
    rng = np.random.default_rng(7)
    samples, lines = [], ["# rgb depth label", ""]
    for i in range(N):
        rgb, depth_m = synthetic_frame(i, H, W)
        depth = np.round(depth_m * 1000).astype(np.uint16)
        labels = rng.integers(0, 19, (H, W), dtype=np.uint8)
        labels[:5] = 255  # the ignore id must survive too
        cv2.imwrite(str(root / f"rgb/{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / f"depth/{i:03d}.png"), depth)
        cv2.imwrite(str(root / f"label/{i:03d}.png"), labels)
        lines.append(f"rgb/{i:03d}.png depth/{i:03d}.png label/{i:03d}.png")
        samples.append((rgb, depth, labels))
    index = root / "test.txt"
    index.write_text("\n".join(lines) + "\n")
    camera_yaml = root / "camera.yaml"
    camera_yaml.write_text(yaml.safe_dump({"fx": 100.0, "fy": 101.0, "cx": 80.5, "cy": 60.5, "width": W, "height": H}))
    return index, camera_yaml, samples


def make_bag(dataset, out, *args) -> None:
    index, _, _ = dataset
    assert bag_from_dataset.main(["--index", str(index), "--out", str(out), "--rate", str(RATE), *args]) == 0


def read_bag(path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(bag time ns, rosbags message)] in bag order."""
    out: dict[str, list] = {}
    with open_reader(path) as reader:
        for connection, t, data in reader.messages():
            out.setdefault(connection.topic, []).append((t, typestore().deserialize_cdr(data, connection.msgtype)))
    return out


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def pixels(msg) -> np.ndarray:
    dtype = np.uint16 if msg.encoding == "16UC1" else np.uint8
    shape = (msg.height, msg.width, 3) if msg.encoding == "rgb8" else (msg.height, msg.width)
    return np.frombuffer(msg.data.tobytes(), dtype).reshape(shape)


@pytest.mark.parametrize("name,storage,with_yaml", [("run.mcap", None, True), ("run.db3", None, False),
                                                    ("run_dir", "sqlite3", False)])
def test_dataset_bag_holds_the_pngs_pixels_with_one_stamp_per_frame(dataset, tmp_path, name, storage, with_yaml):
    _, camera_yaml, samples = dataset
    out = tmp_path / name
    make_bag(dataset, out, *(["--storage", storage] if storage else []),
             *(["--camera-yaml", str(camera_yaml)] if with_yaml else []), "--frame-id", "cam")
    assert out.is_file() == (storage is None), "a .mcap/.db3 name is one file, any other a bag directory"
    bag = read_bag(out)
    assert {t: len(m) for t, m in bag.items()} == {t: N for t in CAMERA_TOPICS}
    for i, (rgb, depth, labels) in enumerate(samples):
        frame = {t: bag[t][i] for t in CAMERA_TOPICS}
        expected = START_NS + round(i * 1e9 / RATE)
        assert {stamp_ns(m) for _, m in frame.values()} == {expected}, f"frame {i}: one stamp on all topics"
        assert {t for t, _ in frame.values()} == {expected}, "bag time = header stamp"
        assert {m.header.frame_id for _, m in frame.values()} == {"cam"}
        rgb_msg, depth_msg, info, label_msg = (frame[t][1] for t in CAMERA_TOPICS)
        assert (rgb_msg.encoding, depth_msg.encoding, label_msg.encoding) == ("rgb8", "16UC1", "mono8")
        np.testing.assert_array_equal(pixels(rgb_msg), rgb)
        np.testing.assert_array_equal(pixels(depth_msg), depth)
        np.testing.assert_array_equal(pixels(label_msg), labels)
        assert (info.width, info.height) == (W, H)
        if with_yaml:
            assert list(info.k) == [100.0, 0.0, 80.5, 0.0, 101.0, 60.5, 0.0, 0.0, 1.0]
        else:
            assert info.k[0] == info.k[4] > 0 and (info.k[2], info.k[5]) == (W / 2, H / 2)


def test_bad_inputs_are_reported_clearly(dataset, tmp_path):
    index, _, _ = dataset
    with pytest.raises(BagError, match="does not exist"):
        bag_from_dataset.read_index(tmp_path / "missing.txt")
    bad = index.parent / "bad.txt"
    bad.write_text("rgb/000.png depth/000.png label/000.png\nrgb/404.png label/000.png\n")
    with pytest.raises(BagError, match=r"bad.txt:2: .*rgb/404.png"):
        bag_from_dataset.read_index(bad)
    bad.write_text("rgb/000.png\n")
    with pytest.raises(BagError, match="expected 'rgb.png"):
        bag_from_dataset.read_index(bad)
    bad.write_text("rgb/000.png rgb/000.png label/000.png\n")  # 8-bit colour where depth belongs
    with pytest.raises(BagError, match="16-bit"):
        bag_from_dataset.write_bag(bag_from_dataset.read_index(bad), tmp_path / "x.mcap", None, RATE, "c", None)
    with pytest.raises(BagError, match="unknown bag storage 'rosbag1'"):
        storage_for(tmp_path / "x", "rosbag1")
    with pytest.raises(BagError, match="names a mcap file"):
        open_writer(tmp_path / "y.mcap", "sqlite3")
    (tmp_path / "taken.mcap").touch()
    with pytest.raises(BagError, match="already exists"):
        open_writer(tmp_path / "taken.mcap")
    with open_writer(tmp_path / "types.mcap") as bag, pytest.raises(BagError, match="cannot find the .msg files"):
        bag.add_topic("/x", "no_such_pkg/msg/Thing")
    with pytest.raises(BagError, match=r"unknown type for topic /odom; pass --types /odom="):
        resolve_types(["/seg_edge_node/labels", "/odom"], [])
    assert resolve_types(["/seg_edge_node/result", "/odom"], ["/odom=nav_msgs/Odometry"]) == {
        "/seg_edge_node/result": "seg_msgs/msg/SegmentationResult", "/odom": "nav_msgs/msg/Odometry"}


def test_restamp_maps_equal_stamps_to_equal_new_ones_and_finds_nested_headers():
    clock = iter([1000, 1000, 5000])
    restamp = Restamper(lambda: next(clock))
    assert [restamp(7), restamp(7), restamp(8), restamp(7), restamp(9)] == [1000, 1000, 1001, 1000, 5000]
    assert header_paths(SegmentationResult) == [("header",), ("labels", "header"), ("confidence", "header")]


def start_recorder(tmp, env, out, topics, *args) -> Proc:
    return Proc("record", python_module("seg_edge_node.bag_record", "--out", out, "--topics", *topics, *args),
                env, tmp)


def test_replay_restamps_and_recorder_keeps_every_frame_after_sigint(dataset, tmp_path):
    bag = tmp_path / "run.mcap"
    make_bag(dataset, bag)
    env = ros_env(tmp_path)
    recorder = start_recorder(tmp_path, env, tmp_path / "rec.mcap", CAMERA_TOPICS)
    replay_rate = 2.0  # 10 Hz bag time -> 20 frames per second
    t_start = time.time_ns()
    replay = Proc("replay", python_module("seg_edge_node.bag_replay", bag, "--rate", replay_rate,
                                          "--wait-topics", *CAMERA_TOPICS, "--wait-subscribers", 20), env, tmp_path)
    assert replay.wait(30) == 0, replay.log()
    time.sleep(0.5)  # replay exits once DDS acknowledged every message; let the callbacks write them
    recorder.signal(signal.SIGINT)
    assert recorder.wait(10) == 0, recorder.log()
    assert '"messages": {"/camera/color/image_raw": 5' in replay.log()

    original, recorded = read_bag(bag), read_bag(tmp_path / "rec.mcap")
    assert {t: len(m) for t, m in recorded.items()} == {t: N for t in CAMERA_TOPICS}, recorder.log()
    for i in range(N):
        new_stamps = {stamp_ns(recorded[t][i][1]) for t in CAMERA_TOPICS}
        assert len(new_stamps) == 1, f"frame {i}: the labels keep the camera frame's (new) stamp"
        new_stamp = new_stamps.pop()
        assert t_start < new_stamp <= recorded[RGB_TOPIC][i][0], "re-stamped to the time of publishing"
        assert recorded[RGB_TOPIC][i][0] - new_stamp < 0.5e9
        for topic in (RGB_TOPIC, DEPTH_TOPIC, LABELS_TOPIC):
            assert recorded[topic][i][1].data.tobytes() == original[topic][i][1].data.tobytes(), (topic, i)
    received = np.array([t for t, _ in recorded[RGB_TOPIC]]) / 1e9
    expected_span = (N - 1) / (RATE * replay_rate)
    assert 0.7 * expected_span < received[-1] - received[0] < expected_span + 0.3, np.diff(received)


def test_fast_replay_with_clock_into_a_counting_sqlite_recorder(dataset, tmp_path):
    bag = tmp_path / "run.db3"
    make_bag(dataset, bag)
    env = ros_env(tmp_path)
    topics = [LABELS_TOPIC, RGB_TOPIC, "/clock"]
    recorder = start_recorder(tmp_path, env, tmp_path / "rec.db3", topics, "--count", 3,
                              "--count-topic", LABELS_TOPIC)
    replay = Proc("replay", python_module("seg_edge_node.bag_replay", bag, "--rate", 0, "--clock",
                                          "--topics", LABELS_TOPIC, RGB_TOPIC,
                                          "--wait-topics", LABELS_TOPIC, RGB_TOPIC), env, tmp_path)
    assert recorder.wait(30) == 0, recorder.log() + replay.log()
    assert replay.wait(30) == 0, replay.log()

    recorded = read_bag(tmp_path / "rec.db3")
    assert len(recorded[LABELS_TOPIC]) == 3, "the recorder stops after --count messages on --count-topic"
    bag_times = [START_NS + round(i * 1e9 / RATE) for i in range(N)]
    assert [stamp_ns(m) for _, m in recorded[LABELS_TOPIC]] == bag_times[:3], "--clock keeps the bag's stamps"
    clocks = [m.clock.sec * 1_000_000_000 + m.clock.nanosec for _, m in recorded["/clock"]]
    assert clocks and set(clocks) <= set(bag_times), "/clock carries the bag's time"


def test_replay_rejects_topics_not_in_the_bag(dataset, tmp_path):
    bag = tmp_path / "run.mcap"
    make_bag(dataset, bag)
    replay = Proc("replay", python_module("seg_edge_node.bag_replay", bag, "--topics", "/nope"),
                  ros_env(tmp_path), tmp_path)
    assert replay.wait(20) == 1
    assert "topic(s) /nope are not in" in replay.log() and RGB_TOPIC in replay.log()
