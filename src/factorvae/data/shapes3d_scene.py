"""The 3D Shapes scene (Burgess & Kim 2018; paper §5): a numpy ray caster of the shading maps
the images of ``factorvae.data.shapes3d`` are composed from.

The official renderer is not public; this one is fitted to the official images
(DeepMind's traversal GIF of one factor at a time, and 25 random samples from the data set's
notebook): nearest-image PSNR >= 20 dB for every sample (benchmarks/shapes3d_match.py).
Lengths are in units of the room's half width; ``Scene`` holds the fitted values.

- A square room (walls at x, z = +-1, 0.58 high) open to a light-blue sky (RGB 153, 226, 249):
  seen from inside, the sky fills the top fifth of the image, the walls a band across the
  middle, the floor the bottom. Floor, walls and object take their hue, HSV(hue, 1, 1) times
  the shading, clipped (lit surfaces saturate, as the official ones do).
- One object on the floor at the room's centre; at scale 1 a cube of side 0.30, a cylinder of
  radius 0.16 and height 0.33, a sphere of radius 0.18, a capsule of radius 0.14 and height
  0.55; all sizes times the scale value.
- The camera is 1.53 from the centre, 0.47 above the floor, looking at the object's vertical
  axis 5.75 degrees down, with a 34.9 degree field of view. orientation turns the camera about
  that axis (disentanglement_lib's file name ends in ``view-azi``); the lights turn with it, so
  in the image the room and the cube (aligned with the walls) turn and the shading and shadow
  stay: at 0 degrees the back wall fills the view face on, at -30 a corner shows right of the
  object, at +30 left of it, as in the official frames.
- Lighting: ambient, plus a headlight (diffuse light from the camera, no shadow), plus a light
  above the object (slightly left of it, in the camera's frame) that casts the object's shadow
  on the floor, plus a white highlight on the object.
- Pixels are 4x4 supersampled: edge pixels mix colours, so the images are smooth like the
  official ones.

Per (scale, shape, orientation) it gives MAPS maps: floor, wall and object shading (a pixel's
colour is the sum of each region's RGB times its map) and the RGB of what no hue colours (sky,
highlight), added as is.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

SIZE = 64
#: the official scale and orientation (degrees) values, in class order
SCALES = tuple(np.linspace(0.75, 1.25, 8))
ORIENTATIONS = tuple(np.linspace(-30.0, 30.0, 15))
_SUPER = 4
#: maps per (scale, shape, orientation): floor, wall and object shading, then the RGB of what
#: no hue colours (the sky)
MAPS = 6


class Scene(NamedTuple):
    """The scene's constants (lengths in units of the room's half width; angles in degrees).
    Fitted to the official images: see benchmarks/shapes3d_match.py."""

    distance: float = 1.529  # camera to the vertical axis through the object, horizontally
    height: float = 0.472  # camera above the floor
    pitch: float = 5.75  # camera looks down by this
    fov: float = 34.85  # vertical = horizontal field of view
    wall_height: float = 0.58
    light: tuple = (-0.735, 3.017, -1.513)
    # ^ a point light's position from the camera, in its (right, up, back) frame: above the object
    ambient: tuple = (0.299, 0.22, 0.444)  # floor, wall, object
    headlight: tuple = (0.746, 0.71, 0.569)  # diffuse light from the camera (casts no shadow)
    diffuse: tuple = (0.444, 0.325, 0.397)  # diffuse light from the (shadowing) light
    specular: float = 0.113  # white highlight on the object, from the headlight
    shininess: float = 11.92
    sky: tuple = (153.0, 226.0, 249.0)  # RGB 0..255
    cube: float = 0.299  # side at scale 1
    cylinder: tuple = (0.159, 0.325)  # radius, height at scale 1
    sphere: float = 0.182  # radius at scale 1
    capsule: tuple = (0.137, 0.553)  # radius, total height at scale 1


SCENE = Scene()
_EPS = 1e-4


# -- ray casting ----------------------------------------------------------------------------

def _camera(orientation_deg: float, scene: Scene = None):
    """Ray origin (3,), unit directions (S*64*S*64, 3) of the supersampled pixels (row-major,
    row 0 at the top) and the light's position, in room coordinates (y up, object at the
    origin, walls at x, z = +-1). Orientation turns the camera (and its light) about the
    object's vertical axis: the room and a cube, aligned with each other, turn in the image."""
    sc = scene or SCENE
    az, pitch = np.deg2rad(orientation_deg), np.deg2rad(sc.pitch)
    flat = np.array([-np.sin(az), 0.0, np.cos(az)])  # horizontal view direction
    origin = -sc.distance * flat + np.array([0.0, sc.height, 0.0])
    fwd = np.cos(pitch) * flat + np.array([0.0, -np.sin(pitch), 0.0])
    right = np.cross(np.array([0.0, 1.0, 0.0]), fwd)
    right /= np.linalg.norm(right)
    up = np.cross(fwd, right)
    n = SIZE * _SUPER
    t = np.tan(np.deg2rad(sc.fov) / 2) * ((np.arange(n) + 0.5) / n * 2 - 1)
    u, v = np.meshgrid(t, -t)  # u: right, v: up (row 0 at the top)
    d = (fwd + u[..., None] * right + v[..., None] * up).reshape(-1, 3)
    light = origin + sc.light[0] * right + sc.light[1] * up - sc.light[2] * fwd
    return origin, d / np.linalg.norm(d, axis=-1, keepdims=True), light


def _illumination(p: np.ndarray, normal: np.ndarray, light: np.ndarray):
    """Unit directions from points p (M, 3) towards the light, their distances, and the
    light's diffuse intensity there (Lambert: the cosine with the normal)."""
    to = light - p
    dist = np.linalg.norm(to, axis=1)
    to = to / np.maximum(dist, 1e-9)[:, None]
    return to, dist, np.maximum((normal * to).sum(1), 0.0)


#: inward normals of the floor (y >= 0) and the four walls (|x|, |z| <= 1)
_PLANES = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
_OFFSETS = np.array([0.0, -1.0, -1.0, -1.0, -1.0])


def _hit_room(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, the first room surface each ray meets from its front (0 floor,
    1-4 walls; inf where none: the sky). Surfaces are one-sided (seen from inside the room);
    the floor is unbounded, the walls end at the room's corners."""
    dn = d @ _PLANES.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (_OFFSETS - o @ _PLANES.T) / dn
    t = np.where((dn < -1e-12) & (t > 0), t, np.inf)
    for k in range(1, 5):  # a wall's hit must lie between the two walls across it
        along = 2 if k < 3 else 0
        with np.errstate(invalid="ignore"):
            q = o[along] + t[:, k] * d[:, along]
        t[:, k] = np.where(np.abs(q) <= 1 + 1e-9, t[:, k], np.inf)
    which = t.argmin(-1)
    return np.take_along_axis(t, which[:, None], -1)[:, 0], which


def _quadratic(a, b, c):
    """Smaller and larger roots of a t^2 + 2 b t + c (nan where none)."""
    disc = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(disc)
        return (-b - s) / a, (-b + s) / a


def _dims(shape: int, scale: float, scene: Scene) -> tuple[float, float]:
    """(radius or half side, height) of an object."""
    sc = scene
    if shape == 0:
        return 0.5 * sc.cube * scale, sc.cube * scale
    if shape == 1:
        return sc.cylinder[0] * scale, sc.cylinder[1] * scale
    if shape == 2:
        return sc.sphere * scale, 2 * sc.sphere * scale
    return sc.capsule[0] * scale, sc.capsule[1] * scale


def _hit_object(shape: int, scale: float, o: np.ndarray, d: np.ndarray, scene: Scene = None):
    """First hit (t > eps, inf if none) and unit normal of rays o + t d with the object.
    ``o`` (3,) or (M, 3), ``d`` (M, 3)."""
    r, height = _dims(shape, scale, scene or SCENE)
    o = np.broadcast_to(o, d.shape)
    m = len(d)
    best = np.full(m, np.inf)
    normal = np.zeros((m, 3))

    def take(t, nrm):
        t = np.where(np.isfinite(t) & (t > _EPS), t, np.inf)
        better = t < best
        best[better] = t[better]
        normal[better] = nrm[better] if nrm.ndim == 2 else nrm

    def point(t):
        return o + np.where(np.isfinite(t), t, 0)[:, None] * d

    if shape == 0:  # cube: slab test on [-r, r] x [0, 2r] x [-r, r], faces parallel to the walls
        lo, hi = np.array([-r, 0.0, -r]), np.array([r, height, r])
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - o) / d, (hi - o) / d
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        tmin = np.where(np.isnan(tmin), -np.inf, tmin)
        tmax = np.where(np.isnan(tmax), np.inf, tmax)
        enter, axis = tmin.max(1), tmin.argmax(1)
        leave = tmax.min(1)
        t = np.where(enter <= leave, enter, np.inf)
        nrm = np.zeros((m, 3))
        nrm[np.arange(m), axis] = -np.sign(d[np.arange(m), axis])
        take(t, nrm)
        return best, normal

    def vertical_cylinder(y0, y1, caps):
        a = d[:, 0] ** 2 + d[:, 2] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2]
        c = o[:, 0] ** 2 + o[:, 2] ** 2 - r * r
        for t in _quadratic(a, b, c):
            p = point(t)
            ok = (p[:, 1] >= y0) & (p[:, 1] <= y1)
            take(np.where(ok, t, np.inf), np.stack([p[:, 0] / r, np.zeros(m), p[:, 2] / r], 1))
        if caps:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (y1 - o[:, 1]) / d[:, 1]
            p = point(t)
            ok = p[:, 0] ** 2 + p[:, 2] ** 2 <= r * r
            take(np.where(ok, t, np.inf), np.array([0.0, 1.0, 0.0]))

    def sphere(cy):
        oc = o - np.array([0.0, cy, 0.0])
        for t in _quadratic(np.sum(d * d, 1), np.sum(oc * d, 1), np.sum(oc * oc, 1) - r * r):
            p = point(t)
            take(t, (p - np.array([0.0, cy, 0.0])) / r)

    if shape == 1:
        vertical_cylinder(0.0, height, caps=True)
    elif shape == 2:  # resting on the floor
        sphere(r)
    else:  # capsule standing upright: a cylinder between two half spheres
        vertical_cylinder(r, height - r, caps=False)
        sphere(r)
        sphere(height - r)
    return best, normal


def _bounding_sphere(shape: int, scale: float, scene: Scene) -> tuple[np.ndarray, float]:
    """Centre and radius of a sphere that contains the object."""
    r, h = _dims(shape, scale, scene)
    half_w = r * np.sqrt(2) if shape == 0 else r
    return np.array([0.0, h / 2, 0.0]), float(np.hypot(h / 2, half_w)) + 1e-3


def _near(o: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Rays (origins o, unit directions d; either may be one vector) that pass within
    ``radius`` of ``centre`` ahead of their origin, or start inside that sphere."""
    oc = centre - o
    along = np.einsum("...i,...i->...", oc, d)
    occ = np.einsum("...i,...i->...", oc, oc)
    along = np.maximum(along, 0)
    return occ - along * along <= radius * radius


def _background(orientation: int, scene: Scene = None):
    """Per-orientation ray casting of the empty room. Rays are in pixel-major order (the S*S
    rays of pixel i are rays i*S*S ...). Returns the ray origin and directions, the light, the
    room's hit points and distances, what each ray sees (0 floor, 1 wall, 2 sky), the
    illumination there, and the maps of the empty room."""
    sc = scene or SCENE
    o, d, light = _camera(float(ORIENTATIONS[orientation]), sc)
    k = _SUPER
    d = d.reshape(SIZE, k, SIZE, k, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 3)
    t, which = _hit_room(o, d)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    kind = np.where(~np.isfinite(t), 2, np.where(which == 0, 0, np.where(p[:, 1] <= sc.wall_height, 1, 2)))
    to_light, dist, lambert = _illumination(p, _PLANES[which], light)
    facing = np.maximum(-(_PLANES[which] * d).sum(1), 0.0)  # the cosine with the view (headlight)
    room = (o, d, light, p, t, kind, (to_light, dist, lambert, facing))
    empty = _layers(room, sc, np.arange(len(d)), np.full(len(d), np.inf), np.zeros((len(d), 3)), np.ones(len(d)))
    return room + (empty.reshape(MAPS, SIZE * SIZE, k * k).mean(-1),)


def _layers(background, sc: Scene, rays, t_obj, n_obj, lit) -> np.ndarray:
    """(MAPS, len(rays)) per-ray values of the maps, for the rays ``rays`` given their hits with
    the object (distance, normal) and whether the light reaches their room point."""
    o, d, light, p_bg, t_bg, kind, (_, _, lambert, facing_bg) = background[:7]
    d, kind, lambert, facing_bg = d[rays], kind[rays], lambert[rays], facing_bg[rays]
    on_obj = t_obj < t_bg[rays]
    amb, head, dif = sc.ambient, sc.headlight, sc.diffuse
    floor = amb[0] + head[0] * facing_bg + dif[0] * lambert * lit
    wall = amb[1] + head[1] * facing_bg + dif[1] * lambert * lit
    p_obj = o + np.where(on_obj, t_obj, 0.0)[:, None] * d
    _, _, diffuse = _illumination(p_obj, n_obj, light)
    facing = np.maximum(-(n_obj * d).sum(1), 0.0)
    obj = amb[2] + head[2] * facing + dif[2] * diffuse
    # a white highlight (Phong) on the object from the headlight, whose reflection is 2 facing^2 - 1
    spec = sc.specular * np.maximum(2 * facing**2 - 1, 0.0) ** sc.shininess
    white = np.where(on_obj, spec * 255.0, 0.0)
    sky = ~on_obj & (kind == 2)
    return np.stack([
        np.where(~on_obj & (kind == 0), floor, 0.0),
        np.where(~on_obj & (kind == 1), wall, 0.0),
        np.where(on_obj, obj, 0.0),
        *(np.where(sky, c, white) for c in sc.sky),
    ])


def _maps(scale: int, shape: int, background, scene: Scene = None) -> np.ndarray:
    """The maps of one (scale, shape) seen from one orientation (its ``_background``), float32
    (MAPS, 64, 64): floor, wall and object shading, and the RGB (0..255) of the sky; a pixel's
    colour is sum_r maps[r] * rgb_r + maps[3:]. Only pixels the object or its shadow touch are
    recomputed; the others are the empty room's."""
    sc = scene or SCENE
    o, d, light, p_bg, t_bg, kind, (to_light, dist, lambert, _), empty = background
    s = float(SCALES[scale])
    centre, radius = _bounding_sphere(shape, s, sc)
    n, kk = len(d), _SUPER * _SUPER
    # primary rays against the object (only those that pass near it)
    t_obj = np.full(n, np.inf)
    n_obj = np.zeros((n, 3))
    near = _near(o, d, centre, radius)
    t_obj[near], n_obj[near] = _hit_object(shape, s, o, d[near], sc)
    on_obj = t_obj < t_bg
    # shadow rays from the room towards the light (only those that pass near the object)
    lit = np.ones(n)
    cand = ~on_obj & (kind < 2) & (lambert > 0) & _near(p_bg, to_light, centre, radius)
    if cand.any():
        ts, _ = _hit_object(shape, s, p_bg[cand] + _EPS * to_light[cand], to_light[cand], sc)
        lit[cand] = np.where(ts < dist[cand], 0.0, 1.0)
    pixels = np.unique(np.nonzero(on_obj | (lit == 0))[0] // kk)
    rays = (pixels[:, None] * kk + np.arange(kk)).ravel()
    maps = empty.copy()
    maps[:, pixels] = _layers(background, sc, rays, t_obj[rays], n_obj[rays], lit[rays]).reshape(
        MAPS, len(pixels), kk).mean(-1)
    maps = maps.reshape(MAPS, SIZE, SIZE).astype(np.float32)
    maps.setflags(write=False)
    return maps


#: maps computed so far in this process, by (scale, shape, orientation): 96 kB each
_MAPS: dict[tuple[int, int, int], np.ndarray] = {}


def shading_maps(keys) -> list[np.ndarray]:
    """Maps for (scale, shape, orientation) class triples, computed once per process
    (grouped by orientation: the empty room is ray-cast once per view)."""
    keys = [tuple(int(v) for v in k) for k in keys]
    todo = sorted(set(keys) - set(_MAPS), key=lambda k: (k[2], k[0], k[1]))
    for o in sorted({k[2] for k in todo}):
        bg = _background(o)
        for sc, sh, _ in (k for k in todo if k[2] == o):
            _MAPS[sc, sh, o] = _maps(sc, sh, bg)
    return [_MAPS[k] for k in keys]


def shading_bank(progress: bool = False) -> np.ndarray:
    """All 480 map sets, float32 (8, 4, 15, MAPS, 64, 64) in (scale, shape, orientation) order,
    so ``bank.reshape(480, MAPS, 64, 64)[k]`` is image block offset k."""
    bank = np.empty((8, 4, 15, MAPS, SIZE, SIZE), dtype=np.float32)
    for o in tqdm(range(15), desc="3D Shapes: ray casting", disable=not progress, unit="view"):
        keys = [(sc, sh, o) for sc in range(8) for sh in range(4)]
        for (sc, sh, _), m in zip(keys, shading_maps(keys)):
            bank[sc, sh, o] = m
    return bank
