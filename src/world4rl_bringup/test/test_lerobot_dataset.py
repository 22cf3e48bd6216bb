"""LeRobotDataset v3.0 export and import (world4rl_model.lerobot_*, world4rl_bringup.lerobot_bags):
a dataset collected in the real MuJoCo sim goes out and comes back with the same actions and labels
and frames within a stated PSNR; an interrupted export resumes to the same files; validation names
a corrupted file; import errors name the key; bags export at their recorded resolution."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from world4rl_model import lerobot_export
from world4rl_model.dataset import Dataset, DatasetWriter
from world4rl_model.lerobot_config import ExportConfig, ImportConfig
from world4rl_model.lerobot_export import DatasetSource, ExportError, export
from world4rl_model.lerobot_format import INFO_PATH, LeRobotFormatError, psnr_db, validate
from world4rl_model.lerobot_import import LeRobotImportError, import_dataset
from world4rl_spec import ACTION_NAMES, topics

# Frame fidelity after video encoding, measured on the sim dataset below (64x64 frames, h264 crf 18,
# this module's fixture plus pick_place and drawer episodes): yuv420p (the default, what LeRobot
# writes) 32.3-36.2 dB mean per episode and >= 31.5 dB on every frame (yuv420p halves the colour
# resolution, which dominates at 64x64); yuv444p 38.4-40.0 dB mean, >= 37.0 dB on every frame.
MIN_MEAN_PSNR_DB = 31.0
MIN_FRAME_PSNR_DB = 30.0
MIN_MEAN_PSNR_444_DB = 37.0
MIN_FRAME_PSNR_444_DB = 35.0
# Bags rendered at 160x120: the recorded frames decoded from the video, 35.1 dB mean (>= 31 asserted);
# imported at 64x64 vs `dataset build` of the same bags, 40.6-41.0 dB mean per episode.
MIN_RESIZED_PSNR_DB = 37.0
KEY = "observation.images.front"
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory) -> Path:
    """4 episodes collected in the true simulator (MuJoCo) by the noisy scripted expert: 3 push, 1 reach."""
    from world4rl_bringup.sim_rollouts import ExpertActor, record_episodes

    root = tmp_path_factory.mktemp("sim") / "dataset"
    writer = DatasetWriter(root)
    record_episodes(writer, "franka", "push", "expert", ExpertActor(0.1), [0, 1, 2], 64, horizon=30, progress=False)
    record_episodes(writer, "franka", "reach", "random", ExpertActor(0.3), [3], 64, horizon=25, progress=False)
    return root


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_export_then_import_keeps_actions_labels_and_frames(sim_dataset, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "lerobot"
    report = export(DatasetSource(sim_dataset), out, progress=False)
    source = Dataset(sim_dataset)
    assert (report.episodes, report.frames, report.failed) == (4, sum(e["length"] for e in source.episodes), [])
    assert not (out / lerobot_export.STAGING).exists()
    info = json.loads((out / INFO_PATH).read_text())
    assert (info["codebase_version"], info["fps"], info["total_episodes"], info["total_tasks"]) == ("v3.0", 10, 4, 2)
    assert info["features"][KEY]["shape"] == [64, 64, 3]
    assert info["features"]["action"]["names"] == list(ACTION_NAMES)
    assert info["features"]["observation.state"]["shape"] == [9]
    rows = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pylist()
    first = [r for r in rows if r["episode_index"] == 0]
    labels = source.episode(0)["success"]
    assert [r["success"] for r in first] == labels.tolist()
    assert [r["next.success"] for r in first] == [*labels[1:].tolist(), bool(labels[-1])]
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["world4rl/kind"] for e in episodes] == ["expert"] * 3 + ["random"]
    assert [e["tasks"] for e in episodes] == [["push"]] * 3 + [["reach"]]

    back = tmp_path / "back"
    imported = import_dataset(out, back, progress=False)
    assert imported.success == "frame:success"
    _assert_same_episodes(source, Dataset(back), MIN_MEAN_PSNR_DB, MIN_FRAME_PSNR_DB)


def _assert_same_episodes(a: Dataset, b: Dataset, min_mean_db: float, min_frame_db: float) -> list[float]:
    assert len(a) == len(b)
    assert a.tasks == b.tasks
    assert a.control_rate_hz == b.control_rate_hz
    means = []
    for i in range(len(a)):
        ea, eb = a.episode(i), b.episode(i)
        for key in ("actions", "success", "joint_positions"):
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"episode {i}: {key}")
        for key in ("task", "success", "kind", "seed", "length"):
            assert a.episodes[i][key] == b.episodes[i][key], (i, key)
        psnr = [psnr_db(x, y) for x, y in zip(ea["frames"], eb["frames"], strict=True)]
        means.append(float(np.mean(psnr)))
        assert means[-1] >= min_mean_db, (i, means[-1])
        assert min(psnr) >= min_frame_db, (i, min(psnr))
    return means


def test_yuv444p_keeps_more_of_the_frames(sim_dataset, tmp_path):
    export(DatasetSource(sim_dataset), tmp_path / "lr", ExportConfig(pix_fmt="yuv444p"), progress=False)
    import_dataset(tmp_path / "lr", tmp_path / "back", progress=False)
    _assert_same_episodes(
        Dataset(sim_dataset), Dataset(tmp_path / "back"), MIN_MEAN_PSNR_444_DB, MIN_MEAN_PSNR_444_DB - 3
    )


class _Interrupting:
    """A dataset source that raises KeyboardInterrupt (as Ctrl-C would) when asked for one episode."""

    def __init__(self, inner: DatasetSource, at: int) -> None:
        self.inner, self.at = inner, at
        self.fingerprint, self.control_rate_hz, self.has_state = (
            inner.fingerprint,
            inner.control_rate_hz,
            inner.has_state,
        )

    def __len__(self) -> int:
        return len(self.inner)

    def describe(self, position: int) -> str:
        return self.inner.describe(position)

    def load(self, position: int):
        if position == self.at:
            raise KeyboardInterrupt
        return self.inner.load(position)


# Small files so that episodes are joined into several data and video files, some before the interruption.
SMALL_FILES = ExportConfig(data_files_size_in_mb=0.01, video_files_size_in_mb=0.05)


def test_an_interrupted_export_resumes_to_the_same_files(sim_dataset, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    export(DatasetSource(sim_dataset), whole, SMALL_FILES, progress=False)
    expected = _tree_digest(whole)
    assert sum(p.startswith("data/") for p in expected) >= 2
    assert sum(p.startswith("videos/") for p in expected) >= 2

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):  # between episodes: 2 are done
        export(_Interrupting(DatasetSource(sim_dataset), at=2), out, SMALL_FILES, progress=False)
    staging = out / lerobot_export.STAGING
    assert sorted(p.name for p in staging.glob("ep_*.json")) == ["ep_000000.json", "ep_000001.json"]
    (staging / "ep_000002.parquet.tmp").write_bytes(b"half an episode")  # what a crash mid-write leaves

    calls = []
    real_join = lerobot_export.join_videos

    def crash_once(segments, path):  # inside the writer: while joining episodes into a video file
        calls.append(path)
        if len(calls) == 1:
            raise OSError("disk unplugged")
        real_join(segments, path)

    monkeypatch.setattr(lerobot_export, "join_videos", crash_once)
    with pytest.raises(OSError, match="disk unplugged"):
        export(DatasetSource(sim_dataset), out, SMALL_FILES, progress=False)
    monkeypatch.setattr(lerobot_export, "join_videos", real_join)
    report = export(DatasetSource(sim_dataset), out, SMALL_FILES, progress=False)
    assert report.resumed >= 2
    assert report.episodes == 4
    assert _tree_digest(out) == expected  # byte for byte what the uninterrupted export wrote

    again = export(DatasetSource(sim_dataset), out, SMALL_FILES, progress=False)
    assert again.already_complete
    assert again.episodes == 4
    with pytest.raises(ExportError, match="another source or other settings"):
        export(DatasetSource(sim_dataset), out, ExportConfig(crf=30), progress=False)
    with pytest.raises(ExportError, match="not empty"):
        export(DatasetSource(sim_dataset), sim_dataset, progress=False)


@pytest.fixture(scope="module")
def exported(sim_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "lerobot"
    export(DatasetSource(sim_dataset), out, SMALL_FILES, progress=False)
    return out


def _corrupt(root: Path, how: str) -> str:
    """Damage a copy of the export; returns the path the error must name."""
    if how == "truncated parquet":
        path = root / "data/chunk-000/file-001.parquet"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "missing video":
        path = root / f"videos/{KEY}/chunk-000/file-001.mp4"
        path.unlink()
    elif how == "truncated video":
        path = root / f"videos/{KEY}/chunk-000/file-000.mp4"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "wrong total":
        path = root / INFO_PATH
        info = json.loads(path.read_text())
        info["total_frames"] += 1
        path.write_text(json.dumps(info))
    elif how == "shifted timestamps":  # episode 0's frames (first of 2 in its file) not where meta/episodes says
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = root / "meta/episodes/chunk-000/file-000.parquet"
        table = pq.read_table(meta)
        rows = table.to_pylist()
        assert rows[1][f"videos/{KEY}/file_index"] == rows[0][f"videos/{KEY}/file_index"]
        for end in ("from", "to"):
            rows[0][f"videos/{KEY}/{end}_timestamp"] += 0.05
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), meta)
        chunk, file = rows[0][f"videos/{KEY}/chunk_index"], rows[0][f"videos/{KEY}/file_index"]
        path = root / f"videos/{KEY}/chunk-{chunk:03d}/file-{file:03d}.mp4"
    elif how == "stray data file":
        path = root / "data/chunk-000/file-099.parquet"
        shutil.copy(root / "data/chunk-000/file-000.parquet", path)
    return str(path)


@pytest.mark.parametrize(
    "how",
    ["truncated parquet", "missing video", "truncated video", "shifted timestamps", "wrong total", "stray data file"],
)
def test_validation_names_the_corrupted_file(exported, tmp_path, how):
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    assert validate(copy)["episodes"] == 4
    named = _corrupt(copy, how)
    with pytest.raises(LeRobotFormatError) as error:
        validate(copy)
    assert str(error.value).startswith(named), error.value


def test_cli_validate_and_the_error_exit_code(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    cli = [sys.executable, "-m", "world4rl_bringup.cli", "dataset", "validate", "--format", "lerobot", str(copy)]
    ok = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "valid LeRobotDataset v3.0: 4 episodes" in ok.stdout
    named = _corrupt(copy, "missing video")
    bad = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert f"error: {named}: missing" in bad.stderr, bad.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"image_key": "observation.images.wrist"},
            "no feature 'observation.images.wrist'; cameras: observation.images.front",
        ),
        ({"image_key": "action"}, "action is a float32 feature, not a camera"),
        ({"action_key": "observation.state"}, "observation.state has shape [9] (fr3_joint1"),
        ({"action_key": "velocity"}, "no action feature 'velocity'"),
        ({"action_map": "dx,dy,dz"}, "3 terms, expected 4"),
        ({"action_map": "dx,dy,dz,grip"}, "'grip' is not an index below 4 nor a name"),
        ({"action_map": "dx*5,dy,dz,gripper"}, "mapped to dx = "),
        ({"control_rate_hz": 15.0}, "fps 10, but the control rate is 15 Hz"),
        ({"success": "next:next.reward"}, "no feature 'next.reward' for --success next:next.reward"),
        ({"success": "episode:label"}, "no column 'label'"),
        ({"success": "maybe"}, "expected auto, unknown or MODE:COLUMN"),
    ],
)
def test_import_errors_name_the_key(exported, tmp_path, options, message):
    with pytest.raises(LeRobotImportError, match=None) as error:
        import_dataset(exported, tmp_path / "ds", ImportConfig(**options), progress=False)
    assert message in str(error.value), error.value


def test_import_asks_which_camera_when_there_are_several(exported, tmp_path):
    copy = tmp_path / "two_cameras"
    shutil.copytree(exported, copy)
    info = json.loads((copy / INFO_PATH).read_text())
    info["features"]["observation.images.wrist"] = info["features"][KEY]
    (copy / INFO_PATH).write_text(json.dumps(info))
    with pytest.raises(LeRobotImportError) as error:
        import_dataset(copy, tmp_path / "ds", progress=False)
    assert str(error.value) == (
        f"{copy / INFO_PATH}: 2 cameras (observation.images.front, observation.images.wrist); pass --image-key"
    )


def test_import_options_that_fit(exported, sim_dataset, tmp_path):
    source = Dataset(sim_dataset)
    halved = import_dataset(
        exported,
        tmp_path / "a",
        ImportConfig(action_map="0*0.5,dy*0.5,2*0.5,gripper*2-0.5", clip_actions=True),
        progress=False,
    )
    mapped = [source.episode(i)["actions"] * [0.5, 0.5, 0.5, 2] + [0, 0, 0, -0.5] for i in range(4)]
    for i in range(4):
        np.testing.assert_allclose(Dataset(tmp_path / "a").episode(i)["actions"], np.clip(mapped[i], -1, 1), atol=1e-6)
    assert halved.clipped_values == sum(int((np.abs(m) > 1 + 1e-6).sum()) for m in mapped) > 0
    unknown = import_dataset(
        exported, tmp_path / "b", ImportConfig(success="unknown", task="cube", kind="human"), progress=False
    )
    b = Dataset(tmp_path / "b")
    assert any("not the reward classifier" in n for n in unknown.notes)
    assert b.tasks == ["cube"]
    assert not any(e["success"] for e in b.episodes)
    assert not b.episode(0)["success"].any()
    next_labels = import_dataset(exported, tmp_path / "c", ImportConfig(success="next:next.success"), progress=False)
    c = Dataset(tmp_path / "c")
    assert next_labels.success == "next:next.success"
    for i in range(4):  # LeRobot's convention loses only the first frame's label (taken as unsolved)
        np.testing.assert_array_equal(c.episode(i)["success"][1:], source.episode(i)["success"][1:])
    with pytest.raises(LeRobotImportError, match="pass --append"):
        import_dataset(exported, tmp_path / "c", progress=False)
    import_dataset(exported, tmp_path / "c", ImportConfig(append=True, success="next:next.success"), progress=False)
    assert len(Dataset(tmp_path / "c")) == 8


def test_import_reads_image_features_and_refuses_older_versions(exported, sim_dataset, tmp_path):
    """An image feature (PNG bytes in the parquet, as LeRobot stores `image` features) instead of a video."""
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "images"
    shutil.copytree(exported, copy)
    info = json.loads((copy / INFO_PATH).read_text())
    info["features"][KEY] = {"dtype": "image", "shape": [64, 64, 3], "names": ["height", "width", "channels"]}
    (copy / INFO_PATH).write_text(json.dumps(info))
    shutil.rmtree(copy / "videos")
    source = Dataset(sim_dataset)
    for path in sorted((copy / "data").glob("*/*.parquet")):
        table = pq.read_table(path)
        pngs = []
        for ep, t in zip(
            table.column("episode_index").to_pylist(), table.column("frame_index").to_pylist(), strict=True
        ):
            rgb = np.asarray(source.episode(ep)["frames"][t])
            pngs.append({"bytes": cv2.imencode(".png", rgb[..., ::-1])[1].tobytes(), "path": None})
        pq.write_table(table.append_column(KEY, pa.array(pngs)), path)
    import_dataset(copy, tmp_path / "back", progress=False)
    back = Dataset(tmp_path / "back")
    for i in range(4):
        np.testing.assert_array_equal(back.episode(i)["frames"], source.episode(i)["frames"])  # PNG is lossless
    info["codebase_version"] = "v2.1"
    (copy / INFO_PATH).write_text(json.dumps(info))
    with pytest.raises(LeRobotFormatError, match=r"codebase_version 'v2.1'.*convert_dataset_v21_to_v30"):
        import_dataset(copy, tmp_path / "again", progress=False)


# -- bags ----------------------------------------------------------------------------------------

IMAGE = topics.bag_topic(topics.CAMERA_IMAGE)
ACTION = topics.bag_topic(topics.ACTION)
JOINTS = topics.bag_topic(topics.JOINT_STATES)
SUCCESS = topics.bag_topic(topics.SIM_SUCCESS)


def _sim_bag(out: Path, index: int, msgs, seed: int, size=(120, 160), steps=20, with_info=True) -> Path:
    """An episode bag as the recorder writes it, from the real sim: camera frames rendered at `size`
    (H, W), joint states, the sim's success flag and the noisy expert's actions at 10 Hz."""
    from world4rl_bringup.bag_writer import STATUS_INTERRUPTED, EpisodeBagWriter, EpisodeMeta, episode_dir_name
    from world4rl_sim.env import FrankaSimEnv

    env = FrankaSimEnv("push", seed=seed)
    obs, _ = env.reset(seed=seed)
    meta = EpisodeMeta(index=index, task="push", robot="sim", operator_note=f"seed {seed}", start_ns=T0)
    writer = EpisodeBagWriter(out / episode_dir_name(index), meta, msgs.store).start()
    for topic, msgtype in ((IMAGE, "sensor_msgs/msg/Image"), (ACTION, "world4rl_msgs/msg/Action"),
                           (JOINTS, "sensor_msgs/msg/JointState"), (SUCCESS, "std_msgs/msg/Bool")):  # fmt: skip
        writer.add_topic(topic, msgtype)
    rng = np.random.default_rng(seed)
    solved = False
    for t in range(steps):
        stamp = T0 + t * 100 * MS
        writer.write(IMAGE, stamp, msgs.image(stamp, env.sim.render(size[1], size[0], env.camera)))
        writer.write(JOINTS, stamp + MS, msgs.joint_state(stamp + MS, obs["joint_pos"]))
        flag = msgs.store.serialize_cdr(msgs.types["std_msgs/msg/Bool"](data=solved), "std_msgs/msg/Bool")
        writer.write(SUCCESS, stamp + 2 * MS, bytes(flag))
        action = np.clip(env.expert_action() + rng.normal(0, 0.1, 4), -1, 1)
        writer.write(ACTION, stamp + 5 * MS, msgs.action(stamp + 5 * MS, action))
        obs, _, _, _, info = env.step(action)
        solved = bool(info["success"])
    env.close()
    meta.success, meta.stop_ns = solved, T0 + steps * 100 * MS
    return writer.close(meta).path if with_info else writer.close(meta, status=STATUS_INTERRUPTED).path


def test_bags_export_at_recorded_resolution_and_import_like_build(tmp_path, msgs):
    from world4rl_bringup.bag_to_dataset import BuildConfig, build, read_episode

    bags = tmp_path / "bags"
    for index in range(2):
        _sim_bag(bags, index, msgs, seed=index)
    broken = _sim_bag(tmp_path / "other", 0, msgs, seed=5, steps=3, with_info=False)  # no EpisodeInfo
    smaller = _sim_bag(tmp_path / "other", 1, msgs, seed=6, size=(96, 128), steps=3)  # another camera size
    out = tmp_path / "lerobot"
    cli = [sys.executable, "-m", "world4rl_bringup.cli", "dataset", "export", "--format", "lerobot"]
    run = subprocess.run(
        [*cli, str(bags), str(broken), str(smaller), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr  # two bags failed, the others are exported
    assert f"FAILED {broken}: topic /world4rl/episode_info is missing" in run.stderr, run.stderr
    assert f"FAILED {smaller}: frames are 128x96, but the export's camera is 160x120" in run.stderr
    assert "exported 2 episodes" in run.stdout
    info = json.loads((out / INFO_PATH).read_text())
    assert info["features"][KEY]["shape"] == [120, 160, 3]  # the recorded resolution, not the learning size
    assert info["features"][KEY]["info"]["video.width"] == 160
    assert info["robot_type"] == "sim"
    import pyarrow.parquet as pq

    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["world4rl/operator_note"] for e in episodes] == ["seed 0", "seed 1"]
    assert [Path(e["world4rl/source_bag"]).name for e in episodes] == ["ep_000000", "ep_000001"]
    assert all(len(e["world4rl/source_sha256"]) == 64 for e in episodes)

    # The video holds the recorded frames (decoded at full size, they match the bag's).
    import_dataset(out, tmp_path / "full", ImportConfig(image_size=120), progress=False)
    recorded = read_episode(bags / "ep_000000", BuildConfig(resize=False)).frames
    decoded = Dataset(tmp_path / "full").episode(0)["frames"]
    crop = recorded[:, :, 20:140]  # import's centre square of the 160x120 frames
    assert np.mean([psnr_db(x, y) for x, y in zip(crop, decoded, strict=True)]) >= MIN_MEAN_PSNR_DB

    # Imported at the learning size it matches `dataset build` of the same bags.
    build([bags], tmp_path / "built")
    import_dataset(out, tmp_path / "imported", progress=False)
    built, imported = Dataset(tmp_path / "built"), Dataset(tmp_path / "imported")
    for i in range(2):
        for key in ("actions", "success", "joint_positions"):
            np.testing.assert_array_equal(built.episode(i)[key], imported.episode(i)[key])
        assert built.episodes[i]["source"] == imported.episodes[i]["source"]
        pairs = zip(built.episode(i)["frames"], imported.episode(i)["frames"], strict=True)
        psnr = [psnr_db(x, y) for x, y in pairs]
        assert np.mean(psnr) >= MIN_RESIZED_PSNR_DB, (i, np.mean(psnr))


def test_cli_help_of_export_and_import(capsys, monkeypatch):
    from world4rl_bringup import cli

    monkeypatch.setenv("COLUMNS", "200")
    export_flags = ["--out", "--camera", "--vcodec", "--crf", "--pix-fmt", "--state", "--image-topic"]
    import_flags = ["--out", "--image-key", "--action-key", "--action-map", "--success", "--clip-actions"]
    for command, flags in (("export", export_flags), ("import", import_flags)):
        with pytest.raises(SystemExit) as e:
            cli.main(["dataset", command, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        for flag in flags:
            assert flag in text, (command, flag)
    with pytest.raises(SystemExit):
        cli.main(["dataset", "--help"])
    assert re.search(r"export.*LeRobotDataset", capsys.readouterr().out)
