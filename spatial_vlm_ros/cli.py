# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
``spatial-vlm`` command line: ``replay``, ``play``, ``demo``, ``build-sample-bag``.

Exit codes: 0 success, 2 a typed error (bad bag, missing topic, unknown encoding, bad option;
one line on stderr), 130 interrupted (partial outputs are valid and their paths are printed).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
import importlib.util
import logging
from pathlib import Path
import sys
from typing import TYPE_CHECKING, Any

from spatial_vlm_ros import settings
from spatial_vlm_ros.core.types import SpatialVlmError
from spatial_vlm_ros.runtime import tune_memory_allocator

if TYPE_CHECKING:
    from spatial_vlm_ros.core.pairing import PairingConfig

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_BAG_DIR = REPO_ROOT / 'data' / 'sample_bag'


class CliError(SpatialVlmError):
    """A command-line option is unusable."""


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """
    Add the settings the replay shares with the node (spatial_vlm_ros/settings.py).

    One flag each; ``--engine`` defaults to recorded when ``--recording`` is given.
    """
    group = parser.add_argument_group(
        'pipeline (the node parameters of the same names; defaults from settings.py)'
    )
    settings.add_cli_flags(
        group,
        aliases={'record_outputs': ('--record-to',), 'sync_slop_s': ('--slop',)},
    )


def _add_replay_options(parser: argparse.ArgumentParser) -> None:
    topics = parser.add_argument_group('topics (auto-detected when not given)')
    topics.add_argument('--rgb-topic')
    topics.add_argument('--depth-topic')
    topics.add_argument('--info-topic')
    run = parser.add_argument_group('replay')
    run.add_argument(
        '--rate',
        type=float,
        default=0.0,
        help='process at most this many frames per second of bag time (default 0: every paired '
        'frame)',
    )
    run.add_argument(
        '--max-frames', type=int, default=0, help='stop after N processed frames (0: all)'
    )
    run.add_argument('--no-bag', action='store_true', help='do not write the output MCAP bag')
    run.add_argument('--no-report', action='store_true', help='do not write report.html')
    run.add_argument('--quiet', action='store_true', help='no progress bar')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='spatial-vlm',
        description='Metric spatial understanding from RGB-D bags and a Qwen3-VL model.',
    )
    parser.add_argument('--version', action='store_true', help='print the version and exit')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')

    replay = commands.add_parser(
        'replay',
        help='run the pipeline over a rosbag2 recording (no ROS needed)',
        description='Replay a rosbag2 bag (sqlite3 or MCAP) through the pipeline and write '
        'scenes.jsonl, an MCAP bag with scenes/markers/annotated images and report.html.',
    )
    replay.add_argument('bag', type=Path, help='rosbag2 directory')
    replay.add_argument('-o', '--out', type=Path, required=True, help='output directory')
    _add_engine_options(replay)
    _add_replay_options(replay)

    play = commands.add_parser(
        'play',
        help='publish a bag into a live ROS 2 graph (needs rclpy)',
        description='Publish a rosbag2 recording with its original timing, like `ros2 bag play`.',
    )
    play.add_argument('bag', type=Path)
    play.add_argument('--rate', type=float, default=1.0, help='speed factor (2.0: twice as fast)')
    play.add_argument('--loop', action='store_true', help='start over at the end')
    play.add_argument('--clock', action='store_true', help='publish /clock with the bag time')
    play.add_argument('--clock-hz', type=float, default=40.0, help='/clock rate while waiting')
    play.add_argument(
        '--best-effort',
        action='store_true',
        help='BEST_EFFORT publishers (default RELIABLE, which large images need across processes)',
    )
    play.add_argument('--qos-depth', type=int, default=10)
    play.add_argument('--topics', nargs='+', default=[], help='only these topics')
    play.add_argument(
        '--remap',
        nargs='+',
        default=[],
        metavar='FROM:=TO',
        help='publish bag topic FROM as TO (exact names), like `ros2 bag play --remap`',
    )
    play.add_argument(
        '--wait-for-subscribers',
        type=float,
        default=0.0,
        metavar='SECONDS',
        help='wait up to this long for a first subscriber before playing',
    )

    demo = commands.add_parser(
        'demo',
        help='replay the shipped sample bag (sglang when available, else the recording)',
    )
    demo.add_argument('-o', '--out', type=Path, default=Path('demo_out'))
    demo.add_argument(
        '--engine',
        choices=('auto', 'recorded', 'sglang'),
        default='auto',
        help='auto: sglang if it, a CUDA GPU and the default model are all available',
    )
    demo.add_argument('--bag', type=Path, default=SAMPLE_BAG_DIR)
    demo.add_argument('--recording', type=Path, default=SAMPLE_BAG_DIR / 'recorded.jsonl')
    demo.add_argument('--quiet', action='store_true', help='no progress bar')

    sample = commands.add_parser(
        'build-sample-bag',
        help='regenerate data/sample_bag from the labelled frames in data/rgbd',
    )
    sample.add_argument('--source', type=Path, default=REPO_ROOT / 'data' / 'rgbd')
    sample.add_argument('--out', type=Path, default=SAMPLE_BAG_DIR)
    return parser


def pipeline_values(args: argparse.Namespace) -> dict[str, Any]:
    """
    Return the replay's settings.

    The flags given, the table's defaults for the rest, and engine ``recorded`` when
    ``--recording`` is given without ``--engine``.
    """
    values = settings.complete(settings.values_from_cli(args))
    if args.engine is None and args.recording is not None:
        values['engine'] = 'recorded'
    if values['engine'] == 'recorded':
        if not values['recording']:
            raise CliError('--engine recorded needs --recording FILE.jsonl')
        if not Path(values['recording']).is_file():
            raise CliError(f'recording not found: {values["recording"]}')
    problems = settings.validate(values)
    if problems:
        raise CliError('; '.join(problems))
    return values


def _build_pipeline(values: dict[str, Any]) -> Any:
    from spatial_vlm_ros.pipeline import PipelineSettings, SpatialPipeline

    return SpatialPipeline.from_settings(PipelineSettings.from_parameters(values))


def _run_replay(
    bag: Path,
    out_dir: Path,
    pipeline: Any,
    *,
    rgb_topic: str | None = None,
    depth_topic: str | None = None,
    info_topic: str | None = None,
    rate_hz: float = 0.0,
    max_frames: int = 0,
    pairing: PairingConfig | None = None,
    write_bag: bool = True,
    write_report: bool = True,
    progress: bool = True,
) -> int:
    from spatial_vlm_ros.core.pairing import PairingConfig
    from spatial_vlm_ros.replay.runner import ReplayOptions, replay_bag

    options = ReplayOptions(
        bag=bag,
        out_dir=out_dir,
        rgb_topic=rgb_topic,
        depth_topic=depth_topic,
        info_topic=info_topic,
        rate_hz=rate_hz,
        max_frames=max_frames,
        pairing=PairingConfig() if pairing is None else pairing,
        write_bag=write_bag,
        write_report=write_report,
        progress=progress,
    )
    summary = asyncio.run(replay_bag(options, pipeline))
    topics = summary.topics
    if topics is not None:
        print(
            f'topics: rgb={topics.rgb.name} depth={topics.depth.name} info={topics.info.name} '
            f'({summary.storage})'
        )
    print(
        f'engine: {summary.engine or pipeline.engine.name}  model: '
        f'{summary.model_id or pipeline.model_id or "-"}'
    )
    print(
        f'frames: {summary.frames_paired} paired, {summary.frames_processed} processed, '
        f'{summary.frames_skipped_by_rate} skipped by --rate, '
        f'{summary.frames_failed_to_decode} undecodable; {summary.objects} objects, '
        f'{summary.relations} relations, {summary.scenes_with_error} scenes with an error '
        f'({summary.elapsed_s:.1f} s)'
    )
    memory = getattr(pipeline, 'memory', None)
    if memory is not None:
        print(
            f'object memory: {summary.remembered_objects} objects remembered in '
            f'{memory.memory_frame or "-"}'
        )
    for warning in summary.warnings[:10]:
        print(f'warning: {warning}')
    for name, path in (
        ('scenes', summary.scenes_path),
        ('bag', summary.bag_path),
        ('object memory', summary.memory_path),
        ('report', summary.report_path),
    ):
        if path is not None:
            print(f'{name}: {path}')
    if summary.interrupted:
        print('interrupted: the outputs above cover the frames processed so far', file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from spatial_vlm_ros.pipeline import pairing_from_parameters
    from spatial_vlm_ros.replay.bag_io import resolve_bag_path

    # Check the bag before building the engine: loading a model for a typo wastes minutes.
    resolve_bag_path(args.bag)
    values = pipeline_values(args)
    # The frames are looked up in the bag's /tf and /tf_static; a bag without them gives
    # scenes in the camera frame, with a warning that names the missing transform.
    pipeline = _build_pipeline(values)
    return _run_replay(
        args.bag,
        args.out,
        pipeline,
        rgb_topic=args.rgb_topic,
        depth_topic=args.depth_topic,
        info_topic=args.info_topic,
        rate_hz=args.rate,
        max_frames=args.max_frames,
        pairing=pairing_from_parameters(values, live=False),
        write_bag=not args.no_bag,
        write_report=not args.no_report,
        progress=not args.quiet,
    )


def cmd_play(args: argparse.Namespace) -> int:
    from spatial_vlm_ros.replay.play import PlayOptions, parse_remap, play_bag

    stats = play_bag(
        PlayOptions(
            bag=args.bag,
            rate=args.rate,
            loop=args.loop,
            clock=args.clock,
            clock_hz=args.clock_hz,
            best_effort=args.best_effort,
            qos_depth=args.qos_depth,
            topics=tuple(args.topics),
            remap=tuple(parse_remap(rule) for rule in args.remap),
            wait_for_subscribers_s=args.wait_for_subscribers,
        )
    )
    for topic, why in stats.skipped_topics.items():
        print(f'skipped {topic}: {why}', file=sys.stderr)
    for topic in stats.unacknowledged_topics:
        print(f'not acknowledged by every subscriber before exit: {topic}', file=sys.stderr)
    counts = ', '.join(f'{topic}={count}' for topic, count in sorted(stats.published.items()))
    print(
        f'published {sum(stats.published.values())} messages ({counts}); /clock: '
        f'{stats.clock_messages}; passes: {stats.loops}'
    )
    return EXIT_INTERRUPTED if stats.interrupted else EXIT_OK


def model_in_local_cache(model: str) -> bool:
    """
    Return True when ``model`` (a directory or a Hugging Face id) is on this machine.

    Never downloads.
    """
    if not model:
        return False
    if Path(model).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(model, local_files_only=True)
    except (ImportError, OSError, ValueError):
        # huggingface_hub missing, LocalEntryNotFoundError (an OSError) or an invalid repo id
        # (HFValidationError, a ValueError): not available offline.
        return False
    return True


def choose_demo_engine() -> tuple[str, str]:
    """
    Choose the demo's engine: ``('sglang', why)`` or ``('recorded', why not)``.

    sglang when sglang, a CUDA GPU and the default model are all here.
    """
    from spatial_vlm_ros.engines.profiles import resolve_profile

    if importlib.util.find_spec('sglang') is None:
        return 'recorded', 'sglang is not installed'
    try:
        import torch

        has_cuda = bool(torch.cuda.is_available())
    except (ImportError, OSError, RuntimeError) as error:  # a broken torch: no GPU engine
        return 'recorded', f'torch does not load ({error})'
    if not has_cuda:
        return 'recorded', 'no CUDA GPU'
    model = resolve_profile(None).hf_id
    if not model_in_local_cache(model):
        return (
            'recorded',
            f'the default model {model} is not on this machine (nothing is downloaded)',
        )
    return 'sglang', f'sglang, a CUDA GPU and {model} are available'


def _banner(lines: Sequence[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print('=' * width)
    for line in lines:
        print(f'  {line}')
    print('=' * width, flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.engine == 'auto':
        kind, why = choose_demo_engine()
    else:
        kind, why = args.engine, 'chosen with --engine'
    if not (Path(args.bag) / 'metadata.yaml').is_file():
        raise CliError(
            f'sample bag not found at {args.bag}; run `spatial-vlm build-sample-bag` first'
        )
    if kind == 'recorded':
        _banner(
            [
                'spatial-vlm demo: engine = RECORDED (no model runs)',
                f'  why: {why}',
                f'  boxes come from {args.recording}:',
                '  HUMAN HAND LABELS written in Qwen3-VL output format, NOT model output.',
                '  Depth lifting, relations, markers and the report are computed live.',
            ]
        )
        values: dict[str, Any] = {'engine': kind, 'recording': str(args.recording)}
        if not Path(args.recording).is_file():
            raise CliError(f'recording not found: {args.recording}')
    else:
        _banner(['spatial-vlm demo: engine = SGLANG (live model)', f'  why: {why}'])
        values = {'engine': kind}
    pipeline = _build_pipeline(values)
    status = _run_replay(args.bag, args.out, pipeline, progress=not args.quiet)
    print(
        f'demo outputs in {args.out.resolve()}: open report.html in a browser, or '
        f'{args.out / "scenes_bag"} in Foxglove'
    )
    return status


def cmd_build_sample_bag(args: argparse.Namespace) -> int:
    from spatial_vlm_ros.replay.sample_bag import build_sample_bag

    result = build_sample_bag(args.source, args.out)
    print(
        f'sample bag: {result.bag_path} ({result.bag_bytes / 1e6:.2f} MB, '
        f'{result.frames} frames x {result.repeats} messages)'
    )
    print(f'recording: {result.recording_path} ({result.recording_lines} lines)')
    return EXIT_OK


COMMANDS = {
    'replay': cmd_replay,
    'play': cmd_play,
    'demo': cmd_demo,
    'build-sample-bag': cmd_build_sample_bag,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format='%(levelname)s %(name)s: %(message)s',
    )
    if args.version:
        from spatial_vlm_ros import __version__

        print(__version__)
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    tune_memory_allocator()
    try:
        return COMMANDS[args.command](args)
    except SpatialVlmError as error:
        message = ' '.join(str(error).split())  # one line, whatever the error text holds
        print(f'spatial-vlm {args.command}: error: {message}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f'spatial-vlm {args.command}: interrupted', file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == '__main__':
    sys.exit(main())
