"""The local-path policy of workflow inputs (nodes/paths.py), without ComfyUI (see test_comfyui_paths.py)."""
from __future__ import annotations

import os

import pytest

from ltx_outpaint.errors import InputError
from ltx_outpaint.paths import PathPolicy


@pytest.fixture
def tree(tmp_path):
    inside, outside = tmp_path / "input", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    (inside / "ok.mp4").write_bytes(b"x")
    (outside / "secret.mp4").write_bytes(b"x")
    os.symlink(outside / "secret.mp4", inside / "secret.mp4")  # inside by name, outside once resolved
    os.symlink(outside, inside / "dirlink")
    return inside, outside


def policy(inside, env=None):
    return PathPolicy([str(inside)], what="video file", described="the input folder", environ=env or {})


def test_inside_allowed_outside_refused_with_one_message(tree):
    inside, outside = tree
    p = policy(inside)
    assert p.resolve("ok.mp4", "video") == str(inside / "ok.mp4")
    assert p.resolve(str(inside / "ok.mp4"), "video") == str(inside / "ok.mp4")
    texts = set()
    for given in (str(outside / "secret.mp4"), "../private/secret.mp4", "secret.mp4", "dirlink/secret.mp4",
                  str(inside / "nope" / "secret.mp4"), "~/secret.mp4", str(outside / "other" / "secret.mp4")):
        with pytest.raises(InputError) as e:
            p.resolve(given, "path_or_url", "Load Video")
        texts.add(str(e.value))
    assert texts == {"path_or_url (Load Video): 'secret.mp4' is not an allowed video file: no such file in the "
                     "input folder (the server's owner can allow other folders with LTX_OUTPAINT_ALLOWED_PATHS)"}


def test_the_servers_environment_can_allow_more(tree, tmp_path):
    inside, outside = tree
    assert policy(inside, {"LTX_OUTPAINT_ALLOWED_PATHS": str(outside)}).resolve("secret.mp4", "video") == \
        str(outside / "secret.mp4")
    assert policy(inside, {"LTX_OUTPAINT_ALLOW_ANY_PATH": "1"}).resolve(str(outside / "secret.mp4"), "video") == \
        str(outside / "secret.mp4")
    with pytest.raises(InputError):  # relative folders in the variable are ignored
        policy(inside, {"LTX_OUTPAINT_ALLOWED_PATHS": "private"}).resolve(str(outside / "secret.mp4"), "video")
    with pytest.raises(InputError):  # a missing file stays refused even with ANY
        policy(inside, {"LTX_OUTPAINT_ALLOW_ANY_PATH": "1"}).resolve(str(outside / "nope.mp4"), "video")


def test_fingerprint_never_touches_a_path_outside_the_folders(tree, monkeypatch):
    """A spy on os.stat / os.lstat (the only way to observe file-system access without a kernel tracer)."""
    inside, outside = tree
    p = policy(inside)
    touched = []
    real_stat, real_lstat = os.stat, os.lstat

    def spy(fn):
        def wrapper(path, *a, **kw):
            touched.append(os.fspath(path))
            return fn(path, *a, **kw)
        return wrapper

    monkeypatch.setattr(os, "stat", spy(real_stat))
    monkeypatch.setattr(os, "lstat", spy(real_lstat))
    for given in (str(outside / "secret.mp4"), "../private/secret.mp4", "/etc/passwd"):
        assert p.fingerprint(given) == f"refused:{given}"
    assert not [t for t in touched if str(outside) in t or t.startswith("/etc")], touched
    assert p.fingerprint("secret.mp4") == "refused:secret.mp4"  # a symlink out (placed by the server's owner)
    st = os.stat(inside / "ok.mp4")
    assert p.fingerprint("ok.mp4") == f"ok.mp4:{st.st_size}:{st.st_mtime_ns}"  # no server path (it is stored)


@pytest.mark.parametrize("given", ["ok.mp4\0.txt", "\0", "ok\0/../ok.mp4"])
def test_a_nul_byte_is_refused_like_any_other_path(tree, given):
    """No file has a NUL in its name: refused with the one message, never a raw ValueError."""
    inside, _ = tree
    p = policy(inside)
    with pytest.raises(InputError) as e:
        p.resolve(given, "path_or_url", "Load Video")
    assert "is not an allowed video file: no such file in the input folder" in str(e.value)
    assert str(p.resolve_missing(given, "path_or_url", "Load Video")) == str(e.value)
    with pytest.raises(InputError, match="is not an allowed video folder"):
        p.resolve_folder(given, "folder")
    assert p.fingerprint(given) == f"refused:{given}"
    assert policy(inside, {"LTX_OUTPAINT_ALLOW_ANY_PATH": "1"}).fingerprint(given) == f"refused:{given}"
