# The robot PC: ROS 2 Jazzy, franka_ros2 built from source (as its README says), realsense2_camera
# with librealsense, and this workspace. Build from the workspace root:
#   docker build -f docker/robot-pc.Dockerfile -t world4rl/robot-pc .
# Run with the host network and real-time privileges for libfranka (see README, "On the robot PC").
FROM ros:jazzy-ros-base-noble

# A franka_ros2 release for Jazzy (v3.x, FR3). Pin the tag your robot's system image supports.
ARG FRANKA_ROS2_REF=jazzy
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive

# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        git python3-vcstool python3-venv python3-pip \
        ros-jazzy-realsense2-camera ros-jazzy-librealsense2 \
        ros-jazzy-rmw-fastrtps-cpp ros-jazzy-sros2 ros-jazzy-std-srvs ros-jazzy-trajectory-msgs \
        libosmesa6 libegl1 libgl1-mesa-dri libtcmalloc-minimal4 ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# franka_ros2 and its dependencies (libfranka, franka_description) from source.
WORKDIR /opt/franka_ws
# hadolint ignore=DL3008
RUN git clone --depth 1 --branch "${FRANKA_ROS2_REF}" https://github.com/frankarobotics/franka_ros2.git src/franka_ros2 \
    && vcs import src --recursive --skip-existing < src/franka_ros2/franka.repos \
    && apt-get update \
    && rosdep update --rosdistro jazzy \
    && rosdep install --from-paths src --ignore-src --rosdistro jazzy -y \
    && . /opt/ros/jazzy/setup.bash \
    && colcon build --cmake-args -DCMAKE_BUILD_TYPE=Release \
    && rm -rf build log /var/lib/apt/lists/*

# Python packages beside apt's rclpy: a venv that still sees the system site-packages.
RUN python3 -m venv --system-site-packages /opt/venv
COPY docker/requirements-robot.txt /tmp/requirements-robot.txt
RUN /opt/venv/bin/pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements-robot.txt
ENV PATH=/opt/venv/bin:$PATH

# This workspace, built on top of franka_ros2's.
WORKDIR /opt/world4rl_ws
COPY src ./src
COPY colcon.meta ./
RUN . /opt/franka_ws/install/setup.bash \
    && colcon build --metas colcon.meta --cmake-args -DCMAKE_BUILD_TYPE=Release \
    && rm -rf build log

ENV FASTRTPS_DEFAULT_PROFILES_FILE=/opt/world4rl_ws/install/world4rl_bringup/share/world4rl_bringup/config/fastdds_shm.xml \
    RMW_IMPLEMENTATION=rmw_fastrtps_cpp \
    MUJOCO_GL=egl
COPY docker/robot-pc-entrypoint.sh /ros_entrypoint.sh
ENTRYPOINT ["/ros_entrypoint.sh"]
CMD ["bash"]
