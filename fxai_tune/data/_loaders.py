"""Read OHLCV bars from Dukascopy / HistData / generic CSV, Parquet and Databento DBN files.

Every loader returns the same frame: a UTC ``DatetimeIndex`` named ``timestamp`` (bar open
times, nanosecond unit, strictly increasing) and float64 columns ``open, high, low, close,
volume`` (+ ``spread`` when the source has one). Bad data raises `DataError` with a one-line
message naming the file, the line (or row / record), the bad value and what is valid. Inputs
that could be read two ways (day-first or month-first dates, naive local times, an epoch unit
that does not fit) are refused rather than guessed (issue 13); ``docs/data.md`` lists the rules.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

__all__ = [
    "BAR_COLUMNS",
    "DEFAULT_OUTLIER_MULTIPLE",
    "DUKASCOPY_TIMESTAMP_FORMAT",
    "FORMATS",
    "HISTDATA_TIMESTAMP_FORMAT",
    "HISTDATA_TIMEZONE",
    "OUTLIER_MODES",
    "DataError",
    "check_loader_options",
    "load_bars",
]

log = logging.getLogger(__name__)

FORMATS = ("auto", "dukascopy", "histdata", "csv", "parquet", "dbn")
"""Values accepted by ``load_bars(format=...)``."""

BAR_COLUMNS = ("open", "high", "low", "close", "volume")
"""Columns of every loaded frame (``spread`` is added when the source has one)."""

PRICE_COLUMNS = ("open", "high", "low", "close")

DUKASCOPY_TIMESTAMP_FORMAT = "%d.%m.%Y %H:%M:%S.%f"
"""How Dukascopy writes ``Gmt time`` stamps (read day-first; a ``Local time`` column adds a
``GMT+0100``-style UTC offset)."""
HISTDATA_TIMESTAMP_FORMAT = "%Y%m%d %H%M%S"
HISTDATA_TIMEZONE = "Etc/GMT+5"
"""HistData stamps bars in EST *without* daylight saving (fixed UTC-5, all year), per
histdata.com's format notes; ``Etc/GMT+5`` is that zone (POSIX signs are inverted)."""

EPOCH_UNITS = ("s", "ms", "us", "ns")
"""``timestamp_format`` values meaning "numbers since the Unix epoch in this unit"."""

OUTLIER_MODES = ("error", "drop")
"""Values of ``load_bars(outliers=...)``: raise at the first bad bar, or drop and log them."""

DEFAULT_OUTLIER_MULTIPLE = 25.0
"""A price further than this many robust volatilities from its neighbours is a spike. The
largest on the 2017 EUR/USD hourly sample is 4.8 (a US payrolls hour; the French election gap
scores 4.3); a 10 % typo in an hourly EUR/USD price scores 40-60."""

_SPIKE_HALF_WINDOW = 10
"""The level a price is compared with: the median log close of the 2 x 10 + 1 bars around it
(a Hampel filter), so runs of up to 10 bad bars are caught while a level shift is not."""
_SCALE_HALF_WINDOW = 50
"""Recent volatility: 1.4826 x the median bar activity (the larger of the absolute log
close-to-close move and the log high/low range) of the 2 x 50 + 1 bars around a bar, never
below the same figure over the whole file (quiet hours, flat M1 closes)."""
_MAD_TO_SIGMA = 1.4826

_SECONDS_PER = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_REPRESENTABLE_S = (pd.Timestamp.min.value / 1e9, pd.Timestamp.max.value / 1e9)
_PLAUSIBLE_S = (pd.Timestamp("1990-01-01").value / 1e9, pd.Timestamp("2100-01-01").value / 1e9)
"""An epoch stamp outside 1990-2100 is refused when another unit puts it inside (s vs ms)."""
_SECONDS_PER_YEAR = 365.2425 * 86400

_DATE_FIELDS = re.compile(r"^\s*(\d{1,2})([./-])(\d{1,2})\2(\d{4}|\d{2})(?!\d)")
"""``a/b/yyyy``-like dates: day-first or month-first (also with ``.`` or ``-``)."""
_DUKASCOPY_HEADERS = ("time", "gmt time", "local time")
_DBN_MAGIC = b"DBN"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

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


@dataclass(frozen=True)
class _Options:
    """How naive stamps are placed in time and what happens to bad prices."""

    timezone: str | None
    outliers: str
    outlier_multiple: float | None


def check_loader_options(
    *, timezone: str | None, outliers: str, outlier_multiple: float | None
) -> None:
    """Raise `ValueError` naming the value and the valid choices for a bad loader option."""
    if timezone is not None:
        valid = isinstance(timezone, str)
        if valid:
            try:
                pd.Timestamp("2017-01-01").tz_localize(timezone)
            except (KeyError, ValueError, TypeError):
                valid = False
        if not valid:
            raise ValueError(
                "timezone must be None or an IANA time zone name such as 'UTC', "
                f"'Europe/Zurich' or 'Etc/GMT+5' (fixed UTC-5); got timezone={timezone!r}"
            )
    if outliers not in OUTLIER_MODES:
        raise ValueError(f"outliers must be one of {OUTLIER_MODES}; got outliers={outliers!r}")
    if outlier_multiple is not None and (
        isinstance(outlier_multiple, bool)
        or not isinstance(outlier_multiple, (int, float))
        or not outlier_multiple > 0
    ):
        raise ValueError(
            "outlier_multiple must be > 0 or None (no spike check); "
            f"got outlier_multiple={outlier_multiple!r}"
        )


def load_bars(
    path: str | Path,
    *,
    format: str = "auto",  # noqa: A002 - the natural name for a file format
    columns: Mapping[str, str] | None = None,
    timestamp_format: str | None = None,
    instrument_id: int | None = None,
    timezone: str | None = None,
    outliers: str = "error",
    outlier_multiple: float | None = DEFAULT_OUTLIER_MULTIPLE,
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
            for numeric epoch stamps (refused when the numbers do not fit the unit). ``None``
            uses the format's own (Dukascopy, HistData) or infers it; ``dd/mm/yyyy``-like dates
            are refused as ambiguous unless a day above 12 in the file settles the order
            (dotted ``dd.mm.yyyy`` is day-first). ``GMT+0100``-style suffixes are read as UTC
            offsets.
        instrument_id: DBN only: which instrument to keep when the file holds several.
        timezone: Time zone of naive stamps (IANA name). ``None``: UTC, except HistData
            (EST without DST, `HISTDATA_TIMEZONE`) and a ``Local time`` column, which is
            refused. Stamps with an offset keep it; epoch numbers are UTC.
        outliers: One of `OUTLIER_MODES`: ``"error"`` raises at the first bar with an
            impossible price (NaN, inf, <= 0) or a spike; ``"drop"`` drops those bars and logs
            a warning with their count and lines.
        outlier_multiple: A price is a spike when it lies further than this many robust
            volatilities (1.4826 x the recent median of each bar's larger of its absolute log
            move and log range) from the median close of the bars around it; ``None`` turns
            the spike check off.

    Returns:
        Bars indexed by UTC open time, float64 ``open, high, low, close, volume`` (+ ``spread``).

    Raises:
        FileNotFoundError: When ``path`` does not exist.
        ValueError: When ``format``, ``timezone``, ``outliers`` or ``outlier_multiple`` is
            not valid.
        DataError: When the data are bad or could be misread (missing columns, unparseable
            or ambiguous timestamps, naive local times, epoch numbers that do not fit the unit,
            non-increasing timestamps, NaN/inf/non-positive prices, spikes, high below
            low/open/close, fewer than 2 bars, a file that is not what ``format`` says).

    Example:
        >>> bars = load_bars("EURUSD_Candlestick_1_Hour_ASK_01.01.2017-31.12.2017.csv")
        ... # doctest: +SKIP
        >>> bars.loc["2017-03-01", "close"]  # doctest: +SKIP
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format=}")
    check_loader_options(
        timezone=timezone, outliers=outliers, outlier_multiple=outlier_multiple
    )
    options = _Options(timezone, outliers, outlier_multiple)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    if format == "auto":
        format = _detect_format(path, columns)  # noqa: A001
    if format == "parquet":
        return _load_parquet(path, columns, timestamp_format, options)
    if format == "dbn":
        return _load_dbn(path, instrument_id, options)
    return _load_csv(path, format, columns, timestamp_format, options)


def _detect_format(path: Path, columns: Mapping[str, str] | None) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".dbn", ".dbn.zst")):
        return "dbn"
    first, second = _first_lines(path)
    if _HISTDATA_LINE.match(first):
        return "histdata"
    header = first.lower().split(",")[0].strip()
    if columns is None and header in _DUKASCOPY_HEADERS and _DUKASCOPY_STAMP.match(second):
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
    options: _Options,
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
    timezone = options.timezone
    if histdata:
        mapping = {name: name for name in names}
        fmt_ts = timestamp_format or HISTDATA_TIMESTAMP_FORMAT
        # EST without DST whatever the stamps' format (issue 13: an explicit format skipped it).
        timezone = timezone or HISTDATA_TIMEZONE
    else:
        mapping = _resolve_columns(list(raw.columns), columns, where, "line 1 (header)")
        fmt_ts = timestamp_format
    stamps = _parse_timestamps(
        raw[mapping["timestamp"]], fmt_ts, where, "line", lines,
        timezone=timezone, day_first=True if fmt == "dukascopy" else None,
    )
    return _build(raw, mapping, stamps, where, "line", lines, options)


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
    *,
    timezone: str | None = None,
    day_first: bool | None = None,
) -> pd.DatetimeIndex:
    """UTC, nanosecond timestamps; the first unparseable or ambiguous value raises `DataError`.

    Args:
        raw: The timestamp column; its name says whether naive stamps are local times.
        timestamp_format: strftime format, one of `EPOCH_UNITS`, or None to infer it.
        timezone: Zone of naive stamps; None: UTC, refused for a "local time" column.
        day_first: True for sources known to write ``dd.mm.yyyy`` (Dukascopy); None decides
            from the file (`_date_order`).
    """
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(raw):
        stamps = pd.DatetimeIndex(raw)
        text = raw.astype("string")
    elif timestamp_format in EPOCH_UNITS:
        return _epoch_stamps(raw, timestamp_format, where, unit, locations)
    else:
        text = raw.astype("string").str.strip()
        fmt, order = timestamp_format, None
        if fmt is None:
            order = _date_order(text, where, unit, locations, day_first)
            if order is not None:
                sample = text.dropna().iloc[0]
                fmt = guess_datetime_format(sample, dayfirst=order)
        kwargs = {"dayfirst": order} if fmt is None and order is not None else {}
        try:
            stamps = pd.DatetimeIndex(
                pd.to_datetime(text, format=fmt, errors="coerce", utc=False, **kwargs)
            )
        except (ValueError, TypeError):  # mixed UTC offsets (DST) and the like
            stamps = pd.DatetimeIndex(
                pd.to_datetime(text, format=fmt, errors="coerce", utc=True, **kwargs)
            )
        timestamp_format = fmt
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
    if stamps.tz is None:
        stamps = _localize(stamps, text, str(raw.name), timezone, where, unit, locations)
    return stamps.tz_convert("UTC").as_unit("ns")


def _date_order(
    text: pd.Series,
    where: str,
    unit: str,
    locations: np.ndarray,
    day_first: bool | None,
) -> bool | None:
    """Whether ``a/b/yyyy``-like dates are day-first; None when the stamps are not like that.

    A first field above 12 (somewhere in the file) proves day-first, a second one month-first;
    both is an error, neither is ambiguous and refused, except for dotted dates (day-first, as
    Dukascopy and European locales write them) and files where the two fields always agree.
    """
    parts = text.str.extract(_DATE_FIELDS)
    matched = np.flatnonzero(parts[0].notna().to_numpy())
    if not matched.size:
        return None
    parts = parts.iloc[matched]
    first, second = (pd.to_numeric(parts[k]).to_numpy() for k in (0, 2))
    sep = str(parts[1].iloc[0])

    def line(i: int) -> int:
        return int(locations[matched[i]])

    def value(i: int) -> str:
        return str(text.iloc[matched[i]])

    short_year = np.flatnonzero(parts[3].str.len().to_numpy() == 2)
    if short_year.size:
        i = int(short_year[0])
        raise _fail(
            where, unit, line(i),
            f"two-digit year in {value(i)!r}: yy{sep}mm{sep}dd, dd{sep}mm{sep}yy or "
            f"mm{sep}dd{sep}yy? pass timestamp_format (e.g. '%d{sep}%m{sep}%y')",
        )
    if day_first is not None:
        return day_first
    by_day = np.flatnonzero((first > 12) & (first <= 31))
    by_month = np.flatnonzero((second > 12) & (second <= 31))
    if by_day.size and by_month.size:
        i, j = sorted((int(by_day[0]), int(by_month[0])))
        reads = ("day-first", "month-first") if i == by_day[0] else ("month-first", "day-first")
        raise _fail(
            where, unit, line(j),
            f"date {value(j)!r} can only be {reads[1]} but {unit} {line(i)} ({value(i)!r}) can "
            f"only be {reads[0]}; the file mixes date orders: fix those rows or pass "
            "timestamp_format",
        )
    if by_day.size:
        return True
    if by_month.size:
        return False
    differ = np.flatnonzero(first != second)
    if sep == "." or not differ.size:
        return True
    i = int(differ[0])
    dmy = guess_datetime_format(value(i), dayfirst=True) or f"%d{sep}%m{sep}%Y"
    mdy = guess_datetime_format(value(i), dayfirst=False) or f"%m{sep}%d{sep}%Y"
    raise _fail(
        where, unit, line(i),
        f"ambiguous date {value(i)!r}: day-first or month-first? No day above 12 in the file "
        f"settles it; pass timestamp_format={dmy!r} (day first) or {mdy!r} (month first)",
    )


def _epoch_stamps(
    raw: pd.Series, epoch_unit: str, where: str, unit: str, locations: np.ndarray
) -> pd.DatetimeIndex:
    """Epoch numbers to UTC stamps; numbers that do not fit ``epoch_unit`` raise `DataError`."""
    numbers = pd.to_numeric(raw, errors="coerce")
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)

    def seconds_as(u: str) -> np.ndarray:
        return values * _SECONDS_PER[u]

    def plausible(seconds: np.ndarray) -> np.ndarray:
        return (seconds >= _PLAUSIBLE_S[0]) & (seconds < _PLAUSIBLE_S[1])

    seconds = seconds_as(epoch_unit)
    representable = (seconds >= _REPRESENTABLE_S[0]) & (seconds <= _REPRESENTABLE_S[1])
    others = [u for u in EPOCH_UNITS if u != epoch_unit]
    fits_other = np.logical_or.reduce([plausible(seconds_as(u)) for u in others])
    wrong = np.flatnonzero(
        np.isfinite(values) & (~representable | (~plausible(seconds) & fits_other))
    )
    if wrong.size:
        i = int(wrong[0])
        if representable[i]:
            reading = f"it reads {pd.Timestamp(int(seconds[i] * 1e9))}"
        elif abs(seconds[i]) < 1e6 * _SECONDS_PER_YEAR:
            reading = f"year {int(1970 + seconds[i] / _SECONDS_PER_YEAR)}, outside 1677-2262"
        else:
            reading = "far outside 1677-2262"
        better = next((u for u in others if plausible(seconds_as(u)[i : i + 1])[0]), None)
        hint = (
            f"with timestamp_format={better!r} it reads "
            f"{pd.Timestamp(int(seconds_as(better)[i] * 1e9))} UTC"
            if better
            else f"epoch numbers must give dates in 1677-2262 (units: {EPOCH_UNITS})"
        )
        raise _fail(
            where, unit, int(locations[i]),
            f"epoch timestamp {raw.iloc[i]} does not fit timestamp_format={epoch_unit!r} "
            f"({reading}); {hint}",
        )
    stamps = pd.DatetimeIndex(pd.to_datetime(numbers, unit=epoch_unit, errors="coerce"))
    bad = np.flatnonzero(stamps.isna())
    if bad.size:
        i = int(bad[0])
        raise _fail(
            where, unit, int(locations[i]),
            f"unparseable timestamp {raw.iloc[i]!r} (expected a number of {epoch_unit} since "
            "1970-01-01 UTC)",
        )
    return stamps.tz_localize("UTC").as_unit("ns")


def _localize(
    stamps: pd.DatetimeIndex,
    text: pd.Series,
    column: str,
    timezone: str | None,
    where: str,
    unit: str,
    locations: np.ndarray,
) -> pd.DatetimeIndex:
    """Naive stamps placed in ``timezone`` (default UTC); naive "local time" is refused."""
    if timezone is None:
        if "local" in column.strip().lower():
            raise _fail(
                where, unit, int(locations[0]),
                f"timestamp column {column!r} holds local times with no UTC offset "
                f"({text.iloc[0]!r}); pass timezone= with the exporter's zone (an IANA name "
                "such as 'Europe/Zurich') or export GMT/UTC times",
            )
        return stamps.tz_localize("UTC")
    try:
        # A repeated hour at the autumn change is placed by its order (first DST, then not).
        return stamps.tz_localize(timezone, ambiguous="infer", nonexistent="raise")
    except ValueError:
        probe = stamps.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
        bad = np.flatnonzero(probe.isna())
        i = int(bad[0]) if bad.size else 0
        raise _fail(
            where, unit, int(locations[i]),
            f"local time {text.iloc[i]!r} does not exist or is ambiguous in "
            f"timezone={timezone!r} (a daylight-saving change); fix the row or export UTC times",
        ) from None


# --------------------------------------------------------------------------- Parquet


def _load_parquet(
    path: Path,
    columns: Mapping[str, str] | None,
    timestamp_format: str | None,
    options: _Options,
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
    stamps = _parse_timestamps(
        raw[mapping["timestamp"]], timestamp_format, where, "row", rows,
        timezone=options.timezone,
    )
    return _build(raw, mapping, stamps, where, "row", rows, options)


# --------------------------------------------------------------------------- DBN


def _load_dbn(path: Path, instrument_id: int | None, options: _Options) -> pd.DataFrame:
    import databento_dbn as dbn

    where = str(path)
    zstd = path.name.lower().endswith(".zst")
    payload = path.read_bytes()
    magic, kind = (_ZSTD_MAGIC, "zstd-compressed DBN") if zstd else (_DBN_MAGIC, "DBN")
    if not payload.startswith(magic):
        start = f"starts with {payload[:8]!r}" if payload else "is empty"
        raise DataError(
            f"{where}: not a DBN file: it {start}, a {kind} file starts with bytes "
            f"{magic.hex(' ')}; pass the file's format= (one of {FORMATS})"
        )
    compression = dbn.Compression.ZSTD if zstd else dbn.Compression.NONE
    decoder = dbn.DBNDecoder(compression=compression)
    try:
        decoded = decoder.write_and_decode(payload)
    except Exception as err:  # DBNError and friends from the Rust decoder
        if "header" in str(err).lower():
            raise DataError(f"{where}: not a DBN file ({err})") from err
        raise _fail(where, "record", 1, f"cannot decode the DBN file ({err})") from err
    records = [r for r in decoded if not isinstance(r, dbn.Metadata)]
    metadata = next((r for r in decoded if isinstance(r, dbn.Metadata)), None)
    leftover = len(decoder.buffer())
    if metadata is None:
        raise DataError(
            f"{where}: truncated DBN file: its {len(payload)} bytes end inside the metadata "
            "header"
        )
    if leftover:
        raise DataError(
            f"{where}: truncated DBN file: the last {leftover} bytes are not a whole record "
            f"(record {len(records) + 1}); download it again"
        )
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
    return _build(
        raw, mapping, stamps.as_unit("ns"), where, "record", np.asarray(positions), options
    )


# --------------------------------------------------------------------------- checks


def _build(
    raw: pd.DataFrame,
    mapping: Mapping[str, str],
    stamps: pd.DatetimeIndex,
    where: str,
    unit: str,
    locations: np.ndarray,
    options: _Options,
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
    frame = _check(frame, where, unit, np.asarray(locations), options)
    frame.attrs["source"] = where
    return frame


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _check(
    frame: pd.DataFrame, where: str, unit: str, locations: np.ndarray, options: _Options
) -> pd.DataFrame:
    """Raise `DataError` at the first bad row of each kind, checked in a fixed order.

    With ``outliers="drop"``, bars with an impossible price (NaN, inf, <= 0) or a spike are
    dropped (and logged) instead; the other checks still raise.
    """
    drop = options.outliers == "drop"
    hint = "; fix the row or pass outliers='drop'"
    prices = {name: frame[name].to_numpy() for name in PRICE_COLUMNS}
    impossible = np.zeros(len(frame), dtype=bool)
    for name, values in prices.items():
        nonfinite, nonpositive = ~np.isfinite(values), values <= 0
        if drop:
            impossible |= nonfinite | nonpositive
            continue
        i = _first(nonfinite)
        if i is not None:
            raise _fail(
                where, unit, int(locations[i]), f"{name} is {values[i]} (NaN or inf){hint}"
            )
        i = _first(nonpositive)
        if i is not None:
            raise _fail(
                where, unit, int(locations[i]), f"{name} is not positive: {values[i]}{hint}"
            )
    stamps = frame.index.asi8
    i = _first(np.diff(stamps) <= 0)
    if i is not None:
        raise _fail(
            where, unit, int(locations[i + 1]),
            f"non-increasing timestamps: {frame.index[i + 1]} does not come after "
            f"{frame.index[i]} ({unit} {int(locations[i])}); sort the file and drop duplicates",
        )
    spiking = np.zeros(len(frame), dtype=bool)
    if options.outlier_multiple is not None:
        spiking[~impossible] = _spikes(
            frame.loc[~impossible], where, unit, locations[~impossible],
            options.outlier_multiple, drop,
        )
    dropped = impossible | spiking
    if dropped.any():
        lines = ", ".join(str(int(x)) for x in locations[dropped][:10])
        more = ", ..." if dropped.sum() > 10 else ""
        log.warning(
            "%s: dropped %d bar(s) with impossible (NaN, inf, <= 0) or spiking prices (%ss %s%s);"
            " outliers='drop', outlier_multiple=%s",
            where, int(dropped.sum()), unit, lines, more, options.outlier_multiple,
        )
        frame, locations = frame.loc[~dropped], locations[~dropped]
        prices = {name: frame[name].to_numpy() for name in PRICE_COLUMNS}
    o, h, lo, c = prices["open"], prices["high"], prices["low"], prices["close"]
    i = _first(h < lo)
    if i is not None:
        raise _fail(where, unit, int(locations[i]), f"high {h[i]} is below low {lo[i]}")
    i = _first((h < o) | (h < c))
    if i is not None:
        raise _fail(
            where, unit, int(locations[i]),
            f"high {h[i]} is below open {o[i]} or close {c[i]}",
        )
    i = _first((lo > o) | (lo > c))
    if i is not None:
        raise _fail(
            where, unit, int(locations[i]),
            f"low {lo[i]} is above open {o[i]} or close {c[i]}",
        )
    for name in ("volume", "spread"):
        if name in frame:
            values = frame[name].to_numpy()
            i = _first(~np.isfinite(values) | (values < 0))
            if i is not None:
                raise _fail(
                    where, unit, int(locations[i]),
                    f"{name} is {values[i]} (must be finite and >= 0)",
                )
    if len(frame) < 2:
        location = int(locations[-1]) if len(locations) else 1
        raise _fail(where, unit, location, f"too few bars: {len(frame)}, need at least 2")
    return frame


def _spikes(
    frame: pd.DataFrame,
    where: str,
    unit: str,
    locations: np.ndarray,
    multiple: float,
    drop: bool,
) -> np.ndarray:
    """Bars with a price beyond ``multiple`` robust volatilities of the local level.

    Level (a Hampel filter): the median log close of the bars around; a price is compared with
    the band between the level before and at its bar, so a jump from one level to another (a
    weekend gap, a re-based series) is no spike. Scale: the robust bar activity (log move or
    range) around the bar, floored by the file's own. Positive finite prices only.
    """
    n = len(frame)
    if n < 3:
        return np.zeros(n, dtype=bool)
    log_close = np.log(frame["close"].to_numpy())
    level = (
        pd.Series(log_close)
        .rolling(2 * _SPIKE_HALF_WINDOW + 1, center=True, min_periods=1)
        .median()
        .to_numpy()
    )
    before = np.r_[level[0], level[:-1]]
    band_low, band_high = np.minimum(level, before), np.maximum(level, before)
    moves = np.abs(np.diff(log_close))
    moves = np.r_[moves[0], moves]  # bar t's incoming move (bar 0: the next one)
    ranges = np.log(frame["high"].to_numpy() / frame["low"].to_numpy())  # < 0 when swapped
    activity = np.maximum(moves, ranges)
    recent = _MAD_TO_SIGMA * (
        pd.Series(activity)
        .rolling(2 * _SCALE_HALF_WINDOW + 1, center=True, min_periods=1)
        .median()
        .to_numpy()
    )
    typical = activity[activity > 0]
    floor = _MAD_TO_SIGMA * float(np.median(typical)) if typical.size else 0.0
    scale = np.maximum(recent, floor)
    ratios = {}
    for name in PRICE_COLUMNS:
        log_price = np.log(frame[name].to_numpy())
        distance = np.maximum(np.maximum(log_price - band_high, band_low - log_price), 0.0)
        ratio = np.where(distance > 0, np.inf, 0.0)
        np.divide(distance, scale, out=ratio, where=scale > 0)
        ratios[name] = ratio
    worst = np.max(np.vstack(list(ratios.values())), axis=0)
    spiking = worst > multiple
    i = _first(spiking)
    if i is not None and not drop:
        name = max(PRICE_COLUMNS, key=lambda k: ratios[k][i])
        value = float(frame[name].iloc[i])
        raise _fail(
            where, unit, int(locations[i]),
            f"{name} {value!r} is a spike: {ratios[name][i]:.0f} x the recent volatility "
            f"({scale[i]:.2g} in log price) away from the closes around it (median "
            f"{np.exp(level[i]):.6g}); valid: within outlier_multiple={multiple:g} x; fix the "
            "row, pass outliers='drop' to drop such bars, or a larger outlier_multiple",
        )
    return spiking
