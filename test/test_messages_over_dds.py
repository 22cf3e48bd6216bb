"""A world4rl_msgs message and a world4rl_msgs service cross two processes over real DDS."""

import os
from pathlib import Path

import pytest

from world4rl_msgs.msg import EpisodeInfo
from world4rl_msgs.srv import StartEpisode
from world4rl_spec import topics
from world4rl_testing import wait_until

SUPPORT = str(Path(__file__).parent / "support")

pytestmark = pytest.mark.ros


def test_episode_info_and_start_service_cross_processes(launch_node, ros_node):
    peer = launch_node(
        "episode_echo_node", "episode_echo", env={"PYTHONPATH": SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    )
    client = ros_node.create_client(StartEpisode, topics.RECORDER_START)
    assert wait_until(lambda: client.service_is_ready(), timeout=20.0, nodes=[peer]), "service never appeared"

    publisher = ros_node.create_publisher(EpisodeInfo, topics.EPISODE_INFO, 10)
    info = EpisodeInfo(task="push", episode_index=41, success=True, operator_note="clean grasp", robot="sim")
    info.start_stamp.sec = 100

    replies: list[StartEpisode.Response] = []

    def reply_names_the_task() -> bool:
        publisher.publish(info)
        future = client.call_async(StartEpisode.Request(task="next-task"))
        assert wait_until(future.done, timeout=5.0, nodes=[peer])
        replies.append(future.result())
        return replies[-1].ok

    # Discovery of the subscription may lag the service: republish until the peer has the message.
    assert wait_until(reply_names_the_task, timeout=20.0, interval=0.2, nodes=[peer])
    response = replies[-1]
    assert response.message == "push|clean grasp|next-task"
    assert response.episode_index == 42


def test_dead_node_is_reported_with_its_stderr(ros_domain, tmp_path):
    from world4rl_testing import NodeDiedError, NodeProcess

    node = NodeProcess("world4rl_no_such_module", "ghost", log_dir=tmp_path).start()
    with pytest.raises(NodeDiedError, match="No module named world4rl_no_such_module"):
        wait_until(lambda: False, timeout=20.0, nodes=[node])
    assert node.stop() not in (None, 0)
