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


# ------------------------------------------------------------------ loader traps (issue 13)
# Each was read silently wrong (or crashed) before; now a correct parse or a one-line DataError
# naming the file, the line and what is valid.


def _one_line_error(path: Path, line: int | None, *fragments: str, **kwargs: object) -> str:
    """Load ``path`` expecting a `DataError` at ``line`` holding every fragment."""
    with pytest.raises(DataError) as info:
        load_bars(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    prefix = f"{path}, line {line}: " if line is not None else f"{path}"
    assert message.startswith(prefix), message
    body = message[len(prefix):]  # the path may hold any word
    for fragment in fragments:
        assert fragment in body, message
    return message


def test_histdata_with_an_explicit_timestamp_format_is_still_shifted_from_est() -> None:
    bars = load_bars(HISTDATA, format="histdata", timestamp_format="%Y%m%d %H%M%S")
    assert bars.index[0] == pd.Timestamp("2017-01-02 22:00", tz="UTC")  # 17:00 EST
    pd.testing.assert_frame_equal(bars, load_bars(HISTDATA), check_freq=False)


def test_histdata_est_is_fixed_utc_minus_5_even_in_us_summer(tmp_path: Path) -> None:
    path = tmp_path / "DAT_ASCII_EURUSD_M1_201707.csv"
    path.write_text(
        "20170703 120000;1.13720;1.13730;1.13700;1.13710;0\n"
        "20170703 120100;1.13710;1.13740;1.13700;1.13730;0\n"
    )
    # New York is on EDT (UTC-4) in July; HistData stays on EST (UTC-5).
    assert load_bars(path).index[0] == pd.Timestamp("2017-07-03 17:00", tz="UTC")


def test_histdata_timezone_can_be_overridden(tmp_path: Path) -> None:
    bars = load_bars(HISTDATA, timezone="UTC")
    assert bars.index[0] == pd.Timestamp("2017-01-02 17:00", tz="UTC")


def _slash_dates(tmp_path: Path, stamps: list[str], name: str = "slash.csv") -> Path:
    rows = [f"{s},1.05283,1.05290,1.05268,1.05281" for s in stamps]
    return _csv(tmp_path, rows, header="Date,Open,High,Low,Close", name=name)


_AMBIGUOUS = ["05/01/2017 00:00", "06/01/2017 00:00", "07/01/2017 00:00"]


@pytest.mark.parametrize("sep", ["/", "-"])
def test_ambiguous_day_month_dates_are_refused_with_the_formats_to_pass(
    tmp_path: Path, sep: str
) -> None:
    path = _slash_dates(tmp_path, [s.replace("/", sep) for s in _AMBIGUOUS])
    _one_line_error(
        path, 2, "ambiguous date '05" + sep + "01" + sep + "2017 00:00'",
        f"timestamp_format='%d{sep}%m{sep}%Y %H:%M'", f"'%m{sep}%d{sep}%Y %H:%M'",
    )


def test_ambiguous_dates_parse_as_told_by_timestamp_format(tmp_path: Path) -> None:
    path = _slash_dates(tmp_path, _AMBIGUOUS)
    day_first = load_bars(path, timestamp_format="%d/%m/%Y %H:%M")
    assert day_first.index[0] == pd.Timestamp("2017-01-05", tz="UTC")
    month_first = load_bars(path, timestamp_format="%m/%d/%Y %H:%M")
    assert month_first.index[0] == pd.Timestamp("2017-05-01", tz="UTC")


def test_a_day_above_12_anywhere_settles_the_order(tmp_path: Path) -> None:
    day_first = _slash_dates(tmp_path, [*_AMBIGUOUS, "13/01/2017 00:00"], name="dmy.csv")
    bars = load_bars(day_first)
    assert bars.index[0] == pd.Timestamp("2017-01-05", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2017-01-13", tz="UTC")
    month_first = _slash_dates(tmp_path, ["01/05/2017", "01/06/2017", "01/13/2017"], name="m.csv")
    assert load_bars(month_first).index[0] == pd.Timestamp("2017-01-05", tz="UTC")


def test_dates_mixing_day_first_and_month_first_are_refused(tmp_path: Path) -> None:
    path = _slash_dates(tmp_path, ["13/01/2017", "14/01/2017", "01/15/2017"])
    _one_line_error(path, 4, "'01/15/2017'", "line 2 ('13/01/2017')", "timestamp_format")


def test_two_digit_years_are_refused_as_ambiguous(tmp_path: Path) -> None:
    path = _slash_dates(tmp_path, ["13/01/17", "14/01/17", "15/01/17"])
    _one_line_error(path, 2, "two-digit year", "timestamp_format")


def test_dotted_dates_are_day_first_as_dukascopy_writes_them(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        [r.replace(":00.000,", ",", 1) for r in _GOOD_ROWS],  # "02.01.2017 00:00" no seconds
        header="Date,Open,High,Low,Close,Volume",
    )
    assert load_bars(path).index[0] == pd.Timestamp("2017-01-02", tz="UTC")  # not Feb 1st


def _dukascopy_local(tmp_path: Path, stamps: list[str], header: str = "Local time") -> Path:
    rows = [f"{s},1.05283,1.05290,1.05268,1.05281,100" for s in stamps]
    return _csv(tmp_path, rows, header=f"{header},Open,High,Low,Close,Volume", name="local.csv")


def test_dukascopy_local_time_with_gmt_offset_is_converted_to_utc(tmp_path: Path) -> None:
    path = _dukascopy_local(
        tmp_path,
        [
            "26.03.2017 00:00:00.000 GMT+0100",  # CET
            "26.03.2017 01:00:00.000 GMT+0100",
            "26.03.2017 03:00:00.000 GMT+0200",  # CEST from 02:00 local
            "26.03.2017 04:00:00.000 GMT+0200",
        ],
    )
    bars = load_bars(path)
    expected = pd.date_range("2017-03-25 23:00", periods=4, freq="h", tz="UTC")
    pd.testing.assert_index_equal(
        bars.index, expected.as_unit("ns").rename("timestamp"), check_freq=False
    )


def test_naive_local_time_is_refused_unless_a_timezone_is_given(tmp_path: Path) -> None:
    path = _dukascopy_local(
        tmp_path,
        ["26.03.2017 00:00:00.000", "26.03.2017 01:00:00.000", "26.03.2017 03:00:00.000"],
    )
    _one_line_error(path, 2, "'Local time'", "no UTC offset", "'26.03.2017 00:00:00.000'",
                    "timezone=")
    bars = load_bars(path, timezone="Europe/Zurich")
    assert list(bars.index.hour) == [23, 0, 1]


def test_local_time_repeated_at_the_autumn_change_is_inferred(tmp_path: Path) -> None:
    path = _dukascopy_local(
        tmp_path,
        [f"29.10.2017 {h}:00:00.000" for h in ("00", "01", "02", "02", "03")],
    )
    bars = load_bars(path, timezone="Europe/Zurich")
    expected = pd.date_range("2017-10-28 22:00", periods=5, freq="h", tz="UTC")
    pd.testing.assert_index_equal(
        bars.index, expected.as_unit("ns").rename("timestamp"), check_freq=False
    )


def test_local_time_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    path = _dukascopy_local(
        tmp_path,
        [f"26.03.2017 {h}:00:00.000" for h in ("00", "01", "02", "03")],  # 02:00 is skipped
    )
    _one_line_error(path, 4, "'26.03.2017 02:00:00.000'", "'Europe/Zurich'",
                    timezone="Europe/Zurich")


def _epoch(tmp_path: Path, values: list[int]) -> Path:
    rows = [f"{v},1.05283,1.05290,1.05268,1.05281" for v in values]
    return _csv(tmp_path, rows, header="ts,open,high,low,close", name="epoch.csv")


def test_epoch_milliseconds_read_as_seconds_suggest_ms(tmp_path: Path) -> None:
    path = _epoch(tmp_path, [1483315200000, 1483318800000])
    _one_line_error(path, 2, "1483315200000", "timestamp_format='s'", "timestamp_format='ms'",
                    "2017-01-02 00:00:00", timestamp_format="s")
    assert load_bars(path, timestamp_format="ms").index[0] == pd.Timestamp("2017-01-02", tz="UTC")


def test_epoch_seconds_read_as_milliseconds_are_refused(tmp_path: Path) -> None:
    path = _epoch(tmp_path, [1483315200, 1483318800])  # would be 1970-01-18 as ms
    _one_line_error(path, 2, "1483315200", "1970-01-18", "timestamp_format='s'",
                    timestamp_format="ms")


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("text.dbn", DUKASCOPY.read_bytes()),
        ("short.dbn", b"hello"),
        ("empty.dbn", b""),
        ("text.dbn.zst", DUKASCOPY.read_bytes()),
    ],
)
def test_a_non_dbn_file_is_reported_as_not_dbn(tmp_path: Path, name: str, payload: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(DataError) as info:
        load_bars(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}")
    assert "not a DBN file" in message and "schema None" not in message
    assert "pass the file's format= (one of" in message  # what is valid


def test_a_truncated_dbn_file_is_reported(tmp_path: Path) -> None:
    good = tmp_path / "good.dbn"
    _write_dbn(good, _dbn_rows())
    path = tmp_path / "cut.dbn"
    for size in (20, len(good.read_bytes()) - 10):  # inside the header; inside a record
        path.write_bytes(good.read_bytes()[:size])
        with pytest.raises(DataError) as info:
            load_bars(path)
        assert str(info.value).startswith(f"{path}: truncated DBN file"), str(info.value)


# -------------------------------------------- spikes: beyond a multiple of recent volatility


def _sample_rows(n: int = 60, start: int = 100) -> tuple[str, list[list[str]]]:
    """Sample bars as Dukascopy CSV cells; data row ``i`` sits on line ``i + 2``."""
    bars = load_sample().iloc[start:start + n]
    rows = [
        [f"{t:%d.%m.%Y %H:%M:%S}.000", *(repr(float(x)) for x in row)]
        for t, row in zip(bars.index, bars[list(BAR_ORDER)].to_numpy(), strict=True)
    ]
    return _HEADER, rows


BAR_ORDER = ("open", "high", "low", "close", "volume")
_COL = {name: i + 1 for i, name in enumerate(BAR_ORDER)}


def _spiked(tmp_path: Path, edits: dict[tuple[int, str], str], n: int = 60) -> Path:
    header, rows = _sample_rows(n)
    for (row, column), value in edits.items():
        rows[row][_COL[column]] = value
    return _csv(tmp_path, [",".join(r) for r in rows], header=header, name="spiked.csv")


def test_a_high_of_1e300_is_a_spike_named_with_file_line_and_value(tmp_path: Path) -> None:
    path = _spiked(tmp_path, {(20, "high"): "1e300"})
    _one_line_error(
        path, 22, "high 1e+300", "is a spike", "outlier_multiple=25", "outliers='drop'"
    )


def test_an_open_typed_1e5_times_too_large_is_a_spike(tmp_path: Path) -> None:
    _, rows = _sample_rows()
    typo = repr(float(rows[30][_COL["open"]]) * 1e5)
    path = _spiked(tmp_path, {(30, "open"): typo, (30, "high"): typo})
    _one_line_error(path, 32, f"open {typo}", "is a spike")
    path = _spiked(tmp_path, {(30, "open"): typo})  # high left below it: still a spike first
    _one_line_error(path, 32, f"open {typo}", "is a spike")


def test_a_decimal_slip_in_close_is_a_spike(tmp_path: Path) -> None:
    _, rows = _sample_rows()
    close = float(rows[40][_COL["close"]])
    path = _spiked(tmp_path, {(40, "close"): repr(close / 10)})  # below low: a spike first
    _one_line_error(path, 42, f"close {close / 10!r}", "is a spike")


def test_the_outlier_multiple_is_configurable(tmp_path: Path) -> None:
    _, rows = _sample_rows()
    high = float(rows[20][_COL["high"]])
    path = _spiked(tmp_path, {(20, "high"): repr(high * 1.02)})  # +2 %: ~13 x hourly vol
    assert len(load_bars(path)) == 60
    _one_line_error(path, 22, "high", "outlier_multiple=5", outlier_multiple=5)
    assert len(load_bars(path, outlier_multiple=None)) == 60


def test_a_level_shift_is_not_a_spike(tmp_path: Path) -> None:
    header, rows = _sample_rows()
    for row in rows[30:]:
        for column in ("open", "high", "low", "close"):
            row[_COL[column]] = repr(float(row[_COL[column]]) * 1.5)
    rows[30][_COL["open"]] = rows[30][_COL["low"]] = rows[29][_COL["close"]]  # jump inside bar
    path = _csv(tmp_path, [",".join(r) for r in rows], header=header)
    assert len(load_bars(path)) == 60


def test_spikes_and_impossible_prices_are_dropped_and_reported_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _spiked(tmp_path, {(20, "high"): "1e300", (35, "low"): "0", (50, "close"): "nan"})
    with caplog.at_level("WARNING", logger="fxai_tune.data._loaders"):
        bars = load_bars(path, outliers="drop")
    assert len(bars) == 57
    clean = load_bars(_spiked(tmp_path, {}))
    pd.testing.assert_frame_equal(bars, clean.drop(clean.index[[20, 35, 50]]), check_freq=False)
    warning = caplog.records[-1].getMessage()
    assert warning.startswith(f"{path}: dropped 3 bar") and "lines 22, 37, 52" in warning


def test_outlier_options_are_validated() -> None:
    with pytest.raises(ValueError, match=r"outliers must be one of \('error', 'drop'\)"):
        load_bars(DUKASCOPY, outliers="keep")
    with pytest.raises(ValueError, match="outlier_multiple must be > 0 or None"):
        load_bars(DUKASCOPY, outlier_multiple=0)
    with pytest.raises(ValueError, match="timezone must be"):
        load_bars(DUKASCOPY, timezone="Mars/Olympus")


def test_data_config_validates_and_passes_the_new_loader_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outliers must be one of"):
        DataConfig(outliers="keep")
    with pytest.raises(ValueError, match="outlier_multiple must be > 0 or None"):
        DataConfig(outlier_multiple=-1.0)
    with pytest.raises(ValueError, match="timezone must be"):
        DataConfig(timezone="Mars/Olympus")
    spiked = load_sample().iloc[:400].copy()
    spiked.iloc[200, spiked.columns.get_loc("high")] = 1e300
    path = tmp_path / "spiked.parquet"
    spiked.to_parquet(path)
    with pytest.raises(DataError, match=re.escape(f"{path}, row 201: high 1e+300")):
        DataManager(DataConfig(source=str(path)), windows={"1h": 16})
    dm = DataManager(DataConfig(source=str(path), outliers="drop"), windows={"1h": 16})
    assert len(dm.bars) == 399
    naive = _dukascopy_local(tmp_path, [f"{t:%d.%m.%Y %H:%M:%S}.000" for t in spiked.index])
    with pytest.raises(DataError, match="no UTC offset"):
        DataManager(DataConfig(source=str(naive)), windows={"1h": 16})
    dm = DataManager(DataConfig(source=str(naive), timezone="UTC"), windows={"1h": 16})
    assert dm.bars.index[0] == spiked.index[0]
