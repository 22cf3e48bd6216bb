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
