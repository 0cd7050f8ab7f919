"""When a TPR at a target FPR can be measured: the one rule, light enough for the API to import."""

from __future__ import annotations

__all__ = ["estimable"]


def estimable(n_negatives: int, target_fpr: float) -> bool:
    """Whether a TPR at ``target_fpr`` can be measured on ``n_negatives`` non-members.

    Below ``1 / target_fpr`` non-members the only reachable FPR under the target is 0, and the
    TPR there is decided by a handful of scans: it is reported as undefined (None), not as a
    number a policy could act on.
    """
    return n_negatives * target_fpr >= 1.0 - 1e-9
