"""The batched trading engine: N accounts stepped together by a fixed number of numpy calls.

`TradingEnvironment` (N=1) and `VectorTradingEnv` are thin gymnasium shells around it, so they
share every line of the accounting.

One step of an env at decision bar ``t`` that holds ``pos`` units and targets ``new`` (see
``../shared/DOMAIN.md``; prices are mids, PnL is in the quote currency)::

    gap   = pos * (mid_open[t+1] - mid_close[t])        # old position across the bar boundary
    cost  = |new - pos| * unit_cost[t+1] * cost_scale   # fill at open[t+1]
    body  = new * (mid_close[t+1] - mid_open[t+1])      # new position over bar t+1
    E_new = E_old + gap + body - cost                   # equity marked at the mid close

State lives in packed ``(k, N)`` float64 arrays (rows contiguous) so each line of the step is one
numpy call over all envs; at N=64 the per-call overhead, not the arithmetic, sets the pace.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import numpy as np

from fxai_tune.data._market import MarketData
from fxai_tune.env._config import EnvConfig
from fxai_tune.env._reward import REWARD_COMPONENTS, RewardSystem
from fxai_tune.env._tables import BODY, GAP, UNIT_COST, MarketTables

__all__ = ["EPISODE_KEYS", "StepResult", "TradingEngine"]

EPISODE_KEYS = ("reward", "length", "trades", "wins", "losses", "total_return", "sharpe",
                "max_drawdown")
"""Keys of the episode statistics reported at the end of every episode."""

# Rows of the transition table, column a_old * n_actions + a_new. Rows 0-4 are multiplied by
# the bar rows [gap, body, unit_cost, unit_cost, unit_cost]; rows 5-6 and 7-8 update the
# [flat, hold] counters in one call each (hence the same-side flag twice).
(_POS_OLD, _POS_NEW, _ABS_DELTA, _CLOSE_UNITS, _TP_COST_UNITS, _ONE, _SAME_SIDE, _FLAT, _IN_POS,
 _CHANGED, _CLOSED, _SAME_SIDE2, _POS_FRAC) = range(13)
_N_TRANSITION_ROWS = 13

# Named views of the packed state, for get_state / set_state.
_STATE_ARRAYS = ("_eq", "_dd", "_peak", "_max_dd", "_cnt", "_dsr", "_acc", "_trd", "_tp", "_t",
                 "_start", "_stop", "_act_a")


class StepResult(NamedTuple):
    """What one engine step returns; every array is new (no later step writes into it).

    Attributes:
        obs: Observation per branch, ``(N, ...)``; rows of envs that ended hold the reset
            observation when the step autoreset them, else the final one.
        reward: ``(N,)`` float64.
        terminated: ``(N,)`` bool, margin call.
        truncated: ``(N,)`` bool, episode length or split end reached (never with terminated).
        components: ``(6, N)`` raw reward components, rows in ``REWARD_COMPONENTS`` order.
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
    """

    def __init__(self, market: MarketData, config: EnvConfig, num_envs: int) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs=}")
        self.market = market
        self.config = config
        self.num_envs = num_envs
        self.tables = MarketTables(market, config)
        self.reward_system = RewardSystem(config.reward)
        self.n_actions = config.n_actions
        self.flat_action = len(config.position_sizes)
        self.targets = np.array(config.target_lots(), dtype=np.float64) * config.lot_size
        self._trans = self._transition_table()
        base = self.tables.bars
        self._bars_base = np.ascontiguousarray(
            base[:, [GAP, BODY, UNIT_COST, UNIT_COST, UNIT_COST]].T)
        self._margin_level = config.margin_call_fraction * config.initial_equity
        self._inv_time_scale = 1.0 / config.position_time_scale
        self.rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_envs)]
        n = num_envs
        self._eq = np.full((3, n), config.initial_equity)  # E_old, E_old + gross, E_new
        self._dd = np.zeros((2, n))  # drawdown before, after the step
        self._peak = np.full(n, config.initial_equity)
        self._max_dd = np.zeros(n)
        self._cnt = np.zeros((2, n))  # consecutive steps flat, in the position
        self._dsr = np.zeros((2, n))  # A, B of the differential Sharpe ratio
        self._acc = np.zeros((3, n))  # episode reward, sum of R_t, sum of R_t^2
        self._trd = np.zeros((3, n))  # position changes, closed round trips, winning ones
        self._tp = np.zeros(n)  # PnL of the open round trip, its costs included
        self._ret = np.zeros((2, n))  # scratch: R_t, R_t^2
        self._t = np.zeros(n, dtype=np.intp)
        self._start = np.zeros(n, dtype=np.intp)
        self._stop = np.zeros(n, dtype=np.intp)
        self._act_a = np.full(n, self.flat_action * self.n_actions, dtype=np.intp)
        self.set_difficulty(config.curriculum.difficulty)

    def _transition_table(self) -> np.ndarray:
        """Column ``a_old * A + a_new``: what moving from action ``a_old`` to ``a_new`` implies."""
        a = self.n_actions
        table = np.zeros((_N_TRANSITION_ROWS, a * a), dtype=np.float64)
        for old in range(a):
            for new in range(a):
                p_old, p_new = self.targets[old], self.targets[new]
                s_old, s_new = np.sign(p_old), np.sign(p_new)
                closed = s_old != 0 and s_new != s_old
                opened = s_new != 0 and s_new != s_old
                same = s_new == s_old
                delta = abs(p_new - p_old)
                table[:, old * a + new] = (
                    p_old, p_new, delta, abs(p_old) * closed,
                    delta * same + abs(p_new) * opened,  # costs charged to the open trade
                    1.0, same, s_new == 0, s_new != 0, p_new != p_old, closed, same,
                    p_new / self.targets[-1])
        return table

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
        self._bars = self._bars_base.copy()
        self._bars[2:] *= self.cost_scale
        full = self.config.episode_length
        shortest = min(cur.min_episode_length, full)
        self.episode_length = round(shortest + (full - shortest) * level)
        tables = self.tables
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
        state: dict[str, Any] = {name: getattr(self, name).copy() for name in _STATE_ARRAYS}
        state["rngs"] = [copy.deepcopy(rng.bit_generator.state) for rng in self.rngs]
        state["difficulty"] = self._difficulty
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` snapshot (the snapshot itself is not aliased)."""
        if len(state["rngs"]) != self.num_envs:
            raise ValueError(f"state holds {len(state['rngs'])} envs, this engine has "
                             f"{self.num_envs}")
        self.set_difficulty(state["difficulty"])
        for name in _STATE_ARRAYS:
            getattr(self, name)[...] = state[name]
        for rng, rng_state in zip(self.rngs, state["rngs"], strict=True):
            rng.bit_generator.state = copy.deepcopy(rng_state)

    # ------------------------------------------------------------------ accessors

    @property
    def t(self) -> np.ndarray:
        """Current decision bar of each env (copy)."""
        return self._t.copy()

    @property
    def equity(self) -> np.ndarray:
        """Current equity of each env (copy)."""
        return self._eq[0].copy()

    @property
    def position(self) -> np.ndarray:
        """Current position of each env in units (copy)."""
        return self.targets[self._act_a // self.n_actions]

    # ------------------------------------------------------------------ reset / step

    def reset(self, indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Start a new episode in envs ``indices`` (all by default), in index order, each drawing
        its start from its own RNG; returns their observations (rows in ``indices`` order)."""
        idx = np.arange(self.num_envs) if indices is None else np.asarray(indices, dtype=np.intp)
        last = self.tables.last
        if self.config.mode == "random":
            starts = np.array([self.starts[self.rngs[i].integers(len(self.starts))] for i in idx],
                              dtype=np.intp)
            stops = np.minimum(starts + self.episode_length, last)
        else:
            starts = np.full(len(idx), self.tables.first, dtype=np.intp)
            stops = np.full(len(idx), last, dtype=np.intp)
        self._t[idx] = starts
        self._start[idx] = starts
        self._stop[idx] = stops
        self._act_a[idx] = self.flat_action * self.n_actions
        initial = self.config.initial_equity
        self._eq[:, idx] = initial
        self._peak[idx] = initial
        for arr in (self._dd, self._cnt, self._dsr, self._acc, self._trd):
            arr[:, idx] = 0.0
        self._max_dd[idx] = 0.0
        self._tp[idx] = 0.0
        obs = self.tables.gather_windows(starts)
        obs["portfolio"] = np.zeros((len(idx), 4), dtype=np.float32)
        return obs

    def step(self, actions: np.ndarray, *, autoreset: bool) -> StepResult:
        """Advance every env by one bar.

        Args:
            actions: ``(N,)`` integer actions in ``[0, n_actions)``.
            autoreset: Reset envs whose episode ends (their ``obs`` rows become reset
                observations and ``final_obs`` holds the final ones).
        """
        a = np.asarray(actions, dtype=np.intp)
        # Negative actions view as huge unsigned ints: one comparison catches both ends.
        if a.shape != (self.num_envs,) or np.count_nonzero(
                np.greater_equal(a.view(np.uintp), self.n_actions)):
            raise ValueError(f"actions must be {self.num_envs} ints in [0, {self.n_actions}), "
                             f"got {actions!r}")
        tr = self._trans.take(self._act_a + a, axis=1)
        prod = tr[:5] * self._bars.take(self._t, axis=1)
        old_pnl, new_pnl, cost, close_cost, tp_cost = prod
        eq = self._eq
        np.add(eq[0], old_pnl, out=eq[1])
        eq[1] += new_pnl
        e_new = np.subtract(eq[1], cost, out=eq[2])

        # Round trips: one closes when the side changes away from a position; the costs of a
        # flip are split per unit between the closing and the opening trade.
        tp = self._tp
        tp += old_pnl
        won = tp - close_cost
        won *= tr[_CLOSED]
        self._trd[2] += won > 0.0
        self._trd[:2] += tr[_CHANGED:_CLOSED + 1]
        tp *= tr[_SAME_SIDE2]
        tp += new_pnl
        tp -= tp_cost
        cnt = self._cnt
        cnt *= tr[_ONE:_SAME_SIDE + 1]
        cnt += 1.0
        cnt *= tr[_FLAT:_IN_POS + 1]

        dd = self._dd
        np.maximum(self._peak, e_new, out=self._peak)
        np.divide(e_new, self._peak, out=dd[1])
        np.subtract(1.0, dd[1], out=dd[1])
        np.maximum(self._max_dd, dd[1], out=self._max_dd)
        comps = np.empty((len(REWARD_COMPONENTS), self.num_envs))
        self.reward_system.compute(eq, dd, cnt, self._dsr, comps, self._ret)
        reward = self.reward_system.reward(comps)
        acc = self._acc
        acc[0] += reward
        acc[1:] += self._ret
        equity = e_new.copy()
        eq[0] = equity
        dd[0] = dd[1]
        self._act_a = a * self.n_actions
        t = self._t
        t += 1

        terminated = equity < self._margin_level
        over = t >= self._stop
        truncated = over > terminated
        over |= terminated
        obs = self.tables.gather_windows(t)
        port = np.empty((self.num_envs, 4), dtype=np.float32)
        port[:, 0] = tr[_POS_FRAC]
        np.divide(tp, equity, out=port[:, 1])
        np.multiply(cnt[1], self._inv_time_scale, out=port[:, 2])
        port[:, 3] = dd[1]
        obs["portfolio"] = port

        episode = final_obs = None
        done = _EMPTY
        if np.count_nonzero(over):
            done = np.flatnonzero(over)
            episode = self._episode_stats(done)
            if autoreset:
                final_obs = {k: np.zeros_like(v) for k, v in obs.items()}
                for k, v in obs.items():
                    final_obs[k][done] = v[done]
                for k, v in self.reset(done).items():
                    obs[k][done] = v
        return StepResult(obs, reward, terminated, truncated, comps, equity, tr[_POS_NEW],
                          done, episode, final_obs)

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
        length = (self._t[done] - self._start[done]).astype(np.float64)
        mean = self._acc[1, done] / length
        var = (self._acc[2, done] - length * mean * mean) / np.maximum(length - 1.0, 1.0)
        ok = (length > 1) & (var > 1e-300)
        sharpe = np.where(ok, mean / np.sqrt(np.where(ok, var, 1.0)), 0.0)
        sharpe *= np.sqrt(self.tables.periods_per_year)
        stats = {k: np.zeros(n, dtype=np.float64) for k in EPISODE_KEYS}
        for k in ("length", "trades", "wins", "losses"):
            stats[k] = np.zeros(n, dtype=np.int64)
        stats["reward"][done] = self._acc[0, done]
        stats["length"][done] = length
        stats["trades"][done] = self._trd[0, done]
        stats["wins"][done] = self._trd[2, done]
        stats["losses"][done] = self._trd[1, done] - self._trd[2, done]
        stats["total_return"][done] = self._eq[0, done] / self.config.initial_equity - 1.0
        stats["sharpe"][done] = sharpe
        stats["max_drawdown"][done] = self._max_dd[done]
        return stats


_EMPTY = np.zeros(0, dtype=np.intp)
_EMPTY.flags.writeable = False
