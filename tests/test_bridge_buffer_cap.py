"""The bridge stores hard frames through the replay buffer: its size cap holds after
every insert, oldest pseudo-labels evicted first (a real bridge process and mosquitto)."""
from __future__ import annotations

import pytest

from bridge_processes import RobotClient, make_hard_frame, start_bridge
from seg_harness.local_cloud import LocalBroker
from cloud_bridge.sample_store import SqliteSampleStore
from seg_harness.processes import wait_until

pytestmark = pytest.mark.timeout(240)
CAP = 4


def stored(storage) -> list[str]:
    with SqliteSampleStore(storage / "samples") as store:
        return [info.frame_uuid for info in store.list(limit=1000)]


def test_the_bridge_keeps_the_replay_buffer_cap_at_every_insert(tmp_path):
    storage = tmp_path / "store"
    with LocalBroker(tmp_path / "broker") as broker:
        bridge = start_bridge(tmp_path, broker.port, "b1", storage, **{"lifelong.buffer.max_samples": CAP})
        robot = RobotClient(broker.port, "dog1")
        try:
            sent = []
            for i in range(CAP + 3):
                frame = make_hard_frame("dog1", i)
                robot.send(frame)
                sent.append(frame.frame_uuid)
                # One at a time: the store's insertion order is then the sending order.
                wait_until(lambda: frame.frame_uuid in robot.refined, 90, f"the refined result of frame {i}")
                assert len(stored(storage)) == min(i + 1, CAP), f"cap broken after frame {i}"
            assert set(stored(storage)) == set(sent[-CAP:]), "the oldest frames go first"
            wait_until(lambda: bridge.stats().get("evicted") == 3, 20, f"the eviction count ({bridge.stats()})")
        finally:
            robot.close()
            bridge.stop()
