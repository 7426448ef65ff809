# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""The shipped RViz config and Foxglove layout, checked against what those tools read.

Neither tool runs here, so the files are checked against the tools' own source:

* RViz 2 (ros2/rviz at f7112b1a): ``VisualizationFrame::load`` reads "Visualization Manager",
  "Panels", "Window Geometry"; ``DisplayGroup::load`` creates each entry of "Displays" from its
  "Class" and "Name"; ``Property::load`` takes a map's "Value" as the property's own value and
  its other keys as children (so "Topic" is a map with "Value" and the QoS children of
  ``QosProfileProperty``); class names are those of rviz_default_plugins/plugins_description.xml
  and rviz_common's ``PanelFactory``.
* Foxglove / Lichtblick (Lichtblick-Suite/lichtblick at 9554e1e42, the open-source continuation
  of Foxglove Studio, same layout format): a layout is ``LayoutData`` (configById, layout,
  globalVariables, userNodes, playbackConfig); a panel id is ``<type>!<suffix>``
  (util/layout.ts) with a type from panels/index.ts; the layout is a react-mosaic tree; panel
  configs follow RendererConfig (3D, Image), PlotConfig, RawMessagesPanelConfig and
  DiagnosticSummaryConfig.

Topics must be ones the node and the replay's MCAP carry.
"""

from __future__ import annotations

import json
from pathlib import Path
import re
import shutil
import subprocess
import sys
from typing import Any
import zipfile

import pytest
import yaml

from spatial_vlm_ros.replay.runner import ANNOTATED_TOPIC, MARKERS_TOPIC, SCENE_TOPIC
from spatial_vlm_ros.replay.runner import MEMORY_MARKERS_TOPIC as REPLAY_MEMORY_MARKERS_TOPIC

from conftest import REPO_ROOT

RVIZ_CONFIG = REPO_ROOT / 'rviz' / 'spatial_vlm.rviz'
FOXGLOVE_LAYOUT = REPO_ROOT / 'foxglove' / 'spatial_vlm_layout.json'
# The object memory's markers: the node's ~/memory_markers and the replay's MCAP topic.
MEMORY_MARKERS_TOPIC = REPLAY_MEMORY_MARKERS_TOPIC
DIAGNOSTICS_TOPIC = '/diagnostics'
IMAGE_TOPICS = {ANNOTATED_TOPIC}
MARKER_TOPICS = {MARKERS_TOPIC, MEMORY_MARKERS_TOPIC}

# rviz_default_plugins/plugins_description.xml (ros2/rviz f7112b1a).
RVIZ_DISPLAYS = {
    'AccelStamped', 'Axes', 'Camera', 'DepthCloud', 'CameraInfo', 'Effort', 'Grid', 'GridCells',
    'FluidPressure', 'Illuminance', 'Image', 'InteractiveMarkers', 'LaserScan', 'Map',
    'PointCloud', 'PointCloud2', 'Polygon', 'Pose', 'PoseWithCovariance', 'Range',
    'RelativeHumidity', 'RobotModel', 'Temperature', 'TF', 'TwistStamped', 'Marker',
    'MarkerArray', 'Odometry', 'PoseArray', 'Path', 'PointStamped', 'Wrench',
}  # fmt: skip
RVIZ_TOOLS = {
    'MoveCamera', 'PublishPoint', 'Select', 'SetGoal', 'Measure', 'FocusCamera', 'SetInitialPose',
    'Interact',
}  # fmt: skip
RVIZ_VIEWS = {'Orbit', 'TopDownOrtho', 'XYOrbit', 'ThirdPersonFollower', 'FPS'}
RVIZ_TRANSFORMATIONS = {'TF'}
# rviz_common/src/rviz_common/panel_factory.cpp
RVIZ_PANELS = {
    'Displays',
    'Help',
    'Selection',
    'Time',
    'Tool Properties',
    'Transformation',
    'Views',
}
# rviz_common/src/rviz_common/properties/qos_profile_property.cpp
RVIZ_QOS = {
    'History Policy': {'System Default', 'Keep Last', 'Keep All'},
    'Reliability Policy': {'System Default', 'Reliable', 'Best Effort'},
    'Durability Policy': {'System Default', 'Transient Local', 'Volatile'},
}
RVIZ_TOPIC_DISPLAYS = {'Image': IMAGE_TOPICS, 'MarkerArray': MARKER_TOPICS}

# packages/suite-base/src/panels/index.ts (Lichtblick 9554e1e42); "Tab" is TAB_PANEL_TYPE.
FOXGLOVE_PANELS = {
    '3D', 'DiagnosticStatusPanel', 'DiagnosticSummary', 'Image', 'Indicator', 'Gauge', 'Teleop',
    'map', 'Parameters', 'Plot', 'Publish', 'CallService', 'RawMessages', 'RosOut',
    'StateTransitions', 'Table', 'TopicGraph', 'SourceInfo', 'GlobalVariableSliderPanel',
    'NodePlayground', 'Tab', 'PlaybackPerformance',
}  # fmt: skip
# ThreeDeeRender/camera.ts CameraState
FOXGLOVE_CAMERA_STATE = {
    'distance', 'perspective', 'phi', 'target', 'targetOffset', 'targetOrientation',
    'thetaOffset', 'fovy', 'near', 'far',
}  # fmt: skip
FOXGLOVE_FOLLOW_MODES = {'follow-pose', 'follow-position', 'follow-none'}
FOXGLOVE_PUBLISH_TYPES = {'pose_estimate', 'pose', 'point'}
FOXGLOVE_TIMESTAMP_METHODS = {'receiveTime', 'headerStamp'}
FOXGLOVE_PLOT_X_AXIS = {'timestamp', 'index', 'custom', 'currentCustom'}
FOXGLOVE_LEGEND = {'floating', 'top', 'left', 'none'}


def _plugin_name(class_name: str, package: str) -> str:
    prefix, _, name = class_name.partition('/')
    assert prefix == package, f'{class_name!r} is not a {package} class'
    return name


def _rviz() -> dict[str, Any]:
    return yaml.safe_load(RVIZ_CONFIG.read_text(encoding='utf-8'))


def test_rviz_config_has_the_sections_rviz_loads():
    config = _rviz()
    assert set(config) <= {'Panels', 'Visualization Manager', 'Window Geometry', 'Preferences'}
    manager = config['Visualization Manager']
    assert manager['Class'] == '' and manager['Enabled'] is True
    assert isinstance(manager['Global Options']['Fixed Frame'], str)
    assert manager['Global Options']['Fixed Frame'].strip()
    for panel in config['Panels']:
        assert _plugin_name(panel['Class'], 'rviz_common') in RVIZ_PANELS
        assert isinstance(panel['Name'], str)
    for tool in manager['Tools']:
        assert _plugin_name(tool['Class'], 'rviz_default_plugins') in RVIZ_TOOLS
    view = manager['Views']['Current']
    assert _plugin_name(view['Class'], 'rviz_default_plugins') in RVIZ_VIEWS
    assert (
        _plugin_name(manager['Transformation']['Current']['Class'], 'rviz_default_plugins')
        in RVIZ_TRANSFORMATIONS
    )
    geometry = config['Window Geometry']
    assert all(isinstance(geometry[key], int) for key in ('X', 'Y', 'Width', 'Height'))


def test_rviz_displays_are_known_classes_on_the_node_topics():
    displays = _rviz()['Visualization Manager']['Displays']
    names = [display['Name'] for display in displays]
    assert len(set(names)) == len(names), 'display names must be unique'
    shown: dict[str, set[str]] = {}
    for display in displays:
        kind = _plugin_name(display['Class'], 'rviz_default_plugins')
        assert kind in RVIZ_DISPLAYS, kind
        assert isinstance(display['Enabled'], bool) and isinstance(display['Value'], bool)
        if kind not in RVIZ_TOPIC_DISPLAYS:
            continue
        topic = display['Topic']
        # Property::load: the map's "Value" is the topic name, the other keys its QoS children.
        assert set(topic) == {'Value', 'Depth', *RVIZ_QOS}, topic
        assert isinstance(topic['Depth'], int) and topic['Depth'] >= 1
        for policy, allowed in RVIZ_QOS.items():
            assert topic[policy] in allowed, (policy, topic[policy])
        # A Volatile subscription matches both Volatile and Transient Local publishers.
        assert topic['Durability Policy'] == 'Volatile'
        assert topic['Value'] in RVIZ_TOPIC_DISPLAYS[kind], (kind, topic['Value'])
        shown.setdefault(kind, set()).add(topic['Value'])
    assert shown == {'Image': IMAGE_TOPICS, 'MarkerArray': MARKER_TOPICS}


def _foxglove() -> dict[str, Any]:
    return json.loads(FOXGLOVE_LAYOUT.read_text(encoding='utf-8'))


def _mosaic_leaves(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    assert set(node) <= {'first', 'second', 'direction', 'splitPercentage'}, node
    assert node['direction'] in ('row', 'column')
    assert 0 < node.get('splitPercentage', 50) < 100
    return _mosaic_leaves(node['first']) + _mosaic_leaves(node['second'])


def _message_fields(name: str) -> dict[str, str]:
    """Field name -> type of one of the package's messages (msg/<name>.msg)."""
    fields = {}
    for line in (REPO_ROOT / 'msg' / f'{name}.msg').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        match = re.fullmatch(r'([\w/]+)(?:\[\d*\])?\s+(\w+)', line)
        if match:
            fields[match.group(2)] = match.group(1)
    return fields


def _is_scene_field_path(path: str) -> bool:
    """``a.b.c`` names a field of SpatialScene, through the package's nested messages."""
    message = 'SpatialScene'
    for part in path.split('.'):
        if not (REPO_ROOT / 'msg' / f'{message}.msg').is_file():
            return False  # a field of a primitive or a foreign type: not followed here
        fields = _message_fields(message)
        if part not in fields:
            return False
        message = fields[part]
    return True


def test_foxglove_layout_is_layout_data_with_known_panels():
    layout = _foxglove()
    assert set(layout) <= {
        'configById', 'layout', 'globalVariables', 'userNodes', 'playbackConfig', 'version',
    }  # fmt: skip
    assert isinstance(layout['globalVariables'], dict) and isinstance(layout['userNodes'], dict)
    assert isinstance(layout['playbackConfig']['speed'], int | float)
    panel_ids = set(layout['configById'])
    leaves = _mosaic_leaves(layout['layout'])
    assert sorted(leaves) == sorted(panel_ids), 'every panel placed once, every placed one set'
    for panel_id in panel_ids:
        kind, separator, suffix = panel_id.partition('!')
        assert separator and suffix and kind in FOXGLOVE_PANELS, panel_id


def test_foxglove_panels_show_the_node_and_replay_topics():
    configs = _foxglove()['configById']
    by_type = {panel_id.partition('!')[0]: config for panel_id, config in configs.items()}
    three_d = by_type['3D']
    assert set(three_d['cameraState']) == FOXGLOVE_CAMERA_STATE
    assert three_d['followMode'] in FOXGLOVE_FOLLOW_MODES
    assert three_d['publish']['type'] in FOXGLOVE_PUBLISH_TYPES
    assert set(three_d['topics']) == MARKER_TOPICS
    assert all(settings['visible'] is True for settings in three_d['topics'].values())
    for layer_id, layer in three_d['layers'].items():
        assert layer['instanceId'] == layer_id and layer['layerId'].startswith('foxglove.')
    assert by_type['Image']['imageMode']['imageTopic'] in IMAGE_TOPICS
    assert by_type['RawMessages']['topicPath'] == SCENE_TOPIC
    assert by_type['RawMessages']['diffMethod'] in ('custom', 'previous message')
    diagnostics = by_type['DiagnosticSummary']
    assert diagnostics['topicToRender'] == DIAGNOSTICS_TOPIC
    assert isinstance(diagnostics['minLevel'], int) and diagnostics['pinnedIds'] == []
    plot = by_type['Plot']
    assert plot['xAxisVal'] in FOXGLOVE_PLOT_X_AXIS
    assert plot['legendDisplay'] in FOXGLOVE_LEGEND
    assert plot['paths']
    for path in plot['paths']:
        topic, _, field = path['value'].partition('.')
        assert topic == SCENE_TOPIC and _is_scene_field_path(field), path['value']
        assert path['timestampMethod'] in FOXGLOVE_TIMESTAMP_METHODS
    # Latency per stage, so that a slow stage shows without reading /diagnostics.
    assert any(path['value'].endswith('.stages.engine_ms') for path in plot['paths'])


@pytest.mark.skipif(shutil.which('git') is None, reason='git is not installed')
def test_pip_wheel_ships_the_views_and_the_report_assets(tmp_path: Path):
    listed = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    source = tmp_path / 'src'
    for name in listed:
        if (REPO_ROOT / name).is_file() and not name.startswith('data/'):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
         '-w', str(tmp_path / 'dist'), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp_path / 'dist').glob('*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(name.split('/')[0] for name in names if name.split('/')[0].endswith('.data'))
    for expected in (
        'spatial_vlm_ros/replay/report_assets/report.js',
        'spatial_vlm_ros/replay/report_assets/report.css',
        f'{data}/data/share/spatial_vlm_ros/rviz/spatial_vlm.rviz',
        f'{data}/data/share/spatial_vlm_ros/foxglove/spatial_vlm_layout.json',
    ):
        assert expected in names, expected
