"""Images of any size as Fashion-MNIST inputs, and a model's top classes for them.

Fashion-MNIST images are 28 × 28 grayscale, the object light on a black background, centred
and filling the frame. A picture is brought to that form:

1. decoded by Pillow (PNG, JPEG, …); a file that is not an image, is truncated or empty, or
   holds more than ``MAX_PIXELS`` pixels is an ``ImageError`` (one line, nothing decoded
   beyond the header for the last);
2. converted to grayscale (``L``; transparency composited on white, as a viewer shows it);
3. a photo of an object on a light background (the common case: a product photo) is
   inverted, so that the object is light on dark: the background is judged by the mean of
   the image's outermost rows and columns (> 127 of 255: light);
4. padded with the background to a square, centred, and resized to 28 × 28 (Lanczos);
5. scaled to [0, 1] as the notebook scales its pixels (/255).

This cannot make a photo look like the dataset (whose garments were cut out and centred by
hand), so a prediction on a photo is a best effort; the test images' own predictions are
what the model's accuracy measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bnlab.errors import BnlabError

MAX_PIXELS = 40_000_000  # a 40-megapixel photo; beyond that a file is refused unread
SIDE = 28


class ImageError(BnlabError):
    """An image file that cannot be used, and why."""


def image_input(path: Path) -> np.ndarray:
    """The file at ``path`` as one Fashion-MNIST-like input: ``(28, 28)`` float32 in [0, 1]
    (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{path}: {width} × {height} pixels is more than "
                                 f"{MAX_PIXELS:,}; resize it first")
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                background = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(background, image.convert("RGBA"))
            gray = image.convert("L")
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (PNG, JPEG, …)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: the image cannot be decoded ({err})") from None
    pixels = np.asarray(gray, np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:
        gray = ImageOps.invert(gray)
        border = 255 - border
    side = max(gray.size)
    square = Image.new("L", (side, side), round(float(border.mean())))
    square.paste(gray, ((side - gray.size[0]) // 2, (side - gray.size[1]) // 2))
    small = square.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    return np.asarray(small, np.float32) / 255.0


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
