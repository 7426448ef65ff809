# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""What the replay leaves out or does cheaper for speed (docs/PERFORMANCE.md), with the outputs
still complete."""

from __future__ import annotations

from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from test_replay import make_bag, pipeline_for, read_scenes, run

from spatial_vlm_ros.replay import runner
from spatial_vlm_ros.replay.runner import ReplayOptions
from spatial_vlm_ros.replay.sample_bag import BagLayout


def test_output_bag_chunks_are_compressed_at_the_fast_zstd_level(tmp_path):
    writer = Writer(tmp_path / 'bag', version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    runner._fast_chunk_compression(writer)
    compressor = writer.storage.compressor
    assert compressor.keywords == {'level': runner.CHUNK_ZSTD_LEVEL}
    writer.close()


def test_the_faster_output_bag_holds_every_message(tmp_path):
    bag, recording = make_bag(tmp_path, BagLayout(repeats=3, compressed_rgb=False))
    options = ReplayOptions(bag=bag, out_dir=tmp_path / 'out', progress=False)
    summary = run(options, pipeline_for(recording))
    with AnyReader([summary.bag_path]) as reader:
        counts = {connection.topic: connection.msgcount for connection in reader.connections}
        for connection, _, raw in reader.messages():
            reader.deserialize(raw, connection.msgtype)  # every chunk decompresses
    frames = summary.frames_processed
    assert frames == 6
    assert counts[runner.SCENE_TOPIC] == counts[runner.ANNOTATED_TOPIC] == frames
    assert counts[runner.MARKERS_TOPIC] == frames


def test_no_annotated_image_is_drawn_when_nothing_shows_it(tmp_path, monkeypatch):
    drawn: list[int] = []
    draw = runner.annotate_scene
    monkeypatch.setattr(
        runner, 'annotate_scene', lambda rgb, scene: drawn.append(1) or draw(rgb, scene)
    )
    bag, recording = make_bag(tmp_path, BagLayout(repeats=2))
    quiet = ReplayOptions(
        bag=bag, out_dir=tmp_path / 'scenes', write_bag=False, write_report=False, progress=False
    )
    summary = run(quiet, pipeline_for(recording))
    assert summary.frames_processed == 4 and len(read_scenes(summary.scenes_path)) == 4
    assert drawn == []
    full = ReplayOptions(bag=bag, out_dir=tmp_path / 'all', progress=False)
    assert run(full, pipeline_for(recording)).frames_processed == 4
    assert len(drawn) == 4
    assert Path(tmp_path / 'all' / runner.REPORT_FILE).is_file()
