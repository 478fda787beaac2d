"""GAE, the clipped PPO loss and explained variance against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from fxai_tune.rl._gae import compute_gae
from fxai_tune.rl._losses import explained_variance, ppo_loss

GAMMA, LAMBDA = 0.9, 0.8  # gamma * lambda = 0.72


def _gae_case() -> tuple[torch.Tensor, ...]:
    """3 steps x 3 envs: env 0 never ends, env 1 terminates at t=1, env 2 is truncated at t=1.

    Every env sees rewards (1, 2, 3), values V(s_t) = (0.5, 1.0, 1.5) and true next values
    V(s_{t+1}) = (1.0, 9.0, 2.0) for envs 1 and 2 (9.0 is V of the final observation), and
    (1.0, 1.5, 2.0) for env 0.
    """
    rewards = torch.tensor([[1.0] * 3, [2.0] * 3, [3.0] * 3])
    values = torch.tensor([[0.5] * 3, [1.0] * 3, [1.5] * 3])
    next_values = torch.tensor([[1.0, 1.0, 1.0], [1.5, 9.0, 9.0], [2.0, 2.0, 2.0]])
    terminated = torch.tensor([[False] * 3, [False, True, False], [False] * 3])
    truncated = torch.tensor([[False] * 3, [False, False, True], [False] * 3])
    return rewards, values, next_values, terminated, truncated


def test_gae_matches_hand_computed_three_step_case():
    advantages, returns = compute_gae(*_gae_case(), gamma=GAMMA, gae_lambda=LAMBDA)
    # env 0, delta_t = r_t + 0.9 V(s_{t+1}) - V(s_t):
    #   delta = (1 + 0.9 - 0.5, 2 + 1.35 - 1.0, 3 + 1.8 - 1.5) = (1.4, 2.35, 3.3)
    #   A_2 = 3.3;  A_1 = 2.35 + 0.72 * 3.3 = 4.726;  A_0 = 1.4 + 0.72 * 4.726 = 4.80272
    # env 1 (terminated at t=1): delta_1 = 2 + 0 - 1.0 = 1.0, and A_1 does not see A_2
    #   A_2 = 3.3;  A_1 = 1.0;  A_0 = 1.4 + 0.72 * 1.0 = 2.12
    # env 2 (truncated at t=1): delta_1 = 2 + 0.9 * 9.0 - 1.0 = 9.1, A_1 does not see A_2
    #   A_2 = 3.3;  A_1 = 9.1;  A_0 = 1.4 + 0.72 * 9.1 = 7.952
    expected = torch.tensor([[4.80272, 2.12, 7.952], [4.726, 1.0, 9.1], [3.3, 3.3, 3.3]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + _gae_case()[1])


def test_truncation_bootstraps_from_final_value_and_termination_does_not():
    rewards, values, next_values, terminated, truncated = _gae_case()
    adv, _ = compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.9,
                         gae_lambda=0.0)
    # lambda = 0: A_t is the one-step TD error; the final-observation value 9.0 only counts
    # for the truncated env.
    assert adv[1, 1].item() == pytest.approx(2.0 - 1.0)
    assert adv[1, 2].item() == pytest.approx(2.0 + 0.9 * 9.0 - 1.0)
    changed = next_values.clone()
    changed[1, 1] = -100.0  # a terminated step's next value must not matter
    adv_changed, _ = compute_gae(rewards, values, changed, terminated, truncated, gamma=0.9,
                                 gae_lambda=0.95)
    adv_ref, _ = compute_gae(rewards, values, next_values, terminated, truncated, gamma=0.9,
                             gae_lambda=0.95)
    torch.testing.assert_close(adv_changed, adv_ref)


def test_gae_with_lambda_one_gives_discounted_monte_carlo_returns():
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.zeros(3, 1)
    done = torch.tensor([[False], [False], [True]])
    _, returns = compute_gae(rewards, values, values, done, torch.zeros_like(done),
                             gamma=0.5, gae_lambda=1.0)
    torch.testing.assert_close(returns.squeeze(1), torch.tensor([1.75, 1.5, 1.0]))


def test_gae_accepts_float_done_flags():
    case = list(_gae_case())
    case[3], case[4] = case[3].float(), case[4].float()
    adv_float, _ = compute_gae(*case, gamma=GAMMA, gae_lambda=LAMBDA)
    adv_bool, _ = compute_gae(*_gae_case(), gamma=GAMMA, gae_lambda=LAMBDA)
    torch.testing.assert_close(adv_float, adv_bool)


def test_gae_rejects_mismatched_shapes_and_bad_coefficients():
    rewards, values, next_values, terminated, truncated = _gae_case()
    with pytest.raises(ValueError, match="next_values"):
        compute_gae(rewards, values, next_values[:2], terminated, truncated, gamma=0.9,
                    gae_lambda=0.9)
    with pytest.raises(ValueError, match="gamma=1.5"):
        compute_gae(*_gae_case(), gamma=1.5, gae_lambda=0.9)


# ratios (1.5, 0.5, 1.1, 0.7) with advantages (1, 1, -2, -1), clip 0.2
RATIOS = torch.tensor([1.5, 0.5, 1.1, 0.7])
ADVANTAGES = torch.tensor([1.0, 1.0, -2.0, -1.0])


def _loss(**kwargs):
    old = torch.zeros(4)
    new = RATIOS.log().requires_grad_(True)
    args = {
        "new_values": torch.tensor([1.0, 2.0, 3.0, 4.0]),
        "old_values": torch.tensor([0.0, 2.0, 2.0, 4.0]),
        "returns": torch.tensor([1.5, 2.0, 2.0, 4.0]),
        "entropy": torch.tensor([0.5, 0.5, 1.0, 1.0]),
    }
    options = {"clip_coef": 0.2, "vf_coef": 0.5, "ent_coef": 0.01,
               "normalize_advantages": False} | kwargs
    loss, stats = ppo_loss(new, old, ADVANTAGES, args["new_values"], args["old_values"],
                           args["returns"], args["entropy"], **options)
    return new, loss, stats


def test_clipped_surrogate_matches_hand_computed_case():
    new, loss, stats = _loss()
    # per sample max(-A r, -A clip(r, 0.8, 1.2)):
    #   r=1.5, A=+1: max(-1.5, -1.2) = -1.2  (clipped: no gain beyond 1 + eps)
    #   r=0.5, A=+1: max(-0.5, -0.8) = -0.5  (unclipped: the pessimistic term)
    #   r=1.1, A=-2: max( 2.2,  2.2) =  2.2  (inside the clip range)
    #   r=0.7, A=-1: max( 0.7,  0.8) =  0.8  (clipped: no gain below 1 - eps)
    # policy loss = (-1.2 - 0.5 + 2.2 + 0.8) / 4 = 0.325
    assert stats["policy_loss"].item() == pytest.approx(0.325)
    # value loss = 0.5 * mean((1, 2, 3, 4) - (1.5, 2, 2, 4))^2 = 0.5 * 1.25 / 4 = 0.15625
    assert stats["value_loss"].item() == pytest.approx(0.15625)
    assert stats["entropy"].item() == pytest.approx(0.75)
    # total = 0.325 + 0.5 * 0.15625 - 0.01 * 0.75 = 0.395625
    assert loss.item() == pytest.approx(0.395625)
    assert stats["total_loss"].item() == pytest.approx(0.395625)
    # clipped samples get no policy gradient; unclipped ones do
    (grad,) = torch.autograd.grad(loss, new)
    assert grad[0].item() == 0.0 and grad[3].item() == 0.0
    assert grad[1].item() == pytest.approx(-0.5 / 4)  # d(-A r)/d log r = -A r / B
    assert grad[2].item() == pytest.approx(2.2 / 4)


def test_clip_fraction_and_approx_kl_on_known_ratios():
    _, _, stats = _loss()
    # |r - 1| > 0.2 for 1.5, 0.5 and 0.7, not 1.1
    assert stats["clip_fraction"].item() == pytest.approx(0.75)
    expected_kl = sum((r - 1) - math.log(r) for r in (1.5, 0.5, 1.1, 0.7)) / 4  # 0.08726
    assert stats["approx_kl"].item() == pytest.approx(expected_kl, rel=1e-5)


def test_stats_are_detached_tensors():
    _, loss, stats = _loss()
    assert set(stats) == {"policy_loss", "value_loss", "entropy", "total_loss", "approx_kl",
                          "clip_fraction"}
    assert loss.requires_grad
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in stats.values())


def test_clipped_value_loss_takes_the_pessimistic_term():
    _, _, stats = _loss(clip_vf=0.5)
    # V_clip = old + clip(V - old, -0.5, 0.5) = (0.5, 2, 2.5, 4)
    # max((V - R)^2, (V_clip - R)^2) = max((0.25, 0, 1, 0), (1, 0, 0.25, 0)) = (1, 0, 1, 0)
    # value loss = 0.5 * 2 / 4 = 0.25
    assert stats["value_loss"].item() == pytest.approx(0.25)


def test_advantage_normalisation_standardises_over_the_minibatch():
    _, _, normalised = _loss(normalize_advantages=True)
    scaled = (ADVANTAGES - ADVANTAGES.mean()) / (ADVANTAGES.std() + 1e-8)
    old = torch.zeros(4)
    _, manual = ppo_loss(RATIOS.log(), old, scaled, old, old, old, old, clip_coef=0.2,
                         vf_coef=0.5, ent_coef=0.0, normalize_advantages=False)
    assert normalised["policy_loss"].item() == pytest.approx(manual["policy_loss"].item())


def test_ppo_loss_rejects_mismatched_shapes():
    z = torch.zeros(4)
    with pytest.raises(ValueError, match="new_values"):
        ppo_loss(z, z, z, z[:, None], z, z, z, clip_coef=0.2, vf_coef=0.5, ent_coef=0.0)
    with pytest.raises(ValueError, match="clip_coef"):
        ppo_loss(z, z, z, z, z, z, z, clip_coef=0.0, vf_coef=0.5, ent_coef=0.0)


def test_explained_variance_on_known_values():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns).item() == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), returns).item() == pytest.approx(0.0)
    # residual (-0.5, 0.5, -0.5, 0.5): 1 - Var 0.25 / Var 1.25 = 0.8
    values = returns + torch.tensor([0.5, -0.5, 0.5, -0.5])
    assert explained_variance(values, returns).item() == pytest.approx(0.8)
    assert torch.isnan(explained_variance(returns, torch.ones(4)))
