"""Procedural shapes with exact surface normals: the offline default data set.

Each generator ``f(rng, n) -> (pos (n, 3), normal (n, 3))`` draws one shape of its class with random
sizes and aspect ratios, canonical and upright (axis of symmetry along z), and ``n`` points on its
surface with unit normals (outward for closed solids; for open surfaces the +z side, except the
bowl, whose normals point out of its convex side, -z). Sampling is
uniform by area (rejection sampling where the parametrisation is not), except the helix tube,
whose density varies by the tube-to-helix radius ratio (at most about 25%).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aug_attn_tasks.points.io import sample_surface, triangulate_fans

__all__ = ["SHAPES", "ShapeGenerator"]

ShapeGenerator = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
Z = np.array([0.0, 0.0, 1.0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _directions(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 3)`` directions uniform on the unit sphere."""
    return _unit(rng.normal(size=(n, 3)))


def _disc(rng: np.random.Generator, n: int, r_out: float, r_in: float = 0.0) -> np.ndarray:
    """``(n, 3)`` points uniform by area on the flat ring ``r_in <= |xy| <= r_out`` at z = 0."""
    radius = np.sqrt(rng.uniform(r_in**2, r_out**2, n))
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle), np.zeros(n)], axis=1)


def _parts(rng: np.random.Generator, n: int, areas: list[float], samplers: list[Callable[[int], tuple]]) -> tuple:
    """Split ``n`` points over surface parts in proportion to their areas and concatenate them."""
    counts = rng.multinomial(n, np.asarray(areas) / np.sum(areas))
    pieces = [sampler(count) for sampler, count in zip(samplers, counts)]
    return np.concatenate([p for p, _ in pieces]), np.concatenate([q for _, q in pieces])


def _rejection(rng: np.random.Generator, n: int, propose: Callable[[int], tuple], max_weight: float) -> tuple:
    """Uniform-by-area samples from a parametrisation whose area element is ``weight <= max_weight``:
    ``propose(m) -> (pos, normal, weight)`` draws uniform parameters."""
    pos, normal, have = [], [], 0
    while have < n:
        p, q, weight = propose(2 * (n - have) + 16)
        keep = rng.random(len(weight)) * max_weight < weight
        pos.append(p[keep])
        normal.append(q[keep])
        have += int(keep.sum())
    return np.concatenate(pos)[:n], np.concatenate(normal)[:n]


def _polytope(rng: np.random.Generator, n: int, vertices: np.ndarray, polygons: list[list[int]]) -> tuple:
    """Sample a convex polytope given by vertices and polygons; faces are turned outward here."""
    faces = triangulate_fans([np.array(p) for p in polygons])
    corners = vertices[faces]  # (F, 3, 3)
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    inward = np.einsum("fd,fd->f", normal, corners.mean(1) - vertices.mean(0)) < 0
    faces[inward] = faces[inward][:, ::-1]
    return sample_surface(vertices, faces, n, rng, name="synthetic polytope")


def sphere(rng: np.random.Generator, n: int) -> tuple:
    direction = _directions(rng, n)
    return rng.uniform(0.5, 1.5) * direction, direction


def ellipsoid(rng: np.random.Generator, n: int) -> tuple:
    axes = np.array([1.0, rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.5)])

    def propose(m: int) -> tuple:
        u = _directions(rng, m)
        normal = u / axes  # the gradient of |x / axes|^2 at x = axes * u
        return u * axes, _unit(normal), np.linalg.norm(normal, axis=1)  # area element ~ |u / axes|

    return _rejection(rng, n, propose, max_weight=1 / axes.min())


def box(rng: np.random.Generator, n: int) -> tuple:
    size = rng.uniform(0.3, 1.0, 3)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * size  # index 4x+2y+z
    quads = [[0, 1, 3, 2], [4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]]
    return _polytope(rng, n, corners, quads)


def pyramid(rng: np.random.Generator, n: int) -> tuple:
    a, b, h = rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0), rng.uniform(0.8, 1.6)
    vertices = np.array([[-a, -b, 0], [a, -b, 0], [a, b, 0], [-a, b, 0], [0, 0, h]])
    return _polytope(rng, n, vertices, [[0, 1, 2, 3], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])


def octahedron(rng: np.random.Generator, n: int) -> tuple:
    a, b, c = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0), rng.uniform(0.8, 1.4)
    vertices = np.array([[a, 0, 0], [-a, 0, 0], [0, b, 0], [0, -b, 0], [0, 0, c], [0, 0, -c]])
    faces = [[x, y, z] for x in (0, 1) for y in (2, 3) for z in (4, 5)]
    return _polytope(rng, n, vertices, faces)


def _tube(rng: np.random.Generator, r: float, h: float) -> Callable[[int], tuple]:
    """Sampler of the open side of a cylinder of radius ``r`` and height ``h`` centred at the origin."""

    def side(m: int) -> tuple:
        angle = rng.uniform(0, 2 * np.pi, m)
        normal = np.stack([np.cos(angle), np.sin(angle), np.zeros(m)], axis=1)
        return r * normal + np.outer(rng.uniform(-h / 2, h / 2, m), Z), normal

    return side


def _cap(rng: np.random.Generator, r: float, z: float, sign: float) -> Callable[[int], tuple]:
    """Sampler of a disc of radius ``r`` at height ``z`` facing ``sign * z``."""
    return lambda m: (_disc(rng, m, r) + z * Z, np.tile(sign * Z, (m, 1)))


def _dome(rng: np.random.Generator, r: float, z: float, sign: float) -> Callable[[int], tuple]:
    """Sampler of a hemisphere of radius ``r`` centred at height ``z``, bulging towards ``sign * z``."""

    def dome(m: int) -> tuple:
        direction = _directions(rng, m)
        direction[:, 2] = sign * np.abs(direction[:, 2])
        return r * direction + z * Z, direction

    return dome


def cylinder(rng: np.random.Generator, n: int) -> tuple:
    r, h = rng.uniform(0.3, 1.0), rng.uniform(0.8, 2.0)
    parts = [_tube(rng, r, h), _cap(rng, r, h / 2, 1.0), _cap(rng, r, -h / 2, -1.0)]
    return _parts(rng, n, [2 * np.pi * r * h, np.pi * r * r, np.pi * r * r], parts)


def capsule(rng: np.random.Generator, n: int) -> tuple:
    r, h = rng.uniform(0.3, 0.6), rng.uniform(0.8, 2.0)
    parts = [_tube(rng, r, h), _dome(rng, r, h / 2, 1.0), _dome(rng, r, -h / 2, -1.0)]
    return _parts(rng, n, [2 * np.pi * r * h, 2 * np.pi * r * r, 2 * np.pi * r * r], parts)


def bowl(rng: np.random.Generator, n: int) -> tuple:
    """An open hemisphere, opening upward."""
    return _dome(rng, rng.uniform(0.5, 1.5), 0.0, -1.0)(n)


def cone(rng: np.random.Generator, n: int) -> tuple:
    r, h = rng.uniform(0.4, 1.0), rng.uniform(0.8, 2.0)
    slant = np.hypot(r, h)

    def side(m: int) -> tuple:
        t = np.sqrt(rng.random(m))  # distance from the apex / slant: area grows as t^2
        angle = rng.uniform(0, 2 * np.pi, m)
        pos = np.stack([t * r * np.cos(angle), t * r * np.sin(angle), h / 2 - t * h], axis=1)
        normal = np.stack([h * np.cos(angle), h * np.sin(angle), np.full(m, r)], axis=1) / slant
        return pos, normal

    return _parts(rng, n, [np.pi * r * slant, np.pi * r * r], [side, _cap(rng, r, -h / 2, -1.0)])


def torus(rng: np.random.Generator, n: int) -> tuple:
    big, small = 1.0, rng.uniform(0.2, 0.5)

    def propose(m: int) -> tuple:
        u, v = rng.uniform(0, 2 * np.pi, (2, m))
        normal = np.stack([np.cos(v) * np.cos(u), np.cos(v) * np.sin(u), np.sin(v)], axis=1)
        centre = big * np.stack([np.cos(u), np.sin(u), np.zeros(m)], axis=1)  # of the tube
        return centre + small * normal, normal, big + small * np.cos(v)

    return _rejection(rng, n, propose, max_weight=big + small)


def plane(rng: np.random.Generator, n: int) -> tuple:
    """A flat rectangle at z = 0."""
    a, b = rng.uniform(0.5, 1.0), rng.uniform(0.3, 1.0)
    pos = np.stack([rng.uniform(-a, a, n), rng.uniform(-b, b, n), np.zeros(n)], axis=1)
    return pos, np.tile(Z, (n, 1))


def annulus(rng: np.random.Generator, n: int) -> tuple:
    """A flat ring at z = 0 with a hole of 30-60% of its radius."""
    return _disc(rng, n, 1.0, rng.uniform(0.3, 0.6)), np.tile(Z, (n, 1))


def saddle(rng: np.random.Generator, n: int) -> tuple:
    """The hyperbolic paraboloid ``z = k (x^2 - y^2)`` over the square ``[-1, 1]^2``."""
    k = rng.uniform(0.3, 0.8)

    def propose(m: int) -> tuple:
        x, y = rng.uniform(-1, 1, (2, m))
        gradient = np.stack([-2 * k * x, 2 * k * y, np.ones(m)], axis=1)
        return np.stack([x, y, k * (x * x - y * y)], axis=1), _unit(gradient), np.linalg.norm(gradient, axis=1)

    return _rejection(rng, n, propose, max_weight=np.sqrt(1 + 8 * k * k))


def helix(rng: np.random.Generator, n: int) -> tuple:
    """A tube of radius ``r`` around the helix ``(cos t, sin t, p t)``, normals from its Frenet frame."""
    pitch, turns, r = rng.uniform(0.1, 0.25), rng.uniform(1.5, 3.0), rng.uniform(0.1, 0.2)
    t = rng.uniform(0, 2 * np.pi * turns, n)  # the helix has constant speed: uniform in arc length
    phi = rng.uniform(0, 2 * np.pi, n)
    centre = np.stack([np.cos(t), np.sin(t), pitch * t], axis=1)
    tangent = _unit(np.stack([-np.sin(t), np.cos(t), np.full(n, pitch)], axis=1))
    principal = np.stack([-np.cos(t), -np.sin(t), np.zeros(n)], axis=1)
    binormal = np.cross(tangent, principal)
    normal = np.cos(phi)[:, None] * principal + np.sin(phi)[:, None] * binormal
    return centre + r * normal, normal


SHAPES: dict[str, ShapeGenerator] = {
    "sphere": sphere,
    "ellipsoid": ellipsoid,
    "box": box,
    "pyramid": pyramid,
    "octahedron": octahedron,
    "cylinder": cylinder,
    "capsule": capsule,
    "cone": cone,
    "torus": torus,
    "bowl": bowl,
    "plane": plane,
    "annulus": annulus,
    "saddle": saddle,
    "helix": helix,
}
