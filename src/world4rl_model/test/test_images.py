"""The camera -> learning frame conversion shared by the dataset builder and the runtime node."""

import numpy as np
import pytest

from world4rl_model.images import center_square, decode_image, to_learning_image


def test_center_crop_keeps_the_full_height_and_resize_averages():
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, 80:560] = 200  # the central square
    image[:, :80] = 10  # cropped away
    out = to_learning_image(image, 64)
    assert out.shape == (64, 64, 3)
    assert out.dtype == np.uint8
    assert np.all(out == 200)
    assert center_square(image).shape == (480, 480, 3)


def test_area_resize_of_a_checkerboard_is_its_mean():
    board = np.indices((128, 128)).sum(axis=0) % 2 * 255
    image = np.repeat(board[..., None], 3, axis=2).astype(np.uint8)
    out = to_learning_image(image, 64)
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


def test_decode_handles_padding_and_bgr():
    height, width, step = 2, 3, 12  # 9 bytes of pixels + 3 of padding per row
    rows = [bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0]), bytes([10, 11, 12, 13, 14, 15, 16, 17, 18, 0, 0, 0])]
    data = b"".join(rows)
    rgb = decode_image(data, width, height, "rgb8", step)
    assert rgb[1, 2].tolist() == [16, 17, 18]
    bgr = decode_image(data, width, height, "bgr8", step)
    assert bgr[1, 2].tolist() == [18, 17, 16]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((b"\0" * 12, 2, 2, "mono8"), "encoding 'mono8' is not supported"),
        ((b"\0" * 5, 2, 2, "rgb8"), "has 5 bytes, expected 12"),
        ((b"", 0, 2, "rgb8"), "size 0x2"),
    ],
)
def test_decode_refuses_bad_images_with_a_reason(args, message):
    with pytest.raises(ValueError, match=message):
        decode_image(*args)


def test_non_rgb_input_is_refused():
    with pytest.raises(ValueError, match="uint8 \\[H, W, 3\\]"):
        to_learning_image(np.zeros((4, 4), np.uint8))


def camera_like_frames(n: int) -> list[np.ndarray]:
    """640x480 frames with a camera's structure: smooth shading, sharp edges, texture and sensor noise."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:480, 0:640]
    frames = []
    for k in range(n):
        shade = 60 + 120 * (x / 640.0) * (0.5 + 0.5 * np.sin(y / 37.0 + k))
        image = np.stack([shade, shade * 0.8 + 20, 200 - shade * 0.5], axis=-1)
        image[(x - 300 - 10 * k) ** 2 + (y - 240) ** 2 < 60**2] = (220, 40, 30)  # an object with a sharp edge
        image[::16] += 25  # a texture of lines
        image += rng.normal(0.0, 4.0, image.shape)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


@pytest.mark.parametrize("size", [64, 32, 480])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_the_preallocated_conversion_gives_exactly_the_same_pixels(size, encoding):
    """The runtime node converts into one reused buffer (out=): the same pixels as a fresh array, frame
    after frame (nothing of the previous frame left), for the area resize, an upscale-free copy and BGR."""
    out = np.empty((size, size, 3), np.uint8)
    for frame in camera_like_frames(4):
        rgb = decode_image(frame.tobytes(), 640, 480, encoding)
        fresh = to_learning_image(rgb, size)
        assert to_learning_image(rgb, size, out=out) is out
        np.testing.assert_array_equal(out, fresh)


def test_a_wrong_output_buffer_is_refused():
    image = np.zeros((480, 640, 3), np.uint8)
    for out in (
        np.empty((32, 32, 3), np.uint8),
        np.empty((64, 64, 3), np.float32),
        np.empty((64, 64, 6), np.uint8)[..., ::2],
    ):
        with pytest.raises(ValueError, match="out must be a contiguous uint8"):
            to_learning_image(image, 64, out=out)
