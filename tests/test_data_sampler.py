"""The window sampler: deterministic per seed, resumable from its state, one visit per epoch."""

from __future__ import annotations

import numpy as np
import pytest

from growlm.data import SamplerState, TokenWindows, WindowSampler
from growlm.errors import InvalidData


def test_same_seed_same_stream_and_other_seed_differs():
    a, b, c = WindowSampler(100, 7), WindowSampler(100, 7), WindowSampler(100, 8)
    assert np.array_equal(a.take(250), b.take(250))
    assert not np.array_equal(WindowSampler(100, 7).take(50), c.take(50))


def test_each_epoch_visits_every_window_once_in_a_new_order():
    s = WindowSampler(37, 3)
    first, second = s.take(37), s.take(37)
    assert sorted(first.tolist()) == list(range(37)) == sorted(second.tolist())
    assert not np.array_equal(first, second)
    assert s.state_dict() == {"epoch": 2, "cursor": 0, "seed": 3}


@pytest.mark.parametrize("cut", [0, 5, 36, 37, 60])
def test_resume_from_state_continues_the_stream(cut):
    whole = WindowSampler(37, 11).take(100)
    s = WindowSampler(37, 11)
    head = s.take(cut)
    resumed = WindowSampler(37, 11)
    resumed.load_state_dict(dict(s.state_dict()))
    assert np.array_equal(np.concatenate([head, resumed.take(100 - cut)]), whole)


def test_state_from_another_seed_is_refused():
    s = WindowSampler(10, 1, SamplerState(epoch=1, cursor=3))
    with pytest.raises(InvalidData, match="different data seed"):
        WindowSampler(10, 2).load_state_dict(s.state_dict())


def test_windows_are_aligned_slices_across_shards():
    a = np.arange(0, 21, dtype=np.uint16)  # (21 - 1) // 4 = 5 windows
    b = np.arange(100, 110, dtype=np.uint16)  # 2 windows
    w = TokenWindows([a, b], seq_len=4)
    assert w.count == 7
    batch = w.batch(np.array([0, 4, 5, 6]))
    assert batch.shape == (4, 5)
    assert batch[0].tolist() == [0, 1, 2, 3, 4]
    assert batch[1].tolist() == [16, 17, 18, 19, 20]
    assert batch[2].tolist() == [100, 101, 102, 103, 104]
    assert batch[3].tolist() == [104, 105, 106, 107, 108]


def test_too_short_split_is_an_error():
    with pytest.raises(InvalidData, match="too few for one window"):
        TokenWindows([np.arange(8, dtype=np.uint16)], seq_len=8, split="val")
