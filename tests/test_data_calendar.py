"""The FX trading day: 17:00 New York to 17:00 New York, DST-aware, Sunday's open in Monday
(issue 13), and annualisation from the bars that calendar gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fxai_tune.data import DataConfig, DataManager, load_sample, resample_bars


def _hourly(first: str, last: str) -> pd.DataFrame:
    index = pd.date_range(first, last, freq="1h", tz="UTC")
    close = 1.1 + 1e-4 * np.arange(len(index))
    return pd.DataFrame({"open": close, "high": close + 5e-5, "low": close - 5e-5,
                         "close": close, "volume": 1.0}, index=index)


@pytest.mark.parametrize(("first", "last", "open_hour"), [
    ("2017-01-08 22:00", "2017-01-13 21:00", 22),  # EST: 17:00 New York is 22:00 UTC
    ("2017-07-09 21:00", "2017-07-14 20:00", 21),  # EDT: 21:00 UTC
])
def test_a_week_of_hourly_bars_gives_five_daily_bins(first, last, open_hour):
    daily = resample_bars(_hourly(first, last), "1d")
    assert len(daily) == 5
    assert (daily.index.hour == open_hour).all()
    assert daily.index.day_name().tolist() == ["Sunday", "Monday", "Tuesday", "Wednesday",
                                               "Thursday"]  # each day opens at 17:00 NY
    assert len(resample_bars(_hourly(first, last), "4h")) == 30


def test_daily_bins_follow_new_york_across_a_dst_change():
    """Two weeks around 12 March 2017 (US DST starts): the days close at 22:00 UTC before and at
    21:00 UTC after; every day holds 24 hourly bars."""
    bars = pd.concat([_hourly("2017-03-05 22:00", "2017-03-10 21:00"),
                      _hourly("2017-03-12 21:00", "2017-03-17 20:00")])
    daily = resample_bars(bars, "1d")
    assert len(daily) == 10
    assert daily.index.hour.tolist() == [22] * 5 + [21] * 5
    assert (daily["volume"] == 24).all()


def test_sunday_and_friday_stubs_merge_into_the_neighbouring_trading_day():
    """Bars before Sunday's 17:00 New York open join Monday; bars after Friday's close join
    Friday: no bin of a weekend day."""
    bars = _hourly("2017-01-08 19:00", "2017-01-13 23:00")  # 3 h early, 2 h late
    daily = resample_bars(bars, "1d")
    assert len(daily) == 5
    assert daily["volume"].tolist() == [27, 24, 24, 24, 26]
    assert daily.index[0] == pd.Timestamp("2017-01-08 19:00", tz="UTC")  # its first bar


def test_the_2017_sample_has_one_daily_bin_per_trading_day():
    daily = resample_bars(load_sample(), "1d")
    assert not daily.index.normalize().day_of_week.isin([5]).any()
    weekday = (daily.index + pd.Timedelta(hours=7)).tz_convert("America/New_York").day_of_week
    assert not weekday.isin([5, 6]).any()  # no Sunday stub: every bin is a Mon-Fri session
    assert 255 <= len(daily) <= 261  # was 312 with 52 Sunday stubs
    assert (daily["volume"] > 0).all()


def test_periods_per_year_come_from_the_bars_of_the_calendar():
    hourly = DataManager(DataConfig(), windows={"1h": 8, "1d": 2})
    assert hourly.periods_per_year == 24 * 260
    daily = DataManager(DataConfig(timeframe="1d"), windows={"1d": 4})
    assert daily.periods_per_year == 260
    assert len(daily.bars) == len(resample_bars(load_sample(), "1d"))


def test_a_23_hour_trading_day_annualises_with_23_bars_a_day(tmp_path):
    """A broker that pauses an hour at the roll (17:00-18:00 New York) has 23 hourly bars a
    day: 5,980 a year, not 6,240."""
    bars = _hourly("2017-01-08 22:00", "2017-03-03 21:00")
    local = bars.index.tz_convert("America/New_York")
    bars = bars[(local.hour != 17) & (local.day_of_week < 5) | (local.day_of_week == 6)]
    path = tmp_path / "bars.csv"
    bars.rename_axis("timestamp").to_csv(path, date_format="%Y-%m-%d %H:%M:%S")
    dm = DataManager(DataConfig(source=str(path)), windows={"1h": 4})
    assert dm.periods_per_year == 23 * 260


def test_session_columns_follow_each_city_s_daylight_saving():
    from fxai_tune.data import SESSION_FEATURE_NAMES, compute_features

    winter = _hourly("2017-01-08 22:00", "2017-01-13 21:00")
    summer = _hourly("2017-07-09 21:00", "2017-07-14 20:00")
    for bars, london_utc, new_york_utc in ((winter, 8, 13), (summer, 7, 12)):
        features = compute_features(bars, sessions=True)
        assert tuple(features.columns[-3:]) == SESSION_FEATURE_NAMES
        tuesday = features[features.index.day_of_week == 1]
        london = tuesday.index[tuesday["london_open"] == 1.0].hour
        new_york = tuesday.index[tuesday["new_york_open"] == 1.0].hour
        tokyo = tuesday.index[tuesday["tokyo_open"] == 1.0].hour
        assert london.tolist() == list(range(london_utc, london_utc + 9))
        assert new_york.tolist() == list(range(new_york_utc, new_york_utc + 9))
        assert tokyo.tolist() == list(range(0, 9))  # Japan keeps no daylight saving


def test_session_columns_are_off_by_default_and_widen_the_observation():
    plain = DataManager(DataConfig(), windows={"1h": 8, "4h": 2})
    with_sessions = DataManager(DataConfig(session_features=True), windows={"1h": 8, "4h": 2})
    assert plain.market("train").features["1h"].shape[1] == 8
    market = with_sessions.market("train")
    assert market.features["1h"].shape[1] == market.features["4h"].shape[1] == 11
    four = with_sessions.raw_features["4h"]
    assert set(np.round(four["london_open"].unique() * 4) / 4) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    with pytest.raises(TypeError, match="session_features"):
        DataConfig(session_features="yes")
