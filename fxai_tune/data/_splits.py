"""Chronological train / validation / test splits and walk-forward folds over base-bar indices.

Layout of a series of ``n`` bars with gap ``g`` (the largest observation lookback in base
bars)::

    [ warm-up g | train | gap g | val | gap g | test ]

A split's decision range is ``[start, end)``; warm-up and gap bars belong to no split, so an
observation window (``<= g`` bars ending at a decision) never reaches into the previous split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from fxai_tune.data._loaders import DataError

__all__ = ["Split", "split_by_date", "split_by_fraction", "walk_forward_splits"]

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Base-bar index range ``[start, end)`` of one split.

    Attributes:
        name: ``"train"``, ``"val"``, ``"test"``, ``"fold2/val"`` ...
        start: First bar index of the split.
        end: One past its last bar index.
    """

    name: str
    start: int
    end: int

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def _describe(split: Split, timestamps: pd.DatetimeIndex | None) -> str:
    rows = f"bars [{split.start}, {split.end})"
    if timestamps is not None and 0 <= split.start < split.end <= len(timestamps):
        rows += f" ({timestamps[split.start]} to {timestamps[split.end - 1]})"
    return rows


def _check_lengths(
    splits: Sequence[Split],
    *,
    min_bars: int,
    source: str,
    timestamps: pd.DatetimeIndex | None,
    remedy: str,
) -> None:
    for split in splits:
        if len(split) < min_bars:
            raise DataError(
                f"{source}, {_describe(split, timestamps)}: the {split.name!r} split has "
                f"{len(split)} bars, needs at least {min_bars} (the largest "
                f"observation window in base bars); {remedy}"
            )


def split_by_fraction(
    n_bars: int,
    *,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    gap: int,
    min_bars: int = 2,
    source: str = "bars",
    timestamps: pd.DatetimeIndex | None = None,
) -> dict[str, Split]:
    """Train / val / test by fractions of the series; each split then loses ``gap`` leading bars.

    Args:
        n_bars: Bars in the series.
        fractions: Shares of the series for train, val and test (positive, sum 1).
        gap: Bars between splits and before train (the largest observation lookback).
        min_bars: Fewest bars a split may have.
        source: Name of the data for error messages.
        timestamps: Bar times, only for error messages.

    Returns:
        ``{"train": Split, "val": Split, "test": Split}``, chronological, ``gap`` bars apart.

    Raises:
        ValueError: When the fractions are not three positive numbers summing to 1.
        DataError: When a split would have fewer than ``min_bars`` bars.

    Example:
        >>> split_by_fraction(1000, gap=10)["val"]
        Split(name='val', start=700, end=840)
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be three positive shares (train, val, test) summing to 1; "
            f"got {fractions=}"
        )
    if gap < 0:
        raise ValueError(f"gap must be >= 0; got {gap=}")
    val_start = int(round(fractions[0] * n_bars))
    test_start = int(round((fractions[0] + fractions[1]) * n_bars))
    return _three_splits(n_bars, val_start, test_start, gap, min_bars, source, timestamps)


def split_by_date(
    timestamps: pd.DatetimeIndex,
    *,
    val_start: str | pd.Timestamp,
    test_start: str | pd.Timestamp,
    gap: int,
    min_bars: int = 2,
    source: str = "bars",
) -> dict[str, Split]:
    """Train / val / test cut at dates: val starts at the first bar at or after ``val_start``,
    test at the first bar at or after ``test_start``; train ends ``gap`` bars before val and
    val ``gap`` bars before test.

    Args:
        timestamps: Bar open times (UTC).
        val_start: First time of the validation split (naive times are UTC).
        test_start: First time of the test split, after ``val_start``.
        gap: Bars between splits and before train.
        min_bars: Fewest bars a split may have.
        source: Name of the data for error messages.

    Raises:
        ValueError: When the dates are not ordered or fall outside the data.
        DataError: When a split would have fewer than ``min_bars`` bars.
    """
    index = pd.DatetimeIndex(timestamps)
    cuts = []
    for name, value in (("val_start", val_start), ("test_start", test_start)):
        stamp = pd.Timestamp(value)
        if index.tz is not None:
            stamp = stamp.tz_localize(index.tz) if stamp.tz is None else stamp.tz_convert(index.tz)
        if not index[0] < stamp <= index[-1]:
            raise ValueError(
                f"{name} must fall inside the data ({index[0]} to {index[-1]}); "
                f"got {name}={value!r}"
            )
        cuts.append(int(index.searchsorted(stamp, side="left")))
    if cuts[0] >= cuts[1]:
        raise ValueError(f"val_start must come before test_start; got {val_start=}, {test_start=}")
    return _three_splits(len(index), cuts[0], cuts[1], gap, min_bars, source, index)


def _three_splits(
    n_bars: int,
    val_start: int,
    test_start: int,
    gap: int,
    min_bars: int,
    source: str,
    timestamps: pd.DatetimeIndex | None,
) -> dict[str, Split]:
    splits = {
        "train": Split("train", gap, val_start - gap),
        "val": Split("val", val_start, test_start - gap),
        "test": Split("test", test_start, n_bars),
    }
    _check_lengths(
        list(splits.values()),
        min_bars=max(min_bars, 2),
        source=source,
        timestamps=timestamps,
        remedy="use more data, smaller observation windows or other split fractions/dates",
    )
    return splits


def walk_forward_splits(
    n_bars: int,
    *,
    n_folds: int,
    gap: int,
    val_bars: int | None = None,
    train_bars: int | None = None,
    min_bars: int = 2,
    source: str = "bars",
    timestamps: pd.DatetimeIndex | None = None,
) -> list[tuple[Split, Split]]:
    """Walk-forward folds over bars ``[0, n_bars)``: train on ``[.., k)``, validate on
    ``[k + gap, k + gap + val_bars)``, roll forward by ``val_bars``; the last fold's validation
    ends at ``n_bars``.

    Args:
        n_bars: End of the region to fold (e.g. the end of the main validation split, so the
            test split is never touched).
        n_folds: Number of folds (>= 1).
        gap: Bars between a fold's train and val ranges, and before the first train bar.
        val_bars: Validation bars per fold; default ``(n_bars - gap) // (n_folds + 1)``.
        train_bars: Train bars per fold for a rolling window; ``None`` anchors every train range
            at the start of the data (expanding window).
        min_bars: Fewest bars a train or val range may have.
        source: Name of the data for error messages.
        timestamps: Bar times, only for error messages.

    Returns:
        ``[(train, val), ...]`` in time order; every fold, none dropped.

    Example:
        >>> folds = walk_forward_splits(1000, n_folds=3, gap=10)
        >>> [(t.end, v.start, v.end) for t, v in folds]
        [(249, 259, 506), (496, 506, 753), (743, 753, 1000)]
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1; got {n_folds=}")
    if val_bars is not None and val_bars < 1:
        raise ValueError(f"val_bars must be >= 1 or None; got {val_bars=}")
    if train_bars is not None and train_bars < 1:
        raise ValueError(f"train_bars must be >= 1 or None; got {train_bars=}")
    size = val_bars if val_bars is not None else max(0, (n_bars - gap) // (n_folds + 1))
    folds = []
    for i in range(n_folds):
        val_start = n_bars - (n_folds - i) * size
        train_end = val_start - gap
        train_start = gap if train_bars is None else max(gap, train_end - train_bars)
        folds.append(
            (
                Split(f"fold{i}/train", train_start, train_end),
                Split(f"fold{i}/val", val_start, val_start + size),
            )
        )
    _check_lengths(
        [split for fold in folds for split in fold],
        min_bars=max(min_bars, 2),
        source=source,
        timestamps=timestamps,
        remedy="use fewer folds, fewer val_bars or smaller observation windows",
    )
    return folds

