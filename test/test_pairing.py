# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Approximate-time pairing of RGB, depth and CameraInfo."""

from __future__ import annotations

from dataclasses import dataclass, field
import random
import sys
import threading

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from spatial_vlm_ros.core import pairing as pr
from spatial_vlm_ros.core.stamps import StampError, header_stamp_ns

MS = 1_000_000


def pairer(**overrides) -> pr.StampPairer:
    return pr.StampPairer(pr.PairingConfig(**overrides))


def stamps_of(sets: list[pr.RgbdSet]) -> list[tuple[int, int]]:
    return [(matched.rgb.stamp_ns, matched.depth.stamp_ns) for matched in sets]


# ----------------------------------------------------------------------------- basics


def test_identical_stamps_are_emitted_at_once():
    sync = pairer()
    assert sync.add('info', 0, 'info') == []
    assert sync.add('rgb', 100 * MS, 'rgb') == []
    sets = sync.add('depth', 100 * MS, 'depth')
    assert len(sets) == 1
    assert (sets[0].rgb.payload, sets[0].depth.payload, sets[0].info.payload) == (
        'rgb',
        'depth',
        'info',
    )
    assert sets[0].stamp_ns == 100 * MS and sets[0].depth.stamp_ns == sets[0].rgb.stamp_ns


def test_a_match_waits_until_no_closer_depth_can_arrive():
    sync = pairer(slop_ns=20 * MS)
    sync.add('info', 0, 'info')
    assert sync.add('rgb', 100 * MS, 'rgb') == []
    assert sync.add('depth', 95 * MS, 'd95') == []  # 96..104 ms may still come and be closer
    assert sync.add('depth', 99 * MS, 'd99') == []  # 99..101 ms may still come
    # 102 ms: later in-order depth is at least 2 ms off, so 99 ms (1 ms off) is final
    sets = sync.add('depth', 102 * MS, 'd102')
    assert stamps_of(sets) == [(100 * MS, 99 * MS)]
    stats = sync.stats()
    assert stats.dropped['depth'] == {pr.UNMATCHED: 1}  # d95 was passed over
    assert stats.pending == {'rgb': 0, 'depth': 1, 'info': 1}


def test_depth_before_rgb_also_pairs():
    sync = pairer(slop_ns=10 * MS)
    sync.add('info', 0, 'info')
    sync.add('depth', 100 * MS, 'd100')
    sync.add('depth', 133 * MS, 'd133')
    sets = sync.add('rgb', 101 * MS, 'rgb')
    assert stamps_of(sets) == [(101 * MS, 100 * MS)]


def test_a_known_lower_bound_on_the_depth_interval_decides_without_the_next_depth():
    """2 Hz camera, depth stamped 5 ms before RGB (each message stamped when published): the
    strict rule waits for the next depth, 500 ms later; a lower bound on the interval (given,
    or learned from the stream as in message_filters' setInterMessageLowerBound) does not."""

    def run(**config) -> tuple[list[int], pr.StampPairer]:
        sync = pairer(slop_ns=50 * MS, **config)
        sync.add('info', 0, 'info')
        emitted_at = []  # for each set, the index of the message that completed it
        for frame in range(8):
            t = 1000 * MS + frame * 500 * MS
            for index, (stream, stamp) in enumerate((('depth', t - 5 * MS), ('rgb', t))):
                for _ in sync.add(stream, stamp, None, received_ns=stamp):
                    emitted_at.append(2 * frame + index)
        return emitted_at, sync

    waited, _ = run()  # the rule before: decided by the next frame's depth
    assert waited == [2, 4, 6, 8, 10, 12, 14]
    given, _ = run(min_interval_ns=400 * MS)
    assert given == [1, 3, 5, 7, 9, 11, 13, 15]  # each frame's own RGB completes it
    learned, sync = run(min_interval_ns=None)
    # Learning needs a few intervals first, then every frame completes on its own RGB.
    assert learned[-4:] == [9, 11, 13, 15] and sync.min_interval_ns('depth') == 250 * MS


def test_a_depth_image_one_period_late_is_still_paired_when_the_interval_is_learned():
    """2 Hz: depth arrives after the next RGB (a repaired reliable sample). The fixed 0.5 s wait
    equals the period and drops the frame (no_depth); a learned period waits 2.5 periods."""

    def run(**config) -> tuple[int, int]:
        sync = pairer(slop_ns=20 * MS, **config)
        sync.add('info', 0, 'info')
        emitted = 0
        for frame in range(10):
            t = 1000 * MS + frame * 500 * MS
            if frame == 8:  # frame 7's depth arrives after frame 8's RGB, in order
                emitted += len(sync.add('rgb', t, None))
                emitted += len(sync.add('depth', t - 500 * MS, None))
                emitted += len(sync.add('depth', t, None))
                continue
            if frame != 7:
                emitted += len(sync.add('depth', t, None))
            emitted += len(sync.add('rgb', t, None))
        return emitted, sync.stats().dropped['rgb'].get(pr.NO_DEPTH, 0)

    assert run()[1] == 1  # the fixed wait gave frame 7 up
    emitted, no_depth = run(min_interval_ns=None)
    assert no_depth == 0 and emitted >= 9


@settings(max_examples=200, deadline=None)
@given(
    st.integers(20, 200), st.integers(0, 15), st.integers(0, 60), st.randoms(use_true_random=False)
)
def test_a_learned_lower_bound_keeps_the_offline_result_on_regular_streams(
    period_ms, jitter_ms, slop_ms, rng
):
    """Streams at a steady rate with jitter below a quarter of the period: deciding early with
    the learned bound pairs exactly as the offline reference."""
    jitter_ms = min(jitter_ms, period_ms // 4)
    rgb = [i * period_ms * MS + rng.randint(0, jitter_ms) * MS for i in range(30)]
    depth = [i * period_ms * MS + rng.randint(0, jitter_ms) * MS for i in range(30)]
    sync = pairer(slop_ns=slop_ms * MS, queue_size=1000, max_wait_ns=10**12, min_interval_ns=None)
    sync.add('info', 0, 'info')
    queues = {'rgb': sorted(set(rgb)), 'depth': sorted(set(depth))}
    emitted = []
    while queues['rgb'] or queues['depth']:
        stream = rng.choice([name for name, queue in queues.items() if queue])
        emitted += sync.add(stream, queues[stream].pop(0), None)
    emitted += sync.flush()
    assert stamps_of(emitted) == offline_greedy(rgb, depth, slop_ms * MS)


def test_rgb_without_depth_in_slop_is_dropped_as_no_depth():
    sync = pairer(slop_ns=10 * MS)
    sync.add('info', 0, 'info')
    sync.add('rgb', 100 * MS, 'rgb')
    assert sync.add('depth', 150 * MS, 'far') == []
    stats = sync.stats()
    assert stats.dropped['rgb'] == {pr.NO_DEPTH: 1}
    assert stats.emitted == 0 and stats.pending['rgb'] == 0


def test_latched_camera_info_is_reused_for_every_frame():
    sync = pairer()
    sync.add('info', 0, 'latched')
    emitted = []
    for frame in range(5):
        sync.add('rgb', frame * 33 * MS, f'rgb{frame}')
        emitted += sync.add('depth', frame * 33 * MS, f'depth{frame}')
    assert len(emitted) == 5
    assert {matched.info.payload for matched in emitted} == {'latched'}


def test_frames_wait_for_the_first_camera_info_then_flow():
    sync = pairer(max_wait_ns=1000 * MS)
    sync.add('rgb', 0, 'rgb0')
    assert sync.add('depth', 0, 'depth0') == []
    sets = sync.add('info', 5 * MS, 'info')
    assert stamps_of(sets) == [(0, 0)]


def test_no_camera_info_drops_frames_after_max_wait():
    sync = pairer(max_wait_ns=100 * MS, queue_size=50)
    for frame in range(6):
        sync.add('rgb', frame * 30 * MS, frame)
        sync.add('depth', frame * 30 * MS, frame)
    stats = sync.stats()
    assert stats.dropped['rgb'] == {pr.NO_INFO: 2}  # 0 and 30 ms are more than 100 ms old
    assert stats.emitted == 0


def test_strict_info_mode_matches_info_by_stamp():
    sync = pairer(info_mode='strict', slop_ns=5 * MS)
    sync.add('info', 0, 'info0')
    sync.add('rgb', 0, 'rgb0')
    sets = sync.add('depth', 0, 'depth0')
    assert [matched.info.payload for matched in sets] == ['info0']
    sync.add('rgb', 100 * MS, 'rgb1')
    sync.add('depth', 100 * MS, 'depth1')
    sync.add('info', 200 * MS, 'info2')  # no info within 5 ms of 100 ms can come any more
    stats = sync.stats()
    assert stats.dropped['rgb'] == {pr.NO_INFO: 1}
    assert stats.emitted == 1


def test_stalled_depth_releases_rgb_after_max_wait():
    sync = pairer(max_wait_ns=100 * MS, slop_ns=10 * MS)
    sync.add('info', 0, 'info')
    sync.add('depth', 0, 'd0')  # depth then stalls: newest depth stays at 0
    for frame in range(1, 6):
        sync.add('rgb', frame * 30 * MS, frame)
    # only the rgb at 30 ms is >= 100 ms older than the newest rgb (150 ms)
    assert sync.stats().dropped['rgb'] == {pr.NO_DEPTH: 1}
    assert sync.stats().pending['rgb'] == 4


def test_flush_decides_everything_pending():
    sync = pairer(slop_ns=10 * MS)
    sync.add('info', 0, 'info')
    sync.add('rgb', 100 * MS, 'a')
    sync.add('depth', 98 * MS, 'd')
    sync.add('rgb', 200 * MS, 'b')
    assert stamps_of(sync.flush()) == [(100 * MS, 98 * MS)]
    stats = sync.stats()
    assert stats.pending['rgb'] == 0
    assert stats.dropped['rgb'] == {pr.NO_DEPTH: 1}


# ----------------------------------------------------------------------------- disorder


def test_out_of_order_rgb_within_the_window_is_sorted():
    sync = pairer(slop_ns=5 * MS)
    sync.add('info', 0, 'info')
    sync.add('rgb', 200 * MS, 'b')
    sync.add('rgb', 100 * MS, 'a')
    emitted = sync.add('depth', 100 * MS, 'd100')
    emitted += sync.add('depth', 200 * MS, 'd200')
    assert stamps_of(emitted) == [(100 * MS, 100 * MS), (200 * MS, 200 * MS)]


def test_never_emits_a_set_older_than_one_already_emitted():
    sync = pairer(slop_ns=5 * MS)
    sync.add('info', 0, 'info')
    sync.add('rgb', 200 * MS, 'new')
    assert len(sync.add('depth', 200 * MS, 'd200')) == 1
    assert sync.add('rgb', 100 * MS, 'old') == []
    assert sync.add('depth', 100 * MS, 'd100') == []
    stats = sync.stats()
    assert stats.dropped['rgb'] == {pr.LATE: 1}
    assert stats.dropped['depth'] == {pr.LATE: 1}


def test_duplicates_and_overflow_are_counted():
    sync = pairer(queue_size=3)
    sync.add('rgb', 10, 'a')
    sync.add('rgb', 10, 'again')
    for stamp in (20, 30, 40):
        sync.add('rgb', stamp, stamp)
    stats = sync.stats()
    assert stats.dropped['rgb'] == {pr.DUPLICATE: 1, pr.QUEUE_OVERFLOW: 1}
    assert stats.pending['rgb'] == 3
    flat = stats.as_flat_dict()
    assert flat['rgb.received'] == 5
    assert flat['rgb.dropped.queue_overflow'] == 1
    assert flat['emitted'] == 0
    assert sum(stats.dropped['rgb'].values()) == 2


def test_reset_forgets_everything():
    sync = pairer()
    sync.add('rgb', 10, 'a')
    sync.reset()
    assert sync.stats().received == {'rgb': 0, 'depth': 0, 'info': 0}
    sync.add('info', 0, 'i')
    sync.add('rgb', 5, 'b')  # older than before the reset: accepted
    assert len(sync.add('depth', 5, 'd')) == 1


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    'kwargs',
    [
        {'slop_ns': -1},
        {'queue_size': 0},
        {'slop_ns': 0.5},
        {'max_wait_ns': True},
        {'info_mode': 'sometimes'},
    ],
)
def test_config_is_validated(kwargs):
    with pytest.raises(pr.PairingError):
        pr.PairingConfig(**kwargs)


def test_config_from_seconds():
    config = pr.PairingConfig.from_seconds(slop_s=0.02, info_mode='strict', max_wait_s=1)
    assert config.slop_ns == 20 * MS and config.max_wait_ns == 1000 * MS
    assert config.info_mode is pr.InfoMode.STRICT
    with pytest.raises(pr.PairingError):
        pr.PairingConfig.from_seconds(slop_s=float('nan'))


def test_bad_stream_or_stamp_is_a_typed_error():
    sync = pairer()
    with pytest.raises(pr.PairingError):
        sync.add('thermal', 0, None)
    with pytest.raises(pr.PairingError):
        sync.add('rgb', 1.5, None)
    with pytest.raises(pr.PairingError):
        sync.add('rgb', True, None)


@dataclass
class Time:
    sec: int = 0
    nanosec: int = 0


@dataclass
class Header:
    stamp: Time = field(default_factory=Time)


@dataclass
class Msg:
    header: Header = field(default_factory=Header)


def test_header_stamp_ns():
    assert header_stamp_ns(Msg(Header(Time(3, 42)))) == 3_000_000_042
    assert header_stamp_ns(object(), default=-1) == -1
    with pytest.raises(StampError):
        header_stamp_ns(object())


# ----------------------------------------------------------------------------- properties


def offline_greedy(rgb_stamps, depth_stamps, slop_ns):
    """Reference: every RGB in order takes the closest unused depth newer than the last used."""
    pairs = []
    last_depth = None
    for rgb in sorted(set(rgb_stamps)):
        candidates = [
            depth
            for depth in sorted(set(depth_stamps))
            if abs(depth - rgb) <= slop_ns and (last_depth is None or depth > last_depth)
        ]
        if candidates:
            best = min(candidates, key=lambda depth: (abs(depth - rgb), depth))
            pairs.append((rgb, best))
            last_depth = best
    return pairs


stamp_lists = st.lists(st.integers(0, 2000), max_size=25)


@settings(max_examples=300, deadline=None)
@given(stamp_lists, stamp_lists, st.integers(0, 60), st.randoms(use_true_random=False))
def test_in_order_streams_match_the_offline_reference(rgb, depth, slop, rng):
    """Any interleaving of two in-order streams gives the offline greedy result."""
    sync = pairer(slop_ns=slop, queue_size=1000, max_wait_ns=10**9)
    sync.add('info', 0, 'info')
    queues = {'rgb': sorted(set(rgb)), 'depth': sorted(set(depth))}
    emitted = []
    while queues['rgb'] or queues['depth']:
        stream = rng.choice([name for name, queue in queues.items() if queue])
        emitted += sync.add(stream, queues[stream].pop(0), None)
    emitted += sync.flush()
    assert stamps_of(emitted) == offline_greedy(rgb, depth, slop)


def check_invariants(sync, emitted, sent):
    rgb_stamps = [matched.rgb.stamp_ns for matched in emitted]
    depth_stamps = [matched.depth.stamp_ns for matched in emitted]
    assert rgb_stamps == sorted(set(rgb_stamps)), 'RGB stamps must strictly increase'
    assert depth_stamps == sorted(set(depth_stamps)), 'depth stamps must strictly increase'
    slop = sync.config.slop_ns
    assert all(abs(matched.depth.stamp_ns - matched.rgb.stamp_ns) <= slop for matched in emitted)
    for matched in emitted:  # payloads are the very messages sent, never mixed up
        assert matched.rgb.payload == ('rgb', matched.rgb.stamp_ns)
        assert matched.depth.payload == ('depth', matched.depth.stamp_ns)
    stats = sync.stats()
    assert stats.emitted == len(emitted)
    for stream in ('rgb', 'depth'):
        assert stats.received[stream] == sent[stream]
        used = len(emitted)
        assert stats.received[stream] == (
            used + sum(stats.dropped[stream].values()) + stats.pending[stream]
        ), stream


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(['rgb', 'depth']), st.integers(0, 500)), max_size=60),
    st.integers(0, 40),
    st.integers(1, 6),
    st.integers(0, 200),
)
def test_any_arrival_order_keeps_the_invariants(arrivals, slop, queue_size, max_wait):
    sync = pairer(slop_ns=slop, queue_size=queue_size, max_wait_ns=max_wait)
    sync.add('info', 0, 'info')
    emitted = []
    sent = {'rgb': 0, 'depth': 0}
    for stream, stamp in arrivals:
        sent[stream] += 1
        emitted += sync.add(stream, stamp, (stream, stamp))
    check_invariants(sync, emitted, sent)
    emitted += sync.flush()
    check_invariants(sync, emitted, sent)
    assert sync.stats().pending['rgb'] == 0


def test_concurrent_callbacks_keep_the_invariants():
    # Switch threads as often as possible so the two feeders really interleave.
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        run_concurrent_feeders()
    finally:
        sys.setswitchinterval(previous_interval)


def run_concurrent_feeders():
    # Buffers large enough to absorb any skew between the threads: every frame must pair.
    count = 5000
    sync = pairer(slop_ns=5, queue_size=count, max_wait_ns=10**9)
    sync.add('info', 0, 'info')
    emitted = []
    emitted_lock = threading.Lock()

    def feed(stream, seed):
        local_rng = random.Random(seed)
        for stamp in range(count):
            jitter = local_rng.randint(-2, 2)
            out = sync.add(stream, stamp * 10 + jitter, (stream, stamp * 10 + jitter))
            with emitted_lock:
                emitted.extend(out)

    threads = [
        threading.Thread(target=feed, args=(stream, i))
        for i, stream in enumerate(['rgb', 'depth'])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    emitted.extend(sync.flush())
    emitted.sort(key=lambda matched: matched.rgb.stamp_ns)
    check_invariants(sync, emitted, {'rgb': count, 'depth': count})
    # each thread's stamps increase (jitter < half the period), so every frame pairs
    assert len(emitted) == count
