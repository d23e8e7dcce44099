"""Scores of fake probabilities against labels (1 = fake), as the leaderboard computes them."""

from __future__ import annotations

import numpy as np

# Kaggle's DFDC clipped predictions before the log loss; so do we.
CLIP = 1e-15


def log_loss(labels: np.ndarray, probs: np.ndarray, clip: float = CLIP) -> float:
    """Binary log loss with probabilities clipped to ``[clip, 1 - clip]``."""
    y = np.asarray(labels, dtype=float)
    p = np.clip(np.asarray(probs, dtype=float), clip, 1 - clip)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")


def binary_scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Log loss, AUC, average precision and accuracy at 0.5 (AUC and AP are NaN when only one
    class is present)."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: PLC0415

    y, p = np.asarray(labels, dtype=int), np.asarray(probs, dtype=float)
    both = len(set(y.tolist())) == 2
    return {"logloss": log_loss(y, p),
            "auc": float(roc_auc_score(y, p)) if both else float("nan"),
            "ap": float(average_precision_score(y, p)) if both else float("nan"),
            "accuracy": float(np.mean((p >= 0.5) == (y == 1))) if len(y) else float("nan"),
            "count": int(len(y))}


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of binary masks, summed over the batch; 1.0 when both are empty."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature ``T`` that minimises the log loss of ``sigmoid(logits / T)`` on
    ``labels`` (Guo et al., 2017); 1.0 when there is nothing to fit (one class or none)."""
    from scipy.optimize import minimize_scalar  # noqa: PLC0415

    y, z = np.asarray(labels, dtype=float), np.asarray(logits, dtype=float)
    if len(set(y.tolist())) < 2:
        return 1.0

    def loss(log_t: float) -> float:
        return log_loss(y, 1 / (1 + np.exp(-z / np.exp(log_t))), clip=1e-7)

    return float(np.exp(minimize_scalar(loss, bounds=(-3.0, 4.0), method="bounded").x))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: over ``bins`` equal-width bins of the probability of
    "fake", the share-weighted gap between the mean probability and the share of fakes."""
    y, p = np.asarray(labels, dtype=float), np.asarray(probs, dtype=float)
    if not len(y):
        return float("nan")
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[which == b].mean() - y[which == b].mean()) * np.mean(which == b)
                     for b in range(bins) if np.any(which == b)))
