"""Official files identified by MD5: the verdict, its cache (keyed by path, size and mtime, so a
big file is hashed once), and what `factorvae data show/generate` and a run record of it."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from factorvae.data import dsprites as ds
from factorvae.data import official
from test_data_dsprites import SMALL, write_npz


def test_verdict_and_published_digests(tmp_path, monkeypatch):
    f = tmp_path / "file.bin"
    f.write_bytes(b"not the official file")
    md5 = hashlib.md5(f.read_bytes()).hexdigest()
    v = official.identify("dsprites", f, tmp_path / "cache", progress=False)
    assert v == {"md5": md5, "official_md5": "7da33b31b13a06f4b04a70402ce90c2e", "official": False}
    assert official.OFFICIAL_MD5["shapes3d"] == "099a2078d58cec4daad0702c55d06868"
    assert "differs from the published" in official.describe(v)
    monkeypatch.setitem(official.OFFICIAL_MD5, "shapes3d", md5)
    v = official.identify("shapes3d", f, tmp_path / "cache", progress=False)
    assert v["official"] and "the published official file" in official.describe(v)


def test_digest_cached_by_path_size_and_mtime(tmp_path):
    f, cache = tmp_path / "big.bin", tmp_path / "cache"
    f.write_bytes(bytes(range(256)) * 100)
    real = hashlib.md5(f.read_bytes()).hexdigest()
    assert official.file_md5(f, cache, progress=False) == real
    book = cache / "md5.json"
    entries = json.loads(book.read_text())
    (key,) = entries
    assert key.startswith(str(f.resolve())) and entries[key] == real
    book.write_text(json.dumps({key: "cached"}))  # a second call reads the cache, does not hash
    assert official.file_md5(f, cache, progress=False) == "cached"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: hashed again
    assert official.file_md5(f, cache, progress=False) == real
    # an unusable cache (a file where the folder should be) costs only the re-hash
    blocked = tmp_path / "blocked"
    blocked.write_text("x")
    assert official.file_md5(f, blocked, progress=False) == real


@pytest.fixture
def small_npz(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "GRID", SMALL)
    p = tmp_path / ds.OFFICIAL_FILE
    write_npz(p)
    return p


def test_cli_generate_and_show_report_the_verdict(small_npz, tmp_path, cli, monkeypatch):
    cache = tmp_path / "c"
    code, out, err = cli("data", "generate", "dsprites", "--data-path", small_npz, "--cache-dir", cache,
                         "--no-progress")
    assert code == 0, err
    md5 = hashlib.md5(small_npz.read_bytes()).hexdigest()
    assert f"MD5 {md5} differs from the published file's 7da33b31b13a06f4b04a70402ce90c2e" in out
    monkeypatch.setitem(official.OFFICIAL_MD5, "dsprites", md5)
    code, out, err = cli("data", "show", "dsprites", "--data-path", small_npz, "--cache-dir", cache,
                         "--out", tmp_path / "s.png", "--no-progress")
    assert code == 0, err
    assert f"MD5 {md5}: the published official file" in out and (tmp_path / "s.png").exists()


def test_run_records_the_verdict(small_npz, tmp_path, cli, monkeypatch):
    import factorvae.trainer

    # patched where the trainer looks it up (patching viz.traversals would leak into a trainer
    # module first imported during this test)
    monkeypatch.setattr(factorvae.trainer, "write_run_images", lambda *a, **k: {})  # not what is tested
    run = tmp_path / "run"
    code, _, err = cli("train", "--dataset", "dsprites", "--data-path", small_npz, "--steps", "1", "--out", run,
                       "--no-progress", "--set", "train.batch_size=8", "--set", "train.image_every=1000")
    assert code == 0, err
    rec = json.loads((run / "data.json").read_text())
    assert rec["source"] == str(small_npz.resolve()) and rec["official_file"]["official"] is False
    assert rec["official_file"]["md5"] == hashlib.md5(small_npz.read_bytes()).hexdigest()


def test_shapes3d_official_file_verdict(tmp_path, monkeypatch):
    import h5py

    from factorvae.data import shapes3d as s3
    from factorvae.data.grid import FactorGrid

    small = FactorGrid(s3.GRID.names, (1, 1, 1, 1, 2, 2),
                       values=((0.0,), (0.0,), (0.0,), (1.0,), (0.0, 1.0), (0.0, 30.0)))
    monkeypatch.setattr(s3, "GRID", small)
    p = tmp_path / "3dshapes.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("images", data=np.zeros((4, 64, 64, 3), np.uint8))
        f.create_dataset("labels", data=small.factor_values(small.all_classes()))
    data = s3.load(path=p, cache=tmp_path / "c", progress=False)
    assert data.info["official_file"] == {"md5": hashlib.md5(p.read_bytes()).hexdigest(),
                                          "official_md5": "099a2078d58cec4daad0702c55d06868", "official": False}
