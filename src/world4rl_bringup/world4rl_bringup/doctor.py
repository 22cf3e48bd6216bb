"""`world4rl doctor`: check, one line each, that every real component of the stack works here."""

import argparse
import importlib
import os
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-render", action="store_true", help="do not try an offscreen MuJoCo render")


def _check(name: str, fn) -> bool:
    start = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:  # the point is to report any failure, whatever it is
        print(f"  FAIL  {name}: {type(exc).__name__}: {exc}")
        return False
    print(f"  ok    {name}: {detail} ({(time.perf_counter() - start) * 1e3:.0f} ms)")
    return True


def _rclpy() -> str:
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("world4rl_doctor", context=context)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    return f"rmw {os.environ.get('RMW_IMPLEMENTATION', 'default')}, domain {os.environ.get('ROS_DOMAIN_ID', '0')}"


def _messages() -> str:
    from world4rl_msgs.msg import EpisodeInfo, PolicyStatus  # noqa: F401
    from world4rl_msgs.srv import StartEpisode  # noqa: F401

    return "world4rl_msgs imports"


def _dds_profile() -> str:
    path = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "")
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"FASTRTPS_DEFAULT_PROFILES_FILE={path!r} is not a file")
    return path


def _torch() -> str:
    torch = importlib.import_module("torch")
    cuda = torch.cuda.is_available()
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda {'yes' if cuda else 'no'}"


def _mujoco_render() -> str:
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    import mujoco

    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
    with mujoco.Renderer(model, 64, 64) as renderer:
        renderer.update_scene(mujoco.MjData(model))
        image = renderer.render()
    return f"mujoco {mujoco.__version__}, MUJOCO_GL={os.environ['MUJOCO_GL']}, rendered {image.shape}"


def run(args: argparse.Namespace) -> int:
    checks = [("rclpy", _rclpy), ("messages", _messages), ("dds profile", _dds_profile), ("torch", _torch)]
    if not args.skip_render:
        checks.append(("mujoco render", _mujoco_render))
    print("world4rl doctor")
    failed = [name for name, fn in checks if not _check(name, fn)]
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(failed)}")
        return 1
    print("all checks passed")
    return 0
