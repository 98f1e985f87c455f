"""SmallNORB, Cars3D, MPI3D and dSprites-noshape from small files written in the official
formats (the format, not the size, is what these test): factor order, nuisance draws, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from factorvae.data import cars3d, load_dataset, mpi3d, smallnorb, variants
from factorvae.data.grid import FactorGrid
from factorvae.errors import UserError

# -- SmallNORB ----------------------------------------------------------------------------------

NORB_FULL = FactorGrid(smallnorb.FULL_GRID.names, (2, 2, 2, 3, 1))  # category, instance, elevation, azimuth, lighting


def write_norb(path, array, magic):
    """A NORB binary matrix file: little-endian int32 magic, ndim, max(3, ndim) dims, data."""
    dims = list(array.shape) + [1] * (3 - array.ndim)
    header = np.array([magic, array.ndim, *dims], dtype="<i4")
    path.write_bytes(header.tobytes() + np.ascontiguousarray(array).tobytes())


def norb_value(cl):
    """The grey level a fixture image of full-grid classes ``cl`` is filled with."""
    return 10 + 60 * cl[0] + 30 * cl[1] + 12 * cl[2] + 3 * cl[3]


def norb_folder(tmp_path, grid=NORB_FULL):
    """Instances 0 in the training files, 1 in the testing files, in a shuffled row order;
    left camera the image's value, right camera 255 - value."""
    rng = np.random.default_rng(0)
    for split, inst in zip(smallnorb.SPLITS, (0, 1)):
        cl = grid.all_classes()
        cl = cl[cl[:, 1] == inst]
        cl = cl[rng.permutation(len(cl))]
        dat = np.empty((len(cl), 2, 96, 96), np.uint8)
        for i, c in enumerate(cl):
            dat[i, 0], dat[i, 1] = norb_value(c), 255 - norb_value(c)
        info = np.column_stack([cl[:, 1], cl[:, 2], 2 * cl[:, 3], cl[:, 4]]).astype("<i4")
        write_norb(tmp_path / f"{split}-dat.mat", dat, 0x1E3D4C55)
        write_norb(tmp_path / f"{split}-cat.mat", cl[:, 0].astype("<i4"), 0x1E3D4C54)
        write_norb(tmp_path / f"{split}-info.mat", info, 0x1E3D4C54)
    return tmp_path


def test_norb_reader_and_factor_order(tmp_path):
    data = smallnorb.build(norb_folder(tmp_path), NORB_FULL, cache=tmp_path / "cache", progress=False)
    lat = data.grid
    assert lat.names == smallnorb.LATENT and len(data) == len(NORB_FULL) == 24
    imgs = np.rint(data.images(np.arange(len(data))).numpy() * 255)
    assert imgs.shape == (24, 1, 64, 64) and (imgs == imgs[:, :, :1, :1]).all()  # constant: resized, left camera
    values = imgs[:, 0, 0, 0]
    # every image of the full grid appears exactly once among the data set's indices
    assert sorted(values) == sorted(norb_value(c) for c in NORB_FULL.all_classes())
    # the first len(lat) indices are the latent grid points, each with some instance
    for g, cl in enumerate(lat.all_classes()):
        cands = {norb_value((cl[0], u, cl[1], cl[2], cl[3])) for u in range(2)}
        assert values[g] in cands


def test_norb_instance_is_drawn_uniformly(tmp_path):
    big = FactorGrid(smallnorb.FULL_GRID.names, (3, 2, 5, 6, 2))
    data = smallnorb.build(norb_folder(tmp_path, big), big, cache=tmp_path / "cache", progress=False)
    vals = np.rint(data.images(np.arange(len(data.grid))).numpy()[:, 0, 0, 0] * 255).astype(int)
    lat = data.grid.all_classes()
    inst = (vals - 10 - 60 * lat[:, 0] - 12 * lat[:, 1] - 3 * lat[:, 2]) // 30
    assert set(inst) == {0, 1} and abs(inst.mean() - 0.5) < 0.1  # 180 draws of a fair coin


def test_norb_errors(tmp_path):
    folder = norb_folder(tmp_path)
    info = folder / f"{smallnorb.SPLITS[1]}-info.mat"
    b = info.read_bytes()
    info.write_bytes(b[:-4])
    with pytest.raises(UserError, match="truncated"):
        smallnorb.build(folder, NORB_FULL, cache=tmp_path / "c", progress=False)
    info.write_bytes(b"\0" * 4 + b[4:])
    with pytest.raises(UserError, match="not a NORB binary matrix"):
        smallnorb.build(folder, NORB_FULL, cache=tmp_path / "c", progress=False)
    info.unlink()
    with pytest.raises(UserError, match=r"testing-info\.mat is missing.*cs\.nyu\.edu"):
        smallnorb.build(folder, NORB_FULL, cache=tmp_path / "c", progress=False)
    with pytest.raises(UserError, match="needs --data-path"):
        load_dataset("smallnorb")
    norb_folder(folder)  # the official grid is 48,600 images: a reduced file set is refused
    with pytest.raises(UserError, match="exactly once"):
        smallnorb.build(folder, cache=tmp_path / "c", progress=False)


# -- Cars3D ---------------------------------------------------------------------------------------

CARS = FactorGrid(cars3d.GRID.names, (2, 3, 2))  # elevation, azimuth, object


def test_cars3d_factor_order(tmp_path):
    for obj in range(2):
        im = np.empty((128, 128, 3, 3, 2), np.uint8)  # (H, W, RGB, azimuth, elevation): the official layout
        for az in range(3):
            for el in range(2):
                im[..., az, el] = (50 * el, 40 * az, 100 * obj + 7)
        scipy.io.savemat(tmp_path / f"car_{obj:03d}_mesh.mat", {"im": im})
    data = cars3d.build(tmp_path, CARS, cache=tmp_path / "cache", progress=False)
    cl = CARS.all_classes()
    px = np.rint(data.images(CARS.index(cl)).numpy()[:, :, 32, 32] * 255)
    np.testing.assert_array_equal(px, np.column_stack([50 * cl[:, 0], 40 * cl[:, 1], 100 * cl[:, 2] + 7]))
    (tmp_path / "car_001_mesh.mat").write_bytes(b"MATLAB 5.0 junk")
    (tmp_path / "cache2").mkdir()
    with pytest.raises(UserError, match="car_001_mesh.mat"):
        cars3d.build(tmp_path, CARS, cache=tmp_path / "cache2", progress=False)
    with pytest.raises(UserError, match="183"):
        cars3d.build(tmp_path, cache=tmp_path / "cache2", progress=False)


# -- MPI3D ------------------------------------------------------------------------------------------

MPI = FactorGrid(mpi3d.GRID.names, (2, 3, 2, 1, 2, 3, 2))


def mpi_images(grid):
    """Images whose row k holds 16 * class_k + k: each image encodes its own factor classes,
    so any reshape or transpose in the wrong order shows."""
    cl = grid.all_classes()
    img = np.zeros((len(grid), 64, 64, 3), np.uint8)
    for k in range(grid.num_factors):
        img[:, k, :, :] = (16 * cl[:, k] + k)[:, None, None]
    return img


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_mpi3d_factor_order(tmp_path, save):
    save(tmp_path / "mpi3d_toy.npz", images=mpi_images(MPI))
    data = mpi3d.build("toy", tmp_path / "mpi3d_toy.npz", MPI, cache=tmp_path / "cache", progress=False)
    rng = np.random.default_rng(1)
    cl = MPI.sample(50, rng)
    rows = np.rint(data.images(MPI.index(cl)).numpy() * 255)[:, 0, :MPI.num_factors, 5]  # channel 0, column 5
    np.testing.assert_array_equal((rows - np.arange(MPI.num_factors)) // 16, cl)


def test_mpi3d_errors(tmp_path):
    f = tmp_path / "mpi3d_real.npz"
    np.savez(f, images=mpi_images(MPI))
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="truncated"):
        mpi3d.build("real", f, MPI, cache=tmp_path / "c", progress=False)
    np.savez(f, imgs=mpi_images(MPI))
    with pytest.raises(UserError, match="missing key 'images'"):
        mpi3d.build("real", f, MPI, cache=tmp_path / "c", progress=False)
    np.savez(f, images=mpi_images(MPI))
    with pytest.raises(UserError, match=r"\(1036800, 64, 64, 3\)"):  # the official size is checked
        mpi3d.build("real", f, cache=tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").glob("mpi3d_real-*.npy"))  # nothing half-written left
    with pytest.raises(UserError, match="mpi3d_realistic.npz.*rr-learning"):
        load_dataset("mpi3d_realistic", tmp_path / "absent.npz")


# -- dSprites-noshape --------------------------------------------------------------------------------

def test_noshape_grid_and_nuisance():
    order = variants.noshape_order()
    grid = variants.NOSHAPE_GRID
    assert grid.names == ("scale", "orientation", "posX", "posY") and len(order) == 737_280
    assert len(np.unique(order)) == len(order)  # every dSprites image once
    full = variants.GRID.classes(order[: len(grid)])
    np.testing.assert_array_equal(full[:, 2:], grid.all_classes())  # index g is latent point g
    counts = np.bincount(full[:, 1], minlength=3) / len(grid)
    assert np.abs(counts - 1 / 3).max() < 0.01  # shape drawn uniformly
    img = variants.render_noshape(grid.all_classes()[:3])
    assert img.shape == (3, 1, 64, 64) and set(np.unique(img)) <= {0, 255}


def test_data_show_official_mpi3d(tmp_path, cli, monkeypatch):
    """`data show` draws the factor rows from the file and prints the MD5 verdict."""
    monkeypatch.setattr(mpi3d, "GRID", MPI)
    np.savez(tmp_path / "mpi3d_toy.npz", images=mpi_images(MPI))
    code, out, err = cli("data", "show", "mpi3d_toy", "--data-path", str(tmp_path / "mpi3d_toy.npz"),
                         "--out", str(tmp_path / "s.png"), "--cache-dir", str(tmp_path / "c"), "--no-progress")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err
    assert "no published MD5 is known" in out
    code, out, err = cli("data", "show", "smallnorb", "--data-path", str(tmp_path), "--out", str(tmp_path / "t.png"))
    assert code == 2 and "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat is missing" in err


# -- scream-dSprites ----------------------------------------------------------------------------------

def find_patch(back, bg):
    """Whether some 64x64 window w of ``bg`` (3, H, W) has 2 * back - w within one grey level of
    a constant per channel: back = (w + shift) // 2 for one shift per channel."""
    from numpy.lib.stride_tricks import sliding_window_view

    strip = sliding_window_view(bg[:, :, :], (8,), axis=2)[:, : bg.shape[1] - 64, : bg.shape[2] - 64]  # (3, y, x, 8)
    d = 2 * back[:, 0, None, None, :8] - strip
    cand = np.argwhere((d.max(-1) - d.min(-1) <= 1).all(0))
    for y, x in cand:
        d = 2 * back - bg[:, y:y + 64, x:x + 64]
        if (d.reshape(3, -1).max(1) - d.reshape(3, -1).min(1) <= 1).all():
            return True
    return False


def test_scream_compose_and_errors(tmp_path, cli):
    """A patch of the supplied image shifted by a colour, the sprite's pixels inverted; fixed per index."""
    import torch
    from PIL import Image

    from factorvae.config import resolve

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "scream.png")
    bg = variants.read_scream(tmp_path / "scream.png")
    assert bg.shape[2] == 350 and abs(bg.shape[1] - 300 * 350 / 400) <= 0.5  # fitted into 350 x 274 as dlib
    sprites = torch.from_numpy((rng.random((4, 1, 64, 64)) < 0.3).astype(np.uint8))
    idx = torch.tensor([0, 5, 100_000, 737_279])
    img = variants.compose(sprites, idx, "scream", background=bg).numpy().astype(int)
    np.testing.assert_array_equal(img, variants.compose(sprites, idx, "scream", background=bg).numpy())
    other = variants.compose(sprites, idx + 1, "scream", background=bg).numpy().astype(int)
    assert (img != other).mean() > 0.5  # another index, another patch
    for b in range(4):
        back = np.where(sprites[b].numpy().astype(bool), 255 - img[b], img[b])  # undo the inversion
        assert find_patch(back, bg.numpy().astype(int)), b
    with pytest.raises(UserError, match="needs data.scream_path"):
        resolve({"data": {"name": "scream_dsprites"}})
    with pytest.raises(UserError, match="applies to scream_dsprites only"):
        resolve({"data": {"name": "dsprites", "scream_path": "x.jpg"}})
    code, _, err = cli("data", "show", "scream_dsprites", "--out", tmp_path / "s.png", "--no-progress")
    assert code == 2 and "needs data.scream_path" in err
    Image.fromarray(rng.integers(0, 256, (60, 400, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(UserError, match="more than 64 pixels"):
        load_dataset("scream_dsprites", scream_path=tmp_path / "small.png", progress=False)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="not a readable image"):
        load_dataset("scream_dsprites", scream_path=tmp_path / "bad.jpg", progress=False)


def test_metrics_score_the_latent_grid_of_a_nuisance_data_set(tmp_path):
    """Metrics see SmallNORB's 4 latent factors, one image per point; training batches come
    from all images."""
    import torch

    from factorvae.metrics.suite import evaluate_model
    from factorvae.config import resolve
    from factorvae.runs import build_model

    big = FactorGrid(smallnorb.FULL_GRID.names, (3, 2, 4, 3, 2))
    data = smallnorb.build(norb_folder(tmp_path, big), big, cache=tmp_path / "cache", progress=False)
    cfg = resolve({"model": {"name": "vae", "arch": {"channels": [4, 4, 4, 4], "fc": 8}}})
    model = build_model(cfg, 1, torch.device("cpu"))[0]
    res = evaluate_model(model, data, preset="fast", metrics=["mig", "factor_vae"])
    assert res["settings"]["factors"] == ["category", "elevation", "azimuth", "lighting"]
    assert 0 <= res["mig"]["discrete_mig"] <= 1
    assert len(data.grid) == 72 and len(data) == 144  # batches are drawn over every image
    assert sorted(data.rows.tolist()) == list(range(144))


def test_data_list_shows_nuisance_and_image_counts(cli):
    code, out, _ = cli("data", "list")
    assert code == 0
    block = out[out.index("smallnorb"):]
    assert "48,600 images" in block.splitlines()[0]
    assert "category (5), elevation (9), azimuth (18), lighting (6); nuisance: instance (not scored)" in block
    assert "needs --data-path (official files)" in block
    assert "mpi3d_real" in out and "scream_dsprites" in out
