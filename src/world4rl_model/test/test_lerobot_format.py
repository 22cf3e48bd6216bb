"""The LeRobotDataset v3.0 pieces that need no data: statistics as LeRobot computes them, the
tasks file as pandas writes it, the data schema, and the --action-map language."""

from __future__ import annotations

import json

import numpy as np
import pytest

from world4rl_model import lerobot_format as fmt
from world4rl_model.lerobot_import import LeRobotImportError, parse_action_map, task_name


def test_vector_stats_and_their_aggregation_agree_with_the_whole():
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (300, 4)).astype(np.float32)
    whole = fmt.vector_stats(data)
    np.testing.assert_allclose(whole["mean"], data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(whole["std"], data.std(0), rtol=1e-3)
    np.testing.assert_array_equal(whole["min"], data.min(0))
    np.testing.assert_array_equal(whole["count"], [300])
    np.testing.assert_allclose(whole["q50"], np.median(data, 0), atol=0.02)  # histogram quantiles (5000 bins)
    parts = fmt.aggregate_stats([{"a": fmt.vector_stats(data[:100])}, {"a": fmt.vector_stats(data[100:])}])["a"]
    for key in ("min", "max", "mean", "std", "count"):
        np.testing.assert_allclose(parts[key], whole[key], rtol=1e-4, err_msg=key)
    scalar = fmt.vector_stats(np.arange(5) / 10.0)  # a scalar feature: stats of shape [1]
    assert {k: v.shape for k, v in scalar.items()} == {k: (1,) for k in scalar}
    flags = fmt.vector_stats(np.array([[False], [True], [True]]))
    assert flags["min"].dtype == np.bool_
    assert flags["mean"][0] == pytest.approx(2 / 3)


def test_image_stats_sample_frames_and_scale_to_unit_range():
    frames = np.zeros((10, 8, 6, 3), np.uint8)
    frames[..., 0] = 255
    stats = fmt.image_stats(frames)
    assert stats["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(stats["mean"].reshape(3), [1.0, 0.0, 0.0])
    assert stats["count"].tolist() == [10]  # fewer than 100 frames: every frame is sampled
    assert len(fmt.sample_indices(1000)) == 177  # LeRobot's heuristic (1000 ** 0.75)


def test_tasks_file_reads_back_with_its_pandas_index(tmp_path):
    import pyarrow.parquet as pq

    fmt.write_tasks(tmp_path / "meta" / "tasks.parquet", ["push", "pick up the cube"])
    assert fmt.read_tasks(tmp_path) == ["push", "pick up the cube"]
    metadata = json.loads(pq.read_schema(tmp_path / "meta" / "tasks.parquet").metadata[b"pandas"])
    assert metadata["index_columns"] == ["__index_level_0__"]  # pd.read_parquet restores the task strings as index


def test_data_schema_is_what_the_datasets_library_writes():
    features = fmt.build_features("front", 48, 64, with_state=True)
    schema = fmt.data_schema(features)
    assert schema.names == ["observation.state", "action", "next.success", "success", *fmt.DEFAULT_FEATURES]
    assert str(schema.field("action").type) == "fixed_size_list<item: float>[4]"
    hf = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert hf["action"] == {"feature": {"dtype": "float32", "_type": "Value"}, "length": 4, "_type": "List"}
    assert hf["timestamp"] == {"dtype": "float32", "_type": "Value"}


ARM = {"dtype": "float32", "shape": [7], "names": ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]}


def test_action_map_terms():
    mapping = parse_action_map("x*50, y*-50,2*0.5+0.1,gripper*2-1", "action", ARM)
    assert (mapping.columns, mapping.scales, mapping.offsets) == ([0, 1, 2, 6], [50, -50, 0.5, 2], [0, 0, 0.1, -1])
    actions = np.array([[0.01, 0.02, 0.2, 0, 0, 0, 1.0]])
    np.testing.assert_allclose(mapping.apply(actions), [[0.5, -1.0, 0.2, 1.0]], atol=1e-6)
    with pytest.raises(LeRobotImportError, match=r"action has shape \[7\] \(x, y, z, roll, pitch, yaw, gripper\)"):
        parse_action_map("identity", "action", ARM)
    with pytest.raises(LeRobotImportError, match="term for dz 'z\\*\\*2'"):
        parse_action_map("x,y,z**2,gripper", "action", ARM)
    with pytest.raises(LeRobotImportError, match="'9' is not an index below 7"):
        parse_action_map("x,y,9,gripper", "action", ARM)


def test_task_strings_become_task_names():
    assert task_name("Pick up the red cube.") == "Pick_up_the_red_cube"
    assert task_name("../../etc") == "etc"
    assert task_name("!!!") == "task"
    assert len(task_name("a" * 100)) == 64
