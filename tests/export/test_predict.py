"""Images of any size as Fashion-MNIST inputs (``export.predict``), and the clear line for a
file that is not a usable image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

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
    monkeypatch.setenv("BNLAB_MAX_IMAGE_PIXELS", str(300 * 299))
    with pytest.raises(ImageError, match=r"g.png \(300 × 300\) is 90,000 pixels, over "
                       r"bnlab's limit of 89,700 for an image; .* BNLAB_MAX_IMAGE_PIXELS=90k"):
        image_input(tmp_path / "g.png")
    with pytest.raises(ImageError, match="no such file"):
        image_input(tmp_path / "missing.png")


def photo(seed: int = 0) -> np.ndarray:
    """An upright 'photo': a dark garment on a light background, 60 wide × 90 tall, whose
    top and bottom and left and right differ, so a turned or mirrored copy is told apart."""
    pixels = 255 - np.asarray(Image.fromarray(garment(seed)).resize((60, 90)), np.uint8)
    pixels[:12, 5:25] = 0  # a dark collar at the top left: no turn or mirror maps it onto itself
    return pixels


@pytest.mark.parametrize("orientation, stored_as", [
    (3, lambda a: np.rot90(a, 2)),  # stored upside down
    (6, lambda a: np.rot90(a, 1)),  # stored turned a quarter left; the viewer turns it right
    (8, lambda a: np.rot90(a, -1)),
    (2, lambda a: a[:, ::-1]),  # mirrored
])
def test_exif_orientation_is_applied_as_a_viewer_applies_it(tmp_path, orientation, stored_as):
    upright = photo()
    Image.fromarray(upright).save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored_as(upright))).save(
        tmp_path / "turned.jpg", quality=95, exif=exif)
    want, got = image_input(tmp_path / "upright.jpg"), image_input(tmp_path / "turned.jpg")
    assert np.abs(got - want).max() < 0.03  # JPEG's blocks fall differently when turned
    # and not as if the tag were ignored
    Image.fromarray(np.ascontiguousarray(stored_as(upright))).save(tmp_path / "plain.jpg",
                                                                   quality=95)
    assert np.abs(image_input(tmp_path / "plain.jpg") - want).max() > 0.3


@pytest.mark.parametrize("mode, save", [
    ("16-bit PNG", lambda a, f: Image.fromarray(a.astype(np.uint16) * 257).save(f + ".png")),
    ("16-bit TIFF", lambda a, f: Image.fromarray(a.astype(np.uint16) * 257).save(f + ".tif")),
    ("float TIFF in [0, 1]", lambda a, f: Image.fromarray(
        a.astype(np.float32) / 255, "F").save(f + ".tif")),
    ("float TIFF in [-1, 1]", lambda a, f: Image.fromarray(
        a.astype(np.float32) / 127.5 - 1, "F").save(f + ".tif")),
])
def test_deep_images_are_scaled_by_their_range_like_their_8_bit_twin(tmp_path, mode, save):
    smooth = 255 - np.asarray(Image.fromarray(garment()).resize((60, 90)), np.float64)
    # the full range, so min-max scaling is exact too; smooth, as the 8-bit twin's resize
    # clips Lanczos' overshoot at sharp edges to whole levels and the deep image's does not
    pixels = np.round(255 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "twin.png")
    save(pixels, str(tmp_path / "deep"))
    deep = next(tmp_path.glob("deep.*"))
    np.testing.assert_allclose(image_input(deep), image_input(tmp_path / "twin.png"),
                               atol=1.5 / 255)  # the twin's resize rounds to whole levels


def test_a_nan_pixel_is_named(tmp_path):
    values = np.full((30, 30), 0.5, np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values, "F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageError, match="1 pixels are NaN or infinite"):
        image_input(tmp_path / "nan.tif")


def test_alpha_is_composited_like_its_flattened_twin(tmp_path):
    rgb = np.stack([photo()] * 3, axis=-1)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :15] = 0  # a transparent strip: white behind it, as a viewer shows it
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "a.png")
    flat = rgb.copy()
    flat[:, :15] = 255
    Image.fromarray(flat).save(tmp_path / "flat.png")
    np.testing.assert_array_equal(image_input(tmp_path / "a.png"),
                                  image_input(tmp_path / "flat.png"))


def test_a_long_thin_strip_is_shrunk_before_it_is_squared(tmp_path):
    strip = np.zeros((1, 200_000), np.uint8)
    strip[0, 90_000:110_000] = 255
    Image.fromarray(strip).save(tmp_path / "strip.png")
    got = image_input(tmp_path / "strip.png")
    assert got.shape == (28, 28) and got[14].max() > got[0].max()  # the strip, faint but lit


def test_predictions_are_the_top_classes_by_probability():
    table = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
    first, second = predict(lambda x: table, np.zeros((2, 28, 28)), ["a", "b", "c"],
                            ["one", "two"], k=2)
    assert first.top == (("b", pytest.approx(0.6)), ("c", pytest.approx(0.3)))
    assert second.source == "two" and second.top[0][0] == "a"
