"""Test-side helpers around real bridge processes and a real broker."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from seg_harness.local_cloud import BridgeRunner
from seg_harness.synthetic_camera import synthetic_frame
from segwire import HardFrame, decode_refined, encode_hard_frame, hard_topic, refined_topic


def start_bridge(tmp: Path, port: int, bridge_id: str, storage: Path, prefix: tuple[str, ...] = (),
                 **settings) -> BridgeRunner:
    """A subscribed bridge using weights-free region proposals."""
    runner = BridgeRunner(tmp, bridge_id, storage, {
        "broker.host": "127.0.0.1", "broker.port": port, "broker.share_group": "test",
        "refinement.regions.method": "felzenszwalb", **settings}, prefix=prefix).start()
    runner.wait_subscribed()
    return runner


def make_hard_frame(robot_id: str, index: int, h: int = 120, w: int = 160) -> HardFrame:
    rgb, depth = synthetic_frame(index, h, w)
    labels = np.where(depth > 0, 0, 10).astype(np.uint8)  # "road" below, "sky" above
    return HardFrame(robot_id=robot_id, frame_uuid=str(uuid.uuid4()), stamp_ns=1_000_000_000 + index,
                     frame_id="camera", model_version="0123456789ab", mining_policy="random",
                     mining_score=0.5, rgb=rgb, depth_m=depth, edge_labels=labels)


class RobotClient:
    """A test client speaking the wire protocol directly: publishes hard frames and
    collects refined results (for tests where the ROS node is beside the point)."""

    def __init__(self, port: int, robot_id: str, host: str = "127.0.0.1"):
        self.robot_id = robot_id
        self.refined: dict[str, object] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-robot-{robot_id}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(refined_topic(robot_id), qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        result = decode_refined(message.payload)
        with self._lock:
            self.refined[result.frame_uuid] = result

    def send(self, frame: HardFrame) -> None:
        self.client.publish(hard_topic(self.robot_id), encode_hard_frame(frame), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
