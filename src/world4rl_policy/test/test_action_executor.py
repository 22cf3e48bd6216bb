"""action_executor applies each demonstrated action once: a cycle without a new action keeps the
end-effector target (a zero step) rather than repeating the last step."""

import numpy as np
import pytest

from world4rl_msgs.msg import Action

pytestmark = pytest.mark.ros


@pytest.fixture
def executor(ros_domain):
    import rclpy

    from world4rl_policy.action_executor_node import ActionExecutor

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain)
    node = ActionExecutor(context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_each_action_is_applied_once(executor):
    assert executor._action_to_apply() is None  # nothing received yet
    executor._on_action(Action(values=[0.5, -0.5, 0.2, 1.0], source="expert"))
    np.testing.assert_allclose(executor._action_to_apply(), [0.5, -0.5, 0.2, 1.0])
    # The next cycles find no new action: no further motion, the gripper state stays.
    np.testing.assert_allclose(executor._action_to_apply(), [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(executor._action_to_apply(), [0.0, 0.0, 0.0, 1.0])
    executor._on_action(Action(values=[-1.0, 0.0, 0.0, -1.0], source="expert"))
    np.testing.assert_allclose(executor._action_to_apply(), [-1.0, 0.0, 0.0, -1.0])
    np.testing.assert_allclose(executor._action_to_apply(), [0.0, 0.0, 0.0, -1.0])
    assert executor.action.tolist() == [-1.0, 0.0, 0.0, -1.0]  # what was received is untouched
