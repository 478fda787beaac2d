"""Loaders: the shipped sample, small files of every format, and clear errors for bad data."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pandas as pd
import pytest

from fxai_tune.data import (
    DataConfig,
    DataError,
    DataManager,
    load_bars,
    load_sample,
    sample_path,
)

DATA = Path(__file__).parent / "data"
DUKASCOPY = DATA / "dukascopy_eurusd_1h.csv"
HISTDATA = DATA / "histdata_eurusd_m1.csv"
GENERIC = DATA / "generic_ohlc.csv"
GENERIC_COLUMNS = {
    "timestamp": "date_utc",
    "open": "px_open",
    "high": "px_high",
    "low": "px_low",
    "close": "px_close",
    "spread": "spread_px",
}
HOUR_NS = 3600 * 10**9


def _assert_bar_frame(bars: pd.DataFrame) -> None:
    assert isinstance(bars.index, pd.DatetimeIndex)
    assert str(bars.index.tz) == "UTC"
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert list(bars.columns)[:5] == ["open", "high", "low", "close", "volume"]
    assert all(dtype == np.float64 for dtype in bars.dtypes)


# ------------------------------------------------------------------ good files


def test_sample_holds_6225_eurusd_hourly_bars_of_2017() -> None:
    bars = load_sample()
    _assert_bar_frame(bars)
    assert len(bars) == 6225
    assert bars.index[0] == pd.Timestamp("2017-01-01 22:00", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2017-12-29 21:00", tz="UTC")
    assert bars.iloc[0]["open"] == pytest.approx(1.05236)
    assert "spread" not in bars  # ASK prices only


def test_sample_weekend_gaps_are_kept_not_reported() -> None:
    gaps = np.diff(load_sample().index.asi8)
    assert gaps.max() >= 48 * HOUR_NS  # Friday 21:00 -> Sunday 22:00
    assert np.median(gaps) == HOUR_NS


def test_dukascopy_csv_is_detected_and_parsed_as_utc() -> None:
    bars = load_bars(DUKASCOPY)
    _assert_bar_frame(bars)
    assert len(bars) == 18
    assert bars.index[0] == pd.Timestamp("2017-01-06 16:00", tz="UTC")
    assert bars.loc["2017-01-08 22:00", "close"].item() == pytest.approx(1.05329)
    assert bars.attrs["source"] == str(DUKASCOPY)


def test_histdata_csv_is_shifted_from_est_without_dst_to_utc() -> None:
    bars = load_bars(HISTDATA)
    _assert_bar_frame(bars)
    assert len(bars) == 5
    assert bars.index[0] == pd.Timestamp("2017-01-02 22:00", tz="UTC")  # 17:00 EST
    assert bars["volume"].eq(0).all()


def test_generic_csv_uses_the_column_map_and_timestamp_format() -> None:
    bars = load_bars(GENERIC, columns=GENERIC_COLUMNS, timestamp_format="%Y/%m/%d %H:%M")
    _assert_bar_frame(bars)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume", "spread"]
    assert bars.index[1] == pd.Timestamp("2017-01-02 01:00", tz="UTC")
    assert bars["spread"].iloc[0] == pytest.approx(0.00002)
    assert bars["volume"].eq(0).all()  # no volume column: zeros


def test_generic_csv_reads_epoch_seconds_and_offset_aware_timestamps(tmp_path: Path) -> None:
    epoch = tmp_path / "epoch.csv"
    epoch.write_text(
        "ts,open,high,low,close\n1483315200,1.1,1.2,1.0,1.1\n1483318800,1.1,1.2,1.0,1.15\n"
    )
    bars = load_bars(epoch, columns={"timestamp": "ts"}, timestamp_format="s")
    assert bars.index[0] == pd.Timestamp("2017-01-02 00:00", tz="UTC")
    aware = tmp_path / "aware.csv"
    aware.write_text(
        "Date,Open,High,Low,Close,Volume\n"
        "2017-01-02T01:00:00+01:00,1.1,1.2,1.0,1.1,5\n"
        "2017-01-02T02:00:00+01:00,1.1,1.2,1.0,1.1,5\n"
    )
    assert load_bars(aware).index[0] == pd.Timestamp("2017-01-02 00:00", tz="UTC")


def test_day_first_dukascopy_stamps_stay_day_first_with_a_column_map(tmp_path: Path) -> None:
    path = tmp_path / "renamed.csv"
    path.write_text(DUKASCOPY.read_text().replace("Close", "Last", 1))
    bars = load_bars(path, columns={"close": "Last"})
    assert bars.index[0] == pd.Timestamp("2017-01-06 16:00", tz="UTC")  # not June 1st


def test_gzipped_sample_is_detected_as_dukascopy() -> None:
    assert len(load_bars(sample_path())) == 6225


def test_parquet_with_a_datetime_index_loads(tmp_path: Path) -> None:
    path = tmp_path / "bars.parquet"
    load_bars(DUKASCOPY).to_parquet(path)
    bars = load_bars(path)
    _assert_bar_frame(bars)
    pd.testing.assert_frame_equal(bars, load_bars(DUKASCOPY), check_freq=False)


def _write_dbn(path: Path, rows: list[tuple[int, float, float, float, float, int]]) -> None:
    start = rows[0][0]
    metadata = dbn.Metadata(
        dataset="TEST.FX",
        start=start,
        stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID,
        schema=dbn.Schema.OHLCV_1H,
        symbols=["EURUSD"],
    )
    payload = metadata.encode()
    scale = dbn.FIXED_PRICE_SCALE
    for ts, o, h, lo, c, v in rows:
        record = dbn.OHLCVMsg(
            dbn.RType.OHLCV_1H, 1, 42, ts,
            round(o * scale), round(h * scale), round(lo * scale), round(c * scale), v,
        )
        payload += bytes(record)
    path.write_bytes(payload)


def _dbn_rows(n: int = 4) -> list[tuple[int, float, float, float, float, int]]:
    t0 = pd.Timestamp("2017-01-02 00:00", tz="UTC").value
    return [(t0 + i * HOUR_NS, 1.05, 1.06, 1.04, 1.055 + i * 1e-5, 100 + i) for i in range(n)]


def test_dbn_ohlcv_file_decodes_fixed_point_prices(tmp_path: Path) -> None:
    path = tmp_path / "eurusd.ohlcv-1h.dbn"
    _write_dbn(path, _dbn_rows())
    bars = load_bars(path)
    _assert_bar_frame(bars)
    assert len(bars) == 4
    assert bars.index[0] == pd.Timestamp("2017-01-02 00:00", tz="UTC")
    assert bars["close"].iloc[3] == pytest.approx(1.05503)
    assert bars["volume"].iloc[3] == 103.0


def test_data_manager_reads_a_file_source(tmp_path: Path) -> None:
    path = tmp_path / "sample.parquet"
    load_sample().to_parquet(path)
    dm = DataManager(DataConfig(source=str(path)), windows={"1h": 16})
    assert len(dm.bars) == 6225 and dm.market("train").price_side == "bid"


# ------------------------------------------------------------------ bad data

_HEADER = "Time,Open,High,Low,Close,Volume"
_GOOD_ROWS = [
    "02.01.2017 00:00:00.000,1.05283,1.05283,1.05268,1.05281,100",
    "02.01.2017 01:00:00.000,1.05282,1.05286,1.05225,1.05240,100",
    "02.01.2017 02:00:00.000,1.05240,1.05251,1.05212,1.05216,100",
    "02.01.2017 03:00:00.000,1.05216,1.05230,1.05196,1.05220,100",
]


def _csv(tmp_path: Path, rows: list[str], header: str = _HEADER, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _replace(row: int, text: str) -> list[str]:
    """The good rows with data row ``row`` (0-based) replaced; it sits on line ``row + 2``."""
    rows = list(_GOOD_ROWS)
    rows[row] = text
    return rows


BAD_ROWS = {
    "unparseable timestamp": (
        _replace(2, "32.01.2017 02:00:00.000,1.05240,1.05251,1.05212,1.05216,100"),
        4,
        "unparseable timestamp '32.01.2017 02:00:00.000'",
    ),
    "non-increasing timestamp": (
        _replace(2, "02.01.2017 01:00:00.000,1.05240,1.05251,1.05212,1.05216,100"),
        4,
        "non-increasing timestamps",
    ),
    "NaN price": (
        _replace(1, "02.01.2017 01:00:00.000,1.05282,1.05286,1.05225,,100"),
        3,
        "close is nan (NaN or inf)",
    ),
    "inf price": (
        _replace(3, "02.01.2017 03:00:00.000,1.05216,inf,1.05196,1.05220,100"),
        5,
        "high is inf (NaN or inf)",
    ),
    "non-positive price": (
        _replace(1, "02.01.2017 01:00:00.000,0,1.05286,0,1.05240,100"),
        3,
        "open is not positive",
    ),
    "text price": (
        _replace(2, "02.01.2017 02:00:00.000,1.05240,abc,1.05212,1.05216,100"),
        4,
        "high is not a number: 'abc'",
    ),
    "high below low": (
        _replace(2, "02.01.2017 02:00:00.000,1.05240,1.05200,1.05251,1.05216,100"),
        4,
        "high 1.052 is below low 1.05251",
    ),
    "high below close": (
        _replace(3, "02.01.2017 03:00:00.000,1.05216,1.05230,1.05196,1.05300,100"),
        5,
        "high 1.0523 is below open 1.05216 or close 1.053",
    ),
    "low above open": (
        _replace(0, "02.01.2017 00:00:00.000,1.05283,1.05290,1.05285,1.05288,100"),
        2,
        "low 1.05285 is above open 1.05283",
    ),
    "negative volume": (
        _replace(1, "02.01.2017 01:00:00.000,1.05282,1.05286,1.05225,1.05240,-5"),
        3,
        "volume is -5.0",
    ),
    "too few bars": ([_GOOD_ROWS[0]], 2, "too few bars: 1, need at least 2"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_csv_row_error_names_file_line_and_problem(tmp_path: Path, case: str) -> None:
    rows, line, problem = BAD_ROWS[case]
    path = _csv(tmp_path, rows)
    with pytest.raises(DataError) as info:
        load_bars(path, format="dukascopy")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}, line {line}: ")
    assert problem in message


def test_missing_columns_error_lists_what_exists_and_what_is_needed(tmp_path: Path) -> None:
    rows = [",".join(r.split(",")[:2] + r.split(",")[4:]) for r in _GOOD_ROWS]  # no High/Low
    path = _csv(tmp_path, rows, header="Time,Open,Close,Volume")
    with pytest.raises(DataError) as info:
        load_bars(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 1 (header): missing column(s) 'high', 'low'")
    assert "the file has ['Time', 'Open', 'Close', 'Volume']" in message
    assert "needed: ['timestamp', 'open', 'high', 'low', 'close']" in message


def test_column_map_naming_an_absent_column_is_reported(tmp_path: Path) -> None:
    path = _csv(tmp_path, _GOOD_ROWS)
    with pytest.raises(DataError, match=r"missing column\(s\) 'close' \(mapped to 'Last'\)"):
        load_bars(path, columns={"close": "Last"})


def test_blank_lines_do_not_shift_reported_line_numbers(tmp_path: Path) -> None:
    rows = [_GOOD_ROWS[0], "", _GOOD_ROWS[1], _GOOD_ROWS[2].replace("1.05251", "nan")]
    path = _csv(tmp_path, rows)
    with pytest.raises(DataError, match=re.escape(f"{path}, line 5: high is nan")):
        load_bars(path)


def test_bad_histdata_row_is_reported_at_its_line(tmp_path: Path) -> None:
    lines = HISTDATA.read_text().splitlines()
    lines[2] = "20170132 170200;1.045970;1.046020;1.045930;1.045950;0"
    path = tmp_path / "DAT_ASCII_EURUSD_M1_2017.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_bars(path, format="histdata")
    assert str(info.value).startswith(f"{path}, line 3: unparseable timestamp '20170132 170200'")


def test_bad_parquet_row_is_reported_by_row_number(tmp_path: Path) -> None:
    bars = load_bars(DUKASCOPY)
    bars.iloc[6, bars.columns.get_loc("low")] = -1.0
    path = tmp_path / "bad.parquet"
    bars.to_parquet(path)
    with pytest.raises(DataError, match=re.escape(f"{path}, row 7: low is not positive: -1.0")):
        load_bars(path)


def test_bad_dbn_record_is_reported_by_record_number(tmp_path: Path) -> None:
    rows = _dbn_rows()
    ts, o, h, lo, c, v = rows[2]
    rows[2] = (ts, o, lo, h, c, v)  # high and low swapped
    path = tmp_path / "bad.dbn"
    _write_dbn(path, rows)
    with pytest.raises(DataError) as info:
        load_bars(path)
    assert str(info.value).startswith(f"{path}, record 3: high 1.04 is below low 1.06")


def test_unknown_format_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="format must be one of .*'dukascopy'.*got format='xls'"):
        load_bars(DUKASCOPY, format="xls")


def test_too_few_bars_for_the_window_names_file_split_and_need(tmp_path: Path) -> None:
    path = tmp_path / "short.parquet"
    load_sample().iloc[:600].to_parquet(path)
    with pytest.raises(DataError) as info:
        DataManager(DataConfig(source=str(path)), windows={"1h": 64, "1d": 8})
    message = str(info.value)
    assert message.startswith(f"{path}, bars ")
    assert "split has" in message and "needs at least 215" in message


def test_data_package_imports_neither_torch_nor_lightning() -> None:
    code = (
        "import sys, fxai_tune.data; "
        "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
