"""franka_gripper's move / grasp / homing actions for the sim robot (world4rl_msgs/action/Gripper*,
the same fields as franka_msgs), on world4rl_spec's relative names. Each goal is handed to the
simulation thread (SimStepper), which ramps the fingers and judges the outcome; the action
callback waits for it, publishing the finger width as feedback, and answers cancels."""

from __future__ import annotations

from rclpy.action import ActionServer, CancelResponse, GoalResponse

from world4rl_msgs.action import GripperGrasp, GripperHoming, GripperMove
from world4rl_sim.sim_stepper import SimStepper
from world4rl_spec import GRIPPER_OPEN_WIDTH_M, topics


class GripperActionServers:
    def __init__(self, node, stepper: SimStepper, default_speed: float, width_tolerance: float, callback_group):
        """`default_speed`: finger speed [m/s] when a goal gives speed <= 0; `width_tolerance`: a
        move or homing succeeds when the width ends within this of the goal [m]."""
        self.stepper = stepper
        self.default_speed = float(default_speed)
        self.width_tolerance = float(width_tolerance)
        self.servers = [
            ActionServer(
                node,
                action_type,
                name,
                execute_callback=execute,
                goal_callback=lambda _goal: GoalResponse.ACCEPT,
                cancel_callback=lambda _handle: CancelResponse.ACCEPT,
                callback_group=callback_group,
            )
            for action_type, name, execute in (
                (GripperMove, topics.GRIPPER_MOVE, self._execute_move),
                (GripperGrasp, topics.GRIPPER_GRASP, self._execute_grasp),
                (GripperHoming, topics.GRIPPER_HOMING, self._execute_homing),
            )
        ]

    def _execute_move(self, goal_handle):
        g = goal_handle.request
        width = float(g.width)
        if not 0.0 <= width <= GRIPPER_OPEN_WIDTH_M:
            return self._finish(goal_handle, GripperMove.Result(), False, f"width {width} outside [0, 0.08] m")
        tol = self.width_tolerance
        return self._run_goal(goal_handle, GripperMove, "move", width, g.speed, width - tol, width + tol)

    def _execute_grasp(self, goal_handle):
        g = goal_handle.request
        # Like franka_gripper: close on the object (fingers driven to zero width, the position servo
        # then squeezes), success if the width where the fingers stop is within the epsilons.
        low, high = float(g.width) - float(g.epsilon_inner), float(g.width) + float(g.epsilon_outer)
        return self._run_goal(goal_handle, GripperGrasp, "grasp", 0.0, g.speed, low, high)

    def _execute_homing(self, goal_handle):
        tol = self.width_tolerance
        w = GRIPPER_OPEN_WIDTH_M
        return self._run_goal(goal_handle, GripperHoming, "homing", w, 0.0, w - tol, w + tol)

    def _run_goal(self, goal_handle, action_type, kind, target, speed, low, high):
        speed = float(speed) if speed > 0 else self.default_speed
        goal = self.stepper.begin_gripper_goal(kind, target, speed, low, high)
        feedback = action_type.Feedback()
        while not goal.done.wait(0.05):
            if goal_handle.is_cancel_requested:
                self.stepper.cancel_gripper_goal(goal)
                goal_handle.canceled()
                return action_type.Result(success=False, error="canceled")
            if self.stepper.stopped:
                break
            feedback.current_width = float(goal.width)
            goal_handle.publish_feedback(feedback)
        return self._finish(goal_handle, action_type.Result(), goal.success, goal.error)

    @staticmethod
    def _finish(goal_handle, result, success: bool, error: str):
        result.success = bool(success)
        result.error = error
        if success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result
