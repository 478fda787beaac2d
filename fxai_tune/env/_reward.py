"""`RewardSystem`: named reward components, computed for N environments at once."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fxai_tune.env._config import RewardConfig, RewardWeights

__all__ = ["DSR_ROWS", "REWARD_COMPONENTS", "RewardSystem", "differential_sharpe", "dsr_state"]

REWARD_COMPONENTS = (
    "pnl",
    "transaction_cost",
    "drawdown",
    "inactivity",
    "holding",
    "differential_sharpe",
)
"""Component names, in the row order of the ``(6, N)`` component arrays."""

# D_t is 0 where the moving variance B - A^2 is below this fraction of B (at the start of an
# episode, or while flat, A = B = 0 and D_t is undefined).
DSR_REL_EPS = 1e-9
# Floor of the variance before the power 3/2 so masked-out entries stay finite.
VAR_FLOOR = 1e-150
# Smallest equity ratio taken to the log, so a blow-up past zero equity stays finite.
MIN_RATIO = 1e-12
DSR_ROWS = 7
"""Rows of the packed differential Sharpe state (see :func:`dsr_state`)."""

# Constants of the fast path as 0-d arrays: a Python float operand costs a conversion per call.
_NUM_WEIGHTS = np.array([1.0, -0.5])
_VAR_FLOOR = np.array(VAR_FLOOR)
_MIN_RATIO = np.array(MIN_RATIO)
_THREE_HALVES = np.array(1.5)
_ZERO = np.array(0.0)
_MINUS_ONE = np.array(-1.0)


def differential_sharpe(
    r: np.ndarray, a: np.ndarray, b: np.ndarray, eta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Differential Sharpe ratio D_t and the updated moving moments (reference form).

    Moody & Saffell, "Learning to trade via direct reinforcement", IEEE Trans. Neural Networks
    12(4), 2001, eq. 19 (first in Moody, Wu, Liao & Saffell, J. Forecasting 17, 1998)::

        dA = R_t - A_{t-1},  dB = R_t^2 - B_{t-1}
        D_t = (B_{t-1} dA - A_{t-1} dB / 2) / (B_{t-1} - A_{t-1}^2)^(3/2)
        A_t = A_{t-1} + eta dA,  B_t = B_{t-1} + eta dB

    D_t is 0 where ``B - A^2 <= 1e-9 * B`` (no variance yet). `RewardSystem` computes the same
    numbers in place on packed arrays.

    Args:
        r: Returns R_t, shape ``(N,)``.
        a: Moving first moment A_{t-1}.
        b: Moving second moment B_{t-1}.
        eta: Adaptation rate in (0, 1).

    Returns:
        ``(D_t, A_t, B_t)``, new arrays.
    """
    d_a = r - a
    d_b = r * r - b
    var = b - a * a
    ok = var > DSR_REL_EPS * b
    d = (b * d_a - 0.5 * a * d_b) / np.maximum(var, _VAR_FLOOR) ** 1.5
    return np.where(ok, d, 0.0), a + eta * d_a, b + eta * d_b


class RewardSystem:
    """Computes the reward components of a step for N environments and their weighted sum.

    Components (raw, unweighted, one value per env):

    - ``pnl`` = log((E_old + gross) / E_old), the log return of equity before costs;
    - ``transaction_cost`` = log((E_old + gross - cost) / (E_old + gross)) <= 0, so that
      ``pnl + transaction_cost`` is exactly the net log return of equity;
    - ``drawdown`` = -max(0, dd_new - dd_old), minus the increase of the drawdown fraction from
      the running equity peak;
    - ``inactivity`` = -1 when flat for more than ``inactivity_after`` consecutive steps, else 0;
    - ``holding`` = -1 when in one position for more than ``max_holding`` steps, else 0;
    - ``differential_sharpe`` = D_t of the net log return (:func:`differential_sharpe`).

    The reward is ``scale * sum(weight_c * component_c)``.

    Skipped at weight 0: the differential Sharpe ratio (12 of the kernel's 20 numpy calls,
    ~2.8 us a step at N=64) is computed only when its weight is not 0 (:attr:`computes_dsr`).
    Otherwise its component is reported as 0 and its moving moments stay at their start
    values (0); the key stays in every breakdown, so consumers see a fixed set of names. The
    other components are always computed: the penalties cost one call beyond the drawdown's
    and their values are logged at weight 0 too.

    Args:
        config: Weights, scale and penalty thresholds.

    Example:
        >>> import numpy as np
        >>> rs = RewardSystem(RewardConfig(weights=RewardWeights(drawdown=0.0)))
        >>> comps, a, b = rs.components(
        ...     equity_old=np.array([100.0]), gross=np.array([1.0]), cost=np.array([0.0]),
        ...     dd_old=np.zeros(1), dd_new=np.zeros(1), flat_steps=np.zeros(1),
        ...     hold_steps=np.ones(1), dsr_a=np.zeros(1), dsr_b=np.zeros(1))
        >>> bool(np.isclose(rs.reward(comps)[0], 100.0 * np.log(1.01)))
        True
    """

    names = REWARD_COMPONENTS

    def __init__(self, config: RewardConfig) -> None:
        self.config = config
        self.weights = np.array([getattr(config.weights, name) for name in REWARD_COMPONENTS],
                                dtype=np.float64)
        self._scaled_weights = config.scale * self.weights
        self.thresholds = (float(config.inactivity_after), float(config.max_holding))
        """Steps flat / in a position allowed before the inactivity / holding penalty."""
        self._eta = np.array(config.dsr_eta)
        self.computes_dsr = bool(config.weights.differential_sharpe != 0.0)
        """Whether the differential Sharpe ratio is computed (its weight is not 0)."""

    def components(
        self,
        *,
        equity_old: np.ndarray,
        gross: np.ndarray,
        cost: np.ndarray,
        dd_old: np.ndarray,
        dd_new: np.ndarray,
        flat_steps: np.ndarray,
        hold_steps: np.ndarray,
        dsr_a: np.ndarray,
        dsr_b: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw components of one step from plain ``(N,)`` arrays (inputs are not modified).

        Args:
            equity_old: Equity before the step.
            gross: PnL of the step before costs (quote currency).
            cost: Transaction costs of the step (quote currency, >= 0).
            dd_old: Drawdown fraction before the step.
            dd_new: Drawdown fraction after the step.
            flat_steps: Consecutive steps flat, counting this one (0 when in a position).
            hold_steps: Consecutive steps in the current position, counting this one.
            dsr_a: Moving first moment of the net log return before the step.
            dsr_b: Moving second moment before the step.

        Returns:
            ``(components, dsr_a, dsr_b)``: a ``(6, N)`` array with rows in
            :data:`REWARD_COMPONENTS` order and the updated moments (the differential Sharpe
            row 0 and the moments unchanged when its weight is 0, see the class docstring).
        """
        n = len(equity_old)
        equity = np.stack([equity_old, equity_old + gross, equity_old + gross - cost])
        slack = np.stack([np.subtract(dd_old, dd_new), self.thresholds[0] - flat_steps,
                          self.thresholds[1] - hold_steps]).astype(np.float64)
        dsr = dsr_state(n)
        dsr[2] = dsr[4] = dsr[5] = dsr_a
        dsr[3] = dsr_b
        out = np.zeros((len(REWARD_COMPONENTS), n), dtype=np.float64)
        self.compute(equity, slack, dsr, out, np.empty((2, n)), np.empty(n))
        return out, dsr[2], dsr[3]

    def compute(self, equity: np.ndarray, slack: np.ndarray, dsr: np.ndarray, out: np.ndarray,
                returns: np.ndarray, reward: np.ndarray) -> None:
        """Fast path on packed float64 rows (the engine's layout); see :meth:`kernel`.

        Args:
            equity: ``(3, N)`` rows E_old, E_old + gross, E_old + gross - cost.
            slack: ``(3, N)`` rows dd_old - dd_new, ``inactivity_after`` - flat steps,
                ``max_holding`` - hold steps (counters after this step).
            dsr: ``(DSR_ROWS, N)`` state of the differential Sharpe ratio (see
                :func:`dsr_state`); the moments are updated in place (left alone when
                :attr:`computes_dsr` is False).
            out: ``(6, N)`` receives the components (the differential Sharpe row only when
                :attr:`computes_dsr`; it keeps its value, 0 for the engine, otherwise).
            returns: ``(2, N)`` receives the net log return R_t and R_t^2.
            reward: ``(N,)`` receives the reward.
        """
        self.kernel(equity, slack, dsr, out, returns, reward)()

    def kernel(self, equity: np.ndarray, slack: np.ndarray, dsr: np.ndarray, out: np.ndarray,
               returns: np.ndarray, reward: np.ndarray) -> Callable[[], None]:
        """:meth:`compute` bound to fixed arrays: call the result once per step.

        Every view and scratch array is made once here: at N=64 a numpy call costs ~0.2-0.5 us
        and even a slice ~0.07 us, so the step is 20 calls on same-shape contiguous operands
        (broadcasting and Python scalars cost 2-5x more per call) and no slicing; 8 when the
        differential Sharpe ratio's weight is 0.
        Arguments as in :meth:`compute`; the arrays must stay alive and in place.
        """
        n = equity.shape[1]
        e_new, e_old = equity[1:3], equity[0:2]
        log_out, pnl, cost = out[0:2], out[0], out[1]
        penalties, counter_penalties, dsr_out = out[2:5], out[3:5], out[5]
        d_ab, moments, a, b = dsr[0:2], dsr[2:4], dsr[2], dsr[3]
        factors, cofactors, a_copies = dsr[0:4], dsr[3:7], dsr[4:6]
        ratio, products = np.empty((2, n)), np.empty((4, n))
        x, var, eps_b = products[0:2], products[2], products[3]
        ok, num = np.empty(n, dtype=bool), np.empty(n)
        r, r2 = returns
        eta, weights, with_dsr = self._eta, self._scaled_weights, self.computes_dsr
        # Closure variables, not np.<name> lookups: ~20 ns a call less.
        add, subtract, multiply, divide, maximum, minimum, log, power, greater, dot = (
            np.add, np.subtract, np.multiply, np.divide, np.maximum, np.minimum, np.log,
            np.power, np.greater, np.dot)

        def step() -> None:
            divide(e_new, e_old, ratio)
            maximum(ratio, _MIN_RATIO, out=ratio)
            log(ratio, log_out)
            # drawdown: min(dd_old - dd_new, 0); penalties: -1 where a counter exceeds its
            # threshold (slack < 0; slacks are integers).
            minimum(slack, _ZERO, out=penalties)
            maximum(counter_penalties, _MINUS_ONE, out=counter_penalties)
            # Net log return R_t and R_t^2 (also the episode's Sharpe ratio sums).
            add(pnl, cost, r)
            multiply(r, r, r2)
            if with_dsr:
                # Differential Sharpe ratio (Moody & Saffell 2001, eq. 19), see
                # differential_sharpe(): same operations, on stacked rows.
                subtract(returns, moments, d_ab)
                # [dA, dB, A, B] * [B, A, A, eps] = [B dA, A dB, A^2, eps B]
                multiply(factors, cofactors, products)
                dot(_NUM_WEIGHTS, x, num)  # B dA - A dB / 2
                subtract(b, var, var)  # B - A^2
                greater(var, eps_b, ok)
                maximum(var, _VAR_FLOOR, out=var)
                power(var, _THREE_HALVES, var)
                divide(num, var, dsr_out)
                multiply(dsr_out, ok, dsr_out)
                multiply(d_ab, eta, d_ab)
                add(moments, d_ab, moments)
                a_copies[...] = a
            dot(weights, out, reward)

        return step

    def reward(self, components: np.ndarray) -> np.ndarray:
        """``scale * sum(weight * component)`` per env from ``(6, N)`` components."""
        return np.dot(self._scaled_weights, components)

    def breakdown(self, components: np.ndarray) -> dict[str, np.ndarray]:
        """Components as a dict name -> ``(N,)`` row (views of ``components``)."""
        return dict(zip(REWARD_COMPONENTS, components, strict=True))


def dsr_state(num_envs: int) -> np.ndarray:
    """Initial ``(DSR_ROWS, N)`` state of the differential Sharpe ratio in
    `RewardSystem.compute`'s layout: rows dA, dB (scratch), A, B (the moments),
    two copies of A, and a constant row of ``DSR_REL_EPS``, so that one multiply of rows 0-3
    by rows 3-6 gives ``[B dA, A dB, A^2, eps B]``."""
    state = np.zeros((DSR_ROWS, num_envs))
    state[6] = DSR_REL_EPS
    return state
