"""Images of any size as Fashion-MNIST inputs, and a model's top classes for them.

Fashion-MNIST images are 28 × 28 grayscale, the object light on a black background, centred
and filling the frame. A picture is brought to that form:

1. read as a regular file of at most ``limits.IMAGE_BYTES`` and decoded by Pillow (PNG, JPEG,
   TIFF, …); a file that is not an image, is truncated or empty, or declares more than
   ``limits.IMAGE_PIXELS`` pixels is an ``ImageError`` (one line; nothing decoded beyond the
   header for the last);
2. turned upright as its EXIF orientation says (as a viewer shows a phone's photo);
3. converted to grayscale: 8-bit images by Pillow (``L``; transparency composited on white, as
   a viewer shows it); 16-bit images scaled by 65,535 (a 32-bit integer image whose values
   fit 16 bits likewise, else by its own minimum and maximum); float images taken as they
   are when within [0, 1], else scaled by their minimum and maximum; a NaN or infinite pixel
   is an ``ImageError``;
4. shrunk (Lanczos) to at most ``WORKING_SIDE`` pixels on its longer side, so that step 6's
   square stays small whatever the shape (a 10⁶ × 1 strip included);
5. a photo of an object on a light background (the common case: a product photo) is
   inverted, so that the object is light on dark: the background is judged by the mean of
   the image's outermost rows and columns (> 127 of 255: light);
6. padded with the background to a square, centred, and resized to 28 × 28 (Lanczos);
7. scaled to [0, 1] as the notebook scales its pixels (/255).

This cannot make a photo look like the dataset (whose garments were cut out and centred by
hand), so a prediction on a photo is a best effort; the test images' own predictions are
what the model's accuracy measures.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bnlab.errors import BnlabError
from bnlab.io import NotAFile, read_regular
from bnlab.limits import IMAGE_BYTES, IMAGE_PIXELS, LimitExceeded

SIDE = 28
WORKING_SIDE = 16 * SIDE  # step 4: far more detail than 28 × 28 keeps, a small square
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageError(BnlabError):
    """An image file that cannot be used, and why."""


def image_input(path: Path) -> np.ndarray:
    """The file at ``path`` as one Fashion-MNIST-like input: ``(28, 28)`` float32 in [0, 1]
    (module docstring)."""
    path = Path(path)
    try:
        data = read_regular(path, limit=IMAGE_BYTES)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (NotAFile, LimitExceeded) as err:
        raise ImageError(f"{path} {err.reason}") from None
    except OSError as err:
        raise ImageError(f"{path}: cannot be read ({err.strerror})") from None
    if not data:
        raise ImageError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as image:
            warnings.simplefilter("error")  # Pillow warns of corrupt data: refused instead
            width, height = image.size
            try:
                IMAGE_PIXELS.check(width * height, f"{path} ({width} × {height})")
            except LimitExceeded as err:
                raise ImageError(str(err)) from None
            image.load()
            gray = _grayscale(ImageOps.exif_transpose(image), path)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (PNG, JPEG, …)") from None
    except (OSError, SyntaxError, ValueError, TypeError, Warning,
            Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: the image cannot be decoded ({err})") from None
    if max(gray.size) > WORKING_SIDE:
        scale = WORKING_SIDE / max(gray.size)
        gray = gray.resize((max(1, round(gray.size[0] * scale)),
                            max(1, round(gray.size[1] * scale))), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:
        gray = ImageOps.invert(gray) if gray.mode == "L" else Image.fromarray(255 - pixels, "F")
        border = 255 - border
    side = max(gray.size)
    fill = float(border.mean())
    square = Image.new(gray.mode, (side, side), round(fill) if gray.mode == "L" else fill)
    square.paste(gray, ((side - gray.size[0]) // 2, (side - gray.size[1]) // 2))
    small = square.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(small, np.float32) / 255.0, 0.0, 1.0)


def _grayscale(image: Image.Image, path: Path) -> Image.Image:
    """Step 3 of the module docstring: an ``L`` image, or for 16-bit, 32-bit and float
    images an ``F`` image of the same brightness scale (0 … 255)."""
    if image.mode in (*_SIXTEEN_BIT, "I", "F"):
        values = np.asarray(image, np.float64)
        if not np.isfinite(values).all():
            raise ImageError(f"{path}: {int((~np.isfinite(values)).sum()):,} pixels are NaN "
                             "or infinite")
        low, high = float(values.min()), float(values.max())
        if image.mode in _SIXTEEN_BIT or (image.mode == "I" and low >= 0 and high <= 65535):
            low, high = 0.0, 65535.0
        elif image.mode == "F" and low >= 0 and high <= 1:
            low, high = 0.0, 1.0
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        return Image.fromarray((255 * scaled).astype(np.float32), "F")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L")


@dataclass(frozen=True)
class Prediction:
    """One image's ``top`` classes, ``(class name, probability)``, most probable first."""

    source: str
    top: tuple[tuple[str, float], ...]


def predict(probabilities: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
            class_names: Sequence[str], sources: Sequence[str], k: int = 3
            ) -> list[Prediction]:
    """The ``k`` most probable classes of each of ``images`` ``(n, 28, 28)`` under
    ``probabilities`` (inputs → ``(n, classes)``)."""
    p = np.asarray(probabilities(np.asarray(images, np.float32)))
    order = np.argsort(-p, axis=1)[:, :k]
    return [Prediction(source, tuple((class_names[c], float(p[i, c])) for c in order[i]))
            for i, source in enumerate(sources)]
