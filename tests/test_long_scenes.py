"""Our scene-cut detector (numpy, no OpenCV at run time) against PySceneDetect itself.

PySceneDetect (the test extra installs `scenedetect-headless`, which brings OpenCV) runs its ContentDetector
on the same clips through its PyAV backend; both must give the same cut frames. Without it the tests skip,
except under CI=true where that is a failure.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from long_clips import write_long_clip
from ltx_outpaint.long.analyze import analyze_clip
from ltx_outpaint.long.scenes import ContentDetector, detect_size, rgb_to_hsv8


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{module} is missing: the test extra installs scenedetect-headless", pytrace=False)
        pytest.skip(f"{module} not installed (pip install scenedetect-headless)")


def pyscenedetect_cuts(path: str, threshold: float = 27.0, min_scene_len: int = 15) -> list[int]:
    scenedetect = _need("scenedetect")
    video = scenedetect.open_video(path, backend="pyav")
    manager = scenedetect.SceneManager()
    manager.add_detector(scenedetect.ContentDetector(threshold=threshold, min_scene_len=min_scene_len))
    manager.detect_scenes(video)
    return [start.frame_num for start, _ in manager.get_scene_list()[1:]]


def test_hsv_equals_opencv_bit_for_bit():
    cv2 = _need("cv2")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    rgb[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 10, 9], [9, 10, 10],
                  [128, 128, 128]]
    ours = rgb_to_hsv8(rgb)
    theirs = cv2.split(cv2.cvtColor(rgb[..., ::-1].copy(), cv2.COLOR_BGR2HSV))
    for name, a, b in zip("HSV", ours, theirs):
        assert np.array_equal(a, b.astype(np.int64)), f"{name} differs at {np.argwhere(a != b)[:5]}"


def _flash_clip(path: str) -> list[int]:
    """Cuts closer than min_scene_len, a 2-frame flash and a dissolve-free cut (exercises the merge filter)."""
    import av

    colours = [(200, 40, 40)] * 40 + [(40, 200, 40)] * 8 + [(40, 40, 200)] * 40 + [(250, 250, 250)] * 2 + \
              [(40, 40, 200)] * 30 + [(30, 30, 30)] * 20 + [(220, 220, 60)] * 25
    with av.open(path, "w") as c:
        vs = c.add_stream("libx264", rate=24)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.options = {"crf": "10", "preset": "ultrafast", "bf": "0"}
        for i, col in enumerate(colours):
            img = np.empty((48, 64, 3), np.uint8)
            img[:] = col
            img[:, (i * 2) % 64] = 128  # a little motion
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            c.mux(vs.encode(f))
        c.mux(vs.encode(None))
    return []


@pytest.mark.parametrize("kind", ["long", "flash", "sample"])
def test_cut_frames_match_pyscenedetect(tmp_path, kind):
    path = str(tmp_path / f"{kind}.mp4")
    if kind == "long":
        known = write_long_clip(path, 120, seed=7)
    elif kind == "flash":
        known = None
        _flash_clip(path)
    else:
        from ltx_outpaint.media.sample import write_sample

        write_sample(path, 96, 64, 72)
        known = []
    ours = list(analyze_clip(path).cuts)
    theirs = pyscenedetect_cuts(path)
    assert ours == theirs
    if known is not None:
        assert ours == known  # and both find the cuts the clip was made with
    if kind == "flash":
        assert len(ours) >= 2  # the clip does have cuts; the merge filter decides which


def test_threshold_and_min_scene_len_are_pyscenedetects(tmp_path):
    path = str(tmp_path / "flash.mp4")
    _flash_clip(path)
    for threshold, min_len in ((15.0, 5), (40.0, 15), (27.0, 1), (27.0, 0)):
        assert list(analyze_clip(path, threshold=threshold, min_scene_len=min_len).cuts) == \
            pyscenedetect_cuts(path, threshold, min_len), (threshold, min_len)


def test_detector_filters_by_hand():
    """Hand-made score sequence: the merge filter keeps scenes at least min_scene_len long."""
    det = ContentDetector(threshold=27, min_scene_len=5)
    flat = np.zeros((4, 4, 3), np.uint8)
    white = np.full((4, 4, 3), 255, np.uint8)
    seq = [flat] * 6 + [white] * 6 + [flat] * 2 + [white] * 8
    cuts = []
    for f in seq:
        cuts += det.push(f)
    # 6: first cut; 12: 6 frames later (>= 5), kept; 14: only 2 after 12, so it starts a merge that never
    # reaches min_scene_len and is dropped (PySceneDetect's MERGE mode)
    assert cuts == [6, 12]
    assert detect_size(64, 48) == (64, 48) and detect_size(1920, 1080) == (256, 144)
