"""Mining rules on constructed inputs whose answers are known exactly."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seg_edge_node.hard_mining import (HardExampleMiner, MiningConfig, mean_certainty,
                                       mean_margin, softmax)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def miner(policy="confidence_fraction", clock=None, **kw):
    kw.setdefault("budget_per_minute", 600.0)
    kw.setdefault("budget_burst", 1000)
    return HardExampleMiner(MiningConfig(policy=policy, **kw), clock or Clock())


def test_ianvs_rule_hard_when_confident_fraction_not_above_threshold():
    conf = np.full((10, 10), 0.99, np.float32)
    conf.flat[:5] = 0.5                       # 95 % confident: "not above 0.95" -> hard
    d = miner().assess(conf, None)
    assert d.is_hard and d.score == pytest.approx(0.05)
    conf.flat[4] = 0.99                       # 96 % -> easy
    d = miner().assess(conf, None)
    assert not d.is_hard and d.score == pytest.approx(0.04)


def test_ianvs_rule_threshold_is_strictly_greater():
    conf = np.full((4, 4), 0.9, np.float32)   # exactly 0.9 is not "exceeds 0.9"
    assert miner().assess(conf, None).score == 1.0


def one_hot_logits(c=5, h=4, w=4, scale=50.0):
    logits = np.zeros((c, h, w), np.float32)
    logits[0] = scale
    return logits


def test_entropy_rule_one_hot_is_certain_and_uniform_is_not():
    assert mean_certainty(softmax(one_hot_logits())) == pytest.approx(1.0, abs=1e-6)
    assert mean_certainty(softmax(np.zeros((5, 4, 4), np.float32))) == pytest.approx(0.0, abs=1e-6)
    assert not miner("entropy").assess(np.ones((4, 4)), one_hot_logits()).is_hard
    d = miner("entropy").assess(np.ones((4, 4)), np.zeros((5, 4, 4), np.float32))
    assert d.is_hard and d.score == pytest.approx(1.0, abs=1e-6)


def test_entropy_rule_averages_per_pixel_certainty():
    # Half the pixels one-hot (certainty 1), half uniform (certainty 0): mean 0.5.
    logits = np.zeros((4, 2, 2), np.float32)
    logits[0, 0, :] = 60.0
    assert mean_certainty(softmax(logits)) == pytest.approx(0.5, abs=1e-6)
    assert not miner("entropy", entropy_threshold=0.5).assess(np.ones((2, 2)), logits).is_hard
    assert miner("entropy", entropy_threshold=0.51).assess(np.ones((2, 2)), logits).is_hard


def test_margin_rule_known_values():
    # p = (0.5, 0.3, 0.2) everywhere: margin 0.2.
    logits = np.log(np.array([0.5, 0.3, 0.2], np.float32))[:, None, None] * np.ones((3, 3, 3), np.float32)
    assert mean_margin(softmax(logits)) == pytest.approx(0.2, abs=1e-6)
    d = miner("margin", margin_threshold=0.25).assess(np.ones((3, 3)), logits)
    assert d.is_hard and d.score == pytest.approx(0.8, abs=1e-6)
    assert not miner("margin", margin_threshold=0.15).assess(np.ones((3, 3)), logits).is_hard


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_scores_stay_in_unit_interval(classes, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((classes, 3, 5)) * rng.uniform(0.1, 30)).astype(np.float32)
    probs = softmax(logits)
    assert -1e-5 <= mean_certainty(probs) <= 1 + 1e-5
    assert -1e-6 <= mean_margin(probs) <= 1 + 1e-6


def test_random_policy_rate_and_reproducibility():
    a = [miner("random", random_rate=0.2, seed=7).assess(np.ones((2, 2)), None).is_hard for _ in range(1)]
    m1, m2 = miner("random", random_rate=0.2, seed=7), miner("random", random_rate=0.2, seed=7)
    s1 = [m1.assess(np.ones((2, 2)), None).is_hard for _ in range(2000)]
    s2 = [m2.assess(np.ones((2, 2)), None).is_hard for _ in range(2000)]
    assert s1 == s2 and a[0] == s1[0]
    assert 0.17 < np.mean(s1) < 0.23


def test_budget_caps_uploads_per_minute():
    clock = Clock()
    m = miner(clock=clock, budget_per_minute=6.0, budget_burst=2)
    hard = np.zeros((4, 4), np.float32)       # every frame hard
    uploads = []
    for i in range(600):                      # 60 s of 10 Hz frames
        clock.now = i * 0.1
        uploads.append(m.assess(hard, None).upload)
    # 2 saved-up tokens plus 6 a minute over the ~60 s.
    assert sum(uploads) == 2 + 5
    assert m.hard_frames == 600 and m.over_budget == 600 - sum(uploads)


def test_easy_frames_do_not_spend_budget():
    clock = Clock()
    m = miner(clock=clock, budget_per_minute=1.0, budget_burst=1)
    assert not m.assess(np.ones((4, 4), np.float32), None).upload
    assert m.assess(np.zeros((4, 4), np.float32), None).upload


def test_zero_budget_never_uploads():
    m = miner(budget_per_minute=0.0, budget_burst=1)
    assert not any(m.assess(np.zeros((2, 2)), None).upload for _ in range(10))


@pytest.mark.parametrize("kw,name", [
    ({"policy": "entropyy"}, "mining.policy"),
    ({"confidence_threshold": 1.5}, "mining.confidence_threshold"),
    ({"random_rate": -0.1}, "mining.random_rate"),
    ({"budget_per_minute": -1.0}, "mining.budget_per_minute"),
    ({"budget_per_minute": math.inf}, "mining.budget_per_minute"),
    ({"budget_burst": 0}, "mining.budget_burst"),
])
def test_bad_configuration_names_the_parameter(kw, name):
    with pytest.raises(ValueError, match=name):
        MiningConfig(**kw)


def test_entropy_without_logits_is_explained():
    with pytest.raises(ValueError, match="needs the class logits"):
        miner("entropy").assess(np.ones((2, 2)), None)
