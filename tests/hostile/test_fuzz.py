"""Fuzzing the readers of files from outside: an ONNX file, a ``.keras`` file and images
(PNG, JPEG, TIFF), each valid file damaged 1–3 times (truncated, bytes flipped, a run of
bytes inserted, a slice repeated), give an answer or a one-line ``BnlabError``, never another
exception. As ``tests/data/test_idx_fuzz.py`` does for the dataset files; examples are
derandomized (the same on every machine) and nothing is kept between runs.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnlab.errors import BnlabError

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _model():
    import jax

    from bnlab.nn.batchnorm import BatchNorm
    from bnlab.nn.layers import Dense, Flatten
    from bnlab.nn.model import Sequential

    model = Sequential((Flatten(), Dense(8, activation="relu"), BatchNorm(),
                        Dense(10, activation="softmax")), input_shape=(28, 28))
    params, state = model.init(jax.random.key(0))
    return model, params, state


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    from PIL import Image

    from bnlab.export.keras_format import write_keras
    from bnlab.export.onnx import to_onnx

    folder = tmp_path_factory.mktemp("valid")
    model, params, state = _model()
    files = {".onnx": to_onnx(model, params, state).SerializeToString()}
    write_keras(folder / "m.keras", model, params, state)
    files[".keras"] = (folder / "m.keras").read_bytes()
    pixels = (np.arange(40 * 30) % 251).astype(np.uint8).reshape(30, 40)
    for suffix, image in ((".png", Image.fromarray(pixels)),
                          (".jpg", Image.fromarray(pixels).convert("RGB")),
                          (".tif", Image.fromarray(pixels.astype(np.float32) / 255, "F"))):
        buffer = io.BytesIO()
        image.save(buffer, format={".png": "PNG", ".jpg": "JPEG", ".tif": "TIFF"}[suffix])
        files[suffix] = buffer.getvalue()
    return files


@st.composite
def damage(draw, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "repeat"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "truncate":
            del raw[at:]
        elif kind == "flip" and raw:
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "repeat":
            raw[at:at] = raw[at:at + draw(st.integers(1, 64))] * draw(st.integers(2, 8))
    return bytes(raw)


def _read(suffix: str, path):
    if suffix == ".onnx":
        from bnlab.export.onnx import load_classifier

        return load_classifier(path).probabilities(np.zeros((1, 28, 28), np.float32))
    if suffix == ".keras":
        from bnlab.export.keras_format import read_keras

        return read_keras(path)
    from bnlab.export.predict import image_input

    return image_input(path)


@pytest.mark.parametrize("suffix", [".onnx", ".keras", ".png", ".jpg", ".tif"])
def test_a_damaged_file_is_an_answer_or_one_line(valid_files, tmp_path, suffix):
    _read(suffix, _write(tmp_path, suffix, valid_files[suffix]))  # the valid file reads

    @FUZZ
    @given(data=st.data())
    def check(data):
        path = _write(tmp_path, suffix, data.draw(damage(valid_files[suffix])))
        try:
            _read(suffix, path)
        except BnlabError as err:
            assert "\n" not in str(err)

    check()


def _write(folder, suffix: str, data: bytes):
    path = folder / f"file{suffix}"
    path.write_bytes(data)
    return path
