"""`pynet image ls / inspect / tag / rm` on a local store (PYNET_ROOT in tmp), and what `pynet push` packs
from a stored layer. No registry and no container here: test_registry.py pulls, pushes and runs."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest

from pynet.launcher import images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYNET = os.path.join(ROOT, ".venv", "bin", "pynet")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layers keep file owners: root only")


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = str(tmp_path / "store")
    monkeypatch.setenv("PYNET_ROOT", root)
    images.build_busybox()
    env = dict(os.environ, PYNET_ROOT=root, PYNET_STATE=str(tmp_path / "state"))

    def pynet(*argv):
        res = subprocess.run([PYNET, *argv], env=env, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in res.stderr, res.stderr
        return res

    pynet.root = root
    return pynet


def test_tag_names_the_same_layers_and_rm_keeps_them_until_the_last_name(store):
    res = store("image", "tag", "busybox", "mybox:v1", "--json")
    assert res.returncode == 0, res.stderr
    [tagged] = json.loads(res.stdout)
    busybox = images.get("busybox")
    assert tagged["name"] == "mybox:v1" and tagged["layers"] == busybox["layers"]
    listed = json.loads(store("image", "ls", "--json").stdout)
    assert sorted(i["name"] for i in listed) == ["busybox:latest", "mybox:v1"]
    layer = images.layer_path(busybox["layers"][0])
    assert store("image", "rm", "busybox").returncode == 0
    assert os.path.isdir(layer)   # still named by mybox:v1
    res = store("image", "rm", "--json", "mybox:v1")
    assert json.loads(res.stdout) == [{"name": "mybox:v1", "removed": True}]
    assert not os.path.exists(layer) and json.loads(store("image", "ls", "--json").stdout) == []


def test_inspect_lists_records_with_their_size(store):
    res = store("image", "inspect", "busybox")
    assert res.returncode == 0, res.stderr
    [image] = json.loads(res.stdout)
    assert image["name"] == "busybox:latest" and image["config"]["Cmd"] == ["sh"]
    assert image["size"] >= os.path.getsize(images.BUSYBOX)


def test_unknown_images_and_bad_names_are_clear_errors(store):
    for argv, fragment in ((("image", "inspect", "nope"), "no such image: nope"),
                           (("image", "tag", "nope", "other"), "no such image: nope"),
                           (("image", "tag", "busybox", ".hidden"), "invalid image name '.hidden'"),
                           (("image", "tag", "busybox", "bad name"), "invalid image name 'bad name'"),
                           (("image", "rm", "nope"), "no such image: nope")):
        res = store(*argv)
        assert res.returncode != 0 and fragment in res.stderr, (argv, res.stderr)
    res = store("image", "inspect", "--json", "nope")
    assert res.returncode == 1 and json.loads(res.stdout) == {"error": "no such image: nope"}


def test_a_packed_layer_carries_whiteouts_and_opaque_dirs_as_oci_files(store, tmp_path):
    src = tmp_path / "layer.tar"
    with tarfile.open(src, "w") as tf:
        for name, kind in (("etc", "dir"), ("etc/.wh.passwd", "file"), ("var", "dir"), ("var/.wh..wh..opq", "file"),
                           ("var/keep", "file")):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if kind == "dir" else tarfile.REGTYPE
            info.mode, info.mtime = 0o755, 1_700_000_000
            tf.addfile(info)
    layer_id = images.extract_layer_file(str(src))
    root = images.layer_path(layer_id)
    assert os.stat(os.path.join(root, "etc/passwd")).st_rdev == 0   # overlayfs whiteout in the store
    out = str(tmp_path / "packed.tar.gz")
    digest, size, diff_id = images.write_layer_tar(layer_id, out)
    with tarfile.open(out) as tf:
        assert sorted(tf.getnames()) == ["etc", "etc/.wh.passwd", "var", "var/.wh..wh..opq", "var/keep"]
        assert tf.getmember("var").mtime == 1_700_000_000
    again = str(tmp_path / "again.tar.gz")
    assert images.write_layer_tar(layer_id, again)[:2] == (digest, size) and diff_id.startswith("sha256:")
