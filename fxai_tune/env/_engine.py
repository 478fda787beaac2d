"""The batched trading engine: N accounts stepped together, one numpy expression per formula.

`TradingEnvironment` (N=1) and `VectorTradingEnv` are thin gymnasium shells around it, so they
share every line of the accounting. ``tests/_reference_accounting.py`` is the same accounting
as a plain per-bar loop; the engine is tested against it on random configurations.

One step of an env at decision bar ``t`` that holds ``pos`` units and targets ``new`` (the
formulas and their reasons: ``docs/env.md``; prices are mids, ``rate`` converts the quote
currency into the account currency)::

    rate  = quote_to_account[t+1]                           # at t+1's mid close
    gap   = pos * (mid_open[t+1] - mid_close[t]) * rate     # old position across the boundary
    carry = gap + |pos| * swap * nights[t+1]                # plus its swaps at the daily rolls
    cost  = |new - pos| * unit_cost                         # fill at open[t+1]
    body  = new * (mid_close[t+1] - mid_open[t+1]) * rate   # new position over bar t+1
    E_new = max(E_old + ((carry + body) - cost), 0)         # equity marked at the mid close

Orders the margin cannot carry are refused and a stop-out closes the position inside the bar
(``body`` then ends at the stop price); see ``docs/env.md``.

The open trade (a position on one side, from the fill that opened it) accumulates its own PnL,
costs included; a trade closes when the side changes away from a position (flat or flip), and
a flip's cost is split per unit between the closing and the opening trade. Every quantity is
an ``(N,)`` array of `AccountState`; the step is plain numpy over those arrays (~100 calls, far
below the policy forward that consumes it: ``docs/benchmarks.md``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from fxai_tune.data._market import MarketData
from fxai_tune.env._config import EnvConfig
from fxai_tune.env._reward import REWARD_COMPONENTS, RewardSystem, differential_sharpe
from fxai_tune.env._spaces import PORTFOLIO_FEATURES
from fxai_tune.env._tables import MarketTables

__all__ = ["EPISODE_KEYS", "AccountState", "StepResult", "TradingEngine"]

EPISODE_KEYS = ("reward", "length", "trades", "wins", "losses", "total_return", "sharpe",
                "max_drawdown", "refused_orders", "stop_out")
"""Keys of the episode statistics reported at the end of every episode (`TradingEngine
._episode_stats`)."""

_COUNT_KEYS = ("length", "trades", "wins", "losses", "refused_orders", "stop_out")
"""The integer `EPISODE_KEYS`."""

# Smallest equity ratio taken to the log, so a blow-up past zero equity stays finite.
MIN_RATIO = 1e-12


@dataclass
class AccountState:
    """Everything that changes while N accounts trade, one ``(N,)`` array per field."""

    t: np.ndarray
    """Current decision bar (intp)."""
    start: np.ndarray
    """First decision bar of the episode (intp)."""
    stop: np.ndarray
    """Bar at which the episode is truncated: it ends once ``t`` reaches it (intp)."""
    action: np.ndarray
    """Action index of the current position (intp); the position is ``targets[action]``."""
    equity: np.ndarray
    """Equity marked at the last mid close."""
    peak: np.ndarray
    """Running peak of equity in the episode."""
    drawdown: np.ndarray
    """``1 - equity / peak``."""
    max_drawdown: np.ndarray
    """Largest drawdown of the episode."""
    trade_pnl: np.ndarray
    """PnL of the open trade since its opening fill, costs included (0 when flat)."""
    flat_steps: np.ndarray
    """Consecutive steps flat (0 in a position)."""
    hold_steps: np.ndarray
    """Consecutive steps on the current side (0 when flat; resizing keeps the count)."""
    dsr_a: np.ndarray
    """Moving first moment of the net log return (differential Sharpe ratio)."""
    dsr_b: np.ndarray
    """Moving second moment of the net log return."""
    reward_sum: np.ndarray
    """Sum of the episode's rewards."""
    return_sum: np.ndarray
    """Sum of the episode's net log returns R_t."""
    return_sq_sum: np.ndarray
    """Sum of R_t^2."""
    trades: np.ndarray
    """Position changes in the episode."""
    closed: np.ndarray
    """Round trips closed in the episode."""
    wins: np.ndarray
    """Closed round trips whose PnL, costs of both sides included, is > 0."""
    refused: np.ndarray
    """Orders refused in the episode because the margin could not carry them."""

    _INT_FIELDS = ("t", "start", "stop", "action")

    @classmethod
    def zeros(cls, num_envs: int) -> AccountState:
        """A state of ``num_envs`` accounts, all zeros (call `TradingEngine.reset`)."""
        return cls(**{f.name: np.zeros(num_envs, dtype=np.intp if f.name in cls._INT_FIELDS
                                       else np.float64) for f in fields(cls)})

    def as_dict(self) -> dict[str, np.ndarray]:
        """Copies of the fields, by name."""
        return {f.name: getattr(self, f.name).copy() for f in fields(self)}

    _ADDED_FIELDS = ("refused",)
    """Fields newer than some saved states: 0 when a state lacks them."""

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Overwrite the fields in place from :meth:`as_dict` output."""
        missing = [f.name for f in fields(self)
                   if f.name not in arrays and f.name not in self._ADDED_FIELDS]
        if missing:
            raise ValueError(f"state lacks {missing}: it was saved by another version of the "
                             "engine; keys: " + ", ".join(sorted(arrays)))
        for f in fields(self):
            getattr(self, f.name)[...] = arrays.get(f.name, 0)


class StepResult(NamedTuple):
    """What one engine step returns.

    Every array is new (no later step writes into it) except ``components``, a view of the
    engine's state that the next step overwrites: read or copy it before stepping again, and,
    for an engine made with ``copy_obs=False``, the arrays of ``obs`` (its observation buffers,
    likewise overwritten).

    Attributes:
        obs: Observation per branch, ``(N, ...)``; rows of envs that ended hold the reset
            observation when the step autoreset them, else the final one.
        reward: ``(N,)`` float64.
        terminated: ``(N,)`` bool, stop-out (or equity at zero).
        truncated: ``(N,)`` bool, episode length or split end reached (never with terminated).
        components: ``(6, N)`` raw reward components, rows in ``REWARD_COMPONENTS`` order
            (reused buffer, see above).
        equity: ``(N,)`` equity after the step (before any autoreset).
        position: ``(N,)`` position in units after the step (before any autoreset).
        done: Indices of the envs whose episode ended this step.
        episode: Episode statistics ``EPISODE_KEYS -> (N,)`` valid at ``done`` rows, or None.
        final_obs: Final observations (valid at ``done`` rows) when autoreset, else None.
    """

    obs: dict[str, np.ndarray]
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    components: np.ndarray
    equity: np.ndarray
    position: np.ndarray
    done: np.ndarray
    episode: dict[str, np.ndarray] | None
    final_obs: dict[str, np.ndarray] | None


class TradingEngine:
    """N independent FX accounts on one split, stepped by one call.

    Args:
        market: Prices and features of the split.
        config: Environment configuration.
        num_envs: Number of accounts N.
        copy_obs: Return new observation arrays from every :meth:`step` and full
            :meth:`reset` (default); if False, the engine's own buffers, overwritten by the
            next call (``final_obs`` is always new).
    """

    def __init__(self, market: MarketData, config: EnvConfig, num_envs: int, *,
                 copy_obs: bool = True) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs=}")
        self.market = market
        self.config = config
        self.num_envs = num_envs
        self.copy_obs = bool(copy_obs)
        self.tables = MarketTables(market, config)
        self.reward_system = RewardSystem(config.reward)
        self.n_actions = config.n_actions
        self.flat_action = len(config.position_sizes)
        self.targets = np.array(config.target_lots(), dtype=np.float64) * config.lot_size
        """Target position in units of each action."""
        self.rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_envs)]
        self.state = AccountState.zeros(num_envs)
        self._all_envs = np.arange(num_envs)
        self._make_buffers()
        self.set_difficulty(config.curriculum.difficulty)

    def _make_buffers(self) -> None:
        """Arrays the step writes into and hands out (rebuilt on copies and unpickling)."""
        n = self.num_envs
        self._components = np.zeros((len(REWARD_COMPONENTS), n))
        self.component_views = self.reward_system.breakdown(self._components)
        """Name -> ``(N,)`` reward component of the last step; the same arrays, rewritten in
        place by every step."""
        # Observation buffers of copy_obs=False, overwritten by every step and full reset.
        self._gather = self.tables.window_gatherer(n, copy=self.copy_obs)
        self._portfolio_out = None if self.copy_obs else np.empty(
            (n, len(PORTFOLIO_FEATURES)), dtype=np.float32)

    _BUFFERS = ("_components", "component_views", "_gather", "_portfolio_out")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        components = state["_components"].copy()
        for name in self._BUFFERS:
            del state[name]
        state["_last_components"] = components
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        components = state.pop("_last_components")
        self.__dict__.update(state)
        self._make_buffers()
        self._components[...] = components

    # ------------------------------------------------------------------ curriculum

    @property
    def difficulty(self) -> float:
        """Current difficulty level in [0, 1]."""
        return self._difficulty

    def set_difficulty(self, level: float) -> None:
        """Set the difficulty level in [0, 1] (1.0 = the configured environment).

        Costs scale at once; episode length and the pool of random starts apply from the next
        reset of each env. At level ``l``: costs x ``min_cost_scale + (1 - min_cost_scale) l``;
        ``"random"`` episodes of ``min_episode_length + (episode_length - min_episode_length)
        l`` steps, starting only at bars whose ``MarketData.volatility`` is at or below the
        ``min_volatility_quantile + (1 - min_volatility_quantile) l`` quantile of the candidate
        starts (every start at level 1).
        """
        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)):
            raise TypeError(f"difficulty level must be a number in [0, 1], got {level=}")
        level = float(level)
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"difficulty level must be in [0, 1], got {level=}")
        cur = self.config.curriculum
        self._difficulty = level
        self.cost_scale = cur.min_cost_scale + (1.0 - cur.min_cost_scale) * level
        self.price_cost = self.tables.price_cost * self.cost_scale
        """Half spread plus slippage per unit traded at the open of each bar (price units), at
        this difficulty."""
        self.commission_per_unit = self.tables.commission_per_unit * self.cost_scale
        """Commission per unit traded (account currency), at this difficulty."""
        self.slippage_per_unit_traded = self.tables.slippage_per_unit_traded * self.cost_scale
        """Size-dependent slippage per unit traded and unit of order size, at this
        difficulty."""
        tables = self.tables
        full = self.config.episode_length
        shortest = min(cur.min_episode_length, full)
        self.episode_length = round(shortest + (full - shortest) * level)
        hi = max(tables.first, tables.last - self.episode_length)
        starts = np.arange(tables.first, hi + 1, dtype=np.intp)
        self.volatility_quantile = (cur.min_volatility_quantile
                                    + (1.0 - cur.min_volatility_quantile) * level)
        if self.volatility_quantile < 1.0 and tables.volatility.size:
            vol = tables.volatility[starts]
            finite = np.isfinite(vol)
            if finite.any():
                threshold = np.quantile(vol[finite], self.volatility_quantile)
                calm = starts[finite & (vol <= threshold)]
                if calm.size:
                    starts = calm
        self.starts = starts

    # ------------------------------------------------------------------ state

    def get_state(self) -> dict[str, Any]:
        """Deep copy of everything mutable: account arrays, RNG states and the difficulty."""
        return {"account": self.state.as_dict(),
                "rngs": [copy.deepcopy(rng.bit_generator.state) for rng in self.rngs],
                "difficulty": self._difficulty}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` snapshot (the snapshot itself is not aliased)."""
        if "account" not in state:
            raise ValueError("state lacks 'account': it was saved by another version of the "
                             "engine; keys: " + ", ".join(sorted(state)))
        if len(state["rngs"]) != self.num_envs:
            raise ValueError(f"state holds {len(state['rngs'])} envs, this engine has "
                             f"{self.num_envs}")
        self.set_difficulty(state["difficulty"])
        self.state.load(state["account"])
        for rng, rng_state in zip(self.rngs, state["rngs"], strict=True):
            rng.bit_generator.state = copy.deepcopy(rng_state)

    # ------------------------------------------------------------------ accessors

    @property
    def t(self) -> np.ndarray:
        """Current decision bar of each env (copy)."""
        return self.state.t.copy()

    @property
    def equity(self) -> np.ndarray:
        """Current equity of each env (copy)."""
        return self.state.equity.copy()

    @property
    def components(self) -> np.ndarray:
        """``(6, N)`` reward components of the last step: a view that every step overwrites."""
        return self._components

    @property
    def position(self) -> np.ndarray:
        """Current position of each env in units (copy)."""
        return self.targets[self.state.action]

    # ------------------------------------------------------------------ reset / step

    def reset(self, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Start a new episode in envs ``indices`` (all by default), in index order, each drawing
        its start from its own RNG; returns their observations (rows in ``indices`` order; the
        observation buffers when all envs reset and ``copy_obs`` is False)."""
        idx = self._all_envs if indices is None else np.asarray(indices, dtype=np.intp)
        tables = self.tables
        if self.config.mode == "random":
            starts = np.array([self.starts[self.rngs[i].integers(len(self.starts))] for i in idx],
                              dtype=np.intp)
            stops = np.minimum(starts + self.episode_length, tables.last)
        else:
            starts, stops = self.sequential_window(idx)
        s, equity = self.state, self.config.initial_equity
        # (the component rows still describe the step that ended these episodes)
        s.t[idx], s.start[idx], s.stop[idx] = starts, starts, stops
        s.action[idx] = self.flat_action
        s.equity[idx] = s.peak[idx] = equity
        for name in ("drawdown", "max_drawdown", "trade_pnl", "flat_steps", "hold_steps",
                     "dsr_a", "dsr_b", "reward_sum", "return_sum", "return_sq_sum", "trades",
                     "closed", "wins", "refused"):
            getattr(s, name)[idx] = 0.0
        if indices is None and self._portfolio_out is not None:
            obs = self._gather(starts - tables.first)
            self._portfolio_out[...] = 0.0
            obs["portfolio"] = self._portfolio_out
            return obs
        obs = tables.gather_windows(starts)
        obs["portfolio"] = np.zeros((len(idx), len(PORTFOLIO_FEATURES)), dtype=np.float32)
        return obs

    def sequential_window(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and stop bar of envs ``idx`` in ``"sequential"`` mode: the split cut into
        ``num_envs`` contiguous windows of (nearly) equal length, env ``i`` taking the ``i``-th,
        so one batched pass of all envs covers the whole split once."""
        first, span = self.tables.first, self.tables.last - self.tables.first
        idx = np.asarray(idx, dtype=np.intp)
        starts = first + idx * span // self.num_envs
        stops = first + (idx + 1) * span // self.num_envs
        return starts.astype(np.intp), stops.astype(np.intp)

    def step(self, actions: np.ndarray, *, autoreset: bool) -> StepResult:
        """Advance every env by one bar.

        Args:
            actions: ``(N,)`` integer actions in ``[0, n_actions)``.
            autoreset: Reset envs whose episode ends (their ``obs`` rows become reset
                observations and ``final_obs`` holds the final ones).
        """
        a = np.asarray(actions)
        if (a.shape != (self.num_envs,) or not np.issubdtype(a.dtype, np.integer)
                or a.min() < 0 or a.max() >= self.n_actions):
            raise ValueError(f"actions must be {self.num_envs} ints in [0, {self.n_actions}), "
                             f"got {actions!r}")
        s, tables, config = self.state, self.tables, self.config
        t, nxt = s.t, s.t + 1
        pos, wanted = self.targets[s.action], self.targets[a]
        open_price = tables.mid_open[nxt]

        # Fill at the open of t+1, mark at its close; quote-currency amounts in the account
        # currency at the rate of t+1's close.
        rate = tables.quote_to_account[nxt]
        price_cost, impact = self.price_cost[nxt], self.slippage_per_unit_traded

        def unit_cost_of(units: np.ndarray) -> np.ndarray:
            """Cost per unit of an order of ``units`` (account currency)."""
            return (price_cost + impact * units) * rate + self.commission_per_unit

        gap = pos * (open_price - tables.mid_close[t]) * rate
        # Financing: the swap of the position held through the daily rolls before t+1.
        swap_per_unit = np.where(pos > 0, tables.swap_long[nxt], tables.swap_short[nxt])
        financing = np.abs(pos) * swap_per_unit * tables.swap_nights[nxt]
        carry = gap + financing  # what the old position earns up to the fill

        # Margin: an order that adds exposure is refused when the equity left after its fill
        # cannot carry its margin (the position is kept).
        adds_exposure = (np.abs(wanted) > np.abs(pos)) | (wanted * pos < 0)
        wanted_margin = np.abs(wanted) * open_price * rate / config.leverage
        wanted_units = np.abs(wanted - pos)
        wanted_fill_equity = s.equity + carry - wanted_units * unit_cost_of(wanted_units)
        refused = adds_exposure & (wanted_margin > wanted_fill_equity)
        new = np.where(refused, pos, wanted)
        action = np.where(refused, s.action, a)
        unit_cost = unit_cost_of(np.abs(new - pos))
        fill_cost = np.abs(new - pos) * unit_cost
        fill_equity = s.equity + carry - fill_cost

        # Stop-out: the position is closed where equity / used margin falls to stop_out_level
        # on the way from the open to the bar's adverse extreme (at the open after a gap).
        used_margin = np.abs(new) * open_price * rate / config.leverage
        stop_equity = config.stop_out_level * used_margin
        adverse_price = np.where(new > 0, tables.mid_low[nxt], tables.mid_high[nxt])
        adverse_equity = fill_equity + new * (adverse_price - open_price) * rate
        stopped = (new != 0) & (adverse_equity < stop_equity)
        level_price = open_price + (stop_equity - fill_equity) / np.where(
            stopped, new * rate, 1.0)
        stop_price = np.clip(level_price, np.minimum(open_price, adverse_price),
                             np.maximum(open_price, adverse_price))
        exit_price = np.where(stopped, stop_price, tables.mid_close[nxt])
        body = new * (exit_price - open_price) * rate
        stop_cost = np.where(stopped, np.abs(new) * unit_cost_of(np.abs(new)), 0.0)
        cost = fill_cost + stop_cost
        gross = carry + body
        equity_old = s.equity
        # Negative balance protection: a loss beyond the equity is not owed.
        equity = np.maximum(equity_old + (gross - cost), 0.0)
        held = np.where(stopped, 0.0, new)

        # Round trips: a trade closes when the side changes away from a position, and at a
        # stop-out.
        side_old, side_new = np.sign(pos), np.sign(new)
        flat = side_new == 0
        same_side = side_new == side_old
        closes = (side_old != 0) & ~same_side
        opens = ~flat & ~same_side
        closed_pnl = s.trade_pnl + carry - np.abs(pos) * unit_cost
        won = closes & (closed_pnl > 0)
        open_trade_pnl = np.where(flat, 0.0, np.where(
            opens, body - np.abs(new) * unit_cost, s.trade_pnl + (gross - fill_cost)))
        stopped_pnl = open_trade_pnl - stop_cost
        won_at_stop = stopped & (stopped_pnl > 0)
        s.trade_pnl = np.where(stopped, 0.0, open_trade_pnl)
        held_flat = held == 0
        s.flat_steps = np.where(held_flat, s.flat_steps + 1, 0.0)
        s.hold_steps = np.where(held_flat, 0.0, np.where(same_side, s.hold_steps + 1, 1.0))

        # Drawdown from the running peak.
        s.peak = np.maximum(s.peak, equity)
        drawdown = 1.0 - equity / s.peak
        s.max_drawdown = np.maximum(s.max_drawdown, drawdown)

        # Reward components (`RewardSystem`): log returns before and of the costs, penalties.
        # (rows of self._components, written in place through their named views)
        comp = self.component_views
        with np.errstate(divide="ignore", invalid="ignore"):
            comp["pnl"][:] = np.log(np.maximum((equity_old + gross) / equity_old, MIN_RATIO))
            comp["transaction_cost"][:] = np.log(
                np.maximum(equity / (equity_old + gross), MIN_RATIO))
        comp["drawdown"][:] = np.minimum(s.drawdown - drawdown, 0.0)
        inactive_after, hold_after = self.reward_system.thresholds
        comp["inactivity"][:] = np.where(s.flat_steps > inactive_after, -1.0, 0.0)
        comp["holding"][:] = np.where(s.hold_steps > hold_after, -1.0, 0.0)
        net_return = comp["pnl"] + comp["transaction_cost"]
        if self.reward_system.computes_dsr:
            comp["differential_sharpe"][:], s.dsr_a, s.dsr_b = differential_sharpe(
                net_return, s.dsr_a, s.dsr_b, self.reward_system.config.dsr_eta)
        comps = self._components
        reward = self.reward_system.reward(comps)

        # Carry the step over.
        s.action = np.where(stopped, self.flat_action, action).astype(np.intp)
        s.equity, s.drawdown, s.t = equity, drawdown, nxt
        equity = equity.copy()  # the state's array is rewritten where an episode resets
        s.reward_sum += reward
        s.return_sum += net_return
        s.return_sq_sum += net_return * net_return
        s.trades += new != pos
        s.closed += closes
        s.wins += won
        s.trades += stopped  # a stop-out is a position change that closes a trade
        s.closed += stopped
        s.wins += won_at_stop
        s.refused += refused
        terminated = stopped | (equity <= 0.0)
        truncated = (nxt >= s.stop) & ~terminated

        obs = self._gather(nxt - tables.first)
        open_pnl_share = s.trade_pnl / np.where(equity > 0.0, equity, np.inf)
        portfolio = np.stack([held / self.targets[-1], open_pnl_share,
                              s.hold_steps / self.config.position_time_scale, drawdown],
                             axis=1).astype(np.float32)
        if self._portfolio_out is None:
            obs["portfolio"] = portfolio
        else:
            self._portfolio_out[...] = portfolio
            obs["portfolio"] = self._portfolio_out

        episode = final_obs = None
        done = _EMPTY
        ended = terminated | truncated
        if ended.any():
            done = np.flatnonzero(ended)
            episode = self._episode_stats(done, stopped)
            if autoreset:
                final_obs = {k: np.zeros_like(v) for k, v in obs.items()}
                for k, v in obs.items():
                    final_obs[k][done] = v[done]
                for k, v in self.reset(done).items():
                    obs[k][done] = v
        return StepResult(obs=obs, reward=reward, terminated=terminated, truncated=truncated,
                          components=comps, equity=equity, position=held, done=done,
                          episode=episode, final_obs=final_obs)

    def _episode_stats(self, done: np.ndarray, stopped: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics of the episodes ending at rows ``done`` (0 in the other rows);
        ``stopped`` marks the envs stopped out this step.

        ``sharpe`` is the mean over the sample standard deviation (ddof=1) of the per-step net
        log returns of equity, annualised by ``sqrt(MarketData.periods_per_year)`` (one step =
        one base bar; risk-free rate 0); 0 for one-step episodes or returns without variance.
        ``wins`` / ``losses`` count closed round trips (flat or flip after a position) whose PnL,
        costs of both sides included, is > 0 / <= 0; a trade still open at the end is not
        counted. ``refused_orders`` counts the orders refused for margin (the position was
        kept), ``stop_out`` is 1 when the episode ended in a stop-out (0 otherwise).
        """
        s, n = self.state, self.num_envs
        length = (s.t[done] - s.start[done]).astype(np.float64)
        mean = s.return_sum[done] / length
        var = (s.return_sq_sum[done] - length * mean * mean) / np.maximum(length - 1.0, 1.0)
        ok = (length > 1) & (var > 1e-300)
        sharpe = np.where(ok, mean / np.sqrt(np.where(ok, var, 1.0)), 0.0)
        sharpe *= np.sqrt(self.tables.periods_per_year)
        stats = {k: np.zeros(n, dtype=np.float64) for k in EPISODE_KEYS}
        for k in _COUNT_KEYS:
            stats[k] = np.zeros(n, dtype=np.int64)
        stats["reward"][done] = s.reward_sum[done]
        stats["length"][done] = length
        stats["trades"][done] = s.trades[done]
        stats["wins"][done] = s.wins[done]
        stats["losses"][done] = s.closed[done] - s.wins[done]
        stats["total_return"][done] = s.equity[done] / self.config.initial_equity - 1.0
        stats["sharpe"][done] = sharpe
        stats["max_drawdown"][done] = s.max_drawdown[done]
        stats["refused_orders"][done] = s.refused[done]
        stats["stop_out"][done] = stopped[done]
        return stats


_EMPTY = np.zeros(0, dtype=np.intp)
_EMPTY.flags.writeable = False
