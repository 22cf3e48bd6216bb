"""Fixtures shared by the end-to-end tests in test/ (the workspace-wide ones are in the root conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest


def _constant_policy(directory: Path, action) -> Path:
    """A real checkpoint whose mean action is `action` whatever it sees."""
    import torch

    from world4rl_policy.policy import GaussianPolicy, PolicyConfig, save_policy

    torch.manual_seed(0)
    policy = GaussianPolicy(PolicyConfig(channels=(8, 8), hidden_dim=32))
    with torch.no_grad():
        policy.mean_head.weight.zero_()
        policy.mean_head.bias.copy_(torch.tensor(action, dtype=torch.float32))
    return save_policy(directory, policy)


@pytest.fixture
def constant_policy():
    """constant_policy(directory, action) -> a saved checkpoint that always means `action`."""
    return _constant_policy


def _check_self_contained_html(page: str, markdown: str, tmp_path: Path) -> dict[str, list]:
    """Assert that an HTML report carries everything inside: every src/href a data: URI (nothing
    from http(s) or the disk), every <video> an H.264 yuv420p mp4 that decodes, every <img> a
    picture that decodes, and every table cell of the markdown report in the page. Returns
    {"videos": [frames of each], "images": [(width, height) of each]}."""
    import base64
    import html
    import re

    import imageio_ffmpeg
    from PIL import Image

    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page)
    assert all(r.startswith("data:") for r in refs), [r[:80] for r in refs if not r.startswith("data:")]
    for external in ("http://", "https://", "<script", "<link", "<iframe"):
        assert external not in page, external
    videos = re.findall(r"<video\b([^>]*)>(.*?)</video>", page, re.S)
    frames = []
    for n, (attrs, inner) in enumerate(videos):
        assert all(a in attrs for a in ("controls", "autoplay", "loop", "muted")), attrs
        (data,) = re.findall(r'src="data:video/mp4;base64,([A-Za-z0-9+/=]+)"', inner)
        path = tmp_path / f"video_{n}.mp4"
        path.write_bytes(base64.b64decode(data, validate=True))
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        assert meta["codec"] == "h264", meta  # what every browser plays
        assert meta["pix_fmt"].startswith("yuv420p"), meta
        frames.append(sum(1 for _ in reader))
        assert frames[-1] > 0
    sizes = []
    for n, data in enumerate(re.findall(r'<img\b[^>]*src="data:image/\w+;base64,([A-Za-z0-9+/=]+)"', page)):
        path = tmp_path / f"image_{n}"
        path.write_bytes(base64.b64decode(data, validate=True))
        with Image.open(path) as image:
            image.load()
            sizes.append(image.size)
    assert len(sizes) == len(re.findall(r"<img\b", page))
    cells = [
        c.strip()
        for line in markdown.splitlines()
        if line.startswith("|") and not re.fullmatch(r"[|\-: ]+", line)
        for c in line.strip("|").split("|")
    ]
    missing = [
        c for c in cells if c and "`" not in c and "*" not in c and f">{html.escape(c, quote=False)}<" not in page
    ]
    assert not missing, missing
    return {"videos": frames, "images": sizes}


@pytest.fixture
def check_self_contained_html(tmp_path):
    """check_self_contained_html(page, markdown) -> {"videos": [frames], "images": [sizes]}: asserts that
    the HTML report `page` is self-contained and carries the markdown report's tables (see above)."""
    return lambda page, markdown: _check_self_contained_html(page, markdown, tmp_path)
