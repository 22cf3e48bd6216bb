"""The dataset format: writer, reader, manifest, crash safety, errors that name the file, split."""

import hashlib
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from world4rl_model.dataset import Dataset, DatasetError, DatasetWriter, manifest_hash

S = 16


def _episode(length: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(length, S, S, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, size=(length, 4)).astype(np.float32)
    return frames, actions


def test_roundtrip_and_manifest(tmp_path):
    root = tmp_path / "ds"
    writer = DatasetWriter(root, image_size=S)
    f0, a0 = _episode(5, 0)
    f1, a1 = _episode(7, 1)
    per_frame = np.array([0, 0, 0, 0, 1, 1, 1], dtype=bool)
    jp = np.zeros((7, 9), np.float32)
    assert writer.add_episode(f0, a0, task="push", success=False, kind="random", seed=3) == 0
    assert (
        writer.add_episode(
            f1,
            a1,
            task="lift",
            success=True,
            kind="expert",
            success_per_frame=per_frame,
            joint_positions=jp,
            source_bag="/bags/b1",
            source_sha256="abc",
        )
        == 1
    )
    ds = Dataset(root)
    assert len(ds) == 2
    assert ds.tasks == ["lift", "push"]
    assert ds.manifest["num_transitions"] == 4 + 6 == ds.num_transitions
    assert ds.manifest["action_space"]["names"] == ["dx", "dy", "dz", "gripper"]
    assert ds.manifest["image_size"] == S
    ep0, ep1 = ds.episodes
    assert ep0 == {
        "index": 0,
        "dir": "episodes/ep_000000",
        "task": "push",
        "success": False,
        "length": 5,
        "kind": "random",
        "source": {"bag": None, "sha256": None},
        "seed": 3,
    }
    assert ep1["source"] == {"bag": "/bags/b1", "sha256": "abc"}
    e0, e1 = ds.episode(0), ds.episode(1)
    np.testing.assert_array_equal(e0["frames"], f0)
    np.testing.assert_array_equal(e0["actions"], a0)
    assert isinstance(e0["frames"], np.memmap)
    assert e0["success"].dtype == np.bool_
    assert not e0["success"].any()
    np.testing.assert_array_equal(e1["success"], per_frame)
    assert "joint_positions" in e1
    assert "joint_positions" not in e0
    assert writer.has_source("abc")
    assert not writer.has_source("zzz")
    assert ds.task_index("push") == 1


def test_default_per_frame_success_marks_last_frame(tmp_path):
    writer = DatasetWriter(tmp_path, image_size=S)
    writer.add_episode(*_episode(4), task="t", success=True, kind="expert")
    np.testing.assert_array_equal(Dataset(tmp_path).episode(0)["success"], [False, False, False, True])


def test_resume_appends_and_hash_changes(tmp_path):
    DatasetWriter(tmp_path, image_size=S).add_episode(*_episode(3), task="a", success=False, kind="random")
    h1 = manifest_hash(tmp_path)
    created = Dataset(tmp_path).manifest["created"]
    writer = DatasetWriter(tmp_path, image_size=S)  # reopen
    assert writer.add_episode(*_episode(3, 5), task="b", success=False, kind="policy") == 1
    assert manifest_hash(tmp_path) != h1
    ds = Dataset(tmp_path)
    assert len(ds) == 2
    assert ds.manifest["created"] == created
    with pytest.raises(DatasetError, match="image_size"):
        DatasetWriter(tmp_path, image_size=32)
    with pytest.raises(FileNotFoundError):
        DatasetWriter(tmp_path / "nope", create_ok=False)


def test_crash_debris_is_never_listed_temp_dirs_cleaned_unlisted_dirs_kept(tmp_path):
    writer = DatasetWriter(tmp_path, image_size=S)
    writer.add_episode(*_episode(3), task="a", success=False, kind="random")
    # A writer that died after renaming ep_000001 into place but before rewriting the manifest,
    # and one that died while writing its temp dir.
    (tmp_path / "episodes" / "ep_000001").mkdir()
    (tmp_path / "episodes" / "ep_000001" / "frames.npy").write_bytes(b"garbage")
    (tmp_path / "episodes" / ".tmp-ep_000001-xyz").mkdir()
    assert len(Dataset(tmp_path)) == 1
    f, a = _episode(4, 9)
    with pytest.warns(UserWarning, match=r"ep_000001"):
        assert writer.add_episode(f, a, task="a", success=False, kind="random") == 1
    ds = Dataset(tmp_path)
    np.testing.assert_array_equal(ds.episode(1)["frames"], f)
    assert ds.episodes[1]["dir"] == "episodes/ep_000002"  # the unlisted ep_000001 is not overwritten
    # The writer's own temp dir is debris and goes; the unlisted directory stays, untouched.
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir()) == ["ep_000000", "ep_000001", "ep_000002"]
    assert (tmp_path / "episodes" / "ep_000001" / "frames.npy").read_bytes() == b"garbage"
    assert writer.unlisted == ["ep_000001"]
    assert ds.unlisted_episode_dirs == ["ep_000001"]


def _tree_hashes(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_append_under_a_stale_manifest_keeps_every_unlisted_episode(tmp_path):
    """A manifest restored from before the last episode must not turn that episode into debris."""
    root = tmp_path / "ds"
    writer = DatasetWriter(root, image_size=S)
    for seed in range(2):
        writer.add_episode(*_episode(4, seed), task="a", success=False, kind="random")
    older_manifest = (root / "manifest.json").read_bytes()
    writer.add_episode(*_episode(5, 2), task="b", success=True, kind="expert")
    before = _tree_hashes(root / "episodes")
    assert sorted({k.split("/")[0] for k in before}) == ["ep_000000", "ep_000001", "ep_000002"]
    (root / "manifest.json").write_bytes(older_manifest)  # e.g. restored from a backup

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reopened = DatasetWriter(root, image_size=S)
        f, a = _episode(6, 7)
        index = reopened.add_episode(f, a, task="c", success=False, kind="policy")

    after = _tree_hashes(root / "episodes")
    for name, digest in before.items():  # all three original episodes, byte for byte
        assert after.get(name) == digest, name
    ds = Dataset(root)
    assert index == 2 == len(ds) - 1
    new_dir = ds.episodes[2]["dir"]
    assert new_dir not in {"episodes/ep_000000", "episodes/ep_000001", "episodes/ep_000002"}
    np.testing.assert_array_equal(ds.episode(2)["frames"], f)
    assert reopened.unlisted == ["ep_000002"]
    assert ds.unlisted_episode_dirs == ["ep_000002"]
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("ep_000002" in m and "not listed" in m for m in messages), messages
    # Appending again still neither overwrites nor forgets it.
    reopened.add_episode(*_episode(3, 8), task="c", success=False, kind="policy")
    assert _tree_hashes(root / "episodes")["ep_000002/frames.npy"] == before["ep_000002/frames.npy"]
    assert len({ep["dir"] for ep in Dataset(root).episodes}) == 4


def test_a_task_name_that_is_a_path_is_refused(tmp_path):
    root = tmp_path / "ds"
    writer = DatasetWriter(root, image_size=S)
    for bad in ("../x", "a/b", "..", ".hidden", "", "/abs"):
        with pytest.raises(ValueError, match="not a valid task name"):
            writer.add_episode(*_episode(3), task=bad, success=False, kind="random")
    assert len(Dataset(root)) == 0
    assert Dataset(root).tasks == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # nothing beside the dataset
    assert list((root / "episodes").iterdir()) == []


def test_bad_input_errors_name_the_file(tmp_path):
    writer = DatasetWriter(tmp_path, image_size=S)
    f, a = _episode(5)
    with pytest.raises(DatasetError, match=r"episodes/ep_000000/actions\.npy: expected float32 \[5, 4\]"):
        writer.add_episode(f, a[:, :3], task="a", success=False, kind="random")
    with pytest.raises(DatasetError, match=r"ep_000000/frames\.npy: expected uint8"):
        writer.add_episode(f.astype(np.float32), a, task="a", success=False, kind="random")
    with pytest.raises(DatasetError, match=r"actions\.npy: actions must be normalised"):
        writer.add_episode(f, a * 3, task="a", success=False, kind="random")
    with pytest.raises(DatasetError, match=r"actions\.npy: contains NaN"):
        writer.add_episode(f, np.full_like(a, np.nan), task="a", success=False, kind="random")
    with pytest.raises(ValueError, match="kind"):
        writer.add_episode(f, a, task="a", success=False, kind="dream")
    assert len(Dataset(tmp_path)) == 0  # nothing half-written got listed
    writer.add_episode(f, a, task="a", success=False, kind="random")
    # Corrupt a file on disk: the reader names it.
    np.save(tmp_path / "episodes" / "ep_000000" / "actions.npy", np.zeros((5, 2), np.float64))
    with pytest.raises(DatasetError, match=r"ep_000000/actions\.npy: expected float32 \[5, 4\], got float64 \[5, 2\]"):
        Dataset(tmp_path).episode(0)
    np.save(tmp_path / "episodes" / "ep_000000" / "actions.npy", a)
    Dataset(tmp_path).validate()
    os.remove(tmp_path / "episodes" / "ep_000000" / "success.npy")
    with pytest.raises(DatasetError, match=r"ep_000000/success\.npy: missing"):
        Dataset(tmp_path).validate()
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"manifest\.json: not valid JSON"):
        Dataset(tmp_path)


def test_split_is_deterministic_stable_and_nonempty(tmp_path):
    writer = DatasetWriter(tmp_path, image_size=S)
    f, a = _episode(2)
    for _ in range(20):
        writer.add_episode(f, a, task="a", success=False, kind="random")
    ds = Dataset(tmp_path)
    train, val = ds.split(0.25, seed=1)
    assert (train, val) == ds.split(0.25, seed=1)
    assert sorted(train + val) == list(range(20))
    assert not set(train) & set(val)
    assert 1 <= len(val) <= 12
    for _ in range(10):
        writer.add_episode(f, a, task="a", success=False, kind="random")
    _train2, val2 = Dataset(tmp_path).split(0.25, seed=1)
    assert set(val) == {i for i in val2 if i < 20}  # appending never moves an old episode
    assert ds.split(0.25, seed=2) != (train, val)
    # Tiny datasets still get one held-out episode.
    tiny = tmp_path / "tiny"
    w = DatasetWriter(tiny, image_size=S)
    for _ in range(2):
        w.add_episode(f, a, task="a", success=False, kind="random")
    t, v = Dataset(tiny).split(0.01)
    assert len(t) == 1
    assert len(v) == 1


_APPEND_MANY = """
import sys, numpy as np
from world4rl_model.dataset import DatasetWriter
root, seed = sys.argv[1], int(sys.argv[2])
writer = DatasetWriter(root, image_size=16)
for k in range(5):
    frames = np.full((3, 16, 16, 3), k, np.uint8)
    writer.add_episode(frames, np.zeros((3, 4), np.float32), task=f"t{seed}", success=False, kind="random")
"""


def test_concurrent_writers_do_not_lose_episodes(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _APPEND_MANY, str(tmp_path), str(s)]) for s in range(2)]
    for p in procs:
        assert p.wait(60) == 0
    ds = Dataset(tmp_path)
    assert len(ds) == 10
    assert [ep["index"] for ep in ds.episodes] == list(range(10))
    ds.validate()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["tasks"] == ["t0", "t1"]
