"""A test peer: remembers the last EpisodeInfo it received and answers StartEpisode with it.

Lets a test prove that a world4rl_msgs message and a world4rl_msgs service both cross a process
boundary over real DDS: the service reply can only contain the task if the message arrived.
"""

from rclpy.node import Node

from world4rl_msgs.msg import EpisodeInfo
from world4rl_msgs.srv import StartEpisode
from world4rl_ros.node_main import run_node
from world4rl_spec import topics


class EpisodeEcho(Node):
    def __init__(self):
        super().__init__("episode_echo")
        self.last: EpisodeInfo | None = None
        self.create_subscription(EpisodeInfo, topics.EPISODE_INFO, self._on_info, 10)
        self.create_service(StartEpisode, topics.RECORDER_START, self._on_start)
        self.get_logger().info("ready")

    def _on_info(self, msg: EpisodeInfo) -> None:
        self.last = msg

    def _on_start(self, request: StartEpisode.Request, response: StartEpisode.Response) -> StartEpisode.Response:
        if self.last is None:
            response.ok = False
            response.message = "no EpisodeInfo received yet"
            return response
        response.ok = True
        response.message = f"{self.last.task}|{self.last.operator_note}|{request.task}"
        response.episode_index = self.last.episode_index + 1
        return response


def main() -> None:
    run_node(EpisodeEcho)


if __name__ == "__main__":
    main()
