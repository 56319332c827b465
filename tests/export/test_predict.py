"""Images of any size as Fashion-MNIST inputs (``export.predict``), and the clear line for a
file that is not a usable image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bnlab.export import predict as predict_module
from bnlab.export.predict import ImageError, image_input, predict


def garment(seed: int = 0) -> np.ndarray:
    """A light blob on black, 28 × 28 uint8, like a Fashion-MNIST image."""
    rows, columns = np.mgrid[0:28, 0:28]
    rng = np.random.default_rng(seed)
    blob = np.exp(-(((rows - 14) / 7.0) ** 2 + ((columns - 14) / 5.0) ** 2))
    return np.clip(255 * blob + rng.integers(0, 10, (28, 28)), 0, 255).astype(np.uint8)


def test_a_28x28_dataset_image_is_its_own_pixels_over_255(tmp_path):
    pixels = garment()
    Image.fromarray(pixels).save(tmp_path / "g.png")
    np.testing.assert_array_equal(image_input(tmp_path / "g.png"), pixels / np.float32(255))


def test_a_large_photo_on_white_is_inverted_squared_and_shrunk_to_the_same_image(tmp_path):
    pixels = garment()
    # 10× larger, dark object on a white background, wider than tall, as a JPEG.
    big = Image.fromarray(255 - pixels).resize((280, 280), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (400, 280), 255)
    canvas.paste(big, (60, 0))
    canvas.convert("RGB").save(tmp_path / "photo.jpg", quality=95)
    got = image_input(tmp_path / "photo.jpg")
    assert got.shape == (28, 28) and got.dtype == np.float32
    # Back on black and where it was, up to the rescaling (the canvas adds margins).
    assert got[:3].mean() < 0.05 and got[:, :3].mean() < 0.05  # dark borders
    assert np.corrcoef(got.ravel(), pixels.ravel())[0, 1] > 0.9


def test_transparency_is_composited_on_white_as_a_viewer_shows_it(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (0, 0, 0, 255)  # an opaque black square, transparent around it
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    got = image_input(tmp_path / "t.png")
    assert got[14, 14] > 0.9 and got[0, 0] < 0.1  # inverted: the square light, the rest dark


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"name,value\n1,2\n", "not an image Pillow can read"),
])
def test_files_that_are_not_images_are_one_line(tmp_path, content, message):
    (tmp_path / "f.png").write_bytes(content)
    with pytest.raises(ImageError, match=message):
        image_input(tmp_path / "f.png")


def test_a_truncated_image_and_a_huge_one_are_refused(tmp_path, monkeypatch):
    Image.fromarray(garment()).resize((300, 300)).save(tmp_path / "g.png")
    data = (tmp_path / "g.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot be decoded"):
        image_input(tmp_path / "cut.png")
    monkeypatch.setattr(predict_module, "MAX_PIXELS", 300 * 299)
    with pytest.raises(ImageError, match="300 × 300 pixels is more than 89,700; resize it"):
        image_input(tmp_path / "g.png")
    with pytest.raises(ImageError, match="no such file"):
        image_input(tmp_path / "missing.png")


def test_predictions_are_the_top_classes_by_probability():
    table = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
    first, second = predict(lambda x: table, np.zeros((2, 28, 28)), ["a", "b", "c"],
                            ["one", "two"], k=2)
    assert first.top == (("b", pytest.approx(0.6)), ("c", pytest.approx(0.3)))
    assert second.source == "two" and second.top[0][0] == "a"
