"""The policy on ONNX Runtime (world4rl_policy.inference): what load_policy(backend=...) runs must act
like eager torch, be exported once per checkpoint into the cache, and fall back to torch when
onnxruntime is missing or the runner has no checkpoint to export from."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from world4rl_model.synthetic import make_dataset
from world4rl_policy import inference
from world4rl_policy import ood as ood_mod
from world4rl_policy import policy as pol

SMALL = {"image_size": 16, "channels": (8, 16, 16, 16), "hidden_dim": 32}
TOLERANCE = 1e-5  # |onnxruntime - torch| on actions; measured ~1e-7 here (fp32 both)

needs_onnxruntime = pytest.mark.skipif(not inference.onnxruntime_installed(), reason="onnxruntime not installed")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(inference.CACHE_ENV, str(tmp_path / "onnx-cache"))


def _frames(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, SMALL["image_size"], SMALL["image_size"], 3), np.uint8)


def _checkpoint(tmp_path, proprio_dim=0, fit_ood=False):
    torch.manual_seed(1)
    p = pol.GaussianPolicy(pol.PolicyConfig(**SMALL, proprio_dim=proprio_dim))
    with torch.no_grad():  # zero-initialised heads would make every action ~0 and the comparison void
        p.mean_head.weight.normal_(0, 0.3)
    if fit_ood:
        ds = make_dataset(tmp_path / "ds", episodes_per_task=2, length=10, image_size=SMALL["image_size"])
        ood_mod.fit_policy(p, ds, [0, 1], [2, 3])
    return pol.save_policy(tmp_path / "policy", p)


@needs_onnxruntime
@pytest.mark.parametrize("proprio_dim", [0, 9])
def test_onnxruntime_acts_like_torch(tmp_path, proprio_dim):
    path = _checkpoint(tmp_path, proprio_dim)
    fast, eager = pol.load_policy(path, backend="onnxruntime"), pol.load_policy(path, backend="torch")
    assert (fast.backend, eager.backend, fast.backend_note) == ("onnxruntime", "torch", "")
    proprio = np.linspace(-1, 1, proprio_dim) if proprio_dim else None
    calls, session = [], fast._onnx
    fast._onnx = lambda *inputs: calls.append(len(inputs)) or session(*inputs)  # act() must go through it
    for seed in range(5):
        history = _frames(1 + seed % 4, seed)  # 1-4 frames: padded to the history as act() does
        a, b = fast.act(history, proprio), eager.act(history, proprio)
        assert np.abs(a).max() > 1e-3  # a real action, not the initial zeros
        np.testing.assert_allclose(a, b, atol=TOLERANCE)
        sampled = [r.act(history, proprio, deterministic=False) for r in (fast, eager)]
        np.testing.assert_allclose(*sampled, atol=TOLERANCE)
    assert len(calls) == 10


@needs_onnxruntime
def test_onnxruntime_gives_the_ood_score_torch_gives(tmp_path):
    path = _checkpoint(tmp_path, fit_ood=True)
    fast, eager = pol.load_policy(path, backend="onnxruntime"), pol.load_policy(path, backend="torch")
    assert fast.backend == "onnxruntime"
    for seed in range(3):
        fast.act(_frames(4, seed))
        eager.act(_frames(4, seed))
        assert math.isfinite(eager.last_ood_score)
        assert fast.last_ood_score == pytest.approx(eager.last_ood_score, rel=1e-4, abs=1e-4)


@needs_onnxruntime
def test_the_export_is_cached_per_checkpoint(tmp_path):
    path = _checkpoint(tmp_path)
    cache = tmp_path / "onnx-cache"
    pol.load_policy(path, backend="auto")
    first = sorted(cache.glob("policy-*.onnx"))
    assert len(first) == 1
    stamp = first[0].stat().st_ino, first[0].stat().st_size
    assert pol.load_policy(path, backend="onnxruntime").backend == "onnxruntime"
    assert sorted(cache.glob("policy-*.onnx")) == first
    assert (first[0].stat().st_ino, first[0].stat().st_size) == stamp
    other = pol.GaussianPolicy(pol.PolicyConfig(**SMALL))
    assert pol.load_policy(pol.save_policy(tmp_path / "other", other), backend="onnxruntime").backend == "onnxruntime"
    assert len(list(cache.glob("policy-*.onnx"))) == 2  # other weights, another export


def test_without_onnxruntime_torch_runs_the_policy(tmp_path, monkeypatch):
    path = _checkpoint(tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an uninstalled package looks like to import
    assert not inference.onnxruntime_installed()
    eager = pol.load_policy(path, backend="torch")
    assert pol.load_policy(path, backend="auto").backend == "torch"
    with pytest.warns(UserWarning, match="onnxruntime"):
        runner = pol.load_policy(path, backend="onnxruntime")
    assert runner.backend == "torch"
    assert "not installed" in runner.backend_note
    np.testing.assert_array_equal(runner.act(_frames(4, 0)), eager.act(_frames(4, 0)))
    assert not (tmp_path / "onnx-cache").exists() or not list((tmp_path / "onnx-cache").iterdir())


def test_a_runner_without_checkpoint_and_an_unknown_backend(tmp_path):
    runner = pol.PolicyRunner(pol.GaussianPolicy(pol.PolicyConfig(**SMALL)), {})
    if inference.onnxruntime_installed():
        with pytest.warns(UserWarning, match="no checkpoint"):
            assert inference.use_backend(runner, "onnxruntime") == "torch"
    assert runner.act(_frames(4, 0)).shape == (4,)
    with pytest.raises(ValueError, match="inference backend must be one of"):
        pol.load_policy(_checkpoint(tmp_path), backend="tensorrt")
