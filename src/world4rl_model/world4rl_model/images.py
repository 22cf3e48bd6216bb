"""Camera frame -> learning frame: the one conversion every path uses (dataset builder, runtime
policy node, evaluation), so a policy sees the same pixels in training and on the robot.

A camera frame (e.g. 640x480 rgb8) is centre-cropped to a square (the full height; a
pinhole camera's vertical field of view is kept) and resized with area averaging to
LEARNING_IMAGE_SIZE. The simulator renders its learning frames directly as squares with the same
vertical field of view, which matches this crop up to anti-aliasing.
"""

from __future__ import annotations

import cv2
import numpy as np

from world4rl_spec import LEARNING_IMAGE_SIZE

ENCODINGS = ("rgb8", "bgr8")


def center_square(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def to_learning_image(image: np.ndarray, size: int = LEARNING_IMAGE_SIZE, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB -> uint8 [size, size, 3] RGB (contiguous). `out`: a contiguous uint8
    [size, size, 3] buffer to write into (the runtime node's, pre-allocated; the same pixels)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB image, got {image.dtype} {list(image.shape)}")
    if out is not None and (out.shape != (size, size, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous):
        raise ValueError(f"out must be a contiguous uint8 [{size}, {size}, 3] array, got {out.dtype} {list(out.shape)}")
    square = center_square(image)
    if square.shape[0] == size:
        if out is None:
            return np.ascontiguousarray(square)
        np.copyto(out, square)
        return out
    interpolation = cv2.INTER_AREA if square.shape[0] > size else cv2.INTER_LINEAR
    if out is None:
        return cv2.resize(square, (size, size), interpolation=interpolation)
    resized = cv2.resize(square, (size, size), dst=out, interpolation=interpolation)
    if resized is not out:  # cv2 writes into a matching dst; never hand back another buffer
        np.copyto(out, resized)
    return out


def decode_image(data: bytes, width: int, height: int, encoding: str, step: int | None = None) -> np.ndarray:
    """Raw sensor_msgs/Image fields -> uint8 [H, W, 3] RGB. Raises ValueError naming what is wrong."""
    if encoding not in ENCODINGS:
        raise ValueError(f"image encoding {encoding!r} is not supported (expected one of {list(ENCODINGS)})")
    row = width * 3
    step = step or row
    if width <= 0 or height <= 0 or step < row:
        raise ValueError(f"image size {width}x{height} with step {step} is invalid for {encoding}")
    if len(data) < step * height:
        raise ValueError(f"image data has {len(data)} bytes, expected {step * height} for {width}x{height} {encoding}")
    buffer = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)
    image = buffer[:, :row].reshape(height, width, 3)
    return image[..., ::-1] if encoding == "bgr8" else image
