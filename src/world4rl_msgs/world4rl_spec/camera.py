"""Image sizes: the ROS camera stream (RealSense colour defaults) and the learning resolution."""

CAMERA_WIDTH = 640
CAMERA_HEIGHT = 480
CAMERA_FPS = 30.0

# Square RGB frames the world model, reward classifier and policy see.
LEARNING_IMAGE_SIZE = 64
