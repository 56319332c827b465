"""Engine: idiomatic PyTorch eager, the notebook's three models as `nn.Sequential`.

Keras defaults are matched where PyTorch's differ: LeakyReLU slope 0.3; the baseline's hidden
kernels drawn from Keras's truncated he_normal (std √(2/fan_in)/0.87962566, cut at ±2·std);
glorot-uniform kernels elsewhere and zero biases; BatchNorm1d(eps=1e-3, momentum=0.01), PyTorch's
weight on the new value, i.e. Keras's 0.99 on the old one. One difference stays: PyTorch stores
the unbiased batch variance in running_var (×32/31 at batch 32), Keras the biased one.
Softmax is folded into `cross_entropy`. Training: SGD lr 1e-3, batch 32 over a shuffled index
tensor (no DataLoader); validation in `model.eval()` under `torch.no_grad()`, in batches of 32
like Keras's `fit` (its validation batch size defaults to the training one). With `--device gpu`
the data and the model live on the CUDA device from the start; loss and accuracy are summed on
the device and read once per pass. float32 products stay true float32 (PyTorch's default).
Run by epoch_speed.py with .venv-torch/bin/python; see protocol.py for the command line.
"""

from __future__ import annotations

import math
import time

import numpy as np
import protocol
import torch
from torch import nn
from torch.nn import functional as F

BATCH = 32
KERAS_TRUNCATION = 0.87962566  # std of a unit normal truncated at ±2


def bn(features: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(features, eps=1e-3, momentum=0.01)


def build(model: str) -> nn.Sequential:
    """The notebook's models; Keras initialisation (see the module docstring)."""
    if model == "baseline":
        net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 300), nn.LeakyReLU(0.3),
            nn.Linear(300, 100), nn.LeakyReLU(0.3),
            nn.Linear(100, 10),
        )
    elif model == "bn_after":
        net = nn.Sequential(
            nn.Flatten(), bn(784),
            nn.Linear(784, 300), nn.ReLU(), bn(300),
            nn.Linear(300, 100), nn.ReLU(), bn(100),
            nn.Linear(100, 10),
        )
    else:
        net = nn.Sequential(
            nn.Flatten(), bn(784),
            nn.Linear(784, 300, bias=False), bn(300), nn.ReLU(),
            nn.Linear(300, 100, bias=False), bn(100), nn.ReLU(),
            nn.Linear(100, 10),
        )
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        if model == "baseline" and i < 2:  # kernel_initializer="he_normal"
            std = math.sqrt(2.0 / layer.in_features) / KERAS_TRUNCATION
            nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
        else:  # Keras's default glorot_uniform
            nn.init.xavier_uniform_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return net


def train_epoch(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator) -> tuple[float, float]:
    """One shuffled pass; returns the epoch's mean loss and accuracy (as Keras logs them)."""
    net.train()
    order = torch.randperm(len(x), generator=generator).to(x.device)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), BATCH):
        idx = order[start:start + BATCH]
        xb, yb = x[idx], y[idx]
        logits = net(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)  # .item() waits for the device


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy with the running BN statistics."""
    net.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), BATCH):
        xb, yb = x[start:start + BATCH], y[start:start + BATCH]
        logits = net(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def main() -> None:
    args = protocol.parse_args(__doc__.splitlines()[0])
    if args.seeds != 1:
        protocol.refuse("torch_eager: trains one seed per process; run it once per seed "
                        "(--seeds 1).")
    if args.device == "gpu" and not torch.cuda.is_available():
        protocol.refuse(f"torch_eager: torch {torch.__version__} sees no CUDA device here")
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    torch.set_num_threads(args.threads)
    data = protocol.load_data(args.data)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device)

    x_train = tensor(data["x_train"].reshape(-1, 784).astype(np.float32) / 255.0)
    x_val = tensor(data["x_val"].reshape(-1, 784).astype(np.float32) / 255.0)
    y_train = tensor(data["y_train"].astype(np.int64))
    y_val = tensor(data["y_val"].astype(np.int64))

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)  # the order is drawn on the CPU
    net = build(args.model).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    seconds: list[float] = []
    history: dict[str, list[float]] = {key: [] for key in protocol.HISTORY_KEYS}
    for epoch in range(args.epochs):
        start = time.perf_counter()
        loss, acc = train_epoch(net, opt, x_train, y_train, generator)
        val_loss, val_acc = evaluate(net, x_val, y_val)
        seconds.append(time.perf_counter() - start)
        for key, value in zip(protocol.HISTORY_KEYS, (loss, acc, val_loss, val_acc),
                              strict=True):
            history[key].append(value)
        protocol.log(f"torch epoch {epoch + 1}: {seconds[-1]:.2f} s  loss {loss:.4f}  "
                     f"val_accuracy {val_acc:.4f}")
    name = f"gpu:{torch.cuda.get_device_name(device)}" if args.device == "gpu" else "cpu"
    protocol.emit(engine="torch", args=args, epoch_seconds=seconds, history=history,
                  versions={"torch": torch.__version__, "numpy": np.__version__}, device=name)


if __name__ == "__main__":
    main()
