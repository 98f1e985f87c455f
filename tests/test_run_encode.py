"""`run.encode(images)` and `factorvae encode RUN --images PATH` (issue 24): a user's images go
through the data set's own preprocessing (channels, 64x64, [0, 1]) whatever form they come in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from factorvae.errors import UserError
from factorvae.runs import load_run

CONFIG = Path(__file__).parents[1] / "configs" / "toy.yaml"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from factorvae.cli import main

    out = tmp_path_factory.mktemp("runs") / "toy"
    assert main(["train", "--config", str(CONFIG), "--steps", "2", "--out", str(out), "--no-progress", "--threads", "1",
                 "--set", "model.disc.hidden=32", "--set", "model.disc.layers=2", "--set", "train.image_every=1000"]) == 0
    run = load_run(out)
    idx = np.array([5, 700, 3000])
    with torch.no_grad():
        want = run.model.representation(run.dataset.images(idx)).numpy()
    grey = run.dataset.data[idx, 0].numpy()  # uint8 (3, 64, 64), the toy set's 0..255 greyscale
    return out, run, want, grey


def test_every_form_of_an_image_gives_the_data_sets_codes(toy, tmp_path):
    out, run, want, grey = toy
    forms = {
        "uint8 (N, 1, H, W)": grey[:, None],
        "floats in [0, 1] (N, H, W, 1)": grey[..., None] / 255.0,
        "tensor": torch.from_numpy(grey[:, None]),
        "PIL images": [Image.fromarray(g) for g in grey],
        "RGB arrays (N, H, W, 3)": np.repeat(grey[..., None], 3, axis=-1),  # greyscale model: luma of equal channels
    }
    for i, g in enumerate(grey):
        Image.fromarray(g).save(tmp_path / f"img{i}.png")
    forms["png paths"] = [tmp_path / f"img{i}.png" for i in range(3)]
    forms["a folder"] = tmp_path
    for name, images in forms.items():
        codes = run.encode(images)
        assert codes.shape == want.shape, name
        np.testing.assert_allclose(codes, want, atol=1e-5, err_msg=name)
    # another size is resized like a folder data set's images: 128x128 nearest-upscaled reads back close
    big = np.kron(grey[0], np.ones((2, 2), dtype=np.uint8))
    assert np.abs(run.encode(big) - want[:1]).max() < 0.1


@pytest.mark.parametrize("bad, message", [
    (np.full((2, 64, 64), 2.0), "values in [0, 1]"),
    (np.zeros((2, 2, 2, 2, 2), dtype=np.uint8), "2 to 4 dimensions"),
    (np.zeros((2, 64, 64), dtype=np.int64), "uint8"),
    ("no/such/file.png", "no such image file"),
    ([], "no images"),
])
def test_bad_images_are_one_clear_user_error(toy, bad, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        toy[1].encode(bad)


def test_encode_images_cli_writes_codes_and_file_names(toy, tmp_path, cli):
    out, run, want, grey = toy
    d = tmp_path / "mine"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(grey[0]).save(d / "a.png")
    Image.fromarray(grey[1]).save(d / "sub" / "b.png")
    code, so, err = cli("encode", out, "--images", d, "--out", tmp_path / "codes.npz")
    assert code == 0, err
    z = np.load(tmp_path / "codes.npz")
    assert list(z["files"]) == ["a.png", "sub/b.png"]
    np.testing.assert_allclose(z["codes"], want[:2], atol=1e-5)
    code, _, err = cli("encode", out, "--images", tmp_path / "none", "--out", tmp_path / "c2.npz")
    assert code == 2 and "no such file or folder" in err and not (tmp_path / "c2.npz").exists()
