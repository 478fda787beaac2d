"""`RewardSystem`: named reward components, computed for N environments at once."""

from __future__ import annotations

import numpy as np

from fxai_tune.env._config import RewardConfig, RewardWeights

__all__ = ["REWARD_COMPONENTS", "RewardSystem", "differential_sharpe"]

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


def differential_sharpe(
    r: np.ndarray, a: np.ndarray, b: np.ndarray, eta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Differential Sharpe ratio D_t and the updated moving moments (reference form).

    Moody & Saffell, "Learning to trade via direct reinforcement", IEEE Trans. Neural Networks
    12(4), 2001, eq. 19 (first in Moody, Wu, Liao & Saffell, J. Forecasting 17, 1998)::

        dA = R_t - A_{t-1},  dB = R_t^2 - B_{t-1}
        D_t = (B_{t-1} dA - A_{t-1} dB / 2) / (B_{t-1} - A_{t-1}^2)^(3/2)
        A_t = A_{t-1} + eta dA,  B_t = B_{t-1} + eta dB

    D_t is 0 where ``B - A^2 <= 1e-9 * B`` (no variance yet).

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
    d = (b * d_a - 0.5 * a * d_b) / np.maximum(var, VAR_FLOOR) ** 1.5
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

    Skipped at weight 0: the differential Sharpe ratio is computed only when its weight is not
    0 (:attr:`computes_dsr`). Otherwise its component is reported as 0 and its moving moments
    stay at their start values (0); the key stays in every breakdown, so consumers see a fixed
    set of names. The other components are always computed and logged at weight 0 too.
    `TradingEngine.step` computes the same formulas on its state arrays.

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
            gross: PnL of the step before costs (account currency).
            cost: Transaction costs of the step (account currency, >= 0).
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
        out = np.zeros((len(REWARD_COMPONENTS), len(equity_old)), dtype=np.float64)
        before_costs = equity_old + gross
        with np.errstate(divide="ignore", invalid="ignore"):
            out[0] = np.log(np.maximum(before_costs / equity_old, MIN_RATIO))
            out[1] = np.log(np.maximum((before_costs - cost) / before_costs, MIN_RATIO))
        out[2] = np.minimum(np.subtract(dd_old, dd_new), 0.0)
        inactive_after, hold_after = self.thresholds
        out[3] = np.where(np.asarray(flat_steps) > inactive_after, -1.0, 0.0)
        out[4] = np.where(np.asarray(hold_steps) > hold_after, -1.0, 0.0)
        if not self.computes_dsr:
            return out, np.array(dsr_a, dtype=np.float64), np.array(dsr_b, dtype=np.float64)
        out[5], dsr_a, dsr_b = differential_sharpe(out[0] + out[1], dsr_a, dsr_b,
                                                   self.config.dsr_eta)
        return out, dsr_a, dsr_b

    def reward(self, components: np.ndarray) -> np.ndarray:
        """``scale * sum(weight * component)`` per env from ``(6, N)`` components."""
        return np.dot(self._scaled_weights, components)

    def breakdown(self, components: np.ndarray) -> dict[str, np.ndarray]:
        """Components as a dict name -> ``(N,)`` row (views of ``components``)."""
        return dict(zip(REWARD_COMPONENTS, components, strict=True))
