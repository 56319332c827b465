"""Hostile and unusual inputs for every file bnlab reads from outside, one ``Case`` each.

A case builds its input in a fresh folder and returns the call a user's command makes on it
(the API function or the reader under it). ``refused`` is what the one-line error must say
(a regular expression), or ``None`` for an unusual input that must simply work. ``untouched``
lists files outside the asked path that must keep their bytes. Nothing here is mocked: the
files are real PNGs, JPEGs, TIFFs, ONNX graphs, HDF5 files, zips, FIFOs and links.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FIXTURE_RUN = (Path(__file__).resolve().parents[1] / "fixtures" / "runs-5c63388"
               / "legacy-20261207-084803")


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Callable[[], object]]
    refused: str | None
    environment: dict[str, str] = field(default_factory=dict)
    untouched: tuple[str, ...] = ()  # files, relative to the case's folder, to keep as they are
    accepted: str | None = None  # what an accepted case's result must say, if anything


CASES: list[Case] = []


def case(name: str, refused: str | None, *, environment: dict[str, str] | None = None,
         untouched: tuple[str, ...] = (), accepted: str | None = None):
    def register(build):
        CASES.append(Case(name, build, refused, environment or {}, untouched, accepted))
        return build
    return register


# ---------------------------------------------------------------- images (bnlab predict)

def _predict_image(path: Path) -> Callable[[], object]:
    from bnlab.export.predict import image_input

    return lambda: image_input(path)


def _png(width: int, height: int, rows: Callable[[], object]) -> bytes:
    """A grayscale 8-bit PNG whose IDAT is the zlib stream of ``rows()``'s chunks (each row
    a filter byte and its pixels), compressed as it streams."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(part) for part in rows()) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                            0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@case("image: a 1,000,000 × 1 PNG strip (was padded to 10¹² pixels)", None)
def thin_strip(folder: Path):
    (folder / "thin.png").write_bytes(_png(1_000_000, 1, lambda: [b"\0" + b"\x80" * 1_000_000]))
    return _predict_image(folder / "thin.png")


@case("image: a 36,000 × 1,000 panorama JPEG", None)
def panorama(folder: Path):
    from PIL import Image

    Image.new("RGB", (36_000, 1_000), (200, 190, 180)).save(folder / "pano.jpg", quality=80)
    return _predict_image(folder / "pano.jpg")


@case("image: a PNG bomb, 7,000 × 7,000 of zeros in 50 kB", r"is 49,000,000 pixels, over "
      r"bnlab's limit of 40,000,000 .* BNLAB_MAX_IMAGE_PIXELS=")
def png_bomb(folder: Path):
    (folder / "bomb.png").write_bytes(_png(7_000, 7_000, lambda: (b"\0" * 7_001
                                                                  for _ in range(7_000))))
    return _predict_image(folder / "bomb.png")


@case("image: a header declaring 100,000 × 100,000 pixels", r"Image size \(10000000000 "
      r"pixels\) exceeds limit of .* decompression bomb")  # Pillow's own check, at open
def declared_giant(folder: Path):
    (folder / "giant.png").write_bytes(_png(100_000, 100_000, lambda: [b"\0" * 100]))
    return _predict_image(folder / "giant.png")


@case("image: a FIFO named photo.png", r"is a FIFO \(named pipe\), not a regular file")
def image_fifo(folder: Path):
    os.mkfifo(folder / "photo.png")
    return _predict_image(folder / "photo.png")


@case("image: a folder named photo.png", r"is a folder, not a regular file")
def image_folder(folder: Path):
    (folder / "photo.png").mkdir()
    return _predict_image(folder / "photo.png")


@case("image: a link to /dev/zero", r"is a character device, not a regular file")
def image_device(folder: Path):
    os.symlink("/dev/zero", folder / "zero.png")
    return _predict_image(folder / "zero.png")


@case("image: a float TIFF with a NaN pixel", r"1 pixels are NaN or infinite")
def image_nan(folder: Path):
    from PIL import Image

    values = np.ones((40, 40), np.float32)
    values[5, 5] = np.nan
    Image.fromarray(values, "F").save(folder / "nan.tif")
    return _predict_image(folder / "nan.tif")


# ---------------------------------------------------------------- ONNX (bnlab predict)

def _onnx_file(folder: Path, nodes, initializers: dict[str, np.ndarray], *,
               input_shape=("N", 784), output="out", opset: int = 20, **model_fields) -> Path:
    """A classifier of ``nodes`` from input ``x`` to ``output`` ``(batch, 10)``."""
    import onnx

    graph = onnx.helper.make_graph(
        nodes, "hostile",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(input_shape))],
        [onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT,
                                            [input_shape[0], 10])],
        [onnx.numpy_helper.from_array(value, name) for name, value in initializers.items()])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   **model_fields)
    model.ir_version = 9
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _load_onnx(path: Path) -> Callable[[], object]:
    from bnlab.export.onnx import load_classifier

    return lambda: load_classifier(path).probabilities(np.zeros((2, 28, 28), np.float32))


def _gemm(name_in: str = "x", name_out: str = "out"):
    import onnx

    return onnx.helper.make_node("Gemm", [name_in, "w"], [name_out])


WEIGHTS = {"w": np.full((784, 10), 0.01, np.float32)}


@case("onnx: a Loop of 2⁶² iterations (hung, and ignored Ctrl-C)", r"is a Loop, control flow")
def onnx_loop(folder: Path):
    import onnx

    body = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         onnx.helper.make_node("Identity", ["carry_in"], ["carry_out"])], "body",
        [onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
         onnx.helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
         onnx.helper.make_tensor_value_info("carry_in", onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
         onnx.helper.make_tensor_value_info("carry_out", onnx.TensorProto.FLOAT, None)])
    nodes = [onnx.helper.make_node("Loop", ["trips", "cond", "x"], ["looped"], body=body),
             _gemm("looped")]
    return _load_onnx(_onnx_file(folder, nodes, {
        **WEIGHTS, "trips": np.array(2**62, np.int64), "cond": np.array(True)}))


@case("onnx: BatchNormalization in training mode inside an If", r"is a If, control flow")
def onnx_if_training(folder: Path):
    import onnx

    def branch(name: str, training: int):
        return onnx.helper.make_graph(
            [onnx.helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], [f"y{name}"],
                                   training_mode=training)], name, [],
            [onnx.helper.make_tensor_value_info(f"y{name}", onnx.TensorProto.FLOAT, None)])
    ones, zeros = np.ones(784, np.float32), np.zeros(784, np.float32)
    nodes = [onnx.helper.make_node("If", ["flag"], ["normed"], then_branch=branch("a", 1),
                                   else_branch=branch("b", 0)), _gemm("normed")]
    return _load_onnx(_onnx_file(folder, nodes, {**WEIGHTS, "flag": np.array(True), "g": ones,
                                                 "b": zeros, "m": zeros, "v": ones}))


@case("onnx: an Expand to 10⁶ × 10⁶", r"largest tensor it computes .* is "
      r"1,000,000,000,000 values, over bnlab's limit .* BNLAB_MAX_BATCH_VALUES=")
def onnx_expand(folder: Path):
    import onnx

    nodes = [onnx.helper.make_node("Expand", ["one", "shape"], ["big"]),
             onnx.helper.make_node("ReduceMean", ["big"], ["mean"], keepdims=0),
             onnx.helper.make_node("Mul", ["x", "mean"], ["scaled"]), _gemm("scaled")]
    return _load_onnx(_onnx_file(folder, nodes, {
        **WEIGHTS, "one": np.array(1.0, np.float32),
        "shape": np.array([10**6, 10**6], np.int64)}, opset=17))


@case("onnx: weights in an external file ../../etc/passwd", r"are in external files")
def onnx_external(folder: Path):
    import onnx

    path = _onnx_file(folder, [_gemm()], WEIGHTS)
    model = onnx.load(path)
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("length", str(784 * 40))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())
    return _load_onnx(path)


@case("onnx: a custom-domain operator", r"a custom operator")
def onnx_custom(folder: Path):
    import onnx

    path = _onnx_file(folder, [onnx.helper.make_node("Evil", ["x"], ["y"], domain="com.example"),
                               _gemm("y")], WEIGHTS)
    model = onnx.load(path)
    model.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    path.write_bytes(model.SerializeToString())
    return _load_onnx(path)


@case("onnx: a model-local function", r"it defines functions")
def onnx_function(folder: Path):
    import onnx

    function = onnx.helper.make_function("local", "Twice", ["a"], ["b"],
                                         [onnx.helper.make_node("Add", ["a", "a"], ["b"])],
                                         [onnx.helper.make_opsetid("", 20)])
    path = _onnx_file(folder, [onnx.helper.make_node("Twice", ["x"], ["y"], domain="local"),
                               _gemm("y")], WEIGHTS, functions=[function])
    return _load_onnx(path)


@case("onnx: a sparse initializer declaring 10⁹ values", r"sparse tensors")
def onnx_sparse(folder: Path):
    import onnx

    path = _onnx_file(folder, [_gemm()], WEIGHTS)
    model = onnx.load(path)
    values = onnx.numpy_helper.from_array(np.ones(1, np.float32), "s")
    indices = onnx.numpy_helper.from_array(np.zeros(1, np.int64), "s_i")
    model.graph.sparse_initializer.append(onnx.helper.make_sparse_tensor(values, indices,
                                                                         [10**9]))
    path.write_bytes(model.SerializeToString())
    return _load_onnx(path)


@case("onnx: a fixed batch of 10⁷ images", r"for a batch of 10,000,000 is 7,840,000,000 "
      r"values, over bnlab's limit")
def onnx_fixed_batch(folder: Path):
    return _load_onnx(_onnx_file(folder, [_gemm()], WEIGHTS, input_shape=(10**7, 784)))


@case("onnx: outputs that are NaN", r"is not a number \(NaN or infinite\) for 2 of 2 images")
def onnx_nan(folder: Path):
    return _load_onnx(_onnx_file(folder, [_gemm()], {"w": np.full((784, 10), np.nan,
                                                                  np.float32)}))


def _with_class_names(folder: Path, names: str) -> Path:
    import onnx

    path = _onnx_file(folder, [_gemm()], WEIGHTS)
    model = onnx.load(path)
    onnx.helper.set_model_props(model, {"class_names": names})
    path.write_bytes(model.SerializeToString())
    return path


@case("onnx: class names holding terminal escapes", None,
      accepted=r"^\['\\\\x1b\[2J\\\\x1b\]0;owned\\\\x07', 'b'")
def onnx_escapes(folder: Path):
    import json

    from bnlab.export.onnx import load_classifier

    path = _with_class_names(folder, json.dumps(["\x1b[2J\x1b]0;owned\x07", *"bcdefghij"]))
    return lambda: load_classifier(path).class_names


@case("onnx: class names nested 100,000 deep", None, accepted="^None$")
def onnx_deep_names(folder: Path):
    from bnlab.export.onnx import load_classifier

    path = _with_class_names(folder, "[" * 100_000 + "]" * 100_000)
    return lambda: load_classifier(path).class_names


@case("onnx: random bytes", r"not a readable ONNX model")
def onnx_garbage(folder: Path):
    (folder / "model.onnx").write_bytes(np.random.default_rng(0).bytes(5000))
    return _load_onnx(folder / "model.onnx")


@case("onnx: a FIFO named model.onnx", r"is a FIFO \(named pipe\)")
def onnx_fifo(folder: Path):
    os.mkfifo(folder / "model.onnx")
    return _load_onnx(folder / "model.onnx")


@case("onnx: a graph slower than the inference deadline", r"onnxruntime ran for more than "
      r"1 s on 2 images and was stopped; .* BNLAB_MAX_INFERENCE_SECONDS=",
      environment={"BNLAB_MAX_INFERENCE_SECONDS": "1"})
def onnx_slow(folder: Path):
    import onnx

    rng = np.random.default_rng(0)
    nodes = [onnx.helper.make_node("Reshape", ["x", "image"], ["a0"]),
             onnx.helper.make_node("Conv", ["a0", "k0"], ["b0"], pads=[1, 1, 1, 1])]
    for i in range(1, 4000):  # 4,000 convolutions of 64 channels: seconds per image
        nodes.append(onnx.helper.make_node("Conv", [f"b{i - 1}", "k"], [f"b{i}"],
                                           pads=[1, 1, 1, 1]))
    nodes += [onnx.helper.make_node("ReduceMean", [f"b{i}"], ["pooled"], axes=[2, 3],
                                    keepdims=0),
              onnx.helper.make_node("Gemm", ["pooled", "w"], ["out"])]
    return _load_onnx(_onnx_file(folder, nodes, {
        "image": np.array([-1, 1, 28, 28], np.int64),
        "k0": rng.normal(size=(64, 1, 3, 3)).astype(np.float32),
        "k": (rng.normal(size=(64, 64, 3, 3)) / 24).astype(np.float32),
        "w": rng.normal(size=(64, 10)).astype(np.float32)}, opset=17))


# ---------------------------------------------------------------- .keras files

KERAS_CONFIG = {"class_name": "Sequential", "config": {"name": "m", "layers": [
    {"class_name": "InputLayer", "config": {"batch_shape": [None, 784]}},
    {"class_name": "Dense", "config": {"name": "dense", "units": 10,
                                       "activation": "softmax"}}]}}


def _keras_file(folder: Path, config: object = KERAS_CONFIG, *,
                weights: Callable[[object], None] | None = None,
                raw_config: bytes | None = None) -> Path:
    """A ``.keras`` zip with ``config`` (or ``raw_config`` bytes) and a weights file that
    ``weights(h5file)`` fills (default: the Dense layer's two arrays)."""
    import json

    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        if weights is None:
            group = h5.create_group("layers/dense/vars")
            group["0"] = np.zeros((784, 10), np.float32)
            group["1"] = np.zeros(10, np.float32)
        else:
            weights(h5)
    path = folder / "model.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", raw_config if raw_config is not None
                         else json.dumps(config))
        archive.writestr("metadata.json", '{"keras_version": "3.6.0"}')
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def _dense_vars(h5, kernel: Callable[[object], None]) -> None:
    """The Dense layer's weights group: its kernel ``"0"`` as ``kernel(group)`` makes it,
    its bias ``"1"`` ten zeros."""
    group = h5.create_group("layers/dense/vars")
    kernel(group)
    group["1"] = np.zeros(10, np.float32)


def _read_keras(path: Path) -> Callable[[], object]:
    from bnlab.export.keras_format import read_keras

    return lambda: read_keras(path)


@case("keras: a kernel in HDF5 external storage (/etc/passwd)", r"is stored outside the file")
def keras_external_storage(folder: Path):
    return _read_keras(_keras_file(folder, weights=lambda h5: _dense_vars(
        h5, lambda group: group.create_dataset("0", shape=(784, 10), dtype="f4",
                                               external=[("/etc/passwd", 0, 784 * 40)]))))


@case("keras: a kernel that is an external link", r"is a ExternalLink")
def keras_external_link(folder: Path):
    import h5py

    def kernel(group):
        group["0"] = h5py.ExternalLink("/etc/passwd.h5", "/kernel")
    return _read_keras(_keras_file(folder, weights=lambda h5: _dense_vars(h5, kernel)))


@case("keras: a kernel that is a virtual dataset of another file", r"is stored outside")
def keras_virtual(folder: Path):
    import h5py

    layout = h5py.VirtualLayout(shape=(784, 10), dtype="f4")
    layout[:] = h5py.VirtualSource(str(folder / "other.h5"), "data", shape=(784, 10))
    return _read_keras(_keras_file(folder, weights=lambda h5: _dense_vars(
        h5, lambda group: group.create_virtual_dataset("0", layout, fillvalue=0))))


@case("keras: a kernel declared 4 × 10⁹ values (read before its shape was checked)",
      r"weight 0 is \(4000000000,\) float32, its config needs \(784, 10\)")
def keras_declared_giant(folder: Path):
    return _read_keras(_keras_file(folder, weights=lambda h5: _dense_vars(
        h5, lambda group: group.create_dataset("0", shape=(4 * 10**9,), dtype="f4",
                                               chunks=(1024,)))))


@case("keras: a string dataset as the kernel", r"weight 0 is .* its config needs \(784, 10\)")
def keras_strings(folder: Path):
    def kernel(group):
        group["0"] = np.array([b"x" * 10] * 7840).reshape(784, 10)
    return _read_keras(_keras_file(folder, weights=lambda h5: _dense_vars(h5, kernel)))


@case("keras: weight keys that are not numbers", r"model.weights.h5 cannot be read")
def keras_keys(folder: Path):
    def kernel(group):
        group["kernel"] = np.zeros((784, 10), np.float32)
    return _read_keras(_keras_file(folder, weights=lambda h5: _dense_vars(h5, kernel)))


@case("keras: a zip bomb config.json (10 MB of zeros, limit 1 MB)",
      r"its config.json, unzipped, is 10,000,000 bytes, over .* BNLAB_MAX_MODEL_BYTES=",
      environment={"BNLAB_MAX_MODEL_BYTES": "1M"})
def keras_zip_bomb(folder: Path):
    return _read_keras(_keras_file(folder, raw_config=b" " * 10_000_000))


@case("keras: layers that are not objects", r"lists no layers")
def keras_layer_strings(folder: Path):
    return _read_keras(_keras_file(folder, {"class_name": "Sequential",
                                            "config": {"layers": ["Dense", 3]}}))


@case("keras: units = 1e400", r"layer dense \(Dense\)")
def keras_infinite_units(folder: Path):
    raw = (b'{"class_name": "Sequential", "config": {"layers": [{"class_name": "InputLayer", '
           b'"config": {"batch_shape": [null, 784]}}, {"class_name": "Dense", "config": '
           b'{"name": "dense", "units": 1e400}}]}}')
    return _read_keras(_keras_file(folder, raw_config=raw))


@case("keras: config nested 100,000 deep", r"not a Keras 3 .keras file \(nested too deeply\)")
def keras_deep(folder: Path):
    return _read_keras(_keras_file(folder, raw_config=b"[" * 100_000 + b"]" * 100_000))


@case("keras: units = 100,000,000 (79 billion parameters)", r"its model is 78,500,000,000 "
      r"parameters, over bnlab's limit")
def keras_huge_units(folder: Path):
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 784]}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 100_000_000}}]}}
    return _read_keras(_keras_file(folder, config))


@case("keras: a FIFO named model.keras", r"is a FIFO \(named pipe\)")
def keras_fifo(folder: Path):
    os.mkfifo(folder / "model.keras")
    return _read_keras(folder / "model.keras")


# ---------------------------------------------------------------- run folders

def _run_copy(folder: Path) -> Path:
    runs = folder / "runs"
    shutil.copytree(FIXTURE_RUN, runs / FIXTURE_RUN.name)
    return runs / FIXTURE_RUN.name


def _listing(runs: Path) -> Callable[[], object]:
    """``bnlab runs``: what it says of each run, which must name the damaged file and list
    the sound run beside it as complete."""
    def act():
        from bnlab.api import list_runs

        readable, unreadable = list_runs(runs)
        said = [f"{run.path.name}: {run.status}: "
                + "; ".join(f"{d.file} {d.problem}" for d in run.damage) for run in readable]
        said += [f"{folder.name}: unreadable: {why}" for folder, why in unreadable]
        return " | ".join(said)
    return act


RUN_FILES = ("config.json", "summary.json", "environment.json", "curves.png",
             "bn/checkpoint.json", "bn/checkpoint.safetensors", "bn/seed-42/history.csv",
             "bn/statistics.csv")
for _file in RUN_FILES:
    def _fifo_in_run(folder: Path, file: str = _file):
        run = _run_copy(folder)
        shutil.copytree(run, run.parent / "other")  # a sound run beside it
        (run / file).unlink()
        os.mkfifo(run / file)
        return _listing(run.parent)
    # (the fixture's format lists no digests of derived CSV files, so those are not read)
    named = "" if _file.endswith(".csv") else rf".*{re.escape(_file)} is a FIFO"
    case(f"run folder: a FIFO as {_file}", None,
         accepted=rf"(?=.*other: complete){named}")(_fifo_in_run)


def _lock(run: Path) -> Callable[[], object]:
    def act():
        from bnlab.store.lock import RunLock

        with RunLock(run):
            return "locked"
    return act


@case("run folder: .lock is a link to a file elsewhere", r"\.lock is a symbolic link",
      untouched=("precious.txt",))
def lock_link(folder: Path):
    run = _run_copy(folder)
    (folder / "precious.txt").write_text("keep me")
    os.symlink(folder / "precious.txt", run / ".lock")
    return _lock(run)


@case("run folder: .lock is a FIFO", r"\.lock is not a regular file")
def lock_fifo(folder: Path):
    run = _run_copy(folder)
    os.mkfifo(run / ".lock")
    return _lock(run)


@case("run folder: a seed folder links outside the run", r"seed-42 is a symbolic link to",
      untouched=("elsewhere/history.csv",))
def seed_link(folder: Path):
    run = _run_copy(folder)
    shutil.move(run / "bn" / "seed-42", folder / "elsewhere")
    os.symlink(folder / "elsewhere", run / "bn" / "seed-42")
    return _lock(run)


@case("run folder: .replaced links outside the run", r"\.replaced is a symbolic link",
      untouched=("elsewhere/keep.txt",))
def replaced_link(folder: Path):
    run = _run_copy(folder)
    (folder / "elsewhere").mkdir()
    (folder / "elsewhere" / "keep.txt").write_text("keep me")
    os.symlink(folder / "elsewhere", run / ".replaced")
    return _lock(run)


# ---------------------------------------------------------------- where --out writes

def _out(path_of: Callable[[Path], Path], *, force: bool = False):
    def build(folder: Path):
        from bnlab.store.outputs import check_output

        run = _run_copy(folder)
        return lambda: check_output(path_of(run), force=force)
    return build


case("--out: a run's checkpoint", r"inside legacy-\S+/bn/, part of the run's record",
     untouched=("runs/legacy-20261207-084803/bn/checkpoint.safetensors",))(
    _out(lambda run: run / "bn" / "checkpoint.safetensors", force=True))
case("--out: a run's config.json", r"it is legacy-\S+'s own config.json")(
    _out(lambda run: run / "config.json", force=True))
case("--out: a run's figure", r"it is a figure of legacy-\S+, listed in its summary.json")(
    _out(lambda run: run / "curves.png", force=True))
@case("--out: an existing file without force", r"exists; choose another out, or overwrite "
      r"it force=True", untouched=("existing.onnx",))
def out_existing(folder: Path):
    from bnlab.store.outputs import check_output

    (folder / "existing.onnx").write_text("someone's model")
    return lambda: check_output(folder / "existing.onnx")


@case("--out: a run's file through a linked folder", r"part of the run's record")
def out_through_link(folder: Path):
    from bnlab.store.outputs import check_output

    run = _run_copy(folder)
    os.symlink(run / "bn", folder / "shortcut")
    return lambda: check_output(folder / "shortcut" / "checkpoint.json", force=True)


# ---------------------------------------------------------------- experiment files

def _experiment(text: str) -> Callable[[Path], Callable[[], object]]:
    def build(folder: Path):
        from bnlab.config.files import load_experiment

        (folder / "e.toml").write_text(text)
        return lambda: load_experiment(folder / "e.toml")
    return build


case("experiment: 50,000 nested arrays", r"nested too deeply")(
    _experiment("name = 'x'\nepochs = " + "[" * 50_000 + "]" * 50_000 + "\n"))
case("experiment: units = 100,000,000", r"e.toml.*variants\[0\].layers.*the model big is "
     r"79,500,000,010 parameters, over "
     r"bnlab's limit .* BNLAB_MAX_PARAMETERS=")(_experiment(
        "name = 'x'\n[[variants]]\nname = 'big'\nlayers = [{ type = 'flatten' }, "
        "{ type = 'dense', units = 100000000, activation = 'relu' }, "
        "{ type = 'dense', units = 10, activation = 'softmax' }]\n"))


case("experiment: a 7-axis sweep naming 256-byte folders", r"names a folder of 256 bytes, "
     r"over the 255 a file system takes")(_experiment(
        "name = 'x'\n[[variants]]\n"
        "name = 'a_rather_long_variant_name_for_this_batch_norm_study_of_december_2026'\n"
        "model = 'bn_after'\n[sweep]\n" + "".join(
            f"'batch_norm.{option}' = [{value}]\n" for option, value in (
                ("momentum", "0.123456789"), ("epsilon", "0.000123456789"),
                ("center", "true"), ("scale", "true"))) + "".join(
            f"'optimizer.{option}' = [{value}]\n" for option, value in (
                ("learning_rate", "0.0123456789"), ("momentum", "0.987654321"),
                ("nesterov", "true"))) + "batch_size = [48]\n"))
case("experiment: a 250-character name", r"is 250 characters; a run folder's name takes at "
     r"most 200")(_experiment("name = '" + "n" * 250 + "'\n[[variants]]\nname = 'a'\n"
                              "model = 'baseline'\n"))


@case("experiment: a FIFO", r"is a FIFO \(named pipe\)")
def experiment_fifo(folder: Path):
    from bnlab.config.files import load_experiment

    os.mkfifo(folder / "e.toml")
    return lambda: load_experiment(folder / "e.toml")


# ---------------------------------------------------------------- dataset files (--data-dir)

def _data_dir_with(folder: Path, make: Callable[[Path], None]) -> Callable[[], object]:
    """A --data-dir whose training images file is made by ``make``."""
    from bnlab.data.datasets import load_dataset

    data = folder / "data"
    data.mkdir()
    make(data / "train-images-idx3-ubyte.gz")
    return lambda: load_dataset("fashion_mnist", data_dir=data, cache_dir=folder / "cache",
                                download=False)


@case("data: a 300 MB file (sparse) in --data-dir", r"is 300,000,000 bytes, over bnlab's "
      r"limit of 256,000,000 for a dataset file")
def data_huge(folder: Path):
    def make(path: Path) -> None:
        with path.open("wb") as handle:
            handle.truncate(300 * 10**6)
    return _data_dir_with(folder, make)


@case("data: a FIFO in --data-dir", r"is a FIFO \(named pipe\)")
def data_fifo(folder: Path):
    return _data_dir_with(folder, os.mkfifo)


@case("data: a 100 MB file that is not gzip (was read whole first)", r"is corrupt: not a "
      r"valid gzip stream \(it starts with b'PK'")
def data_not_gzip(folder: Path):
    def make(path: Path) -> None:
        with path.open("wb") as handle:
            handle.write(b"PK")
            handle.truncate(100 * 10**6)
    return _data_dir_with(folder, make)


# ---------------------------------------------------------------- bnlab.fit

@case("fit: batch_size 10⁶ on 512 rows (tried 10 GB)", None)
def fit_huge_batch(folder: Path):
    def act():
        import bnlab

        x = np.zeros((512, 28, 28), np.float32)
        return bnlab.fit("baseline", x, np.zeros(512, np.int32), batch_size=10**6, epochs=1,
                         verbose=0)
    return act


@case("fit: one NaN pixel (was reported as divergence)", r"fit: x holds NaN or infinite "
      r"values in 1 rows \(the first is row 3\)")
def fit_nan_pixel(folder: Path):
    def act():
        import bnlab

        x = np.zeros((64, 28, 28), np.float32)
        x[3, 10, 10] = np.nan
        return bnlab.fit("baseline", x, np.zeros(64, np.int32), verbose=0)
    return act


@case("fit: seeds past 2³¹ (aliased smaller seeds)", r"seeds are 31-bit")
def fit_seed_alias(folder: Path):
    def act():
        import bnlab

        return bnlab.fit("baseline", np.zeros((64, 28, 28), np.float32), np.zeros(64, np.int32),
                         seed=2**32, verbose=0)
    return act
