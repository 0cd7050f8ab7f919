"""Output heads: how a model's raw output becomes a predicted age, and the loss of its gradients.

A model declares its output (:class:`~.metadata.OutputSpec`) and training loss
(:class:`~.metadata.LossSpec`). :class:`OutputHead` turns the raw output of a batch into the
predicted age per scan, and gives the per-scan *objective* whose parameter gradient the white-box
features are built from:

- ``mse``: the objective is the prediction itself, and features scale its gradient by
  d loss / d prediction = ``2 (prediction - age)`` (so the activation feature, the output layer's
  input, falls out of the same pass);
- ``soft_label_kl``: the objective is the loss itself, ``KL(q || p)`` between the Gaussian soft
  label ``q`` (the mass of N(age, sigma^2) in each bin, as SFCN's ``num2vect``, renormalised) and
  the model's bin probabilities ``p``; its scale is 1. The soft labels of a batch are computed once
  (:meth:`OutputHead.targets`), outside the per-sample transforms.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelError
from .metadata import ModelMetadata


class OutputHead:
    """Prediction and gradient objective of one model's output.

    Args:
        metadata: the model's metadata (its ``output`` and ``loss``).
    """

    def __init__(self, metadata: ModelMetadata):
        self.output = metadata.output
        self.loss = metadata.loss
        self.size = self.output.size
        self.centers = torch.tensor(self.output.bin_centers(), dtype=torch.float32)
        self.objective_is_loss = self.loss.name != "mse"

    def _log_probs(self, out: torch.Tensor) -> torch.Tensor:
        scores = out.reshape(out.shape[0], self.size)
        if self.output.scores == "logits":
            return torch.log_softmax(scores, dim=1)
        return scores

    def prediction(self, out: torch.Tensor) -> torch.Tensor:
        """Predicted ages ``(B,)`` from raw outputs ``(B, ...)``."""
        if self.output.kind == "age":
            return out.reshape(out.shape[0])
        probs = self._log_probs(out).exp()
        return probs @ self.centers.to(probs.device, probs.dtype)

    def soft_labels(self, ages: torch.Tensor) -> torch.Tensor:
        """Gaussian soft labels ``(B, bins)``: the mass of N(age, sigma^2) in each bin, renormalised.

        SFCN's ``num2vect`` gives the mass in each bin (bin edges halfway between centres); here
        the masses are also renormalised to sum to 1, so the label is a distribution and the loss
        a KL divergence for every age (within the range the two agree to ``1 - sum`` of the mass,
        below 1e-6 for an age 5 sigma inside the first or last edge). The masses are computed in
        log space (``log_ndtr``), so an age outside the bins' range gives a label concentrated on
        the nearest bins rather than zeros (which would silently give a zero loss and gradient).
        """
        centers = self.centers.to(ages.device, ages.dtype)
        half = (centers[1:] - centers[:-1]) / 2
        edges = torch.cat([centers[:1] - half[:1], centers[:-1] + half, centers[-1:] + half[-1:]])
        z = (edges.unsqueeze(0) - ages.reshape(-1, 1)) / self.loss.sigma
        lo, hi = z[:, :-1], z[:, 1:]
        upper = lo > 0  # both edges above the mean: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi), no cancellation
        a = torch.where(upper, -hi, lo)
        b = torch.where(upper, -lo, hi)
        log_b = torch.special.log_ndtr(b)
        log_mass = log_b + torch.log1p(-torch.exp(torch.special.log_ndtr(a) - log_b).clamp_max(1.0 - 1e-7))
        return torch.softmax(log_mass, dim=1)

    def objective(self, out: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        """The per-scan values ``(B,)`` whose parameter gradients the white-box features use."""
        if not self.objective_is_loss:
            return self.prediction(out)
        return self.soft_label_kl(out, ages)

    def targets(self, ages: torch.Tensor) -> torch.Tensor:
        """What the loss objective compares the output with, per scan: the soft labels ``(B, bins)``
        for ``soft_label_kl``, the ages ``(B,)`` otherwise. Computed once per batch, outside the
        per-sample transforms (:meth:`objective_of_targets`)."""
        if not self.objective_is_loss:
            return ages
        return self.soft_labels(ages)

    def objective_of_targets(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """:meth:`objective` from :meth:`targets` instead of ages."""
        if not self.objective_is_loss:
            return self.prediction(out)
        return self._kl(self._log_probs(out), targets)

    def soft_label_kl(self, out: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        """``KL(q || p)`` per scan ``(B,)``: soft labels ``q`` of ``ages`` against the bin probabilities
        ``p`` of the raw outputs ``out`` (sigma: the loss's, 1 year by default)."""
        log_p = self._log_probs(out)
        return self._kl(log_p, self.soft_labels(ages.to(log_p.dtype)))

    @staticmethod
    def _kl(log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        q = q.to(log_p.dtype)
        return (torch.xlogy(q, q) - q * log_p).sum(dim=1)

    def loss_scale(self, pred: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        """d loss / d objective per scan: ``2 (pred - age)`` for ``mse``, 1 when the objective is the loss."""
        if self.objective_is_loss:
            return torch.ones_like(pred)
        return 2.0 * (pred - ages)

    def check(self, out: torch.Tensor, path: Path) -> None:
        """Check the raw output of one scan against the declared output.

        Raises:
            ModelError: wrong number of output values, or non-finite ones.
        """
        if out.numel() != self.size:
            if self.output.kind == "age":
                raise ModelError(path, f"the model must return one age per scan, got output shape {tuple(out.shape)} "
                                 "for one scan (a model with age-bin outputs declares output: {\"kind\": \"bins\", ...})")
            raise ModelError(path, f"the model's output has {out.numel()} values for one scan, but its metadata "
                             f"declares {self.size} age bins")
        if not torch.isfinite(out).all():
            raise ModelError(path, "the model returns a non-finite output on a blank input")
        if self.output.kind == "bins" and self.output.scores == "log_probs":
            total = float(out.double().exp().sum())
            if abs(total - 1.0) > 1e-3:
                raise ModelError(path, f"the model's bin outputs are declared log-probabilities but their "
                                 f"probabilities sum to {total:.4g}, not 1: declare scores: \"logits\"")
