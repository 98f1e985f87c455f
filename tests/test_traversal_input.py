"""Each traversal row starts with the reference image itself (issue 24): what the latent
values of the row are traversed from."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from factorvae.config import resolve
from factorvae.data import load_dataset
from factorvae.runs import build_model
from factorvae.viz.tiles import to_uint8
from factorvae.viz.traversals import reference_indices, write_run_images


def test_first_column_of_every_row_is_the_reference_image(tmp_path):
    cfg = resolve({"model": {"name": "betavae", "z_dim": 3, "arch": {"channels": [4, 4, 4, 4], "fc": 8}},
                   "data": {"name": "toy"}})
    dataset = load_dataset("toy", progress=False)
    model, _ = build_model(cfg, dataset.channels, torch.device("cpu"))
    steps = 4
    written = write_run_images(model, dataset, tmp_path, steps=steps, references=2)
    refs = to_uint8(dataset.images(reference_indices(dataset, 2)))
    label, pad = 44, 2  # grid_image's label margin and gap
    for r, path in enumerate(written["traversals"]):
        sheet = np.asarray(Image.open(path).convert("RGB"))
        assert sheet.shape[1] == label + pad + (steps + 1) * (64 + pad)  # the input column plus the steps
        for row in range(3):  # z_dim rows
            y = pad + row * (64 + pad)
            first = sheet[y:y + 64, label + pad:label + pad + 64]
            assert np.array_equal(first, refs[r]), (r, row)
        second = sheet[pad:pad + 64, label + 2 * pad + 64:label + 2 * pad + 128]
        assert not np.array_equal(second, refs[r])  # a decoded image of an untrained model, not the input
