"""3D Shapes: the official grid and index order, the block renderer against single images, each
factor changing the image the way its name says, the cache's validation and atomic writes, and
the official-file loader with its errors (on small files written in the official format)."""

from __future__ import annotations

import colorsys
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from factorvae.data import shapes3d as s3
from factorvae.data import shapes3d_scene as scene
from factorvae.data.grid import FactorGrid
from factorvae.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"
BASE = np.array([2, 5, 7, 4, 1, 7])  # floor, wall, object, scale, shape (cylinder), orientation 0 deg


def with_(base, **changes):
    row = base.copy()
    for name, v in changes.items():
        row[s3.GRID.factor_index(name)] = v
    return row[None]


def maps_of(row):
    return s3.shading_maps([row[0, 3:]])[0]  # (3, 64, 64): floor, wall, object


def object_mask(row):
    """Pixels (mostly) covered by the object: shading is >= 0.45 (ambient) where covered."""
    return maps_of(row)[2] > 0.3


def hue_of(rgb):
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255.0))[0]


def hue_dist(a, b):
    d = abs(a - b) % 1.0
    return min(d, 1 - d)


# -- grid and order ---------------------------------------------------------------------------

def test_official_grid_sizes_values_and_index_order():
    g = s3.GRID
    assert g.names == ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    assert g.sizes == (10, 10, 10, 8, 4, 15) and len(g) == 480_000
    # spec §5.2: index = floor*48000 + wall*4800 + object*480 + scale*60 + shape*15 + orientation
    assert g.strides == (48000, 4800, 480, 60, 15, 1)
    assert g.index(np.array([[1, 2, 3, 4, 2, 5]]))[0] == 48000 + 9600 + 1440 + 240 + 30 + 5
    assert np.allclose(g.values[0], np.arange(10) / 10) and g.values[0] == g.values[1] == g.values[2]
    assert np.allclose(g.values[3], [0.75, 0.8214286, 0.8928571, 0.9642857, 1.0357143, 1.1071429, 1.1785714, 1.25])
    assert g.values[4] == (0.0, 1.0, 2.0, 3.0) and s3.SHAPES == ("cube", "cylinder", "sphere", "capsule")
    assert np.allclose(g.values[5], np.linspace(-30, 30, 15))


def test_block_renderer_matches_single_images_in_official_order():
    floors, walls, objects = [0, 9], [3], [1, 6]
    # a bank with two orientations ray-cast (the rest zero: rendered, but not compared)
    bank = np.zeros((8, 4, 15, s3.MAPS, 64, 64), np.float32)
    views = [(sc, sh, o) for sc in range(8) for sh in range(4) for o in (1, 9)]
    for (sc, sh, o), m in zip(views, s3.shading_maps(views)):
        bank[sc, sh, o] = m
    out = np.empty((len(floors) * len(walls) * len(objects) * s3.BLOCK, 3, 64, 64), np.uint8)
    s3.render_into(out, floors, walls, objects, bank=bank)
    rng = np.random.default_rng(0)
    local = np.arange(len(out))
    local = rng.choice(local[np.isin(local % 15, (1, 9))], 200, replace=False)
    f, w, o, k = np.unravel_index(local, (2, 1, 2, s3.BLOCK))
    classes = np.stack([np.array(floors)[f], np.array(walls)[w], np.array(objects)[o],
                        *np.unravel_index(k, (8, 4, 15))], axis=1)
    assert np.array_equal(out[local], s3.render(classes))
    # block offset k is (scale, shape, orientation) in row-major order, orientation fastest
    assert np.array_equal(out[1], s3.render(np.array([[0, 3, 1, 0, 0, 1]]))[0])
    assert np.array_equal(out[15 + 1], s3.render(np.array([[0, 3, 1, 0, 1, 1]]))[0])
    assert np.array_equal(out[60 + 9], s3.render(np.array([[0, 3, 1, 1, 0, 9]]))[0])
    assert np.array_equal(out[2 * 480 + 9], s3.render(np.array([[9, 3, 1, 0, 0, 9]]))[0])


def test_render_shape_dtype_and_determinism():
    rows = s3.GRID.sample(8, np.random.default_rng(1))
    a = s3.render(rows)
    assert a.shape == (8, 3, 64, 64) and a.dtype == np.uint8
    assert np.array_equal(a, s3.render(rows))
    assert s3.render(np.zeros((0, 6), int)).shape == (0, 3, 64, 64)
    with pytest.raises(ValueError):
        s3.render(np.array([[0, 0, 0, 8, 0, 0]]))  # scale has 8 classes


# -- each factor does what its name says ----------------------------------------------------------

@pytest.mark.parametrize("factor,region", [("floor_hue", 0), ("wall_hue", 1), ("object_hue", 2)])
def test_a_hue_changes_only_its_own_region_and_to_its_hue(factor, region):
    maps = maps_of(BASE[None])
    # pixels of this region only: no other region, no sky (white highlights keep the hue)
    pure = (maps[region] > 0) & (maps[:3].sum(0) - maps[region] == 0) & (maps[3] == maps[5])
    assert pure.sum() > 150
    ref = s3.render(BASE[None])[0]
    for v in (0, 3, 8):
        if v == BASE[s3.GRID.factor_index(factor)]:
            continue
        img = s3.render(with_(BASE, **{factor: v}))[0]
        changed = (img != ref).any(0)
        assert changed.any()
        assert not (changed & (maps[region] == 0)).any(), f"{factor} changed pixels outside its region"
        assert changed[pure & (maps[region] > 0.3)].mean() > 0.99  # and (nearly) all of its own pixels
        mean_rgb = img[:, pure].mean(1)
        assert hue_dist(hue_of(mean_rgb), v / 10) < 0.02, f"{factor}={v / 10} looks like hue {hue_of(mean_rgb):.2f}"


def test_scale_grows_the_object_monotonically_for_every_shape():
    for shape in range(4):
        for orient in (0, 14):
            area = [maps_of(with_(BASE, scale=sc, shape=shape, orientation=orient))[2].sum() for sc in range(8)]
            assert np.all(np.diff(area) > 0), (shape, orient, area)
            assert area[-1] / area[0] > 2.0  # (1.25 / 0.75)^2 = 2.8 in projected area


def test_scale_changes_object_pixels_and_the_shadow_only():
    a, b = maps_of(with_(BASE, scale=0)), maps_of(with_(BASE, scale=7))
    # room pixels away from the object and its shadow keep their shading
    room = (a[2] == 0) & (b[2] == 0)
    diff = np.abs(a[:2] - b[:2]).sum(0)
    assert (diff[room] > 1e-6).mean() < 0.05


def test_shapes_have_different_outlines():
    masks = [object_mask(with_(BASE, shape=sh, orientation=3)) for sh in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
            assert iou < 0.85, (s3.SHAPES[i], s3.SHAPES[j], iou)
    # the cube is the widest at the floor line seen from an angle; the capsule is the narrowest
    widths = [m.any(0).sum() for m in masks]
    assert widths[0] > widths[3]


def labels_of(row):
    """Per pixel: 0 floor, 1 wall, 2 object, 3 sky (whichever covers most of it)."""
    m = maps_of(row)
    sky = (m[5] - m[3]) / (scene.SCENE.sky[2] - scene.SCENE.sky[0])  # its share of the pixel
    return np.stack([m[0], m[1], m[2], sky]).argmax(0)


def corner_column(orientation, y=28):
    """The image column of the room corner (where rays of row y stop meeting one wall and meet
    the next), or None where one wall fills the row."""
    _, _, _, p, _, kind, _, _ = scene._background(orientation)
    k = scene._SUPER  # rays are in pixel-major order: (row, column, sub-row, sub-column)
    p, kind = p.reshape(64, 64, k, k, 3)[y, :, 0].reshape(-1, 3), kind.reshape(64, 64, k, k)[y, :, 0].ravel()
    assert (kind == 1).all()  # row y is all wall
    side = np.abs(p[:, 0]) > np.abs(p[:, 2])  # on a side wall (|x| = 1), not the back wall
    change = np.nonzero(np.diff(side))[0]
    return None if len(change) == 0 else float(change.mean() / scene._SUPER)


def test_orientation_turns_the_view_colours_stay():
    # orientation is the camera azimuth: it turns the cube and brings a room corner into view
    # (right of the object for negative angles, left for positive: columns 42-45 and 18-21 at
    # -30 and 30 degrees in the official frames)
    corners = [corner_column(o) for o in range(15)]
    assert corners[7] is None  # 0 degrees: the back wall fills the view face on
    assert 41 <= corners[0] <= 46 and 17 <= corners[14] <= 22 and abs(corners[0] + corners[14] - 63) < 1, corners
    assert np.all(np.diff([c for c in corners[:7] if c is not None]) > 0)  # moving out as the angle shrinks
    assert np.all(np.diff([c for c in corners[8:] if c is not None]) > 0)
    cube = [object_mask(with_(BASE, shape=0, orientation=o)) for o in (0, 7, 14)]
    assert (cube[0] != cube[1]).sum() > 10 and (cube[1] != cube[2]).sum() > 10
    # a sphere looks the same from every side: its outline does not move
    sphere = [maps_of(with_(BASE, shape=2, orientation=o))[2] > 0 for o in (0, 14)]
    assert np.array_equal(sphere[0], sphere[1])
    # colours are untouched: the brightest floor pixels keep the floor hue
    img = s3.render(with_(BASE, orientation=14))[0]
    floor = maps_of(with_(BASE, orientation=14))[0] > 0.8
    assert floor.sum() > 100 and hue_dist(hue_of(img[:, floor].mean(1)), BASE[0] / 10) < 0.02


def test_scene_layout_sky_walls_floor_object():
    """The official camera: sky over the top fifth, the walls a band across the middle, the
    floor below, a large object in the centre."""
    for o in (0, 7, 14):
        lab = labels_of(with_(BASE, orientation=o))
        assert (lab[:12] == 3).all()  # sky
        assert (lab[22:36, :6] == 1).all() and (lab[22:36, -6:] == 1).all()  # walls at both sides
        assert (lab[50:, :8] == 0).all() and (lab[50:, -8:] == 0).all()  # floor
        assert (lab[38:52, 28:36] == 2).all() and not (lab[:, :12] == 2).any()  # the object, centred
    m = maps_of(BASE[None])
    assert ((m[:3].sum(0) > 0) | (m[3] > 0)).all()  # every pixel shows something


def official_samples():
    """25 official images (cut from the data set notebook's 5x5 figure, resized back to 64x64)
    and the classes of their nearest procedural images (benchmarks/shapes3d_match.py)."""
    from PIL import Image

    mosaic = np.asarray(Image.open(FIXTURES / "shapes3d_official_tiles.png").convert("RGB"))
    tiles = mosaic.reshape(5, 64, 5, 64, 3).transpose(0, 2, 1, 3, 4).reshape(25, 64, 64, 3)
    classes = np.array(json.loads((FIXTURES / "shapes3d_official_tiles.json").read_text())["classes"])
    return tiles, classes


def test_matches_official_samples():
    tiles, classes = official_samples()
    ours = s3.render(classes).transpose(0, 2, 3, 1).astype(float)
    mse = ((ours - tiles) ** 2).mean(axis=(1, 2, 3))
    psnr = 10 * np.log10(255**2 / mse)
    assert psnr.min() >= 20 and np.median(psnr) >= 22, np.round(psnr, 1)
    # the layout, pixel by pixel: a light-blue sky over the top fifth, as bright as the official one
    assert np.abs(ours[:, :11] - tiles[:, :11]).mean() < 3
    # each hue region has the official colour: the most saturated pixels of a region agree
    for k in range(3):
        region = np.stack([labels_of(c[None]) == k for c in classes])  # (25, 64, 64)
        diff = np.abs(ours - tiles).mean(-1)[region]
        assert np.median(diff) < 10, (s3.FACTORS[k], np.median(diff))


# -- the cache ------------------------------------------------------------------------------------

def sparse_cache(tmp_path, fill_spot_check=True):
    """A full-size cache file that takes no disk (sparse) with only the spot-check rows real."""
    path = s3.cache_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(s3.GRID), 3, 64, 64))
    idx = np.sort(np.random.default_rng(len(s3.GRID)).choice(len(s3.GRID), 64, replace=False))
    if fill_spot_check:
        arr[idx] = s3.render(s3.GRID.classes(idx))
    arr.flush()
    del arr
    path.with_suffix(".json").write_text(json.dumps(s3._cache_meta()))
    return path, idx


def test_cache_is_validated_on_read(tmp_path):
    path, idx = sparse_cache(tmp_path)
    assert s3._load_cache(path) is not None
    arr = np.load(path, mmap_mode="r+")
    arr[idx[5], 1, 30, 30] ^= 0x80  # one pixel of one spot-checked image
    arr.flush()
    del arr
    assert s3._load_cache(path) is None
    path2, _ = sparse_cache(tmp_path / "b")
    path2.with_suffix(".json").write_text(json.dumps({**s3._cache_meta(), "render_version": -1}))
    assert s3._load_cache(path2) is None
    path2.with_suffix(".json").unlink()
    assert s3._load_cache(path2) is None


def test_generate_skips_a_valid_cache_and_rebuilds_a_corrupt_one(tmp_path, monkeypatch):
    path, idx = sparse_cache(tmp_path)
    calls = []
    monkeypatch.setattr(s3, "shading_bank", lambda progress=False: calls.append(1) or (_ for _ in ()).throw(KeyboardInterrupt))
    assert s3.generate(tmp_path, progress=False) == path and not calls  # valid: nothing rendered
    np.lib.format.open_memmap(path, mode="r+")[idx[0]] = 255  # corrupt
    with pytest.raises(KeyboardInterrupt):  # corrupt: generation starts ...
        s3.generate(tmp_path, progress=False)
    assert calls


def test_streamed_npy_is_loadable_and_atomic(tmp_path):
    blocks = [np.full((4, 3, 2, 2), i, np.uint8) for i in range(5)]
    path = tmp_path / "x.npy"
    s3.write_npy_blocks(path, (20, 3, 2, 2), iter(blocks), meta={"a": 1})
    arr = np.load(path)
    assert arr.shape == (20, 3, 2, 2) and np.array_equal(arr, np.concatenate(blocks))
    assert json.loads(path.with_suffix(".json").read_text()) == {"a": 1}

    def interrupted():
        yield blocks[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        s3.write_npy_blocks(path, (20, 3, 2, 2), interrupted(), meta={"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # old cache invalidated, no temp file left
    with pytest.raises(ValueError, match="wrote 16 of 20 rows"):
        s3.write_npy_blocks(path, (20, 3, 2, 2), iter(blocks[:4]), meta={"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_generate_writes_blocks_in_official_order(tmp_path, monkeypatch):
    order, written = [], {}

    def fill(out, floors, walls, bank):
        order.append((floors[0], walls[0]))
        out[:1] = floors[0] * 10 + walls[0]

    def fake_write(path, shape, blocks, meta):
        assert shape == (480_000, 3, 64, 64) and meta == s3._cache_meta()
        for i, b in enumerate(blocks):
            assert b.shape == (4800, 3, 64, 64)
            written[i] = int(b[0, 0, 0, 0])

    monkeypatch.setattr(s3, "shading_bank", lambda progress=False: None)
    monkeypatch.setattr(s3, "render_into", fill)
    monkeypatch.setattr(s3, "write_npy_blocks", fake_write)
    s3.generate(tmp_path, progress=False)
    assert order == [(f, w) for f in range(10) for w in range(10)]
    assert [written[i] for i in range(100)] == list(range(100))  # block i holds index i*4800 on


@pytest.mark.skipif(not os.environ.get("FACTORVAE_FULL_DATA_TESTS"), reason="set FACTORVAE_FULL_DATA_TESTS=1 "
                    "(builds the full 5.9 GB grid, about a minute)")
def test_full_generation_matches_single_images(tmp_path):
    from factorvae.data import load_dataset

    data = load_dataset("shapes3d", None, tmp_path, progress=False)
    assert data.data.shape == (480_000, 3, 64, 64) and data.channels == 3 and data.grid is s3.GRID
    idx = np.random.default_rng(5).choice(480_000, 500, replace=False)
    assert np.array_equal(data.data[idx].numpy(), s3.render(s3.GRID.classes(idx)))
    x = data.images(idx[:4])
    assert x.dtype.is_floating_point and 0 <= float(x.min()) and float(x.max()) <= 1


# -- the official file --------------------------------------------------------------------------

SMALL = FactorGrid(s3.FACTORS, (2, 2, 2, 2, 2, 3),
                   values=((0.0, 0.5), (0.1, 0.9), (0.3, 0.4), (0.75, 1.25), (0.0, 3.0), (-30.0, 0.0, 30.0)))


def write_h5(path, grid=SMALL, images=None, labels=None, **kw):
    n = len(grid)
    if labels is None:
        labels = grid.factor_values(grid.all_classes())
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        if images is not False:
            f.create_dataset("images", data=images, **kw)
        if labels is not False:
            f.create_dataset("labels", data=labels)
    return images


def test_official_format_happy_path(tmp_path):
    p = tmp_path / "small.h5"
    imgs = write_h5(p, chunks=(16, 64, 64, 3), compression="gzip")
    out = s3.read_h5(p, SMALL, progress=False, chunk=20)  # several chunks, the last one partial
    assert out.shape == (len(SMALL), 3, 64, 64) and out.dtype == np.uint8
    assert np.array_equal(out, imgs.transpose(0, 3, 1, 2))
    # labels stored as float32 (rounding ~1e-8) are the same values
    write_h5(p, labels=SMALL.factor_values(SMALL.all_classes()).astype(np.float32))
    assert s3.read_h5(p, SMALL, progress=False).shape[0] == len(SMALL)


def test_full_size_official_file_passes_validation(tmp_path):
    """A full-size file whose images were never written (HDF5 fill value, chunked: small on
    disk). Validation of the 480,000 labels passes; a wrong image dtype is still caught."""
    p = tmp_path / "3dshapes.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("labels", data=s3.GRID.factor_values(s3.GRID.all_classes()), compression="gzip")
        f.create_dataset("images", shape=(480_000, 64, 64, 3), dtype=np.float32, chunks=(100, 64, 64, 3))
    assert p.stat().st_size < 20e6
    with pytest.raises(UserError, match="'images' has dtype float32, expected uint8"):
        s3.load_official(p, progress=False)


@pytest.mark.parametrize("case,match", [
    ("missing_images", "missing key 'images'"),
    ("missing_labels", "missing key 'labels'"),
    ("wrong_image_shape", r"'images' has shape \(96, 64, 64, 1\)"),
    ("wrong_image_dtype", "'images' has dtype float64, expected uint8"),
    ("wrong_rows", r"'labels' has shape \(95, 6\)"),
    ("shuffled_labels", "not the official grid in official order: row"),
    ("wrong_values", "scale=0.8, expected 0.75"),
    ("string_labels", "'labels' must be numbers"),
])
def test_official_format_errors(tmp_path, case, match):
    p = tmp_path / "bad.h5"
    n = len(SMALL)
    labels = SMALL.factor_values(SMALL.all_classes())
    if case == "missing_images":
        write_h5(p, images=False)
    elif case == "missing_labels":
        write_h5(p, labels=False)
    elif case == "wrong_image_shape":
        write_h5(p, images=np.zeros((n, 64, 64, 1), np.uint8))
    elif case == "wrong_image_dtype":
        write_h5(p, images=np.zeros((n, 64, 64, 3), np.float64))
    elif case == "wrong_rows":
        write_h5(p, labels=labels[:-1])
    elif case == "shuffled_labels":
        write_h5(p, labels=labels[::-1].copy())
    elif case == "wrong_values":
        bad = labels.copy()
        bad[:, 3] = np.where(bad[:, 3] == 0.75, 0.8, bad[:, 3])
        write_h5(p, labels=bad)
    elif case == "string_labels":
        write_h5(p, labels=np.array([["x"] * 6] * n, dtype="S1"))
    with pytest.raises(UserError, match=match):
        s3.read_h5(p, SMALL, progress=False)


def test_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        s3.load_official(tmp_path / "nope.h5")
    txt = tmp_path / "notes.h5"
    txt.write_text("not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        s3.load_official(txt)
    p = tmp_path / "trunc.h5"
    write_h5(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="trunc.h5"):
        s3.read_h5(p, SMALL, progress=False)
    # the official 480,000 rows are required by load_official
    small = tmp_path / "small.h5"
    write_h5(small)
    with pytest.raises(UserError, match=r"'labels' has shape \(96, 6\), expected \(480000, 6\)"):
        s3.load_official(small)


def test_cli_bad_official_file_exits_2(tmp_path, cli):
    p = tmp_path / "small.h5"
    write_h5(p)
    code, out, err = cli("train", "--dataset", "shapes3d", "--data-path", p, "--steps", "1", "--out", tmp_path / "run",
                         "--no-progress")
    assert code == 2 and "expected (480000, 6)" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_official_file_is_cached_once_and_memory_mapped(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    imgs_a = write_h5(a, chunks=(16, 64, 64, 3), compression="gzip")
    imgs_b = write_h5(b, images=imgs_a[::-1].copy())
    ca = s3.cache_h5(a, SMALL, cache, progress=False, chunk=20)
    arr = np.load(ca, mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.dtype == np.uint8
    assert np.array_equal(arr, imgs_a.transpose(0, 3, 1, 2))
    assert sorted(p.name for p in cache.iterdir()) == sorted([ca.name, ca.with_suffix(".json").name])  # no temp

    # a second load reuses the copy: the images are not read again
    def no_reading(*args, **kw):
        raise AssertionError("images read again")

    monkeypatch.setattr(s3, "_h5_chunks", no_reading)
    assert s3.cache_h5(a, SMALL, cache, progress=False) == ca
    monkeypatch.undo()
    # another file gets its own copy
    cb = s3.cache_h5(b, SMALL, cache, progress=False)
    assert cb != ca and np.array_equal(np.load(cb), imgs_b.transpose(0, 3, 1, 2))
    assert np.array_equal(np.load(ca), imgs_a.transpose(0, 3, 1, 2))
    # a file rewritten in place (new size or time) is copied afresh
    os.utime(b, ns=(0, 10**9))
    cb2 = s3.cache_h5(b, SMALL, cache, progress=False)
    assert cb2 != cb and np.array_equal(np.load(cb2), imgs_b.transpose(0, 3, 1, 2))
    # a copy that no longer matches the file is rebuilt
    np.lib.format.open_memmap(ca, mode="r+")[:] = 0
    assert s3.cache_h5(a, SMALL, cache, progress=False) == ca
    assert np.array_equal(np.load(ca), imgs_a.transpose(0, 3, 1, 2))


def test_official_file_cache_errors(tmp_path):
    p = tmp_path / "a.h5"
    write_h5(p, labels=SMALL.factor_values(SMALL.all_classes())[::-1].copy())
    with pytest.raises(UserError, match="not the official grid"):  # validated before anything is written
        s3.cache_h5(p, SMALL, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists()
    write_h5(p)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    with pytest.raises(UserError, match="cannot write the 3D Shapes cache"):
        s3.cache_h5(p, SMALL, blocked, progress=False)
