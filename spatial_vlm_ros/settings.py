# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""
Every setting of the node and the replay, in one table with one default each.

The table drives, so that none of them can drift from it:

* the node's parameters (``ros/parameters.py`` adds the ParameterDescriptor with description and
  range; ``validate`` is the node's on-set check);
* the ``spatial-vlm replay`` flags (``add_cli_flags`` / ``values_from_cli``) for every setting
  whose scope is ``both``;
* ``config/spatial_vlm.yaml`` and the parameter table of docs/NODE.md (``render_params_yaml`` and
  ``render_markdown_table``; a test checks that both files equal the rendering);
* the launch arguments (``ros/launch_logic.py``), which override the params file only when given;
* the pipeline (``PipelineSettings.from_parameters``), which reads complete values from here.

Adding a setting is one row in ``SETTINGS``; then run
``python -m spatial_vlm_ros.settings --write`` to regenerate the YAML and the docs table.
Its value reaches the pipeline through ``from_parameters`` and the node through ``values``.

ROS-free: the CLI uses it without rclpy.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import json
import math
from pathlib import Path
import re
import sys
import textwrap
from typing import Any

from spatial_vlm_ros.core.camera import IntrinsicsSource
from spatial_vlm_ros.core.pairing import InfoMode
from spatial_vlm_ros.core.relations import RELATION_MODES
from spatial_vlm_ros.engines.registry import ENGINE_KINDS

# The choice lists, each defined once.
INPUT_QOS_MODES = ('auto', 'reliable', 'best_effort')
DEVICES = ('auto', 'cpu', 'cuda')
# image_transport transport names (the topic suffix), per stream, as depth_image_proc's
# `image_transport` / `depth_image_transport` hints: raw, or a compressed transport whose
# CompressedImage.format says the codec (JPEG or PNG for colour; compressedDepth PNG or a
# 16-bit PNG from `compressed` for depth).
COLOR_TRANSPORTS = ('raw', 'compressed')
DEPTH_TRANSPORTS = ('raw', 'compressedDepth', 'compressed')
# CameraInfo matrices: K for image_raw, P for image_rect.
INTRINSICS_SOURCES = tuple(source.value for source in IntrinsicsSource)
# CameraInfo pairing: latest or strict.
CAMERA_INFO_SYNC_MODES = tuple(mode.value for mode in InfoMode)

BOTH = 'both'  # a node parameter and a `spatial-vlm replay` flag
NODE = 'node'  # a node parameter only (live inputs, scheduling, services, diagnostics)


@dataclass(frozen=True)
class Setting:
    """One row of the table. The type is the default's: bool, int, float, str or list[str]."""

    name: str
    default: Any
    description: str
    scope: str = BOTH
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False  # changing it needs cleanup -> configure
    deprecated: str = ''  # non-empty: kept as an alias for one version; says what replaces it

    @property
    def kind(self) -> type:
        """bool, int, float, str or list (a list of strings)."""
        return type(self.default)

    @property
    def cli_flag(self) -> str:
        return '--' + self.name.replace('_', '-')


SETTINGS: tuple[Setting, ...] = (
    # --- engine
    Setting(
        'engine',
        'sglang',
        'VLM backend: in-process SGLang (FP8, GPU), an OpenAI-compatible server, HF '
        'transformers (CPU-capable), or recorded outputs (JSONL).',
        choices=ENGINE_KINDS,
        read_only=True,
    ),
    Setting(
        'model',
        'spatial-ssrl-4b-fp8',
        'Model profile name (spatial-ssrl-4b-fp8, qwen3-vl-4b-instruct-fp8, '
        'qwen3-vl-2b-grace-w8g128, qwen3-vl), a Qwen3-VL Hugging Face id (e.g. '
        'Qwen/Qwen3-VL-8B-Instruct) or a local model directory. With engine=recorded the '
        "scenes name the recording's model.",
        read_only=True,
    ),
    Setting('recording', '', 'JSONL of raw model outputs for engine=recorded.', read_only=True),
    Setting(
        'record_outputs',
        '',
        'When set, append every raw model output to this JSONL (the recorded-engine format).',
        read_only=True,
    ),
    Setting(
        'server_url',
        'http://127.0.0.1:30000',
        'Base URL of the OpenAI-compatible server (engine=openai): SGLang server, SGLang router '
        'or vLLM.',
        read_only=True,
    ),
    Setting(
        'served_model_name',
        '',
        'Model name sent to the server (engine=openai), as its /v1/models lists it; "" = the '
        "server's only model (or the model's own id when it serves several). Checked at start.",
        read_only=True,
    ),
    Setting(
        'api_key_env',
        'OPENAI_API_KEY',
        'Name of the environment variable holding the API key (the key itself is never a '
        'parameter and never logged).',
        read_only=True,
    ),
    Setting('device', 'auto', 'Device for engine=transformers.', choices=DEVICES, read_only=True),
    Setting(
        'max_in_flight',
        1,
        'Stream requests the engine may run at once, all cameras together (batching; with '
        'several cameras, at least one per camera lets the engine batch them).',
        int_range=(1, 64),
        read_only=True,
    ),
    Setting(
        'request_timeout_s',
        30.0,
        'Deadline of one request (a scene, a query or a locate, queueing included), seconds.',
        float_range=(0.1, 3600.0),
        read_only=True,
    ),
    # --- perception
    Setting(
        'vocabulary',
        [''],
        'Classes to ground; [] or [""] grounds every salient object. Changeable at runtime '
        '(ros2 param set).',
    ),
    Setting(
        'depth_scale',
        0.0,
        'Metres per depth unit; 0 = by encoding (16UC1/mono16: 0.001, 32FC1: 1.0).',
        float_range=(0.0, 10.0),
        read_only=True,
    ),
    Setting(
        'camera_intrinsics',
        'K',
        'CameraInfo matrix the objects are lifted with: K for image_raw topics (the distorted '
        'image; lens distortion is ignored, with a warning when it is large), P for rectified '
        'image_rect topics (REP 104; falls back to K with a warning when P is zero).',
        choices=INTRINSICS_SOURCES,
        read_only=True,
    ),
    Setting(
        'min_depth_m',
        0.1,
        'Closer depth readings are invalid, metres.',
        float_range=(0.0, 100.0),
    ),
    Setting(
        'max_depth_m',
        10.0,
        'Farther depth readings are invalid, metres.',
        float_range=(0.01, 1000.0),
    ),
    Setting(
        'near_threshold_m',
        0.5,
        'Objects whose visible extents are at most this far apart (surface gap, at 2 sigma '
        'confidence) are "near", metres (docs/RELATIONS.md).',
        float_range=(0.0, 100.0),
    ),
    Setting(
        'relations',
        'compact',
        'Relation set per scene: compact (nearest neighbours, each pair once per axis, no '
        'converses, above/below only in a gravity-aligned relation_frame) or full (every pair '
        'and converse) (docs/RELATIONS.md).',
        choices=RELATION_MODES,
    ),
    Setting(
        'relations_per_object',
        3,
        'Compact relations: each object is related to this many nearest others (0 = every pair).',
        int_range=(0, 64),
    ),
    Setting(
        'max_objects',
        64,
        'Objects kept per scene (highest confidence first).',
        int_range=(1, 1024),
    ),
    Setting(
        'relation_frame',
        '',
        'Frame relations are evaluated in: "" = the camera view, or a TF frame with REP 103 '
        'axes (e.g. base_link).',
    ),
    Setting(
        'target_frame',
        '',
        'Frame of published positions: "" = the camera optical frame, or a TF frame (map, odom, '
        'base_link).',
    ),
    # --- object memory (docs/MEMORY.md)
    Setting(
        'memory',
        True,
        'Keep the object memory: persistent ids ("<label>_<n>", never reused) and fused '
        'positions across frames and out of view, ~/objects, ~/memory_markers, ~/forget. '
        'false: per-frame ids (each label numbered left to right in every scene).',
        read_only=True,
    ),
    Setting(
        'memory_frame',
        '',
        'Fixed frame the object memory keeps positions in (odom, map), looked up by TF at each '
        'image stamp. "" = target_frame when set, else the camera frame, which assumes a camera '
        'that does not move: on a moving robot set odom or map.',
        read_only=True,
    ),
    Setting(
        'memory_file',
        '',
        'JSON file of the object memory: loaded when it exists (on configure; a replay at its '
        'start), saved on deactivate, cleanup and shutdown, every memory_save_period_s and at '
        'the end of a replay. "" = the memory is not kept across restarts.',
        read_only=True,
    ),
    Setting(
        'memory_save_period_s',
        60.0,
        'Save the object memory to memory_file this often while configured, seconds; 0 = only '
        'on deactivate, cleanup and shutdown.',
        scope=NODE,
        float_range=(0.0, 86400.0),
        read_only=True,
    ),
    Setting(
        'memory_max_objects',
        256,
        'Bound on remembered objects; above it the least established go first (not seen now, '
        'unconfirmed, least likely, longest unseen).',
        int_range=(1, 100000),
        read_only=True,
    ),
    Setting(
        'memory_max_age_s',
        0.0,
        'Remembered objects not seen for this long (image stamps) are removed, seconds; 0 = '
        'never (out of view is no evidence that an object is gone).',
        float_range=(0.0, 31536000.0),
        read_only=True,
    ),
    Setting(
        'memory_confirm_sightings',
        3,
        'Sightings before a remembered object is confirmed (RememberedObject.confirmed); '
        'unconfirmed objects not seen for 30 s are removed.',
        int_range=(1, 1000),
        read_only=True,
    ),
    Setting(
        'sync_slop_s',
        0.05,
        'Max stamp difference between paired RGB and depth, seconds.',
        float_range=(0.0, 5.0),
        read_only=True,
    ),
    Setting(
        'sync_queue_size',
        10,
        'Messages buffered per stream (RGB, depth, CameraInfo) while pairing; the oldest is '
        'dropped (queue_overflow) beyond it. Raise it when sync_max_wait_s spans more frames '
        'than this at the camera rate.',
        int_range=(1, 1000),
        read_only=True,
    ),
    Setting(
        'sync_max_wait_s',
        0.5,
        'How long an RGB image waits for its depth (and strict CameraInfo) in RGB stamp time, '
        'seconds; then it is paired with what is buffered or dropped (a stalled stream cannot '
        'hold images forever). With sync_min_interval_s = -1, at least 2.5 RGB periods.',
        float_range=(0.01, 60.0),
        read_only=True,
    ),
    Setting(
        'sync_camera_info',
        'latest',
        'CameraInfo pairing: latest (every image takes the newest CameraInfo received; for '
        'latched or low-rate camera_info) or strict (matched by stamp within sync_slop_s like '
        'depth; for cameras whose intrinsics change, e.g. zoom).',
        choices=CAMERA_INFO_SYNC_MODES,
        read_only=True,
    ),
    Setting(
        'sync_min_interval_s',
        -1.0,
        "Lower bound on the depth stream's stamp interval, seconds, as message_filters' "
        'inter-message lower bound: a frame is paired as soon as no closer depth can still '
        'come. -1 = learn it (half the smallest recent interval); 0 = wait for the next depth '
        'message (one frame period of latency when depth is stamped before colour). The replay '
        'always waits (it has the whole bag; the pairing is the offline optimum).',
        scope=NODE,
        float_range=(-1.0, 10.0),
        read_only=True,
    ),
    # --- inputs (node)
    Setting(
        'cameras',
        [''],
        'Namespaces of several cameras served by this node with one engine, e.g. [/front, '
        '/rear] ([] or [""]: one camera, at camera_namespace). With two or more, each '
        "camera's scenes are published on ~/<camera>/scene, ~/<camera>/scene_json, ... where "
        '<camera> is its namespace without the leading and trailing "/" (docs/NODE.md, '
        '"Several cameras"); the topic, transport and QoS settings below apply to each.',
        scope=NODE,
        read_only=True,
    ),
    Setting(
        'camera_namespace',
        '',
        'Namespace of the camera topics (e.g. /camera, or /camera/camera for realsense2_camera); '
        '"" = relative to the node namespace. Absolute topic names below ignore it.',
        scope=NODE,
        read_only=True,
    ),
    Setting(
        'color_topic',
        'color/image_raw',
        'Colour image topic (the base name: transports add /compressed).',
        scope=NODE,
        read_only=True,
    ),
    Setting(
        'depth_topic',
        'depth/image_raw',
        'Depth image topic registered to the colour camera (e.g. '
        'aligned_depth_to_color/image_raw); the base name: transports add /compressedDepth.',
        scope=NODE,
        read_only=True,
    ),
    Setting(
        'camera_info_topic',
        'color/camera_info',
        'CameraInfo of the colour camera.',
        scope=NODE,
        read_only=True,
    ),
    Setting(
        'image_transport',
        'raw',
        'Transport of the colour stream, as image_transport hints: raw (sensor_msgs/Image) or '
        'compressed (JPEG or PNG on <color_topic>/compressed).',
        scope=NODE,
        choices=COLOR_TRANSPORTS,
        read_only=True,
    ),
    Setting(
        'depth_image_transport',
        'raw',
        'Transport of the depth stream: raw, compressedDepth (<depth_topic>/compressedDepth) or '
        'compressed (a 16-bit PNG on <depth_topic>/compressed).',
        scope=NODE,
        choices=DEPTH_TRANSPORTS,
        read_only=True,
    ),
    Setting(
        'compressed_input',
        False,
        'Both streams compressed (colour compressed, depth compressedDepth).',
        scope=NODE,
        read_only=True,
        deprecated='deprecated in 0.2.0, removed in 0.3.0: set image_transport: compressed and '
        'depth_image_transport: compressedDepth',
    ),
    Setting(
        'input_qos',
        'auto',
        'Reliability of the camera subscriptions: auto matches the publishers (re-checked when '
        'they change); reliable / best_effort override.',
        scope=NODE,
        choices=INPUT_QOS_MODES,
        read_only=True,
    ),
    # --- scheduling and services (node)
    Setting(
        'rate_hz',
        2.0,
        'Upper bound on frames sent to the model per second, per camera (0 = as fast as '
        'in-flight slots free up).',
        scope=NODE,
        float_range=(0.0, 120.0),
    ),
    Setting(
        'max_frame_age_s',
        1.0,
        'Frames older than this are not sent to the model, seconds (image stamp vs node clock; '
        'by arrival time when the camera clock is offset).',
        scope=NODE,
        float_range=(0.01, 600.0),
    ),
    Setting(
        'tf_timeout_s',
        0.1,
        'Wait for a transform at the image stamp, seconds.',
        scope=NODE,
        float_range=(0.0, 10.0),
    ),
    Setting(
        'query_buffer_frames',
        30,
        'Paired frames kept for ~/query by stamp (each holds its RGB + depth messages: 4.4 MiB '
        'at 1280x720); 1 keeps only the newest.',
        scope=NODE,
        int_range=(1, 300),
        read_only=True,
    ),
    Setting(
        'locate_standoff_m',
        0.6,
        'Default standoff of ~/locate approach poses from the object footprint edge, metres '
        '(LocateObject.standoff_m = 0 takes it; docs/QUERIES.md).',
        scope=NODE,
        float_range=(0.0, 10.0),
    ),
    Setting(
        'locate_min_score',
        0.5,
        '~/locate answers found only when the best candidate scores at least this (and the '
        'runner-up is 0.2 lower); below it the reply lists the candidates (docs/QUERIES.md).',
        scope=NODE,
        float_range=(0.0, 1.0),
    ),
    Setting(
        'diagnostics_period_s',
        1.0,
        'Period of /diagnostics, seconds.',
        scope=NODE,
        float_range=(0.1, 60.0),
        read_only=True,
    ),
    Setting(
        'autostart',
        True,
        'Configure and activate on start-up (lifecycle).',
        scope=NODE,
        read_only=True,
    ),
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}
NAMES = tuple(BY_NAME)


def defaults() -> dict[str, Any]:
    """Every setting's default (a fresh copy of list defaults)."""
    return {
        s.name: list(s.default) if isinstance(s.default, list) else s.default for s in SETTINGS
    }


def complete(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every missing setting at its default; unknown names are an error."""
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise KeyError(f'unknown setting(s): {", ".join(unknown)}; known: {", ".join(NAMES)}')
    return {**defaults(), **values}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_problem(setting: Setting, value: Any) -> str:
    kind = setting.kind
    if kind is float:
        # Integers are accepted for float settings (`ros2 param set ... rate_hz 5`).
        ok = _is_number(value) and math.isfinite(float(value))
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is list:
        ok = isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)
    else:
        ok = isinstance(value, kind)
    return '' if ok else f'{setting.name}={value!r}: must be a {_kind_name(setting)}'


def _kind_name(setting: Setting) -> str:
    return {bool: 'bool', int: 'integer', float: 'number', str: 'string', list: 'string list'}[
        setting.kind
    ]


def validate(values: Mapping[str, Any]) -> list[str]:
    """
    Return the problems with a set of values, each saying what to change.

    Missing values take their defaults.
    """
    values = complete(values)
    problems: list[str] = []
    for setting in SETTINGS:
        value = values[setting.name]
        problem = _type_problem(setting, value)
        if problem:
            problems.append(problem)
            continue
        if setting.choices and value not in setting.choices:
            problems.append(
                f'{setting.name}={value!r}: set it to one of {", ".join(setting.choices)}'
            )
        low_high = setting.float_range or setting.int_range
        if low_high is not None and not low_high[0] <= value <= low_high[1]:
            problems.append(f'{setting.name}={value}: must lie in {list(low_high)}')
    if problems:
        return problems
    if float(values['min_depth_m']) >= float(values['max_depth_m']):
        problems.append('min_depth_m must be smaller than max_depth_m')
    if values['engine'] == 'recorded' and not values['recording']:
        problems.append('engine=recorded needs `recording` (a JSONL of raw model outputs)')
    problems.extend(_camera_problems(values))
    return problems


# A namespace: optional leading "/", then ROS name tokens separated by "/".
_NAMESPACE = re.compile(r'/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*/?')


def camera_namespaces(values: Mapping[str, Any]) -> dict[str, str]:
    """
    Camera name -> namespace of the cameras the node serves (values already validated).

    One camera (``cameras`` empty or one entry) has the name '': its outputs keep the
    single-camera names (~/scene, ...). Several are named by their namespace without the
    leading and trailing "/" (``/front`` -> ``front``, ``/robot/left`` -> ``robot/left``), the
    sub-namespace of their outputs (~/front/scene).
    """
    values = complete(values)
    listed = [str(entry).strip() for entry in values['cameras'] if str(entry).strip()]
    if len(listed) <= 1:
        return {'': listed[0] if listed else str(values['camera_namespace'])}
    return {entry.strip('/'): entry for entry in listed}


def _camera_problems(values: Mapping[str, Any]) -> list[str]:
    listed = [str(entry).strip() for entry in values['cameras'] if str(entry).strip()]
    problems = [
        f'cameras: {entry!r} is not a namespace (names of letters, digits and "_", separated by '
        '"/", not starting with a digit)'
        for entry in listed
        if not _NAMESPACE.fullmatch(entry)
    ]
    names = [entry.strip('/') for entry in listed]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        problems.append(
            f'cameras: {", ".join(duplicates)} listed twice (names compare without the leading '
            '"/"); list each camera once'
        )
    if listed and values['camera_namespace']:
        problems.append(
            'set either camera_namespace (one camera) or cameras (one or more), not both'
        )
    return problems


def deprecation_warnings(values: Mapping[str, Any]) -> list[str]:
    """One line per deprecated setting that was set to something else than its default."""
    return [
        f'parameter {s.name} is {s.deprecated}'
        for s in SETTINGS
        if s.deprecated and s.name in values and values[s.name] != s.default
    ]


def parse_text(setting: Setting, text: str) -> Any:
    """
    Return a value from text (a launch argument or a CLI flag).

    YAML-like for bool, numbers and lists (``[a, b]`` or ``a, b``).
    """
    kind = setting.kind
    stripped = text.strip()
    if kind is bool:
        lowered = stripped.lower()
        if lowered in ('true', '1', 'yes', 'on'):
            return True
        if lowered in ('false', '0', 'no', 'off'):
            return False
        raise ValueError(f'{setting.name}: expected true or false, got {text!r}')
    if kind is int:
        return int(stripped)
    if kind is float:
        return float(stripped)
    if kind is list:
        if stripped.startswith('['):
            import yaml  # what ROS uses for parameter values on the command line

            try:
                parsed = yaml.safe_load(stripped)
            except yaml.YAMLError as error:
                raise ValueError(f'{setting.name}: not a YAML list: {error}') from None
            if not isinstance(parsed, list):
                raise ValueError(f'{setting.name}: expected a list, got {text!r}')
            return [str(item) for item in parsed]
        return [item.strip() for item in stripped.split(',') if item.strip()]
    return text


# ------------------------------------------------------------------------------- CLI


def add_cli_flags(parser: Any, aliases: Mapping[str, Sequence[str]] | None = None) -> None:
    """
    One flag per setting of scope ``both`` (``--name-with-dashes``, plus ``aliases``).

    Every default is None so that ``values_from_cli`` can tell a given flag from the table's
    default.
    """
    for setting in SETTINGS:
        if setting.scope != BOTH:
            continue
        help_text = f'{setting.description} (default: {_display(setting.default)})'
        kwargs: dict[str, Any] = {'dest': setting.name, 'default': None, 'help': help_text}
        if setting.kind is bool:
            kwargs['action'] = argparse.BooleanOptionalAction
        elif setting.kind is list:
            kwargs['type'] = lambda text, s=setting: parse_text(s, text)
            kwargs['metavar'] = 'A,B'
        else:
            kwargs['type'] = setting.kind
            if setting.choices:
                kwargs['choices'] = setting.choices
        extra = tuple((aliases or {}).get(setting.name, ()))
        parser.add_argument(setting.cli_flag, *extra, **kwargs)


def values_from_cli(args: argparse.Namespace) -> dict[str, Any]:
    """Return the settings given on the command line (flags left out are not in the result)."""
    return {
        setting.name: getattr(args, setting.name)
        for setting in SETTINGS
        if setting.scope == BOTH and getattr(args, setting.name, None) is not None
    }


# ------------------------------------------------------------------------------- rendering


def _display(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, list):
        return '[' + ', '.join(json.dumps(item) for item in value) + ']'
    return repr(value)


def _constraints(setting: Setting) -> str:
    parts = []
    if setting.choices:
        parts.append('one of ' + ' | '.join(setting.choices))
    low_high = setting.float_range or setting.int_range
    if low_high is not None:
        parts.append(f'range [{low_high[0]}, {low_high[1]}]')
    parts.append('read-only at runtime' if setting.read_only else 'changeable at runtime')
    return '; '.join(parts)


YAML_HEADER = """\
# Parameters of the spatial_vlm node (docs/NODE.md). Keyed by node name so the file works
# under any namespace. Every parameter the node declares is listed with its default.
# Read-only parameters are read at start-up: change them here or on the command line.
# Generated from spatial_vlm_ros/settings.py: python -m spatial_vlm_ros.settings --write
"""


def render_params_yaml() -> str:
    """config/spatial_vlm.yaml: every non-deprecated setting with a comment and its default."""
    lines = [YAML_HEADER.rstrip('\n'), '/**/spatial_vlm:', '  ros__parameters:']
    for setting in SETTINGS:
        if setting.deprecated:
            continue
        comment = f'{setting.description} ({_constraints(setting)})'
        lines += textwrap.wrap(comment, 95, initial_indent='    # ', subsequent_indent='    # ')
        lines.append(f'    {setting.name}: {_display(setting.default)}')
    return '\n'.join(lines) + '\n'


def render_markdown_table() -> str:
    """Return the parameter table of docs/NODE.md."""
    rows = [
        '| name | default | constraints | replay flag | description |',
        '|---|---|---|---|---|',
    ]
    for setting in SETTINGS:
        flag = f'`{setting.cli_flag}`' if setting.scope == BOTH else ''
        description = setting.description.replace('|', '\\|')
        if setting.deprecated:
            description += f' **Deprecated**: {setting.deprecated}.'
        constraints = _constraints(setting).replace('|', '\\|')
        rows.append(
            f'| `{setting.name}` | `{_display(setting.default)}` | {constraints} | {flag} | '
            f'{description} |'
        )
    return '\n'.join(rows) + '\n'


REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_YAML = REPO_ROOT / 'config' / 'spatial_vlm.yaml'
NODE_DOC = REPO_ROOT / 'docs' / 'NODE.md'
TABLE_BEGIN = '<!-- parameters: generated from spatial_vlm_ros/settings.py, do not edit -->\n'
TABLE_END = '<!-- end of parameters -->\n'


def node_doc_with_table(text: str) -> str:
    """docs/NODE.md text with the generated parameter table between its markers."""
    head, found, rest = text.partition(TABLE_BEGIN)
    if not found:
        raise ValueError(f'{NODE_DOC.name} has no line {TABLE_BEGIN.strip()}')
    _, found, tail = rest.partition(TABLE_END)
    if not found:
        raise ValueError(f'{NODE_DOC.name} has no line {TABLE_END.strip()}')
    return head + TABLE_BEGIN + render_markdown_table() + TABLE_END + tail


def main(argv: Sequence[str] | None = None) -> int:
    """
    Print or regenerate the YAML and the docs table of the settings.

    ``--yaml`` prints config/spatial_vlm.yaml, ``--markdown`` the docs table, ``--write``
    regenerates both files in the source tree.
    """
    parser = argparse.ArgumentParser(prog='python -m spatial_vlm_ros.settings')
    parser.add_argument('--yaml', action='store_true')
    parser.add_argument('--markdown', action='store_true')
    parser.add_argument('--write', action='store_true')
    args = parser.parse_args(argv)
    if args.write:
        PARAMS_YAML.write_text(render_params_yaml())
        NODE_DOC.write_text(node_doc_with_table(NODE_DOC.read_text()))
        print(f'wrote {PARAMS_YAML} and the table in {NODE_DOC}')
    if args.yaml:
        sys.stdout.write(render_params_yaml())
    if args.markdown:
        sys.stdout.write(render_markdown_table())
    return 0


if __name__ == '__main__':
    sys.exit(main())
