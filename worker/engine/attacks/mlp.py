"""The paper's deep binary attack classifier: a small PyTorch MLP."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .classifiers import _check_xy
from .registry import AttackClassifier, register_attack


def _stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a stratified hold-out set; empty when a class has fewer than 5 scans."""
    mask = np.zeros(len(y), dtype=bool)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        if len(idx) < 5:
            return np.zeros(len(y), dtype=bool)
        k = max(1, int(round(fraction * len(idx))))
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None: leave it)."""
    if n is None or n == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@register_attack("mlp")
class MLPAttack(AttackClassifier):
    """Multilayer perceptron with ReLU and dropout, trained with Adam on binary cross-entropy.

    Inputs are standardised with the mean and standard deviation of the attacker's training
    split; inputs with at most ``whiten_up_to`` features are also whitened (PCA), which
    turns the small ``prediction - label`` direction of two highly correlated columns into
    an input of its own (without it the network rarely finds the error's magnitude before
    early stopping). Inputs wider than ``wide_threshold`` (per-sample gradients of a large layer) first
    go through a dimension-reducing linear layer of ``reduce_dim`` units, as in Gupta et al.
    Early stopping: ``val_fraction`` of the training split (stratified) is held out, training
    stops after ``patience`` epochs without a lower validation loss and the best weights are
    kept. With fewer than 5 scans of a class there is no hold-out and training runs
    ``min_epochs`` epochs. Deterministic for a given seed (its own forked torch RNG).

    Trains on one CPU thread by default: thread synchronisation costs more than it saves on
    these small matrices, and with OpenMP spin-waiting on a busy host 2 threads were measured
    5-70x slower than one. About 3 s of CPU for 1000 scans x 16k gradient dimensions. Wide
    inputs (per-sample gradient vectors, more than ``wide_threshold`` features) train on a GPU
    when one is present (``device="auto"``); the data is moved there once.

    Args:
        hidden: width of the two hidden layers.
        reduce_dim: width of the dimension-reducing first layer for wide inputs.
        wide_threshold: input width above which the reducing layer is used.
        dropout: dropout probability after each hidden layer.
        lr: Adam learning rate.
        weight_decay: Adam L2 penalty.
        batch_size: minibatch size.
        max_epochs: epoch cap.
        patience: early-stopping patience in epochs.
        min_epochs: epochs when there is no hold-out set.
        val_fraction: share of the training split held out for early stopping.
        num_threads: torch intra-op threads while training and scoring (restored after);
            None leaves torch's setting.
        whiten_up_to: widest input that is PCA-whitened (0: never).
        device: where the network trains and scores: ``auto`` (CUDA for inputs wider than
            ``wide_threshold`` when CUDA is present, else the CPU), ``cpu``, ``cuda``...
    """

    def __init__(
        self,
        hidden: int = 64,
        reduce_dim: int = 128,
        wide_threshold: int = 1024,
        dropout: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_epochs: int = 200,
        patience: int = 10,
        min_epochs: int = 50,
        val_fraction: float = 0.15,
        num_threads: int | None = 1,
        whiten_up_to: int = 16,
        device: str = "auto",
    ):
        self.hidden = hidden
        self.reduce_dim = reduce_dim
        self.wide_threshold = wide_threshold
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.min_epochs = min_epochs
        self.val_fraction = val_fraction
        self.num_threads = num_threads
        self.whiten_up_to = whiten_up_to
        self.device = device

    def _device(self, d: int) -> torch.device:
        if self.device != "auto":
            return torch.device(self.device)
        return torch.device("cuda" if d > self.wide_threshold and torch.cuda.is_available() else "cpu")

    def _network(self, d: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        width = d
        if d > self.wide_threshold:
            layers += [nn.Linear(d, self.reduce_dim), nn.ReLU(), nn.Dropout(self.dropout)]
            width = self.reduce_dim
        layers += [
            nn.Linear(width, self.hidden), nn.ReLU(), nn.Dropout(self.dropout),
            nn.Linear(self.hidden, self.hidden), nn.ReLU(), nn.Dropout(self.dropout),
            nn.Linear(self.hidden, 1),
        ]
        return nn.Sequential(*layers)

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        Z = (np.asarray(X, dtype=np.float32).reshape(len(X), -1) - self.mean_) / self.std_
        if self.rotation_ is not None:
            Z = Z @ self.rotation_
        return torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float32))

    def _fit_scaling(self, X: np.ndarray) -> None:
        """Standardise; narrow inputs are whitened (PCA on the standardised training data)."""
        self.mean_ = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        std = X.std(axis=0, dtype=np.float64)
        self.std_ = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        self.rotation_ = None
        if 1 < X.shape[1] <= self.whiten_up_to:
            Z = ((X - self.mean_) / self.std_).astype(np.float64)
            eigval, eigvec = np.linalg.eigh(np.cov(Z, rowvar=False))
            keep = eigval > 1e-6 * max(float(eigval.max()), 1e-12)
            if keep.any():
                self.rotation_ = (eigvec[:, keep] / np.sqrt(eigval[keep])).astype(np.float32)

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> "MLPAttack":
        X, y = _check_xy(X, y)
        X = X.reshape(len(X), -1).astype(np.float32, copy=False)
        with _torch_threads(self.num_threads):
            return self._fit(X, y, seed)

    def _fit(self, X: np.ndarray, y: np.ndarray, seed: int) -> "MLPAttack":
        self._fit_scaling(X)
        rng = np.random.default_rng(seed)
        val = _stratified_holdout(y, self.val_fraction, rng)
        device = self._device(X.shape[1])
        Xt = self._standardise(X).to(device)
        yt = torch.from_numpy(y.astype(np.float32)).to(device)
        keep = torch.from_numpy(val).to(device)
        x_fit, y_fit = Xt[~keep], yt[~keep]
        x_val, y_val = Xt[keep], yt[keep]
        loss_fn = nn.BCEWithLogitsLoss()
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)  # every device's generator: dropout on a GPU is seeded too
            gen = torch.Generator().manual_seed(seed)
            net = self._network(Xt.shape[1]).to(device)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr,
                                   weight_decay=self.weight_decay, foreach=True)
            best_loss, best_state, since_best = float("inf"), None, 0
            epochs = self.max_epochs if val.any() else self.min_epochs
            self.epochs_ = 0
            for _ in range(epochs):
                net.train()
                perm = torch.randperm(len(x_fit), generator=gen).to(device)
                for start in range(0, len(perm), self.batch_size):
                    batch = perm[start:start + self.batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss_fn(net(x_fit[batch]).squeeze(1), y_fit[batch]).backward()
                    opt.step()
                self.epochs_ += 1
                if not val.any():
                    continue
                net.eval()
                with torch.no_grad():
                    val_loss = float(loss_fn(net(x_val).squeeze(1), y_val))
                if val_loss < best_loss - 1e-6:
                    best_loss, best_state, since_best = val_loss, copy.deepcopy(net.state_dict()), 0
                else:
                    since_best += 1
                    if since_best >= self.patience:
                        break
            if best_state is not None:
                net.load_state_dict(best_state)
        net.eval()
        self.net_ = net
        self.best_val_loss_ = best_loss if val.any() else None
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        device = next(self.net_.parameters()).device
        with torch.no_grad(), _torch_threads(self.num_threads):
            logits = self.net_(self._standardise(X).to(device)).squeeze(1)
        return torch.sigmoid(logits.double()).cpu().numpy()
