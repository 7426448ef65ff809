# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""An RGB-D camera driver in its own process, for DDS tests and benchmarks (no camera here).

Publishes the synthetic two-object frames of test_node_dds (rgb8 + 16UC1 + CameraInfo) like a
driver: its own participant, its own Fast DDS transports (from the environment), a chosen QoS,
and stamps from a clock that may be offset from the ROS clock (device time, an unsynchronised
machine, a bag without --clock). Prints one line per second with what it published.

    python test/fake_camera.py --namespace /cam --rate 2 --best-effort --stamp-offset-s -30
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--namespace', default='/camera')
    parser.add_argument('--rate', type=float, default=2.0, help='frames per second')
    parser.add_argument('--frames', type=int, default=0, help='stop after N frames (0: never)')
    parser.add_argument('--best-effort', action='store_true')
    parser.add_argument('--stamp-offset-s', type=float, default=0.0)
    parser.add_argument(
        '--stamp-each',
        action='store_true',
        help='stamp each message when it is published (like drivers whose colour and depth '
        'come from different sensors) instead of one capture stamp for the set',
    )
    parser.add_argument('--info-topic', default='color/camera_info')
    parser.add_argument(
        '--vary-pixels',
        action='store_true',
        help='change a 16x16 corner of the colour image every frame, so that no two frames are '
        "byte-identical (a model server's image cache must not serve them)",
    )
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    sys.path.insert(0, __file__.rsplit('/', 1)[0])
    from test_node_dds import make_messages

    rclpy.init()
    node = rclpy.create_node('fake_camera', namespace=args.namespace)
    reliability = ReliabilityPolicy.BEST_EFFORT if args.best_effort else ReliabilityPolicy.RELIABLE
    qos = QoSProfile(depth=5, reliability=reliability)
    rgb_pub = node.create_publisher(Image, 'color/image_raw', qos)
    depth_pub = node.create_publisher(Image, 'depth/image_raw', qos)
    info_pub = node.create_publisher(CameraInfo, args.info_topic, qos)
    offset_ns = int(args.stamp_offset_s * 1e9)
    rgb, depth, info = make_messages(time.time_ns())  # the pixels never change (but see below)
    corner = np.frombuffer(rgb.data, np.uint8).reshape(rgb.height, rgb.width, 3)[:16, :16]

    def stamp_now() -> object:
        from builtin_interfaces.msg import Time

        now_ns = node.get_clock().now().nanoseconds + offset_ns
        return Time(sec=now_ns // 10**9, nanosec=now_ns % 10**9)

    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    period_s = 1.0 / args.rate
    published = 0
    next_s = time.monotonic()
    last_report_s = next_s
    while not stop and (args.frames == 0 or published < args.frames):
        capture = stamp_now()
        if args.vary_pixels:
            corner[...] = np.random.default_rng(published).integers(0, 256, corner.shape)
        for publisher, message in ((info_pub, info), (depth_pub, depth), (rgb_pub, rgb)):
            message.header.stamp = stamp_now() if args.stamp_each else capture
            publisher.publish(message)
        published += 1
        next_s += period_s
        now_s = time.monotonic()
        if now_s - last_report_s >= 1.0:
            print(f'published {published} frames', flush=True)
            last_report_s = now_s
        time.sleep(max(0.0, next_s - now_s))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    np.seterr(all='ignore')
    sys.exit(main())
