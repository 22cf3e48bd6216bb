"""expert_demonstrator: the sim's scripted expert as a demonstrator on the stack's action topic.

The sim_robot node computes its task's scripted-expert action from the true object poses and
publishes it on the sim-only topic sim_only/expert_action. This node plays the teleoperator: it
republishes each action on world4rl/action (source "expert"), with optional Gaussian noise on
the motion, exactly where a human's keyboard or SpaceMouse commands go. The action executor
then moves the arm and the recorder records the action, as with a human demonstrator.
"""

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from world4rl_msgs.msg import Action
from world4rl_ros.node_main import run_node
from world4rl_spec import ACTION_HIGH, ACTION_LOW, topics

ACTION_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class ExpertDemonstrator(Node):
    def __init__(self):
        super().__init__("expert_demonstrator")
        self.noise_std = float(
            self.declare_parameter(
                "noise_std", 0.0, ParameterDescriptor(description="std of Gaussian noise on dx, dy, dz")
            ).value
        )
        seed = int(self.declare_parameter("seed", 0, ParameterDescriptor(description="noise seed")).value)
        self.rng = np.random.default_rng(seed)
        self.publisher = self.create_publisher(Action, topics.ACTION, ACTION_QOS)
        self.create_subscription(Action, topics.SIM_EXPERT_ACTION, self._on_expert, ACTION_QOS)

    def _on_expert(self, msg: Action) -> None:
        values = np.asarray(msg.values, dtype=np.float64)
        if self.noise_std > 0:
            values[:3] += self.rng.normal(0.0, self.noise_std, 3)
        out = Action(values=np.clip(values, ACTION_LOW, ACTION_HIGH).astype(np.float32).tolist(), source="expert")
        out.header.stamp = self.get_clock().now().to_msg()
        out.header.frame_id = msg.header.frame_id
        self.publisher.publish(out)


def main(args=None) -> None:
    run_node(ExpertDemonstrator, args=args)


if __name__ == "__main__":
    main()
