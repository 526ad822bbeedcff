"""Information measures of a memorizing classifier: Eq. (1) of the paper and its pieces.

A net that labels N random, independent, uniform binary labels with mean accuracy p has
stored I = N (1 - H2(p)) bits about them; the capacity is the largest such I.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def binary_entropy(p: ArrayLike) -> np.ndarray | float:
    """H2(p) in bits, with H2(0) = H2(1) = 0."""
    p = np.asarray(p, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p must lie in [0, 1]")
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    h = np.where((p == 0) | (p == 1), 0.0, h)
    return float(h) if h.ndim == 0 else h


def mutual_information(n_samples: ArrayLike, accuracy: ArrayLike) -> np.ndarray | float:
    """Eq. (1): bits a classifier with mean accuracy ``accuracy`` holds about N random labels."""
    n = np.asarray(n_samples, dtype=float)
    if np.any(n < 0):
        raise ValueError("n_samples must be >= 0")
    i = n * (1.0 - np.asarray(binary_entropy(accuracy)))
    return float(i) if np.ndim(i) == 0 else i


def bits_per_parameter(capacity_bits: ArrayLike, n_params: ArrayLike) -> np.ndarray | float:
    """Capacity divided by the number of trainable parameters that store it."""
    c, n = np.asarray(capacity_bits, dtype=float), np.asarray(n_params, dtype=float)
    if np.any(n <= 0):
        raise ValueError("n_params must be > 0")
    r = c / n
    return float(r) if r.ndim == 0 else r


def conv_bits_per_parameter(capacity_bits: float, params_fc: int, params_conv: int,
                            fc_bits_per_param: float = 2.3) -> float:
    """The paper's conv share: (C - b_fc * P_fc) / P_conv (Sec. 4.2, Table 1)."""
    if params_conv <= 0:
        raise ValueError("params_conv must be > 0")
    return (capacity_bits - fc_bits_per_param * params_fc) / params_conv


def empirical_mutual_information(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Plug-in estimate N * I(Y; Y_hat) from the joint histogram of labels and predictions.

    It does not assume symmetric errors, so it checks Eq. (1) from the outside.
    """
    y = np.asarray(labels).astype(int).ravel()
    yh = np.asarray(predictions).astype(int).ravel()
    if y.shape != yh.shape:
        raise ValueError("labels and predictions must have the same length")
    n = y.size
    if n == 0:
        return 0.0
    joint = np.zeros((2, 2))
    np.add.at(joint, (y, yh), 1.0)
    joint /= n
    py, pyh = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(n * np.sum(joint[nz] * np.log2(joint[nz] / (py @ pyh)[nz])))


def confusion_counts(labels: ArrayLike, predictions: ArrayLike) -> np.ndarray:
    """The 2x2 table of counts, rows the label Y, columns the prediction Y_hat."""
    y = np.asarray(labels).astype(int).ravel()
    yh = np.asarray(predictions).astype(int).ravel()
    if y.shape != yh.shape:
        raise ValueError("labels and predictions must have the same length")
    if np.any((y < 0) | (y > 1) | (yh < 0) | (yh > 1)):
        raise ValueError("labels and predictions must be 0 or 1")
    counts = np.zeros((2, 2), dtype=np.int64)
    np.add.at(counts, (y, yh), 1)
    return counts


def binary_channel_information(error_0: ArrayLike, error_1: ArrayLike,
                               prior_1: ArrayLike = 0.5) -> np.ndarray | float:
    """I(Y; Y_hat) in bits per sample of any binary channel, not only a symmetric one.

    ``error_0`` = P(Y_hat = 1 | Y = 0), ``error_1`` = P(Y_hat = 0 | Y = 1), ``prior_1`` =
    P(Y = 1). With a fair prior it is Eq. (1)'s 1 - H2(p) when the two error rates are equal
    and, by Fano's inequality, more when they differ; this says how much more.
    """
    e0, e1, q = (np.asarray(v, dtype=float) for v in (error_0, error_1, prior_1))
    for name, v in (("error_0", e0), ("error_1", e1), ("prior_1", q)):
        if np.any((v < 0) | (v > 1)):
            raise ValueError(f"{name} must lie in [0, 1]")
    pred_1 = (1 - q) * e0 + q * (1 - e1)
    i = (np.asarray(binary_entropy(pred_1)) - (1 - q) * np.asarray(binary_entropy(e0))
         - q * np.asarray(binary_entropy(e1)))
    i = np.maximum(i, 0.0)  # rounding can leave -1e-17 where the channel carries nothing
    return float(i) if i.ndim == 0 else i
