"""Image folders: nested folders, mixed sizes and modes (greyscale, RGBA, palette, 16-bit),
corrupt and non-image files skipped and counted, centre crop, channels, the cache, empty
folders, and training / metrics on data without factors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from factorvae.data import images, load_dataset, require_grid
from factorvae.errors import UserError


def solid(size, colour, mode="RGB"):
    return Image.new(mode, size, colour)


@pytest.fixture
def tree(tmp_path):
    """A messy folder: 7 readable images in nested folders, 2 corrupt ones, 2 non-images."""
    root = tmp_path / "imgs"
    (root / "a" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    solid((100, 50), (255, 0, 0)).save(root / "a" / "red_wide.png")
    solid((30, 30), 128, "L").save(root / "a" / "deep" / "grey_small.png")
    solid((200, 300), (0, 0, 255)).save(root / "b" / "blue_tall.jpg", quality=95)
    solid((64, 64), (0, 255, 0, 0), "RGBA").save(root / "b" / "transparent.png")  # fully transparent green
    solid((64, 64), (0, 255, 0, 255), "RGBA").save(root / "b" / "opaque.PNG")
    pal = solid((40, 40), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(root / "b" / "palette.gif")
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(root / "b" / "sixteen.png")  # I;16 white
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = root / "b" / "opaque.PNG"
    (root / "b" / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "notes.txt").write_text("hello")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    return root


def test_messy_folder_loads_and_counts_what_it_skipped(tree, capsys):
    data = load_dataset("folder", str(tree), progress=False)
    info = data.info
    assert len(data) == 7 and data.grid is None and data.channels == 3
    assert data.data.shape == (7, 3, 64, 64) and data.scale == pytest.approx(1 / 255)
    assert info["skipped_unreadable"] == 2 and info["skipped_non_image"] == 2
    assert {"a/broken.jpg", "b/truncated.png"} <= set(info["skipped_examples"])
    assert "skipped 4 file(s)" in capsys.readouterr().err
    # sorted path order: a/deep/grey_small, a/red_wide, b/blue_tall, b/opaque, b/palette, b/sixteen, b/transparent
    x = data.data.numpy()
    centre = x[:, :, 32, 32].tolist()
    assert centre[0] == [128, 128, 128]
    assert centre[1] == [255, 0, 0]
    assert abs(np.array(centre[2]) - [0, 0, 255]).max() <= 3  # JPEG
    assert centre[3] == [0, 255, 0]
    assert centre[4] == [10, 200, 30]  # palette image
    assert centre[5] == [255, 255, 255]  # 16-bit scaled to 8 bits
    assert centre[6] == [0, 0, 0]  # transparent composited on black


def test_centre_crop_keeps_the_middle_square(tmp_path):
    root = tmp_path / "crop"
    root.mkdir()
    a = np.zeros((60, 180, 3), np.uint8)
    a[:, :60] = (255, 0, 0)  # left third red
    a[:, 60:120] = (0, 0, 255)  # middle third blue
    a[:, 120:] = (0, 255, 0)  # right third green
    Image.fromarray(a).save(root / "wide.png")
    b = np.zeros((180, 60, 3), np.uint8)
    b[60:120] = (0, 0, 255)
    Image.fromarray(b).save(root / "tall.png")
    x = load_dataset("folder", str(root), progress=False).data.numpy()
    assert (x[:, 2] == 255).all() and (x[:, :2] == 0).all()  # only the blue middle square is left


def test_greyscale_auto_and_forced_channels(tmp_path):
    root = tmp_path / "grey"
    root.mkdir()
    solid((50, 50), 200, "L").save(root / "a.png")
    solid((70, 40), (90, 90, 90)).save(root / "b.png")  # RGB with equal channels counts as grey
    solid((64, 64), (30, 255), "LA").save(root / "c.png")
    data = load_dataset("folder", str(root), progress=False)
    assert data.channels == 1 and data.data[:, 0, 32, 32].tolist() == [200, 90, 30]
    rgb = load_dataset("folder", str(root), progress=False, channels=3)
    assert rgb.channels == 3 and (rgb.data[:, 0] == rgb.data[:, 2]).all()
    (root / "d.png").unlink(missing_ok=True)
    solid((64, 64), (255, 0, 0)).save(root / "d.png")
    assert load_dataset("folder", str(root), progress=False).channels == 3  # one colour image: RGB
    forced = load_dataset("folder", str(root), progress=False, channels="1")
    assert forced.channels == 1 and forced.data[3, 0, 32, 32].item() == 76  # ITU-R 601 luma of red
    with pytest.raises(UserError, match="channels must be 1, 3 or auto"):
        load_dataset("folder", str(root), progress=False, channels=2)
    with pytest.raises(UserError, match="image folders only"):
        load_dataset("toy", progress=False, channels=1)


def test_named_folder_sets_fix_their_channels(tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    solid((64, 64), (255, 0, 0)).save(root / "a.png")
    assert load_dataset("faces3d", str(root), progress=False).channels == 1
    assert load_dataset("celeba", str(root), progress=False).channels == 3
    assert load_dataset("chairs", str(root), progress=False).name == "chairs"


def test_cache_is_reused_and_rebuilt_when_the_folder_changes(tree, monkeypatch, tmp_path):
    first = load_dataset("folder", str(tree), progress=False)
    calls = []
    real = images.read_image
    monkeypatch.setattr(images, "read_image", lambda p, c: calls.append(p) or real(p, c))
    again = load_dataset("folder", str(tree), progress=False)
    assert np.array_equal(first.data.numpy(), again.data.numpy())
    assert len(calls) <= 4  # only the spot check re-reads a few files
    # a new file (or a changed one) changes the key: rebuilt
    solid((64, 64), (1, 2, 3)).save(tree / "b" / "zzz.png")
    calls.clear()
    third = load_dataset("folder", str(tree), progress=False)
    assert len(third) == 8 and len(calls) >= 9
    # a cache whose content does not match the files is rebuilt too
    before = third.data.numpy().copy()  # (third is a view of the cache file we now damage)
    cache = third.info["cache"]
    arr = np.load(cache, mmap_mode="r+")
    arr[:] = 77
    arr.flush()
    del arr
    fourth = load_dataset("folder", str(tree), progress=False)
    assert np.array_equal(fourth.data.numpy(), before)


def test_empty_and_missing_folders_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images found"):
        load_dataset("folder", str(empty), progress=False)
    (empty / "readme.md").write_text("x")
    with pytest.raises(UserError, match=r"no images found \(1 other file"):
        load_dataset("folder", str(empty), progress=False)
    (empty / "bad.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="none of the 1 image file"):
        load_dataset("folder", str(empty), progress=False)
    with pytest.raises(UserError, match="image folder not found"):
        load_dataset("folder", str(tmp_path / "nope"), progress=False)
    with pytest.raises(UserError, match="must be a folder"):
        load_dataset("folder", str(empty / "readme.md"), progress=False)
    with pytest.raises(UserError, match="needs --data-path"):
        load_dataset("celeba", None, progress=False)


def test_big_jpeg_is_decoded_small_and_still_correct(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    a = np.zeros((1200, 1600, 3), np.uint8)
    a[:, :800] = (250, 250, 0)
    a[:, 800:] = (0, 0, 250)
    Image.fromarray(a).save(root / "big.jpg", quality=95)
    img, grey = images.read_image(root / "big.jpg", None)
    assert img.shape == (3, 64, 64) and not grey
    assert abs(img[:, 32, 10].astype(int) - [250, 250, 0]).max() < 8
    assert abs(img[:, 32, 54].astype(int) - [0, 0, 250]).max() < 8


def test_metrics_need_a_grid():
    with pytest.raises(UserError, match="need ground-truth factors, and data set 'folder' has none"):
        require_grid("folder")
    assert require_grid("toy").names[0] == "brightness"


def test_train_show_and_generate_on_a_folder(tree, tmp_path, cli):
    out = tmp_path / "run"
    code, _, err = cli("train", "--dataset", "folder", "--data-path", tree, "--model", "vae", "--steps", "2",
                       "--out", out, "--no-progress", "--set", "train.log_every=1", "--set", "model.arch.fc=256")
    assert code == 0, err
    assert (out / "images" / "reconstructions.png").exists() and (out / "images" / "samples.png").exists()
    assert (out / "images" / "traversal_ref0.png").exists()
    code, _, err = cli("eval", out, "--no-progress")
    assert code == 2 and "metrics need ground-truth factors, and data set 'folder' has none" in err
    assert "Traceback" not in err
    code, stdout, err = cli("data", "show", "folder", "--data-path", tree, "--out", tmp_path / "show.png", "--no-progress")
    assert code == 0, err
    w, h = Image.open(tmp_path / "show.png").size
    assert h > 64 and w > 64
    code, stdout, err = cli("data", "generate", "folder", "--data-path", tree, "--no-progress")
    assert code == 0 and "7 images, 3 channel(s)" in stdout
    empty = tmp_path / "void"
    empty.mkdir()
    code, _, err = cli("train", "--dataset", "folder", "--data-path", empty, "--steps", "1", "--out", tmp_path / "r2",
                       "--no-progress")
    assert code == 2 and "no images found" in err and "Traceback" not in err
