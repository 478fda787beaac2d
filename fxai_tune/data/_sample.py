"""The shipped sample: Dukascopy EUR/USD hourly ASK bars of 2017, from gym-anytrading (MIT)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fxai_tune.data._loaders import load_bars

__all__ = ["SAMPLE_PRICE_SIDE", "SAMPLE_SYMBOL", "load_sample", "sample_path"]

SAMPLE_FILE = "eurusd_1h_ask_2017.csv.gz"
SAMPLE_SYMBOL = "EURUSD"
SAMPLE_PRICE_SIDE = "ask"
"""The sample holds ASK prices only: the bid is lower by the spread (DOMAIN.md)."""


def sample_path() -> str:
    """Path of the shipped sample file (a gzip-compressed Dukascopy CSV)."""
    return str(Path(__file__).with_name("sample") / SAMPLE_FILE)


def load_sample() -> pd.DataFrame:
    """EUR/USD hourly ASK bars, 2017-01-01 22:00 to 2017-12-29 21:00 UTC (6,225 bars).

    Copied from ``gym_anytrading/datasets/data/FOREX_EURUSD_1H_ASK.csv`` (gym-anytrading 2.0.0,
    MIT licence, see ``sample/LICENSE-gym-anytrading.txt``).

    Example:
        >>> bars = load_sample()
        >>> len(bars), str(bars.index[0])
        (6225, '2017-01-01 22:00:00+00:00')
    """
    return load_bars(sample_path(), format="dukascopy")
