"""Scores and thresholds (seed 003): F1-optimal threshold and min-max normalisation centred at 0.5."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_NORMALIZED_THRESHOLD = 0.5
THRESHOLD_SCALES = ("normalized", "raw")


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and the one rule that applies it: ``score >= value`` is anomalous.

    ``scale="normalized"`` (seed 003, 0-1, the default) compares the normalised score;
    ``scale="raw"`` (the seed's Jetson ``infer -t``) compares the raw score, so a raw threshold
    outside the calibration range still decides exactly.
    """

    value: float
    scale: str = "normalized"

    def __post_init__(self) -> None:
        if self.scale not in THRESHOLD_SCALES:
            raise ValueError(f"threshold scale {self.scale!r}: choose one of {', '.join(THRESHOLD_SCALES)}")
        if not np.isfinite(self.value):
            raise ValueError(f"threshold {self.value!r}: give a finite number")
        if self.scale == "normalized" and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"normalised threshold {self.value!r}: it lies between 0 and 1")

    def decide(self, raw, score) -> np.ndarray:
        """Decisions for raw scores and their normalised scores (arrays of the same shape)."""
        against = raw if self.scale == "raw" else score
        # float64: numpy would otherwise round the threshold to a float32 score's precision
        return np.asarray(against, np.float64) >= np.float64(self.value)


def normalize(raw, threshold: float, min_val: float, max_val: float):
    """``clip((raw - threshold) / (max_val - min_val) + 0.5, 0, 1)`` for floats or numpy arrays.

    A raw score equal to the threshold maps to 0.5, the decision boundary. A zero range
    (all calibration scores equal) is treated as a range of 1 so the result stays defined.
    """
    span = float(max_val) - float(min_val)
    if not np.isfinite(span) or span <= 0:
        span = 1.0
    out = np.clip((np.asarray(raw, dtype=np.float64) - float(threshold)) / span + 0.5, 0.0, 1.0)
    return float(out) if np.ndim(out) == 0 else out.astype(np.float32)


def denormalize(normalized: float, threshold: float, min_val: float, max_val: float) -> float:
    """The raw score that :func:`normalize` maps to ``normalized`` (inside the clip range)."""
    span = float(max_val) - float(min_val)
    span = span if np.isfinite(span) and span > 0 else 1.0
    return (float(normalized) - 0.5) * span + float(threshold)


def best_f1_threshold(labels, scores) -> dict[str, float]:
    """The raw score with maximal F1 (anomaly = positive, ``score >= threshold`` is anomalous).

    Same rule as anomalib's/hamacho's adaptive threshold: ``thresholds[argmax(f1)]`` over the
    precision-recall curve.
    """
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.min(initial=1) == labels.max(initial=0):
        raise ValueError("the F1 threshold needs both normal and anomalous images")
    from sklearn.metrics import precision_recall_curve  # imported here: the runtime never needs sklearn

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / (precision + recall + 1e-10)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return {
        "threshold": float(thresholds[best]),
        "f1": float(f1[best]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
    }


def image_auroc(labels, scores) -> float:
    """Area under the ROC curve of image scores (anomaly = positive)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(labels, dtype=int), np.asarray(scores, dtype=np.float64)))


def confusion(labels, predictions) -> dict[str, int]:
    """Counts of true/false positives/negatives (anomaly = positive)."""
    y = np.asarray(labels, bool)
    p = np.asarray(predictions, bool)
    return {
        "tp": int((y & p).sum()),
        "fp": int((~y & p).sum()),
        "tn": int((~y & ~p).sum()),
        "fn": int((y & ~p).sum()),
    }


def operating_point(labels, scores, threshold: float) -> dict[str, float | int]:
    """What a threshold does on labelled scores (``score >= threshold`` is anomalous).

    Precision, recall and F1 of the anomaly class, the false-reject rate (normal images flagged)
    and the miss rate (defects let through), and the confusion counts. A rate with an empty
    denominator is NaN.
    """
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    c = confusion(labels, scores >= threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    nan = float("nan")
    precision = tp / (tp + fp) if tp + fp else nan
    recall = tp / (tp + fn) if tp + fn else nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan
    return {
        **c,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_reject_rate": fp / (fp + tn) if fp + tn else nan,
        "miss_rate": fn / (tp + fn) if tp + fn else nan,
    }


def threshold_for_target(labels, scores, *, max_miss_rate: float | None = None, max_false_reject: float | None = None):
    """The raw threshold that meets one target with the least cost to the other rate.

    ``max_miss_rate``: the highest threshold whose miss rate is at most the target (fewest
    false rejects). ``max_false_reject``: the lowest threshold whose false-reject rate is at most
    the target (fewest misses). Raises ``ValueError`` when the target cannot be met or the labels
    lack the class the target is about.
    """
    if (max_miss_rate is None) == (max_false_reject is None):
        raise ValueError("give exactly one of max_miss_rate and max_false_reject")
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    # every distinct decision: at each score (that image flagged) and just above it (let through)
    candidates = np.unique(np.concatenate([scores, np.nextafter(scores, np.inf)]))
    flagged = scores[None, :] >= candidates[:, None]
    if max_miss_rate is not None:
        if not labels.any():
            raise ValueError("no anomalous images: a miss rate is undefined")
        miss = (~flagged[:, labels]).mean(axis=1)
        ok = candidates[miss <= max_miss_rate + 1e-12]
        return float(ok.max())
    if labels.all():
        raise ValueError("no normal images: a false-reject rate is undefined")
    false_reject = flagged[:, ~labels].mean(axis=1)
    ok = candidates[false_reject <= max_false_reject + 1e-12]
    return float(ok.min())
