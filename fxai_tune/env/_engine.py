"""The batched trading engine: N accounts stepped together by a fixed number of numpy calls.

`TradingEnvironment` (N=1) and `VectorTradingEnv` are thin gymnasium shells around it, so they
share every line of the accounting.

One step of an env at decision bar ``t`` that holds ``pos`` units and targets ``new`` (see
``../shared/DOMAIN.md``; prices are mids, PnL is in the quote currency)::

    gap   = pos * (mid_open[t+1] - mid_close[t])        # old position across the bar boundary
    cost  = |new - pos| * unit_cost[t+1] * cost_scale   # fill at open[t+1]
    body  = new * (mid_close[t+1] - mid_open[t+1])      # new position over bar t+1
    E_new = E_old + ((gap + body) - cost)               # equity marked at the mid close

At N=64 a numpy call costs ~0.2-0.5 us of dispatch and almost nothing of arithmetic, so the
step is laid out to make as few calls as possible (~40 with the default reward weights, see
``docs/benchmarks.md``):

- What depends only on the transition ``tau = old action * A + new action`` is one column of a
  small transition table (flags, counter multipliers and increments, positions); what depends
  on the bar ``t`` and ``tau`` (gross and net PnL, open-trade PnL, closed-trade PnL) is one
  column of a per-(bar, transition) table built per split and difficulty. One ``take`` each.
- The account state is one float64 array of ~30 rows x N, ordered so that quantities updated
  the same way are adjacent: counters, steps left, equities and open-trade PnL advance by one
  multiply and two adds; three reward components come from one ``minimum``.
- Operands are same-shape contiguous arrays or 0-d arrays (broadcasting and Python floats cost
  2-5x more per call); views, scratch rows and the reward kernel are made once
  (:meth:`TradingEngine._bind`), so the step slices nothing and allocates only its outputs
  (not even the observations with ``copy_obs=False``).
- Observations are one ``take`` of N rows of the window table (every window of a bar in one
  contiguous row, see `MarketTables`), indexed by a third row of the clock that advances with
  the decision bar.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import numpy as np

from fxai_tune.data._market import MarketData
from fxai_tune.env._config import EnvConfig
from fxai_tune.env._reward import DSR_ROWS, REWARD_COMPONENTS, RewardSystem, dsr_state
from fxai_tune.env._spaces import PORTFOLIO_FEATURES
from fxai_tune.env._tables import BODY, GAP, UNIT_COST, MarketTables

__all__ = ["EPISODE_KEYS", "MAX_BAR_TABLE_BYTES", "StepResult", "TradingEngine"]

EPISODE_KEYS = ("reward", "length", "trades", "wins", "losses", "total_return", "sharpe",
                "max_drawdown")
"""Keys of the episode statistics reported at the end of every episode."""

MAX_BAR_TABLE_BYTES = 256 * 2**20
"""Largest per-(bar, transition) table built; longer splits or many actions compute the same
rows from the bar and transition tables at each step (same numbers, ~10 more numpy calls)."""

# Rows of the packed state `_s`, ordered so that rows updated alike are adjacent:
# - SLACK_FLAT .. TP are multiplied by one take of the transition table (1 for LEFT and the
#   equities), SLACK_FLAT .. LEFT get added transition-table rows and E1 .. TP bar-table rows;
#   E1 and E2 hold E_old at the start of a step, so that E1 = E_old + gross, E2 = E_old + net;
# - DD_DIFF, SLACK_FLAT, SLACK_HOLD give three reward components by one minimum;
# - E0, E1, E2 give the two log returns by one division; LEFT, E0 (= E2 once the step is
#   carried over) find ends and margin calls by one comparison.
(_DD_DIFF, _SLACK_FLAT, _SLACK_HOLD, _HOLD, _LEFT, _E0, _E1, _E2, _TP) = range(9)
_MUL = slice(_SLACK_FLAT, _TP + 1)
_ADD_TAU = slice(_SLACK_FLAT, _LEFT + 1)
_ADD_BAR = slice(_E1, _TP + 1)
_COMP = _TP + 1  # 6 reward components, REWARD_COMPONENTS order
_PEAK = _COMP + len(REWARD_COMPONENTS)
_MAX_DD = _PEAK + 1
_DD_OLD = _MAX_DD + 1  # drawdown before the step
_DSR = _DD_OLD + 1  # DSR_ROWS rows, see reward.dsr_state
_ACC = _DSR + DSR_ROWS  # episode sums: reward, R_t, R_t^2, wins, trades, closed trades
_S_ROWS = _ACC + 6
# Rows of the per-step buffer `_q`. Rows _Q_TABLE are one take of the transition table (one
# column per tau = old * A + new): changes and closes (episode sums), multipliers of _MUL, rows
# added to _ADD_TAU, the new position in units and as a fraction of the largest. The other rows
# are filled during the step, placed so that [reward, R, R^2, won, changed, closed] add to the
# episode sums and [position fraction, open PnL, time, drawdown] become the portfolio by one
# call each.
_N_MUL = _TP - _SLACK_FLAT + 1
_N_ADD_TAU = _LEFT - _SLACK_FLAT + 1
_Q_REWARD, _Q_R, _Q_R2, _Q_WON, _Q_CHANGED, _Q_CLOSED = range(6)
_Q_MUL = slice(_Q_CLOSED + 1, _Q_CLOSED + 1 + _N_MUL)
_Q_ADD_TAU = slice(_Q_MUL.stop, _Q_MUL.stop + _N_ADD_TAU)
_Q_POSITION = _Q_ADD_TAU.stop
_Q_POS_FRAC, _Q_OPEN_PNL, _Q_TIME, _Q_DD = range(_Q_POSITION + 1, _Q_POSITION + 5)
_Q_TABLE = slice(_Q_CHANGED, _Q_POS_FRAC + 1)
_Q_ROWS = _Q_DD + 1
# Rows of the bar table (one column per (t, tau)): rows added to _ADD_BAR (gross PnL, net PnL,
# open-trade PnL), and the PnL that decides whether the round trip closed by this step won
# (-inf when none closes). Kept this short: at N=64 each row costs 64 cache misses a step.
_N_ADD_BAR = _TP - _E1 + 1
_B_WIN = _N_ADD_BAR
_B_ROWS = _N_ADD_BAR + 1

_UINTP = np.dtype(np.uintp)
_new_tuple = tuple.__new__
_ONE = np.array(1.0)
_ZERO = np.array(0.0)
_UFUNCS = (np.add, np.multiply, np.subtract, np.divide, np.maximum, np.less, np.greater,
           np.heaviside)


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
        terminated: ``(N,)`` bool, margin call.
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
        self._tau_table, self._bar_coef = self._transition_tables()
        self.rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_envs)]
        n = num_envs
        self._shape = (n,)
        self._n_actions_u = np.full(n, self.n_actions, dtype=np.uintp)
        self._n_actions_i = np.array(self.n_actions, dtype=np.intp)
        self._inv_time_scale = np.array(1.0 / config.position_time_scale)
        # Ends: steps left < 0.5 (length or split end), equity < margin level (margin call).
        self._end_levels = np.empty((2, n))
        self._end_levels[0] = 0.5
        self._end_levels[1] = config.margin_call_fraction * config.initial_equity
        self._s_reset = np.zeros(_S_ROWS)
        self._s_reset[[_E0, _E1, _E2, _PEAK]] = config.initial_equity
        self._s_reset[[_SLACK_FLAT, _SLACK_HOLD]] = self.reward_system.thresholds
        self._s_reset[_DSR:_DSR + DSR_ROWS] = dsr_state(1)[:, 0]
        self._s = np.repeat(self._s_reset[:, None], n, axis=1)
        # [t, (t - first) * A^2, t - first]: the decision bar, its column offset in the bar
        # table and its row in the window table, advanced by one add. The state holds rows 0-1
        # (`_tt`, a view); row 2 follows from row 0.
        self._clock = np.zeros((3, n), dtype=np.intp)
        self._clock_step = np.empty((3, n), dtype=np.intp)
        self._clock_step[[0, 2]] = 1
        self._clock_step[1] = self.n_actions**2
        self._start = np.zeros(n, dtype=np.intp)
        self._old_a = np.full(n, self.flat_action * self.n_actions, dtype=np.intp)  # old * A
        self._all_envs = np.arange(n)
        self._bind()
        self.set_difficulty(config.curriculum.difficulty)

    # Attributes derived from the arrays above (views, closures over them), rebuilt on unpickling
    # or deep copy so that they point into the new arrays.
    _BOUND = ("_b", "_q", "_views", "_components", "component_views", "_tt", "_tau", "_col",
              "_bad", "_no_flags", "_no_ends", "_gather", "_portfolio_out")

    def _bind(self) -> None:
        """Make the step's views, scratch rows and kernels once: a slice costs ~0.07 us, an
        attribute lookup ~0.01-0.02 us, a numpy call ~0.2-0.5 us, a step at N=64 ~17-20 us."""
        s, n = self._s, self.num_envs
        self._b = b = np.empty((_B_ROWS, n))  # bar-table rows of the step
        self._q = q = np.empty((_Q_ROWS, n))  # transition-table rows of the step
        self._components = components = s[_COMP:_COMP + len(REWARD_COMPONENTS)]
        self.component_views = self.reward_system.breakdown(components)
        """Name -> ``(N,)`` reward component of the last step; the same arrays, rewritten in
        place by every step."""
        self._tt = self._clock[:2]
        # Scratch: transition, bar-table column, invalid action flags.
        self._tau = np.empty(n, dtype=np.intp)
        self._col = np.empty(n, dtype=np.intp)
        self._bad = np.empty(n, dtype=bool)
        # "Any True?" of a bool array is `mask.tobytes() != <as many zero bytes>`: 0.04 us at
        # N=64, against 0.15 for `b"\x01" in mask.tobytes()`, 0.2 for np.count_nonzero and 0.7
        # for mask.any().
        self._no_flags, self._no_ends = bytes(n), bytes(2 * n)
        # Observation buffers of copy_obs=False, overwritten by every step and full reset (so
        # their contents need not survive a copy); None: new arrays every step.
        self._gather = self.tables.window_gatherer(n, copy=self.copy_obs)
        self._portfolio_out = None if self.copy_obs else np.empty(
            (n, len(PORTFOLIO_FEATURES)), dtype=np.float32)
        reward_kernel = self.reward_system.kernel(
            s[_E0:_E2 + 1], s[_DD_DIFF:_SLACK_HOLD + 1], s[_DSR:_DSR + DSR_ROWS], components,
            q[_Q_R:_Q_R2 + 1], q[_Q_REWARD])
        self._views = (
            s[_TP], s[_MUL], s[_ADD_TAU], s[_ADD_BAR], s[_E2], s[_PEAK], s[_MAX_DD], s[_DD_OLD],
            s[_DD_DIFF], s[_LEFT:_E0 + 1], s[_E0:_E2], s[_HOLD], s[_ACC:], self._clock,
            self._clock[1], self._clock[2], self._clock_step, b, b[:_N_ADD_BAR], b[_B_WIN],
            q[_Q_TABLE], q[_Q_MUL], q[_Q_ADD_TAU], q[_Q_WON], q[_Q_DD], q[_Q_REWARD],
            q[_Q_REWARD:_Q_CLOSED + 1], q[_Q_OPEN_PNL], q[_Q_TIME], q[_Q_POS_FRAC:_Q_DD + 1].T,
            q[_Q_POSITION], self._tau_table, self._n_actions_i, self._inv_time_scale,
            self._end_levels, reward_kernel, self._gather, self._portfolio_out, components,
            self._old_a, self._tau, self._col, self._no_ends)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._BOUND:
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bind()

    def _transition_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """The transition table (rows ``_Q_TABLE`` of the step buffer, ``A^2`` columns) and the
        bar-table coefficients ``c`` of shape ``(4, _B_ROWS, A^2)``: bar-table row ``r`` at bar
        ``t`` is ``((c[0, r] gap_t + c[1, r] body_t) + c[2, r] unit_cost_t) + c[3, r]``."""
        a = self.n_actions
        thr_flat, thr_hold = self.reward_system.thresholds
        tau_table = np.zeros((_Q_TABLE.stop - _Q_TABLE.start, a * a))
        coef = np.zeros((4, _B_ROWS, a * a))
        for old in range(a):
            for new in range(a):
                p_old, p_new = self.targets[old], self.targets[new]
                s_old, s_new = np.sign(p_old), np.sign(p_new)
                closed = s_old != 0 and s_new != s_old
                opened = s_new != 0 and s_new != s_old
                same = float(s_new == s_old)
                flat, in_pos = float(s_new == 0), float(s_new != 0)
                delta = abs(p_new - p_old)
                # Round trips: one closes when the side changes away from a position; the
                # costs of a flip are split per unit between the closing and the opening trade.
                close_units = abs(p_old) * closed
                tp_cost_units = delta * same + abs(p_new) * opened
                col = old * a + new
                # Counters: slack = threshold - counter, and counter' = counter * mult + flag.
                column = np.zeros(_Q_ROWS)
                column[[_Q_CHANGED, _Q_CLOSED]] = float(p_new != p_old), float(closed)
                column[_Q_MUL] = (flat, same * in_pos, same * in_pos, 1.0, 1.0, 1.0, 1.0, same)
                column[_Q_ADD_TAU] = (thr_flat * (1.0 - flat) - flat,
                                      thr_hold * (1.0 - same * in_pos) - in_pos, in_pos, -1.0)
                column[[_Q_POSITION, _Q_POS_FRAC]] = p_new, p_new / self.targets[-1]
                tau_table[:, col] = column[_Q_TABLE]
                # Columns: gap, body, unit cost, constant.
                coef[:, _E1 - _E1, col] = (p_old, p_new, 0.0, 0.0)  # gross PnL
                coef[:, _E2 - _E1, col] = (p_old, p_new, -delta, 0.0)  # net PnL
                coef[:, _TP - _E1, col] = (same * p_old, p_new, -tp_cost_units, 0.0)
                coef[:, _B_WIN, col] = ((p_old, 0.0, -close_units, 0.0) if closed
                                        else (0.0, 0.0, 0.0, -np.inf))
        return tau_table, coef

    @staticmethod
    def _bar_rows(coef: np.ndarray, bars: np.ndarray) -> np.ndarray:
        """Bar-table rows from coefficients ``(4, rows, ...)`` and bars ``(3, ...)``, both
        broadcast to the same trailing shape (the one formula behind both paths)."""
        rows = np.multiply(coef[0], bars[0])
        rows += np.multiply(coef[1], bars[1])
        rows += np.multiply(coef[2], bars[2])
        rows += coef[3]
        return rows

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
        tables = self.tables
        # Bars of the decisions t in [first, last): gap, body, scaled unit cost.
        self._bars = np.ascontiguousarray(
            tables.bars[tables.first:tables.last, [GAP, BODY, UNIT_COST]].T)
        self._bars[2] *= self.cost_scale
        n_cols = self._bars.shape[1] * self.n_actions**2
        if _B_ROWS * n_cols * 8 <= MAX_BAR_TABLE_BYTES:
            rows = self._bar_rows(self._bar_coef[:, :, None, :], self._bars[:, None, :, None])
            self._bar_table: np.ndarray | None = rows.reshape(_B_ROWS, n_cols)
        else:
            self._bar_table = None
            self._bar_coef_flat = self._bar_coef.reshape(4 * _B_ROWS, -1)
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

    _STATE_ARRAYS = ("_s", "_tt", "_start", "_old_a")

    def get_state(self) -> dict[str, Any]:
        """Deep copy of everything mutable: account arrays, RNG states and the difficulty."""
        state: dict[str, Any] = {name: getattr(self, name).copy() for name in self._STATE_ARRAYS}
        state["rngs"] = [copy.deepcopy(rng.bit_generator.state) for rng in self.rngs]
        state["difficulty"] = self._difficulty
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` snapshot (the snapshot itself is not aliased)."""
        if len(state["rngs"]) != self.num_envs:
            raise ValueError(f"state holds {len(state['rngs'])} envs, this engine has "
                             f"{self.num_envs}")
        missing = [name for name in self._STATE_ARRAYS if name not in state]
        if missing:
            raise ValueError(f"state lacks {missing}: it was saved by another version of the "
                             "engine; keys: " + ", ".join(sorted(state)))
        self.set_difficulty(state["difficulty"])
        for name in self._STATE_ARRAYS:
            getattr(self, name)[...] = state[name]
        np.subtract(self._tt[0], self.tables.first, out=self._clock[2])
        for rng, rng_state in zip(self.rngs, state["rngs"], strict=True):
            rng.bit_generator.state = copy.deepcopy(rng_state)

    # ------------------------------------------------------------------ accessors

    @property
    def t(self) -> np.ndarray:
        """Current decision bar of each env (copy)."""
        return self._tt[0].copy()

    @property
    def equity(self) -> np.ndarray:
        """Current equity of each env (copy)."""
        return self._s[_E0].copy()

    @property
    def components(self) -> np.ndarray:
        """``(6, N)`` reward components of the last step: a view that every step overwrites."""
        return self._components

    @property
    def position(self) -> np.ndarray:
        """Current position of each env in units (copy)."""
        return self.targets[self._old_a // self.n_actions]

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
        self._clock[0, idx] = starts
        self._clock[1, idx] = (starts - tables.first) * self.n_actions**2
        self._clock[2, idx] = starts - tables.first
        self._start[idx] = starts
        self._old_a[idx] = self.flat_action * self.n_actions
        # (the component rows still describe the step that ended these episodes)
        self._s[:_COMP, idx] = self._s_reset[:_COMP, None]
        self._s[_PEAK:, idx] = self._s_reset[_PEAK:, None]
        self._s[_LEFT, idx] = stops - starts
        if indices is None and self._portfolio_out is not None:
            obs = self._gather(self._clock[2])
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
        a = np.asarray(actions, dtype=np.intp)
        # Negative actions view as huge unsigned ints: one comparison catches both ends.
        if a.shape != self._shape or np.greater_equal(
                a.view(_UINTP), self._n_actions_u, self._bad).tobytes() != self._no_flags:
            raise ValueError(f"actions must be {self.num_envs} ints in [0, {self.n_actions}), "
                             f"got {actions!r}")
        # Local names: ~20 ns a call less than np.<name>, ~0.01 us per attribute lookup.
        add, multiply, subtract, divide, maximum, less, greater, heaviside = _UFUNCS
        (tp, mul, add_tau, add_bar, e2, peak, max_dd, dd_old, dd_diff, left_e0, e01, hold, acc,
         clock, t_col, t_row, clock_step, b, b_add, b_win, q_table, q_mul, q_add, won, dd,
         reward, q_acc, open_pnl, time_in_pos, portfolio, position, tau_table, n_actions,
         inv_time_scale, end_levels, reward_kernel, gather, portfolio_out, components, old_a,
         tau, col, no_ends) = self._views
        add(old_a, a, tau)
        # "clip": indices are in range, and take writes into `out` without a temporary copy.
        tau_table.take(tau, axis=1, out=q_table, mode="clip")
        if self._bar_table is not None:
            self._bar_table.take(add(t_col, tau, col), axis=1, out=b, mode="clip")
        else:
            b[...] = self._bar_rows(
                self._bar_coef_flat.take(tau, axis=1).reshape(4, _B_ROWS, -1),
                self._bars.take(t_row, axis=1)[:, None, :])
        multiply(a, n_actions, old_a)
        # A round trip closed by this step won if its PnL, costs of both sides included, is > 0.
        add(tp, b_win, won)
        heaviside(won, _ZERO, won)
        # Counters, steps left, open-trade PnL, equity (E1 = E_old + gross, E2 = E_old + net).
        multiply(mul, q_mul, mul)
        add(add_tau, q_add, add_tau)
        add(add_bar, b_add, add_bar)
        maximum(peak, e2, out=peak)
        divide(e2, peak, dd)
        subtract(_ONE, dd, dd)
        maximum(max_dd, dd, out=max_dd)
        subtract(dd_old, dd, dd_diff)
        dd_old[...] = dd
        reward_kernel()
        add(acc, q_acc, acc)
        divide(tp, e2, open_pnl)
        multiply(hold, inv_time_scale, time_in_pos)
        equity = e2.copy()
        e01[...] = e2  # E_old of the next step, also in the E1 slot
        ends = less(left_e0, end_levels)  # rows: out of steps, margin call
        terminated = ends[1]
        truncated = greater(ends[0], terminated)
        add(clock, clock_step, clock)
        obs = gather(t_row)
        if portfolio_out is None:
            obs["portfolio"] = np.ascontiguousarray(portfolio, dtype=np.float32)
        else:
            portfolio_out[...] = portfolio
            obs["portfolio"] = portfolio_out

        episode = final_obs = None
        done = _EMPTY
        if ends.tobytes() != no_ends:  # any episode ended
            done = np.flatnonzero(ends[0] | ends[1])
            episode = self._episode_stats(done)
            if autoreset:
                final_obs = {k: np.zeros_like(v) for k, v in obs.items()}
                for k, v in obs.items():
                    final_obs[k][done] = v[done]
                for k, v in self.reset(done).items():
                    obs[k][done] = v
        # tuple.__new__: half the cost of the NamedTuple's Python-level __new__
        return _new_tuple(StepResult, (obs, reward.copy(), terminated, truncated, components,
                                       equity, position.copy(), done, episode, final_obs))

    def _episode_stats(self, done: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics of the episodes ending at rows ``done`` (0 in the other rows).

        ``sharpe`` is the mean over the sample standard deviation (ddof=1) of the per-step net
        log returns of equity, annualised by ``sqrt(MarketData.periods_per_year)`` (one step =
        one base bar; risk-free rate 0); 0 for one-step episodes or returns without variance.
        ``wins`` / ``losses`` count closed round trips (flat or flip after a position) whose PnL,
        costs of both sides included, is > 0 / <= 0; a trade still open at the end is not
        counted.
        """
        n = self.num_envs
        acc = self._s[_ACC:, done]  # reward, R, R^2, wins, trades, closed
        length = (self._tt[0, done] - self._start[done]).astype(np.float64)
        mean = acc[1] / length
        var = (acc[2] - length * mean * mean) / np.maximum(length - 1.0, 1.0)
        ok = (length > 1) & (var > 1e-300)
        sharpe = np.where(ok, mean / np.sqrt(np.where(ok, var, 1.0)), 0.0)
        sharpe *= np.sqrt(self.tables.periods_per_year)
        stats = {k: np.zeros(n, dtype=np.float64) for k in EPISODE_KEYS}
        for k in ("length", "trades", "wins", "losses"):
            stats[k] = np.zeros(n, dtype=np.int64)
        stats["reward"][done] = acc[0]
        stats["length"][done] = length
        stats["trades"][done] = acc[4]
        stats["wins"][done] = acc[3]
        stats["losses"][done] = acc[5] - acc[3]
        stats["total_return"][done] = self._s[_E0, done] / self.config.initial_equity - 1.0
        stats["sharpe"][done] = sharpe
        stats["max_drawdown"][done] = self._s[_MAX_DD, done]
        return stats


_EMPTY = np.zeros(0, dtype=np.intp)
_EMPTY.flags.writeable = False
