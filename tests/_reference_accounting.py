"""Plain per-bar reference of the trading accounting, written from the docstrings and docs.

One account, Python floats, one loop iteration per decision: no tables, no packed state. The
fast engine (`fxai_tune.env.TradingEngine`) is tested against it (``test_env_reference.py``).
"""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import numpy as np

from fxai_tune.data import MarketData
from fxai_tune.env import EnvConfig


def spreads(market: MarketData, config: EnvConfig) -> list[float]:
    """Spread in price units per bar: the data's, or the configured one widened at rollover."""
    cost = config.cost
    if cost.spread_from_data:
        return [float(s) for s in market.spread]
    base = cost.to_price(cost.spread, market.pip_size)
    return [base * (cost.rollover_multiplier if int(h) in cost.rollover_hours else 1.0)
            for h in market.hour_of_day]


def quote_to_account(market: MarketData, config: EnvConfig, mid_close: list[float]
                     ) -> list[float]:
    """Account-currency value of one quote-currency unit at each bar's close (docs/env.md)."""
    symbol = market.symbol.replace("/", "").upper()
    base, quote, account = symbol[:3], symbol[3:], config.account_currency
    if quote == account:
        return [1.0] * len(mid_close)
    if base == account:
        return [1.0 / p for p in mid_close]
    pair = market.conversion_symbol.replace("/", "").upper()
    if pair == quote + account:
        return [float(p) for p in market.conversion]
    assert pair == account + quote
    return [1.0 / float(p) for p in market.conversion]


def trading_date(stamp: np.datetime64) -> dt.date:
    """The FX day of a bar: New York wall time + 7 h (the day ends at 17:00 New York), Saturday
    joined to Friday and Sunday to Monday."""
    utc = dt.datetime.fromisoformat(str(stamp.astype("datetime64[s]"))).replace(tzinfo=dt.UTC)
    day = (utc.astimezone(ZoneInfo("America/New_York")) + dt.timedelta(hours=7)).date()
    return day + dt.timedelta(days={5: -1, 6: 1}.get(day.weekday(), 0))


def swap_nights(market: MarketData) -> list[int]:
    """Rolls between each bar's trading day and the previous bar's: 1 per weekday that ended,
    3 for a Wednesday."""
    days = [trading_date(s) for s in market.timestamps]
    nights = [0]
    for before, after in zip(days[:-1], days[1:], strict=True):
        count, day = 0, before
        while day < after:
            count += {0: 1, 1: 1, 2: 3, 3: 1, 4: 1}.get(day.weekday(), 0)
            day += dt.timedelta(days=1)
        nights.append(count)
    return nights


def swap_per_unit(config: EnvConfig, market: MarketData, value: float, price: float,
                  rate: float) -> float:
    """Account currency per unit and night of a swap given in ``config.financing.unit``."""
    unit = config.financing.unit
    if unit == "annual_rate":
        return value / 360.0 * price * rate
    return value * market.pip_size * (0.1 if unit == "points" else 1.0) * rate


def simulate(market: MarketData, config: EnvConfig, start: int, stop: int, actions,
             *, cost_scale: float = 1.0) -> list[dict]:
    """Step one episode from decision bar ``start`` (ends at ``stop``) with ``actions``.

    Returns one record per step (equity, reward, components, flags, portfolio); the last
    record of a finished episode also holds ``episode`` statistics.
    """
    cost, rw = config.cost, config.reward
    w = rw.weights
    targets = [lots * config.lot_size for lots in config.target_lots()]
    spread = spreads(market, config)
    shift = {"ask": -0.5, "bid": 0.5, "mid": 0.0}[market.price_side]
    mid_open = [float(p) + shift * s for p, s in zip(market.open, spread, strict=True)]
    mid_close = [float(p) + shift * s for p, s in zip(market.close, spread, strict=True)]
    mid_high = [float(p) + shift * s for p, s in zip(market.high, spread, strict=True)]
    mid_low = [float(p) + shift * s for p, s in zip(market.low, spread, strict=True)]
    slippage = cost.to_price(cost.slippage, market.pip_size)
    impact = cost.to_price(cost.slippage_per_lot, market.pip_size) / config.lot_size
    commission = cost.commission_per_lot / config.lot_size
    rates = quote_to_account(market, config, mid_close)
    nights = swap_nights(market)
    fin = config.financing

    equity = peak = config.initial_equity
    pos = dd = max_dd = trade_pnl = 0.0
    flat_steps = hold_steps = 0
    dsr_a = dsr_b = 0.0
    rewards, returns, trades, wins, closed, refused = [], [], 0, 0, 0, 0
    records = []
    for k, action in enumerate(actions):
        t = start + k
        wanted = targets[action]
        rate = rates[t + 1]
        p_open = mid_open[t + 1]
        # slippage: fixed, plus a multiple of the decision bar's volatility times the price
        slip = slippage + (cost.slippage_volatility * float(market.volatility[t]) * p_open
                           if cost.slippage_volatility else 0.0)

        def cost_per_unit(units: float) -> float:  # orders of more units slip more per unit
            return ((0.5 * spread[t + 1] + slip + impact * units) * rate
                    + commission) * cost_scale

        gap = pos * (p_open - mid_close[t]) * rate
        if pos != 0 and nights[t + 1]:  # swaps of the position held through the rolls
            swap = fin.swap_long if pos > 0 else fin.swap_short
            gap += abs(pos) * swap_per_unit(config, market, swap, p_open, rate) * nights[t + 1]
        # Margin: refuse an order adding exposure that the equity after its fill cannot carry.
        adds = abs(wanted) > abs(pos) or wanted * pos < 0
        margin = abs(wanted) * p_open * rate / config.leverage
        new = wanted
        order = abs(wanted - pos)
        if adds and margin > equity + gap - order * cost_per_unit(order):
            new = pos
            refused += 1
        unit_cost = cost_per_unit(abs(new - pos))
        trade_cost = abs(new - pos) * unit_cost
        # Stop-out: walk from the open to the adverse extreme of the bar.
        stop_equity = config.stop_out_level * abs(new) * p_open * rate / config.leverage
        fill_equity = equity + gap - trade_cost
        exit_price, stopped = mid_close[t + 1], False
        if new != 0:
            extreme = mid_low[t + 1] if new > 0 else mid_high[t + 1]
            if fill_equity + new * (extreme - p_open) * rate < stop_equity:
                stopped = True
                # the price where equity reaches stop_equity, inside [open, extreme]
                exit_price = p_open + (stop_equity - fill_equity) / (new * rate)
                lo, hi = min(p_open, extreme), max(p_open, extreme)
                exit_price = min(max(exit_price, lo), hi)
        body = new * (exit_price - p_open) * rate
        stop_cost = abs(new) * cost_per_unit(abs(new)) if stopped else 0.0
        gross = gap + body
        # Round trips: closing a position (flat or flip) ends a trade; a flip's cost is split.
        side_old, side_new = np.sign(pos), np.sign(new)
        if side_old != 0 and side_new != side_old:
            closed += 1
            wins += (trade_pnl + gap - abs(pos) * unit_cost) > 0
        if side_new == 0:
            trade_pnl = 0.0
        elif side_new != side_old:
            trade_pnl = body - abs(new) * unit_cost
        else:
            trade_pnl += gap + body - trade_cost
        trades += new != pos
        if stopped:  # the stop-out closes the trade just updated
            closed += 1
            wins += (trade_pnl - stop_cost) > 0
            trades += 1
            trade_pnl = 0.0
        held = 0.0 if stopped else new
        flat_steps = flat_steps + 1 if held == 0 else 0
        hold_steps = 0 if held == 0 else (hold_steps + 1 if side_new == side_old else 1)
        trade_cost += stop_cost

        new_equity = max(equity + gross - trade_cost, 0.0)  # negative balance protection
        peak = max(peak, new_equity)
        new_dd = 1.0 - new_equity / peak
        max_dd = max(max_dd, new_dd)
        pnl = math.log(max((equity + gross) / equity, 1e-12))
        tc = math.log(max(new_equity / (equity + gross), 1e-12))
        r = pnl + tc
        dsr = 0.0
        if w.differential_sharpe != 0.0:  # Moody & Saffell 2001, eq. 19
            var = dsr_b - dsr_a**2
            if var > 1e-9 * dsr_b:
                dsr = (dsr_b * (r - dsr_a) - 0.5 * dsr_a * (r * r - dsr_b)) / var**1.5
            dsr_a, dsr_b = dsr_a + rw.dsr_eta * (r - dsr_a), dsr_b + rw.dsr_eta * (r * r - dsr_b)
        comps = {"pnl": pnl, "transaction_cost": tc, "drawdown": -max(0.0, new_dd - dd),
                 "inactivity": -1.0 if flat_steps > rw.inactivity_after else 0.0,
                 "holding": -1.0 if hold_steps > rw.max_holding else 0.0,
                 "differential_sharpe": dsr}
        reward = rw.scale * sum(getattr(w, name) * value for name, value in comps.items())
        equity, pos, dd = new_equity, held, new_dd
        rewards.append(reward)
        returns.append(r)
        terminated = stopped or equity <= 0.0
        truncated = not terminated and t + 1 >= stop
        portfolio = [held / targets[-1], trade_pnl / equity if equity > 0 else 0.0,
                     hold_steps / config.position_time_scale, dd]
        records.append({"equity": equity, "reward": reward, "components": comps,
                        "terminated": terminated, "truncated": truncated,
                        "position": held, "portfolio": portfolio})
        if terminated or truncated:
            n = len(returns)
            sd = float(np.std(returns, ddof=1)) if n > 1 else 0.0
            sharpe = (float(np.mean(returns)) / sd * math.sqrt(market.periods_per_year)
                      if n > 1 and sd > 1e-150 else 0.0)
            records[-1]["episode"] = {
                "reward": sum(rewards), "length": n, "trades": trades, "wins": wins,
                "losses": closed - wins, "total_return": equity / config.initial_equity - 1.0,
                "sharpe": sharpe, "max_drawdown": max_dd, "refused_orders": refused,
                "stop_out": int(stopped)}
            break
    return records
