"""Read OHLCV bars from Dukascopy / HistData / generic CSV, Parquet and Databento DBN files.

Every loader returns the same frame: a UTC ``DatetimeIndex`` named ``timestamp`` (bar open
times, nanosecond unit, strictly increasing) and float64 columns ``open, high, low, close,
volume`` (+ ``spread`` when the source has one). Bad data raises `DataError` with a one-line
message naming the file, the line (or row / record) and the problem.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "BAR_COLUMNS",
    "DUKASCOPY_TIMESTAMP_FORMAT",
    "FORMATS",
    "HISTDATA_TIMESTAMP_FORMAT",
    "DataError",
    "load_bars",
]

FORMATS = ("auto", "dukascopy", "histdata", "csv", "parquet", "dbn")
"""Values accepted by ``load_bars(format=...)``."""

BAR_COLUMNS = ("open", "high", "low", "close", "volume")
"""Columns of every loaded frame (``spread`` is added when the source has one)."""

PRICE_COLUMNS = ("open", "high", "low", "close")

DUKASCOPY_TIMESTAMP_FORMAT = "%d.%m.%Y %H:%M:%S.%f"
HISTDATA_TIMESTAMP_FORMAT = "%Y%m%d %H%M%S"
HISTDATA_UTC_OFFSET = pd.Timedelta(hours=5)
"""HistData stamps bars in EST *without* daylight saving (UTC-5), per histdata.com's format
notes; adding 5 h gives UTC."""

EPOCH_UNITS = ("s", "ms", "us", "ns")
"""``timestamp_format`` values meaning "numbers since the Unix epoch in this unit"."""

_NEEDED = ("timestamp", "open", "high", "low", "close")
_OPTIONAL = ("volume", "spread")
_ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": (
        "timestamp", "time", "datetime", "date_time", "date", "ts", "gmt time", "local time",
    ),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price"),
    "volume": ("volume", "vol", "v", "tick_volume", "tickvol"),
    "spread": ("spread",),
}
_HISTDATA_LINE = re.compile(r"^\d{8} \d{6};")
_DUKASCOPY_STAMP = re.compile(r"^\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2}")


class DataError(ValueError):
    """Bad market data; the message names the file, the line / row and the problem."""


def load_bars(
    path: str | Path,
    *,
    format: str = "auto",  # noqa: A002 - the natural name for a file format
    columns: Mapping[str, str] | None = None,
    timestamp_format: str | None = None,
    instrument_id: int | None = None,
) -> pd.DataFrame:
    """Load OHLCV bars from a file and check them.

    Args:
        path: The file. ``.gz`` CSVs are read transparently; ``.dbn.zst`` is zstd-compressed DBN.
        format: One of `FORMATS`. ``"auto"`` picks by suffix (``.parquet``/``.pq``,
            ``.dbn``/``.dbn.zst``) and, for text files, by sniffing the first lines:
            HistData (``YYYYMMDD HHMMSS;open;high;low;close;volume``, no header), Dukascopy
            (``Time,Open,High,Low,Close,Volume`` with ``dd.mm.yyyy HH:MM:SS.fff``), else a
            generic CSV with a header.
        columns: Map from our column names (``timestamp, open, high, low, close, volume,
            spread``) to the file's, for CSV and Parquet. Unmapped names are matched
            case-insensitively against common spellings (``Time``, ``Date``, ``Vol`` ...).
            ``volume`` is optional (0 when absent); ``spread`` is kept when present.
        timestamp_format: ``strftime`` format of the timestamp column, or one of `EPOCH_UNITS`
            for numeric epoch stamps. ``None`` uses the format's own (Dukascopy, HistData) or
            lets pandas infer it. Naive stamps are taken as UTC (HistData: EST, shifted to UTC).
        instrument_id: DBN only: which instrument to keep when the file holds several.

    Returns:
        Bars indexed by UTC open time, float64 ``open, high, low, close, volume`` (+ ``spread``).

    Raises:
        FileNotFoundError: When ``path`` does not exist.
        ValueError: When ``format`` is not one of `FORMATS`.
        DataError: When the data are bad (missing columns, unparseable timestamps,
            non-increasing timestamps, NaN/inf/non-positive prices, high below low/open/close,
            fewer than 2 bars).

    Example:
        >>> bars = load_bars("EURUSD_Candlestick_1_Hour_ASK_01.01.2017-31.12.2017.csv")
        ... # doctest: +SKIP
        >>> bars.loc["2017-03-01", "close"]  # doctest: +SKIP
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format=}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    if format == "auto":
        format = _detect_format(path, columns)  # noqa: A001
    if format == "parquet":
        return _load_parquet(path, columns, timestamp_format)
    if format == "dbn":
        return _load_dbn(path, instrument_id)
    return _load_csv(path, format, columns, timestamp_format)


def _detect_format(path: Path, columns: Mapping[str, str] | None) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".dbn", ".dbn.zst")):
        return "dbn"
    first, second = _first_lines(path)
    if _HISTDATA_LINE.match(first):
        return "histdata"
    if columns is None and first.lower().startswith("time,") and _DUKASCOPY_STAMP.match(second):
        return "dukascopy"
    return "csv"


def _first_lines(path: Path) -> tuple[str, str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle:
            first = handle.readline().strip()
            second = handle.readline().strip()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}, line 1: cannot read the file ({err})") from err
    return first, second


def _fail(where: str, unit: str, location: int, problem: str) -> DataError:
    return DataError(f"{where}, {unit} {location}: {problem}")


# --------------------------------------------------------------------------- CSV


def _load_csv(
    path: Path,
    fmt: str,
    columns: Mapping[str, str] | None,
    timestamp_format: str | None,
) -> pd.DataFrame:
    where = str(path)
    histdata = fmt == "histdata"
    if histdata:
        names = ["timestamp", "open", "high", "low", "close", "volume"]
        read_kwargs = {"sep": ";", "header": None, "names": names}
        first_data_line = 1
    else:
        header, _ = _first_lines(path)
        sep = ";" if header.count(";") > header.count(",") else ","
        sep = "\t" if header.count("\t") > header.count(sep) else sep
        read_kwargs = {"sep": sep, "header": 0}
        first_data_line = 2
    try:
        # Blank lines kept (then dropped) so positions map to true line numbers.
        raw = pd.read_csv(path, skip_blank_lines=False, **read_kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as err:
        message = str(err).strip().splitlines()[-1]
        match = re.search(r"line (\d+)", message)
        line = int(match.group(1)) if match else 1
        raise _fail(where, "line", line, f"cannot parse the CSV ({message})") from err
    except pd.errors.EmptyDataError as err:
        raise _fail(where, "line", 1, "the file is empty") from err
    lines = np.arange(len(raw)) + first_data_line
    blank = raw.isna().all(axis=1).to_numpy()
    raw, lines = raw.loc[~blank].reset_index(drop=True), lines[~blank]
    if histdata:
        mapping = {name: name for name in names}
        fmt_ts = timestamp_format or HISTDATA_TIMESTAMP_FORMAT
    else:
        mapping = _resolve_columns(list(raw.columns), columns, where, "line 1 (header)")
        first_stamp = str(raw[mapping["timestamp"]].iloc[0]) if len(raw) else ""
        dukascopy = fmt == "dukascopy" or _DUKASCOPY_STAMP.match(first_stamp) is not None
        # Day-first Dukascopy stamps would be misread month-first by pandas' inference.
        fmt_ts = timestamp_format or (DUKASCOPY_TIMESTAMP_FORMAT if dukascopy else None)
    stamps = _parse_timestamps(raw[mapping["timestamp"]], fmt_ts, where, "line", lines)
    if histdata and timestamp_format is None:
        stamps = stamps + HISTDATA_UTC_OFFSET
    return _build(raw, mapping, stamps, where, "line", lines)


def _resolve_columns(
    available: list[str],
    columns: Mapping[str, str] | None,
    where: str,
    location: str,
) -> dict[str, str]:
    """Our column name -> the source's, from ``columns`` first, then known spellings."""
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(_NEEDED) - set(_OPTIONAL))
    if unknown:
        raise ValueError(
            f"columns keys must be among {_NEEDED + _OPTIONAL}; got unknown keys {unknown}"
        )
    by_lower = {str(name).strip().lower(): name for name in available}
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for ours in _NEEDED + _OPTIONAL:
        if ours in columns:
            theirs = columns[ours]
            if theirs in available:
                mapping[ours] = theirs
            elif str(theirs).strip().lower() in by_lower:
                mapping[ours] = by_lower[str(theirs).strip().lower()]
            else:
                missing.append(f"{ours!r} (mapped to {theirs!r})")
            continue
        found = next((by_lower[a] for a in _ALIASES[ours] if a in by_lower), None)
        if found is not None:
            mapping[ours] = found
        elif ours in _NEEDED:
            missing.append(repr(ours))
    if missing:
        raise DataError(
            f"{where}, {location}: missing column(s) {', '.join(missing)}; the file has "
            f"{[str(a) for a in available]}, needed: {list(_NEEDED)} (optional: "
            f"{list(_OPTIONAL)}); map yours with columns={{'close': 'YourClose', ...}}"
        )
    return mapping


def _parse_timestamps(
    raw: pd.Series,
    timestamp_format: str | None,
    where: str,
    unit: str,
    locations: np.ndarray,
) -> pd.DatetimeIndex:
    """UTC, nanosecond timestamps; the first unparseable value raises `DataError`."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(raw):
        stamps = pd.DatetimeIndex(raw)
    elif timestamp_format in EPOCH_UNITS:
        numbers = pd.to_numeric(raw, errors="coerce")
        stamps = pd.DatetimeIndex(pd.to_datetime(numbers, unit=timestamp_format, errors="coerce"))
    else:
        text = raw.astype("string").str.strip()
        try:
            stamps = pd.DatetimeIndex(
                pd.to_datetime(text, format=timestamp_format, errors="coerce", utc=False)
            )
        except (ValueError, TypeError):  # mixed time zones and the like
            stamps = pd.DatetimeIndex(
                pd.to_datetime(text, format=timestamp_format, errors="coerce", utc=True)
            )
    bad = np.flatnonzero(stamps.isna())
    if bad.size:
        i = int(bad[0])
        expected = f" (expected format {timestamp_format!r})" if timestamp_format else ""
        if not timestamp_format and re.fullmatch(r"\d{9,19}(\.\d*)?", str(raw.iloc[i]).strip()):
            expected = f" (epoch numbers? pass timestamp_format as one of {EPOCH_UNITS})"
        raise _fail(
            where, unit, int(locations[i]),
            f"unparseable timestamp {raw.iloc[i]!r}{expected}",
        )
    stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
    return stamps.as_unit("ns")


# --------------------------------------------------------------------------- Parquet


def _load_parquet(
    path: Path,
    columns: Mapping[str, str] | None,
    timestamp_format: str | None,
) -> pd.DataFrame:
    where = str(path)
    try:
        raw = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise _fail(where, "row", 1, f"cannot read the Parquet file ({err})") from err
    if isinstance(raw.index, pd.DatetimeIndex):
        index_name = raw.index.name or "timestamp"
        raw = raw.reset_index(names=index_name)
    else:
        raw = raw.reset_index(drop=True)
    rows = np.arange(len(raw)) + 1
    mapping = _resolve_columns(list(raw.columns), columns, where, "row 1 (schema)")
    stamps = _parse_timestamps(raw[mapping["timestamp"]], timestamp_format, where, "row", rows)
    return _build(raw, mapping, stamps, where, "row", rows)


# --------------------------------------------------------------------------- DBN


def _load_dbn(path: Path, instrument_id: int | None) -> pd.DataFrame:
    import databento_dbn as dbn

    where = str(path)
    zstd = path.name.lower().endswith(".zst")
    compression = dbn.Compression.ZSTD if zstd else dbn.Compression.NONE
    try:
        decoded = dbn.DBNDecoder(compression=compression).write_and_decode(path.read_bytes())
    except Exception as err:  # DBNError and friends from the Rust decoder
        raise _fail(where, "record", 1, f"cannot decode the DBN file ({err})") from err
    records = [r for r in decoded if not isinstance(r, dbn.Metadata)]
    metadata = next((r for r in decoded if isinstance(r, dbn.Metadata)), None)
    positions = [i + 1 for i, r in enumerate(records) if isinstance(r, dbn.OHLCVMsg)]
    bars = [r for r in records if isinstance(r, dbn.OHLCVMsg)]
    if not bars:
        schema = getattr(metadata, "schema", None)
        raise _fail(
            where, "record", 1,
            f"no OHLCV records (schema {schema}); supported schemas are "
            "ohlcv-1s, ohlcv-1m, ohlcv-1h, ohlcv-1d and ohlcv-eod",
        )
    instruments = sorted({r.instrument_id for r in bars})
    if instrument_id is None and len(instruments) > 1:
        raise _fail(
            where, "record", positions[0],
            f"the file holds several instruments {instruments}; pick one with instrument_id=",
        )
    if instrument_id is not None:
        if instrument_id not in instruments:
            raise DataError(
                f"{where}: {instrument_id=} is not in the file; it holds {instruments}"
            )
        keep = [i for i, r in enumerate(bars) if r.instrument_id == instrument_id]
        bars, positions = [bars[i] for i in keep], [positions[i] for i in keep]

    def price(value: int) -> float:
        return np.nan if value == dbn.UNDEF_PRICE else value / dbn.FIXED_PRICE_SCALE

    raw = pd.DataFrame(
        {
            "timestamp": np.array([r.ts_event for r in bars], dtype=np.int64),
            "open": [price(r.open) for r in bars],
            "high": [price(r.high) for r in bars],
            "low": [price(r.low) for r in bars],
            "close": [price(r.close) for r in bars],
            "volume": np.array([r.volume for r in bars], dtype=np.float64),
        }
    )
    stamps = pd.DatetimeIndex(pd.to_datetime(raw["timestamp"], unit="ns", utc=True))
    mapping = {name: name for name in raw.columns}
    return _build(raw, mapping, stamps.as_unit("ns"), where, "record", np.asarray(positions))


# --------------------------------------------------------------------------- checks


def _build(
    raw: pd.DataFrame,
    mapping: Mapping[str, str],
    stamps: pd.DatetimeIndex,
    where: str,
    unit: str,
    locations: np.ndarray,
) -> pd.DataFrame:
    """Numeric columns from ``raw`` through ``mapping``, checked, indexed by ``stamps``."""
    data: dict[str, np.ndarray] = {}
    for ours in BAR_COLUMNS + ("spread",):
        if ours not in mapping:
            if ours == "volume":
                data[ours] = np.zeros(len(raw))
            continue
        column = raw[mapping[ours]]
        numbers = pd.to_numeric(column, errors="coerce")
        unparseable = np.flatnonzero(numbers.isna().to_numpy() & column.notna().to_numpy())
        if unparseable.size:
            i = int(unparseable[0])
            raise _fail(
                where, unit, int(locations[i]),
                f"{ours} is not a number: {column.iloc[i]!r} (column {mapping[ours]!r})",
            )
        data[ours] = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    frame = pd.DataFrame(data, index=pd.DatetimeIndex(stamps, name="timestamp"))
    _check(frame, where, unit, locations)
    frame.attrs["source"] = where
    return frame


def _check(frame: pd.DataFrame, where: str, unit: str, locations: np.ndarray) -> None:
    """Raise `DataError` at the first bad row of each kind, checked in a fixed order."""

    def first(mask: np.ndarray) -> int | None:
        hits = np.flatnonzero(mask)
        return int(hits[0]) if hits.size else None

    prices = {name: frame[name].to_numpy() for name in PRICE_COLUMNS}
    for name, values in prices.items():
        i = first(~np.isfinite(values))
        if i is not None:
            raise _fail(where, unit, int(locations[i]), f"{name} is {values[i]} (NaN or inf)")
        i = first(values <= 0)
        if i is not None:
            raise _fail(where, unit, int(locations[i]), f"{name} is not positive: {values[i]}")
    o, h, lo, c = prices["open"], prices["high"], prices["low"], prices["close"]
    i = first(h < lo)
    if i is not None:
        raise _fail(where, unit, int(locations[i]), f"high {h[i]} is below low {lo[i]}")
    i = first((h < o) | (h < c))
    if i is not None:
        raise _fail(
            where, unit, int(locations[i]),
            f"high {h[i]} is below open {o[i]} or close {c[i]}",
        )
    i = first((lo > o) | (lo > c))
    if i is not None:
        raise _fail(
            where, unit, int(locations[i]),
            f"low {lo[i]} is above open {o[i]} or close {c[i]}",
        )
    for name in ("volume", "spread"):
        if name in frame:
            values = frame[name].to_numpy()
            i = first(~np.isfinite(values) | (values < 0))
            if i is not None:
                raise _fail(
                    where, unit, int(locations[i]),
                    f"{name} is {values[i]} (must be finite and >= 0)",
                )
    stamps = frame.index.asi8
    i = first(np.diff(stamps) <= 0)
    if i is not None:
        raise _fail(
            where, unit, int(locations[i + 1]),
            f"non-increasing timestamps: {frame.index[i + 1]} does not come after "
            f"{frame.index[i]} ({unit} {int(locations[i])}); sort the file and drop duplicates",
        )
    if len(frame) < 2:
        location = int(locations[-1]) if len(locations) else 1
        raise _fail(where, unit, location, f"too few bars: {len(frame)}, need at least 2")
