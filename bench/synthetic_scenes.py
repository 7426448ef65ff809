# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Synthetic RGB-D scenes with known geometry, shared by the benchmarks.

Boxes and upright cylinders (yawed about the vertical axis) stand on a horizontal support plane
in front of a wall; a pinhole camera looks horizontally along +z (optical frame: x right, y down,
z forward). Depth is ray cast exactly, then degraded like a Kinect v1:

* axial noise ``sigma_z = 1.5e-3 z^2`` and quantization to millimetres,
* projector shadows: pixels that the projector (``baseline`` to the right of the IR camera)
  cannot see because a nearer surface blocks it are missing, left of each depth edge,
* random dropouts and missing pixels along depth edges,
* flying pixels: some edge pixels take a depth interpolated between foreground and background.

Ground truth per object is the centroid of its *visible* surface in the noise-free render
(occluded parts excluded), its amodal box (the projection of the whole object, as a detector or
a VLM would box it), and its visible pixel count. The RGB image is flat-shaded per object so
that any pipeline (e.g. a replay with a recorded or tiny model) can consume the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math

import numpy as np
import numpy.typing as npt

from spatial_vlm_ros.core.types import CameraIntrinsics, PixelBox

KINECT_INTRINSICS = CameraIntrinsics(fx=525.0, fy=525.0, cx=319.5, cy=239.5, width=640, height=480)
BACKGROUND_ID = -1  # instance id of wall and support plane pixels
NO_HIT = np.inf


@dataclass(frozen=True)
class Shape:
    """A solid standing in the scene, in the camera optical frame.

    ``kind`` is ``'box'`` (``size`` = full extents along its own x, y, z) or ``'cylinder'``
    (vertical axis; ``size`` = (diameter, height, diameter)). ``yaw`` rotates it about the
    vertical (optical y) axis.
    """

    label: str
    kind: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float = 0.0
    color: tuple[int, int, int] = (200, 60, 60)


@dataclass(frozen=True)
class NoiseModel:
    """Kinect-v1-like degradations; ``NoiseModel.clean()`` disables them all."""

    depth_noise_coefficient: float = 1.5e-3  # sigma_z = k z^2
    quantization_m: float = 1e-3
    dropout_probability: float = 0.03
    edge_dropout_probability: float = 0.3
    flying_pixel_probability: float = 0.5
    edge_threshold_m: float = 0.05  # depth jump between neighbours that counts as an edge
    projector_baseline_m: float = 0.075  # 0 disables shadows
    max_range_m: float = 8.0

    @staticmethod
    def clean() -> NoiseModel:
        return NoiseModel(0.0, 0.0, 0.0, 0.0, 0.0, 0.05, 0.0, 1e9)


@dataclass(frozen=True)
class RenderedObject:
    """Ground truth of one shape in a rendered scene."""

    shape: Shape
    instance_id: int
    amodal_box: PixelBox | None  # projection of the whole shape, clipped; None if off-image
    amodal_pixels: int
    visible_pixels: int
    visible_centroid: npt.NDArray[np.float64] | None  # (3,) noise-free, None if not visible

    @property
    def occluded_fraction(self) -> float:
        if self.amodal_pixels == 0:
            return 1.0
        return 1.0 - self.visible_pixels / self.amodal_pixels


@dataclass
class SyntheticScene:
    """One rendered RGB-D frame and its ground truth."""

    intrinsics: CameraIntrinsics
    depth_m: npt.NDArray[np.float32]  # degraded, NaN invalid
    clean_depth_m: npt.NDArray[np.float32]  # exact render
    rgb: npt.NDArray[np.uint8]
    instance: npt.NDArray[np.int16]  # shape index per pixel, BACKGROUND_ID elsewhere
    objects: list[RenderedObject] = field(default_factory=list)
    support_y: float = 0.5
    wall_z: float = 5.0


def _rays(intrinsics: CameraIntrinsics) -> tuple[npt.NDArray[np.float64], ...]:
    columns = np.arange(intrinsics.width, dtype=np.float64)
    rows = np.arange(intrinsics.height, dtype=np.float64)
    ray_x = np.broadcast_to((columns - intrinsics.cx) / intrinsics.fx, (rows.size, columns.size))
    ray_y = np.broadcast_to(
        ((rows - intrinsics.cy) / intrinsics.fy)[:, None], (rows.size, columns.size)
    )
    return ray_x, ray_y  # the ray of pixel (u, v) is (ray_x, ray_y, 1): its t is the depth z


def _shape_corners(shape: Shape) -> npt.NDArray[np.float64]:
    half = 0.5 * np.asarray(shape.size)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    rotation = _yaw_rotation(shape.yaw)
    return (signs * half) @ rotation.T + np.asarray(shape.center)


def _yaw_rotation(yaw: float) -> npt.NDArray[np.float64]:
    cosine, sine = math.cos(yaw), math.sin(yaw)
    return np.array([[cosine, 0.0, sine], [0.0, 1.0, 0.0], [-sine, 0.0, cosine]])


def _pixel_window(shape: Shape, intrinsics: CameraIntrinsics) -> tuple[int, int, int, int] | None:
    corners = _shape_corners(shape)
    if np.any(corners[:, 2] <= 1e-3):
        return 0, intrinsics.width, 0, intrinsics.height
    us = intrinsics.fx * corners[:, 0] / corners[:, 2] + intrinsics.cx
    vs = intrinsics.fy * corners[:, 1] / corners[:, 2] + intrinsics.cy
    x0 = max(math.floor(us.min()) - 1, 0)
    x1 = min(math.ceil(us.max()) + 2, intrinsics.width)
    y0 = max(math.floor(vs.min()) - 1, 0)
    y1 = min(math.ceil(vs.max()) + 2, intrinsics.height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, x1, y0, y1


def _intersect(
    shape: Shape, ray_x: npt.NDArray[np.float64], ray_y: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Depth of the first hit of each ray (origin at the camera) with ``shape``; inf if none."""
    rotation = _yaw_rotation(shape.yaw)
    center = np.asarray(shape.center)
    # Ray in the shape's frame: origin o = R^T (0 - c), direction d = R^T (rx, ry, 1).
    origin = rotation.T @ (-center)
    dx = rotation[0, 0] * ray_x + rotation[1, 0] * ray_y + rotation[2, 0]
    dy = rotation[0, 1] * ray_x + rotation[1, 1] * ray_y + rotation[2, 1]
    dz = rotation[0, 2] * ray_x + rotation[1, 2] * ray_y + rotation[2, 2]
    half = 0.5 * np.asarray(shape.size)
    with np.errstate(divide='ignore', invalid='ignore'):
        if shape.kind == 'box':
            t_near = np.full(ray_x.shape, -np.inf)
            t_far = np.full(ray_x.shape, np.inf)
            for axis, direction in enumerate((dx, dy, dz)):
                t1 = (-half[axis] - origin[axis]) / direction
                t2 = (half[axis] - origin[axis]) / direction
                parallel = direction == 0.0
                inside = abs(origin[axis]) <= half[axis]
                t1 = np.where(parallel, -np.inf if inside else np.inf, t1)
                t2 = np.where(parallel, np.inf if inside else -np.inf, t2)
                t_near = np.maximum(t_near, np.minimum(t1, t2))
                t_far = np.minimum(t_far, np.maximum(t1, t2))
            hit = (t_near <= t_far) & (t_near > 0.0)
            return np.where(hit, t_near, NO_HIT)
        if shape.kind == 'cylinder':
            radius = half[0]
            a = dx * dx + dz * dz
            b = 2.0 * (origin[0] * dx + origin[2] * dz)
            c = origin[0] ** 2 + origin[2] ** 2 - radius**2
            discriminant = b * b - 4.0 * a * c
            t_side = (-b - np.sqrt(np.maximum(discriminant, 0.0))) / (2.0 * a)
            y_side = origin[1] + t_side * dy
            side_hit = (discriminant >= 0.0) & (t_side > 0.0) & (np.abs(y_side) <= half[1])
            best = np.where(side_hit, t_side, NO_HIT)
            for cap in (-half[1], half[1]):
                t_cap = (cap - origin[1]) / dy
                x_cap = origin[0] + t_cap * dx
                z_cap = origin[2] + t_cap * dz
                cap_hit = (t_cap > 0.0) & (x_cap * x_cap + z_cap * z_cap <= radius**2)
                best = np.minimum(best, np.where(cap_hit, t_cap, NO_HIT))
            return best
    raise ValueError(f'unknown shape kind {shape.kind!r}')


def box_from_mask(mask: npt.NDArray[np.bool_]) -> PixelBox | None:
    """Tight half-open pixel box of a mask, or None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return PixelBox(float(columns[0]), float(rows[0]), float(columns[-1] + 1), float(rows[-1] + 1))


def _footprint_box(hits: npt.NDArray[np.float64], x0: int, y0: int) -> tuple[PixelBox | None, int]:
    footprint = np.isfinite(hits)
    box = box_from_mask(footprint)
    if box is not None:
        box = PixelBox(box.x_min + x0, box.y_min + y0, box.x_max + x0, box.y_max + y0)
    return box, int(footprint.sum())


def amodal_footprint(
    shape: Shape, intrinsics: CameraIntrinsics = KINECT_INTRINSICS
) -> tuple[PixelBox | None, int]:
    """Box and pixel count of the whole projection of ``shape`` (as if nothing occluded it)."""
    window = _pixel_window(shape, intrinsics)
    if window is None:
        return None, 0
    x0, x1, y0, y1 = window
    ray_x, ray_y = _rays(intrinsics)
    return _footprint_box(_intersect(shape, ray_x[y0:y1, x0:x1], ray_y[y0:y1, x0:x1]), x0, y0)


def _projector_shadow(
    depth: npt.NDArray[np.float64], intrinsics: CameraIntrinsics, baseline_m: float
) -> npt.NDArray[np.bool_]:
    """Pixels the projector cannot light because a nearer surface to their right blocks it.

    A surface at column j > u blocks pixel u when its disparity exceeds u's by at least j - u:
    ``d[j] - j >= d[u] - u``, i.e. when a suffix maximum of ``d - column`` reaches ``d[u] - u``.
    """
    disparity = np.where(np.isfinite(depth), intrinsics.fx * baseline_m / depth, 0.0)
    shifted = disparity - np.arange(depth.shape[1], dtype=np.float64)
    suffix_max = np.maximum.accumulate(shifted[:, ::-1], axis=1)[:, ::-1]
    right_of_pixel = np.full(depth.shape, -np.inf)
    right_of_pixel[:, :-1] = suffix_max[:, 1:]
    return right_of_pixel >= shifted


def _degrade(
    clean: npt.NDArray[np.float64],
    intrinsics: CameraIntrinsics,
    noise: NoiseModel,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    depth = clean.copy()
    # Depth edges: the largest jump to a 4-neighbour, and the depth on the other side.
    padded = np.pad(clean, 1, mode='edge')
    neighbours = np.stack(
        (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:])
    )
    jumps = np.abs(neighbours - clean[None])
    jumps = np.where(np.isfinite(jumps), jumps, 0.0)
    strongest = np.argmax(jumps, axis=0)
    other_side = np.take_along_axis(neighbours, strongest[None], axis=0)[0]
    is_edge = jumps.max(axis=0) > noise.edge_threshold_m + 0.01 * clean
    flying = is_edge & (rng.random(depth.shape) < noise.flying_pixel_probability)
    mix = rng.random(depth.shape)
    depth = np.where(flying, mix * clean + (1.0 - mix) * other_side, depth)
    depth = depth + rng.standard_normal(depth.shape) * noise.depth_noise_coefficient * depth**2
    if noise.quantization_m > 0.0:
        depth = np.round(depth / noise.quantization_m) * noise.quantization_m
    missing = ~np.isfinite(clean) | (clean > noise.max_range_m)
    missing |= rng.random(depth.shape) < noise.dropout_probability
    missing |= is_edge & ~flying & (rng.random(depth.shape) < noise.edge_dropout_probability)
    if noise.projector_baseline_m > 0.0:
        missing |= _projector_shadow(clean, intrinsics, noise.projector_baseline_m)
    depth[missing] = np.nan
    return depth.astype(np.float32)


def render_scene(
    shapes: list[Shape],
    rng: np.random.Generator,
    support_y: float = 0.5,
    wall_z: float = 5.0,
    intrinsics: CameraIntrinsics = KINECT_INTRINSICS,
    noise: NoiseModel | None = None,
) -> SyntheticScene:
    """Ray cast ``shapes`` on a support plane ``y = support_y`` before a wall ``z = wall_z``."""
    noise = NoiseModel() if noise is None else noise
    ray_x, ray_y = _rays(intrinsics)
    with np.errstate(divide='ignore'):
        plane_t = np.where(ray_y > 0.0, support_y / np.where(ray_y > 0.0, ray_y, 1.0), NO_HIT)
    depth = np.minimum(plane_t, wall_z)
    background_is_plane = plane_t < wall_z
    instance = np.full(depth.shape, BACKGROUND_ID, dtype=np.int16)
    amodal: list[tuple[PixelBox | None, int]] = []
    for index, shape in enumerate(shapes):
        window = _pixel_window(shape, intrinsics)
        if window is None:
            amodal.append((None, 0))
            continue
        x0, x1, y0, y1 = window
        hits = _intersect(shape, ray_x[y0:y1, x0:x1], ray_y[y0:y1, x0:x1])
        amodal.append(_footprint_box(hits, x0, y0))
        region = depth[y0:y1, x0:x1]
        nearer = hits < region
        region[nearer] = hits[nearer]
        instance[y0:y1, x0:x1][nearer] = index
    objects = []
    for index, shape in enumerate(shapes):
        visible = instance == index
        count = int(visible.sum())
        centroid = None
        if count:
            z = depth[visible]
            points = np.column_stack((ray_x[visible] * z, ray_y[visible] * z, z))
            centroid = points.mean(axis=0)
        box, amodal_pixels = amodal[index]
        objects.append(RenderedObject(shape, index, box, amodal_pixels, count, centroid))
    rgb = _shade(depth, instance, shapes, background_is_plane)
    return SyntheticScene(
        intrinsics=intrinsics,
        depth_m=_degrade(depth, intrinsics, noise, rng),
        clean_depth_m=depth.astype(np.float32),
        rgb=rgb,
        instance=instance,
        objects=objects,
        support_y=support_y,
        wall_z=wall_z,
    )


def _shade(
    depth: npt.NDArray[np.float64],
    instance: npt.NDArray[np.int16],
    shapes: list[Shape],
    background_is_plane: npt.NDArray[np.bool_],
) -> npt.NDArray[np.uint8]:
    wall, plane = len(shapes), len(shapes) + 1
    palette = np.array(
        [shape.color for shape in shapes] + [(200, 200, 200), (170, 150, 120)], dtype=np.float32
    )
    index = np.where(instance >= 0, instance, np.where(background_is_plane, plane, wall))
    # Darken with depth and with the local depth slope so faces of one solid differ a little.
    finite = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    slope = np.zeros_like(finite)
    slope[:, 1:] = np.abs(np.diff(finite, axis=1))
    shade = np.clip(1.0 - 0.04 * finite - 2.0 * np.minimum(slope, 0.1), 0.35, 1.0)
    return (palette[index] * shade[..., None]).astype(np.uint8)


PALETTE = (
    (220, 50, 50),
    (50, 160, 60),
    (50, 80, 210),
    (230, 200, 40),
    (180, 60, 190),
    (40, 190, 200),
    (240, 130, 30),
)
LABELS = ('box', 'bin', 'can', 'crate', 'bottle', 'bucket', 'carton')


def random_shape(
    rng: np.random.Generator,
    depth_m: float,
    x_m: float,
    support_y: float,
    label: str = 'object',
    color: tuple[int, int, int] = (220, 50, 50),
    scale: float = 1.0,
) -> Shape:
    """A box or cylinder standing on the support plane with its centre at (x, ., depth)."""
    kind = 'box' if rng.random() < 0.5 else 'cylinder'
    width = scale * rng.uniform(0.12, 0.45)
    height = scale * rng.uniform(0.12, 0.5)
    thickness = scale * rng.uniform(0.1, 0.4) if kind == 'box' else width
    yaw = rng.uniform(-0.7, 0.7) if kind == 'box' else 0.0
    return Shape(
        label=label,
        kind=kind,
        center=(x_m, support_y - 0.5 * height, depth_m),
        size=(width, height, thickness),
        yaw=yaw,
        color=color,
    )


def lateral_limit(depth_m: float, intrinsics: CameraIntrinsics, margin: float = 0.75) -> float:
    """Largest |x| (m) at ``depth_m`` that keeps an object well inside the image."""
    return margin * depth_m * intrinsics.cx / intrinsics.fx


def _occluder(
    rng: np.random.Generator,
    target: Shape,
    target_box: PixelBox,
    intrinsics: CameraIntrinsics,
    coverage: tuple[float, float],
) -> Shape:
    """A box in front of ``target`` covering a ``coverage`` fraction of its box from one side
    or from below (the realized occluded fraction differs a little: shapes are not boxes)."""
    depth = target.center[2] * rng.uniform(0.45, 0.75)
    thickness = rng.uniform(0.05, 0.2)
    front, back = depth - 0.5 * thickness, depth + 0.5 * thickness
    fraction = rng.uniform(*coverage)
    side = rng.choice(('left', 'right', 'bottom'))
    support_y = target.center[1] + 0.5 * target.size[1]
    # An edge of a box projects furthest from the image centre from its front face, and nearest
    # to it from its back face; pick the face that makes the occluder's inner edge land on the
    # requested pixel.
    if side == 'bottom':
        edge_v = target_box.y_max - fraction * target_box.height
        edge_depth = back if edge_v > intrinsics.cy else front
        top_y = (edge_v - intrinsics.cy) * edge_depth / intrinsics.fy
        height = max(support_y - top_y, 0.02)
        u_center = 0.5 * (target_box.x_min + target_box.x_max)
        width = 1.6 * target_box.width * front / intrinsics.fx
        x_center = (u_center - intrinsics.cx) * front / intrinsics.fx
    else:
        width = rng.uniform(0.08, 0.3)
        top_y = (target_box.y_min - 15.0 - intrinsics.cy) * front / intrinsics.fy
        height = support_y - top_y
        if side == 'left':
            edge_u = target_box.x_min + fraction * target_box.width
            edge_depth = front if edge_u > intrinsics.cx else back
            x_center = (edge_u - intrinsics.cx) * edge_depth / intrinsics.fx - 0.5 * width
        else:
            edge_u = target_box.x_max - fraction * target_box.width
            edge_depth = back if edge_u > intrinsics.cx else front
            x_center = (edge_u - intrinsics.cx) * edge_depth / intrinsics.fx + 0.5 * width
    return Shape(
        label='occluder',
        kind='box',
        center=(x_center, support_y - 0.5 * height, depth),
        size=(width, height, thickness),
        color=(120, 120, 120),
    )


def jitter_box(
    rng: np.random.Generator,
    box: PixelBox,
    intrinsics: CameraIntrinsics,
    loosen: tuple[float, float] = (-0.03, 0.1),
) -> PixelBox:
    """``box`` with each side moved outward by a random fraction of its size (a loose detector)."""
    dx = rng.uniform(*loosen, size=2) * box.width
    dy = rng.uniform(*loosen, size=2) * box.height
    return PixelBox(
        float(np.clip(box.x_min - dx[0], 0, intrinsics.width)),
        float(np.clip(box.y_min - dy[0], 0, intrinsics.height)),
        float(np.clip(box.x_max + dx[1], 0, intrinsics.width)),
        float(np.clip(box.y_max + dy[1], 0, intrinsics.height)),
    )


def single_object_scene(
    rng: np.random.Generator,
    depth_m: float,
    occluded: bool,
    intrinsics: CameraIntrinsics = KINECT_INTRINSICS,
    noise: NoiseModel | None = None,
    coverage: tuple[float, float] = (0.15, 0.4),
) -> SyntheticScene:
    """One target (object 0) at about ``depth_m``, optionally behind a partial occluder (1)
    that covers a fraction in ``coverage`` of the target's box."""
    support_y = rng.uniform(0.35, 0.6)
    depth = depth_m * rng.uniform(0.95, 1.05)
    limit = lateral_limit(depth, intrinsics, 0.6)
    target = random_shape(rng, depth, rng.uniform(-limit, limit), support_y, 'target')
    wall_z = depth + rng.uniform(0.8, 2.5)
    shapes = [target]
    if occluded:
        target_box, _ = amodal_footprint(target, intrinsics)
        if target_box is not None:
            shapes.append(_occluder(rng, target, target_box, intrinsics, coverage))
    return render_scene(shapes, rng, support_y, wall_z, intrinsics, noise)


def multi_object_scene(
    rng: np.random.Generator,
    count: int,
    depth_range_m: tuple[float, float] = (1.0, 4.0),
    intrinsics: CameraIntrinsics = KINECT_INTRINSICS,
    noise: NoiseModel | None = None,
    max_occluded_fraction: float = 1.0,
    max_tries: int = 50,
) -> SyntheticScene:
    """``count`` non-intersecting objects on one support plane at depths in ``depth_range_m``.

    Layouts in which some object is hidden by more than ``max_occluded_fraction`` of its
    projection are drawn again (up to ``max_tries`` times; the last layout is kept).
    """
    scene: SyntheticScene | None = None
    for _ in range(max(max_tries, 1)):
        support_y = rng.uniform(0.35, 0.6)
        shapes = _place_shapes(rng, count, depth_range_m, support_y, intrinsics)
        wall_z = depth_range_m[1] + rng.uniform(1.0, 2.5)
        scene = render_scene(shapes, rng, support_y, wall_z, intrinsics, noise)
        if all(obj.occluded_fraction <= max_occluded_fraction for obj in scene.objects):
            break
    return scene  # type: ignore[return-value]  # at least one layout was drawn


def _place_shapes(
    rng: np.random.Generator,
    count: int,
    depth_range_m: tuple[float, float],
    support_y: float,
    intrinsics: CameraIntrinsics,
    max_tries: int = 200,
) -> list[Shape]:
    shapes: list[Shape] = []
    footprints: list[tuple[float, float, float]] = []  # (x, z, radius) on the support plane
    for _ in range(max_tries):
        if len(shapes) == count:
            break
        depth = rng.uniform(*depth_range_m)
        limit = lateral_limit(depth, intrinsics)
        index = len(shapes)
        shape = random_shape(
            rng,
            depth,
            rng.uniform(-limit, limit),
            support_y,
            LABELS[index % len(LABELS)],
            PALETTE[index % len(PALETTE)],
        )
        radius = 0.5 * math.hypot(shape.size[0], shape.size[2])
        x, _, z = shape.center
        if all(math.hypot(x - ox, z - oz) > radius + orad for ox, oz, orad in footprints):
            shapes.append(shape)
            footprints.append((x, z, radius))
    return shapes
