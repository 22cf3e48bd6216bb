"""Bags -> dataset, with real bags written by the episode bag writer: time alignment, resizing,
success labels, skipping converted bags, and every bad-bag case named by bag and topic while the
other bags still convert; `world4rl dataset build|info|video` through the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from world4rl_bringup.bag_to_dataset import BagError, BuildConfig, bag_sha256, build, read_episode
from world4rl_bringup.bag_writer import STATUS_INTERRUPTED, EpisodeBagWriter, EpisodeMeta, episode_dir_name
from world4rl_model.dataset import Dataset
from world4rl_spec import topics

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
# The names the recorder stores these topics under (rooted at '/', world4rl_spec.topics.bag_topic).
IMAGE = topics.bag_topic(topics.CAMERA_IMAGE)
ACTION = topics.bag_topic(topics.ACTION)
JOINTS = topics.bag_topic(topics.JOINT_STATES)
SUCCESS = topics.bag_topic(topics.SIM_SUCCESS)
EPISODE_INFO = topics.bag_topic(topics.EPISODE_INFO)


def image_value(k: int) -> int:
    return (7 * k) % 256


def make_bag(
    out,
    index,
    msgs,
    *,
    steps=12,
    success=True,
    encoding="rgb8",
    with_images=True,
    with_info=True,
    action_values=None,
    action_period_ms=100,
    sim_success=None,
    source="expert",
    task="push",
    hw=(48, 64),
    flush_every_message=False,
    joints_from_ms=0,
):
    """An episode bag: images at 30 Hz (image k uniformly grey image_value(k)), actions every
    action_period_ms starting 5 ms after the first image, joint states at 100 Hz."""
    meta = EpisodeMeta(index=index, task=task, robot="sim", start_ns=T0)
    writer = EpisodeBagWriter(
        out / episode_dir_name(index), meta, msgs.store, flush_period_s=0.0 if flush_every_message else 1.0
    ).start()
    if with_images:
        writer.add_topic(IMAGE, "sensor_msgs/msg/Image")
    writer.add_topic(ACTION, "world4rl_msgs/msg/Action")
    writer.add_topic(JOINTS, "sensor_msgs/msg/JointState")
    if sim_success is not None:
        writer.add_topic(SUCCESS, "std_msgs/msg/Bool")
    duration_ms = steps * action_period_ms + 50
    events = []
    if with_images:
        for k in range(int(duration_ms / (1000 / 30)) + 1):
            events.append((T0 + round(k * 1000 / 30 * MS), "image", k))
    for j in range(steps):
        events.append((T0 + (5 + j * action_period_ms) * MS, "action", j))
        if sim_success is not None:
            events.append((T0 + (4 + j * action_period_ms) * MS, "success", j))
    for i in range(joints_from_ms // 10, duration_ms // 10):
        events.append((T0 + i * 10 * MS + 1, "joints", i))
    for stamp, what, k in sorted(events):
        if what == "image":
            if encoding == "mono16":
                pixels = np.full(hw, image_value(k), np.uint16)
            else:
                pixels = np.full((*hw, 3), image_value(k), np.uint8)
            writer.write(IMAGE, stamp, msgs.image(stamp, pixels, encoding=encoding))
        elif what == "action":
            values = action_values(k) if action_values else [k / 100, -k / 100, 0.0, 1.0 if k > 5 else -1.0]
            writer.write(ACTION, stamp, msgs.action(stamp, values, source=source))
        elif what == "success":
            bool_type = msgs.types["std_msgs/msg/Bool"]
            data = bytes(msgs.store.serialize_cdr(bool_type(data=sim_success(k)), "std_msgs/msg/Bool"))
            writer.write(SUCCESS, stamp, data)
        else:
            writer.write(JOINTS, stamp, msgs.joint_state(stamp, [k * 0.001] * 9))
    meta.success, meta.stop_ns = success, T0 + duration_ms * MS
    if with_info:
        return writer.close(meta).path
    return writer.close(meta, status=STATUS_INTERRUPTED).path


def test_alignment_resizing_joints_and_success_tail(tmp_path, msgs):
    bag = make_bag(tmp_path, 0, msgs, steps=12, success=True)
    ep = read_episode(bag)
    assert ep.frames.shape == (12, 64, 64, 3)
    assert ep.frames.dtype == np.uint8
    # Action j at 5 + 100 j ms; images every 33.3 ms: the latest at or before it is image 3 j.
    for j in range(12):
        assert (ep.frames[j] == image_value(3 * j)).all(), j
    np.testing.assert_allclose(ep.actions[:, 0], np.arange(12) / 100, atol=1e-6)
    assert ep.actions.dtype == np.float32
    # Joint states: the latest (every 10 ms from 0) before 5 + 100 j ms is number 10 j.
    assert ep.joint_positions.shape == (12, 9)
    np.testing.assert_allclose(ep.joint_positions[:, 0], np.arange(12) * 10 * 0.001, atol=1e-6)
    assert (ep.task, ep.success, ep.kind, ep.robot) == ("push", True, "expert", "sim")
    assert ep.action_rate_hz == pytest.approx(10.0)
    # Success without the sim's topic: the last 0.5 s (5 frames at 10 Hz) of a successful episode.
    assert ep.success_source == "episode_label_tail"
    assert ep.success_per_frame.tolist() == [False] * 7 + [True] * 5
    failed = read_episode(make_bag(tmp_path, 1, msgs, success=False, source="teleop"))
    assert not failed.success_per_frame.any()
    assert failed.kind == "human"
    small = read_episode(bag, BuildConfig(image_size=32, success_tail_s=0.05))
    assert small.frames.shape == (12, 32, 32, 3)
    assert small.success_per_frame.sum() == 1


def test_steps_before_the_first_joint_state_take_it_when_it_came_soon_after(tmp_path, msgs):
    # Joint states from 150 ms: actions 0 and 1 (5 and 105 ms) were logged before the first one.
    ep = read_episode(make_bag(tmp_path, 0, msgs, steps=12, joints_from_ms=150))
    assert ep.joint_positions is not None
    np.testing.assert_allclose(ep.joint_positions[:2, 0], [0.015, 0.015], atol=1e-6)  # state number 15
    np.testing.assert_allclose(ep.joint_positions[2:, 0], np.arange(2, 12) * 10 * 0.001, atol=1e-6)
    # First joint state 0.7 s after the first action: too late to stand for the steps before it.
    late = read_episode(make_bag(tmp_path, 1, msgs, steps=12, joints_from_ms=710))
    assert late.joint_positions is None


def test_sim_success_topic_labels_each_frame(tmp_path, msgs):
    bag = make_bag(tmp_path, 0, msgs, steps=10, sim_success=lambda j: j >= 6)
    ep = read_episode(bag)
    assert ep.success_source == "sim_success_topic"
    assert ep.success_per_frame.tolist() == [j >= 6 for j in range(10)]


def test_build_reports_episodes_whose_label_and_last_frame_disagree(tmp_path, msgs, capsys):
    from world4rl_bringup.cli import main

    bags = tmp_path / "bags"
    make_bag(bags, 0, msgs, steps=10, success=True, sim_success=lambda j: j >= 6)  # agree
    make_bag(bags, 1, msgs, steps=10, success=False, sim_success=lambda j: False)  # agree
    # The task was solved mid-episode and lost again, but the episode is labelled a success.
    make_bag(bags, 2, msgs, steps=10, success=True, sim_success=lambda j: 3 <= j < 6)
    # Labelled a failure while the flag said solved at the end.
    make_bag(bags, 3, msgs, steps=10, success=False, sim_success=lambda j: j >= 8)
    assert not read_episode(bags / "ep_000000").label_disagreement
    assert "last frame's label (sim_success_topic) is False" in read_episode(bags / "ep_000002").label_disagreement

    dataset = tmp_path / "ds"
    report = build([bags], dataset)
    assert [bag.name for bag, _ in report.label_disagreements] == ["ep_000002", "ep_000003"]
    assert len(report.converted) == 4  # converted as recorded: nothing is lost
    assert [bool(e["success"]) for e in Dataset(dataset).episodes] == [True, False, True, False]

    again = tmp_path / "ds2"
    assert main(["dataset", "build", str(bags), "--out", str(again)]) == 0
    err = capsys.readouterr().err
    assert f"LABELS DISAGREE {bags / 'ep_000002'}: EpisodeInfo.success is True" in err
    assert f"LABELS DISAGREE {bags / 'ep_000003'}: EpisodeInfo.success is False" in err
    assert "2 episode(s) converted with disagreeing success labels" in err


def test_info_names_episode_folders_a_stale_manifest_does_not_list(tmp_path, msgs, capsys):
    import shutil

    from world4rl_bringup.cli import main
    from world4rl_model.dataset import MANIFEST

    dataset = tmp_path / "ds"
    build([make_bag(tmp_path / "bags", 0, msgs)], dataset)
    shutil.copy(dataset / MANIFEST, tmp_path / "old_manifest.json")
    build([make_bag(tmp_path / "bags", 1, msgs)], dataset)
    shutil.copy(tmp_path / "old_manifest.json", dataset / MANIFEST)  # e.g. restored from a backup
    assert main(["dataset", "info", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "1 episodes" in out
    assert "NOT IN THE MANIFEST (kept, not read): ep_000001" in out


def test_actions_before_the_first_image_are_dropped(tmp_path, msgs):
    bag = make_bag(tmp_path, 0, msgs, steps=12)
    # Same bag, but with the images starting late: rebuild it with a 250 ms image gap.
    meta = EpisodeMeta(index=1, task="push", robot="sim", start_ns=T0)
    writer = EpisodeBagWriter(tmp_path / episode_dir_name(1), meta, msgs.store).start()
    writer.add_topic(IMAGE, "sensor_msgs/msg/Image")
    writer.add_topic(ACTION, "world4rl_msgs/msg/Action")
    for j in range(10):
        writer.write(ACTION, T0 + j * 100 * MS, msgs.action(T0 + j * 100 * MS, [0, 0, 0, 0]))
        stamp = T0 + (j * 100 + 50) * MS
        if j >= 3:
            writer.write(IMAGE, stamp, msgs.image(stamp, np.full((48, 64, 3), j, np.uint8)))
    meta.success = True
    late = writer.close(meta).path
    ep = read_episode(late)
    assert ep.dropped_leading_actions == 4  # actions 0..3 precede image 3 (at 350 ms)
    assert len(ep.frames) == 6
    assert ep.joint_positions is None  # no joint states in this bag
    assert (ep.frames[0] == 3).all()
    assert read_episode(bag).dropped_leading_actions == 0


def test_bad_bags_are_named_and_the_others_still_convert(tmp_path, msgs):
    bags = tmp_path / "bags"
    good = [make_bag(bags, 0, msgs), make_bag(bags, 5, msgs, task="stack", success=False)]
    no_images = make_bag(bags, 1, msgs, with_images=False)
    mono = make_bag(bags, 2, msgs, encoding="mono16")
    truncated = make_bag(bags, 3, msgs, flush_every_message=True)
    mcap = truncated / "ep_000003.mcap"
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    short_actions = make_bag(bags, 4, msgs, action_values=lambda j: [0.0, 0.0, 0.0])
    too_fast = make_bag(bags, 6, msgs, action_period_ms=33)
    out_of_range = make_bag(bags, 7, msgs, action_values=lambda j: [0.0, 2.5, 0.0, 0.0])
    unlabelled = make_bag(tmp_path / "other", 8, msgs, with_info=False)  # a .partial bag
    not_a_bag = tmp_path / "empty_dir"
    not_a_bag.mkdir()
    (not_a_bag / "notes.txt").write_text("x")

    lines = []
    report = build([bags, unlabelled, not_a_bag / "notes.txt"], tmp_path / "ds", log=lines.append)
    errors = {bag.name: error for bag, error in report.failed}
    assert sorted(b.name for b, _ in report.converted) == ["ep_000000", "ep_000005"]
    assert errors["ep_000001"].startswith(str(no_images))
    assert f"topic {IMAGE} is missing" in errors["ep_000001"]
    assert f"topic {IMAGE}: image 0: image encoding 'mono16' is not supported" in errors["ep_000002"]
    assert str(mono) in errors["ep_000002"]
    assert "cannot open the bag" in errors["ep_000003"]
    assert "ep_000003.mcap is truncated" in errors["ep_000003"]
    assert f"{ACTION}: " in errors["ep_000003"]  # what survives, per topic
    assert f"topic {ACTION}: message 0 has 3 values, expected 4" in errors["ep_000004"]
    assert str(short_actions) in errors["ep_000004"]
    assert f"topic {ACTION}: actions arrive at 30." in errors["ep_000006"]
    assert str(too_fast) in errors["ep_000006"]
    assert "is outside [-1.0, 1.0]" in errors["ep_000007"]
    assert str(out_of_range) in errors["ep_000007"]
    assert f"topic {EPISODE_INFO} is missing" in errors["ep_000008.partial"]
    assert any(p.name == "notes.txt" for p, _ in report.skipped)
    assert any(line.startswith("error: ") for line in lines)

    ds = Dataset(tmp_path / "ds")
    assert len(ds) == 2
    assert ds.tasks == ["push", "stack"]
    assert ds.episodes[0]["source"] == {"bag": str(good[0]), "sha256": bag_sha256(good[0])}
    assert ds.episodes[1]["success"] is False
    assert ds.episodes[0]["kind"] == "expert"
    np.testing.assert_array_equal(ds.episode(0)["frames"][2], np.full((64, 64, 3), image_value(6), np.uint8))
    assert ds.episode(0)["joint_positions"].shape == (12, 9)

    # A second run converts nothing twice.
    again = build([bags], tmp_path / "ds", log=lambda _: None)
    assert again.converted == []
    assert sum("already in the dataset" in reason for _, reason in again.skipped) == 2
    assert len(Dataset(tmp_path / "ds")) == 2


def test_partial_and_incomplete_bags_in_a_directory_are_skipped_with_a_reason(tmp_path, msgs):
    make_bag(tmp_path, 0, msgs)
    make_bag(tmp_path, 1, msgs, with_info=False)
    (tmp_path / "ep_000002.incomplete").mkdir()
    report = build([tmp_path], tmp_path / "ds", log=lambda _: None)
    assert [b.name for b, _ in report.converted] == ["ep_000000"]
    reasons = {b.name: r for b, r in report.skipped}
    assert "partial recording" in reasons["ep_000001.partial"]
    assert "left by a crash" in reasons["ep_000002.incomplete"]
    with pytest.raises(BagError, match="left by a crash and never closed"):
        read_episode(tmp_path / "ep_000002.incomplete")


def test_cli_build_info_video(tmp_path, msgs, capsys):
    import imageio.v2 as imageio

    from world4rl_bringup.cli import main

    bags = tmp_path / "bags"
    make_bag(bags, 0, msgs, steps=15)
    make_bag(bags, 1, msgs, steps=10, success=False, task="stack")
    make_bag(bags, 2, msgs, with_images=False)
    dataset = tmp_path / "ds"
    assert main(["dataset", "build", str(bags), "--out", str(dataset)]) == 1  # one bad bag
    out, err = capsys.readouterr()
    assert "2 converted, 0 skipped, 1 failed" in out
    assert f"FAILED {bags / 'ep_000002'}" in err
    assert f"topic {IMAGE} is missing" in err

    assert main(["dataset", "info", str(dataset)]) == 0
    info = capsys.readouterr().out
    assert "2 episodes, 23 transitions" in info
    assert "images 64x64 RGB, control rate 10 Hz" in info
    assert "push" in info
    assert "100.0%" in info
    assert "stack" in info
    assert "0.0%" in info

    video = tmp_path / "ep0.mp4"
    assert main(["dataset", "video", str(dataset), "--episode", "0", "--out", str(video)]) == 0
    reader = imageio.get_reader(str(video))
    frames = list(reader.iter_data())
    assert len(frames) == 15
    assert frames[0].shape == (256 + 48, 256, 3)
    assert math.isclose(reader.get_meta_data()["fps"], 10.0)
    assert main(["dataset", "video", str(dataset), "--episode", "7", "--out", str(video)]) == 2
    assert "episode 7 out of range" in capsys.readouterr().err
    assert main(["dataset", "info", str(tmp_path / "nothing")]) == 2


def test_the_action_rate_is_the_median_period_so_one_stall_does_not_fail_an_episode():
    from world4rl_bringup.bag_to_dataset import action_rate_hz

    ten_hz = [k * 100_000_000 for k in range(10)]
    stalled = ten_hz[:5] + [t + 600_000_000 for t in ten_hz[5:]]  # one 0.7 s gap in a 1 s episode
    assert action_rate_hz(ten_hz) == pytest.approx(10.0)
    assert action_rate_hz(stalled) == pytest.approx(10.0)  # the span would say 6.2 Hz
    assert action_rate_hz([k * 33_000_000 for k in range(10)]) == pytest.approx(30.3, abs=0.1)
    assert action_rate_hz([0]) == math.inf
