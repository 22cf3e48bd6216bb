"""action_executor: turns demonstrated actions (world4rl_msgs/Action) into checked arm commands.

The arm's half of demonstration collection: a teleoperator, or the sim's scripted expert,
publishes normalised end-effector actions on world4rl/action; this node runs each through the
same command path the policy runner uses (FR3 IK, then the safety filter) and sends the result to
the arm's controller and gripper. Disarmed at start: `action_executor/arm` (std_srvs/SetBool)
arms it, with the policy runner's checks (a current, finite joint state inside the limits, one
joint-state publisher, no other commander on the arm's topic; refused with the reason otherwise),
and any fault (stale action or joint state, NaN, an action of the wrong length, a jump, the
episode time limit) holds and disarms. Episodes, the gripper goals and the read-only, checked
parameters work as in policy_runner: re-arming continues the episode's time limit until
`action_executor/new_episode` (std_srvs/Trigger). Every name is relative (world4rl_spec.topics):
the node works in any namespace.

The action's own stamp feeds the filter's input watchdog: if the demonstrator stops publishing,
the arm holds within `safety.image_timeout_s`.

Each action is carried out when it arrives, once, as one recorded action is one step of the
dataset; a timer at the control rate runs a cycle only when no action came for 1.5 periods (the
watchdog, and a zero step that keeps the end-effector target). A timer-driven executor delayed
each action by up to a period and, on a loaded machine, applied some twice: the scripted expert,
which steers the target its last command heads for, then saw its previous step missing, repeated
it, and oscillated around its waypoint.
"""

import time

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger

from world4rl_msgs.msg import Action, PolicyStatus
from world4rl_policy.command_path import CommandPath
from world4rl_policy.ros_adapters import (
    ArmCommandPublisher,
    ArmStateNode,
    RefusalLogger,
    declare_command_params,
    stamp_seconds,
    status_message,
)
from world4rl_ros.node_main import run_node
from world4rl_spec import topics


class ActionExecutor(ArmStateNode):
    def __init__(self, **node_kwargs):
        super().__init__("action_executor", **node_kwargs)
        params = declare_command_params(self)
        rate, mode, command_topic = params.control_rate_hz, params.command_mode, params.command_topic
        self.path = CommandPath(params.safety, params=params.path)
        self.commands = ArmCommandPublisher(
            self, mode, command_topic, 1.0 / rate, params.gripper_speed, params.grasp_force
        )
        self.refusals = RefusalLogger(self)
        self.joints: np.ndarray | None = None
        self.joint_stamp: float | None = None
        self.action: np.ndarray | None = None
        self.action_stamp: float | None = None
        self.action_count = 0  # actions received
        self.applied_count = 0  # the action_count of the last action applied
        self.armed_at = 0.0
        self.period_s = 1.0 / rate
        self.last_cycle = 0.0  # monotonic time of the last cycle
        # Joint states come fast and only the newest matters: best effort, as sensors publish.
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_joints, qos_profile_sensor_data)
        self.create_subscription(
            Action, topics.ACTION, self._on_action, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.status_publisher = self.create_publisher(PolicyStatus, topics.POLICY_STATUS, 10)
        arm_service = self.create_service(SetBool, topics.EXECUTOR_ARM, self._on_arm)
        self.create_service(Trigger, topics.EXECUTOR_NEW_EPISODE, self._on_new_episode)
        self.create_timer(self.period_s, self._on_timer)
        self.get_logger().info(
            f"disarmed; commands go to {self.commands.publisher.topic_name} ({mode}); "
            f"call {arm_service.service_name} to start"
        )

    def _on_action(self, msg: Action) -> None:
        self.action = np.asarray(msg.values, dtype=np.float64)
        self.action_stamp = stamp_seconds(msg.header.stamp)
        self.action_count += 1
        self._cycle()

    def _on_timer(self) -> None:
        if time.monotonic() - self.last_cycle >= 1.5 * self.period_s:
            self._cycle()

    def _action_to_apply(self) -> np.ndarray | None:
        """The newest action, or, once it has been applied, the same action with a zero motion (the
        gripper part stays: it is a state, not a step)."""
        action = self.action
        if action is None or self.applied_count != self.action_count:
            self.applied_count = self.action_count
            return action
        if action.shape == (len(action),) and len(action) >= 3:
            action = action.copy()
            action[:3] = 0.0
        return action

    def arm(self, now: float) -> tuple[bool, str]:
        """Arm (continuing the episode; see new_episode) after policy_runner's checks, or (False, why not)."""
        if (refused := self.arm_path(now)) is not None:
            return refused
        # Only actions decided after arming count: an old one must not move the arm.
        self.action = self.action_stamp = None
        self.armed_at = now
        return True, "armed"

    def _cycle(self) -> None:
        start = time.perf_counter()
        self.last_cycle = time.monotonic()
        now = self._now()
        if self.joints is None:
            return
        if self.path.armed and self.action is None and now - self.armed_at < self.path.filter.params.image_timeout_s:
            return  # armed, first action not here yet: send nothing, the controller holds
        cycle = self.path.step(
            joint_positions=self.joints,
            action=self._action_to_apply(),
            now=now,
            input_stamp=self.action_stamp,
            joint_state_stamp=self.joint_stamp,
        )
        self.commands.apply(cycle)
        self.refusals.log(cycle, now)
        latency_ms = (time.perf_counter() - start) * 1e3
        status = self.path.filter.status()
        self.status_publisher.publish(status_message(cycle, status, latency_ms, "", self.get_clock().now().to_msg()))


def main(args=None) -> None:
    # A bad parameter: one clear line naming it, not a traceback.
    run_node(ActionExecutor, args=args, setup_errors=(ValueError,), setup_exit_code=2, logger_name="action_executor")


if __name__ == "__main__":
    main()
