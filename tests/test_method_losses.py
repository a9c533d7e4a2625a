"""The losses of METHOD.md "More methods" (Diffusion-KTO, Diffusion-SDPO, MaPO, the DPO/RPO regularisers).

Each function is checked against an independent float64 implementation written here from METHOD.md's formulas
(values and autograd gradients, several seeds and sizes), then on the identities the issue names.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rpo_bench.training.losses import (
    KTO_CONVENTION,
    dpo_loss,
    kto_loss,
    mapo_loss,
    sdpo_scale,
    winner_preserving,
    winner_regulariser,
)

F64 = torch.float64
SEEDS = range(4)
SIZES = (1, 2, 7, 32)


def errors(m: int, seed: int, spread: float = 0.01, count: int = 2):
    """`count` vectors of per-sample errors: a reference about 0.1 and model errors `spread` around it."""
    g = torch.Generator().manual_seed(seed)
    ref = [0.08 + 0.06 * torch.rand(m, generator=g, dtype=F64) for _ in range(count // 2 or 1)]
    model = [r + spread * torch.randn(m, generator=g, dtype=F64) for r in ref]
    return model, ref


def labels(m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.rand(m, generator=g) < 0.5


def assert_close(actual, expected, rtol):
    """Relative agreement, with an absolute floor of rtol times the largest |expected| (for gradients near 0)."""
    expected = torch.as_tensor(expected, dtype=F64)
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual.to(F64), expected, rtol=rtol, atol=rtol * scale + 1e-300)


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


# ------------------------------------------------------------------------------------------------ KTO


def kto_reference(model, ref, desirable, beta, lambda_d=1.0, lambda_u=1.0, z0=None):
    """METHOD.md's L_KTO in float64 torch, z0 a Python float (a constant: nothing can flow through it)."""
    g = ref - model
    z0 = max(0.0, g.detach().mean().item()) if z0 is None else max(0.0, float(z0))
    s = desirable.to(F64) * 2 - 1
    h = 1 / (1 + torch.exp(-s * beta * (g - z0)))
    lam = torch.where(desirable, torch.tensor(lambda_d, dtype=F64), torch.tensor(lambda_u, dtype=F64))
    return (lam * (1 - h)).mean()


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("beta", [1.0, 50.0, 1000.0])
def test_kto_matches_float64_reference_values_and_gradients(m, beta):
    for seed in SEEDS:
        (model,), (ref,) = errors(m, seed, spread=0.004)
        desirable = labels(m, seed)
        for lambda_d, lambda_u in ((1.0, 1.0), (0.7, 1.3)):
            a = [leaf(model), leaf(ref)]
            b = [leaf(model), leaf(ref)]
            got = kto_loss(a[0], a[1], desirable, beta, lambda_d, lambda_u)
            want = kto_reference(b[0], b[1], desirable, beta, lambda_d, lambda_u)
            assert got.dtype == F64 and got.dim() == 0
            assert_close(got, want, 1e-12)
            for x, y in zip(torch.autograd.grad(got, a), torch.autograd.grad(want, b), strict=True):
                assert_close(x, y, 1e-9)


def test_kto_convention_name():
    assert KTO_CONVENTION == "kto"


def test_kto_z0_is_detached_no_gradient_flows_through_it():
    m, beta = 9, 200.0
    (model,), (ref,) = errors(m, 5, spread=0.01)
    desirable = labels(m, 5)
    assert (ref - model).mean() > 0  # z0 = mean(g) > 0: the clamp is not what removes the dependence
    a = leaf(model)
    (g_got,) = torch.autograd.grad(kto_loss(a, ref, desirable, beta), [a])
    b = leaf(model)
    (g_const,) = torch.autograd.grad(kto_reference(b, ref, desirable, beta), [b])
    assert_close(g_got, g_const, 1e-12)
    # a z0 left in the graph would give a different gradient: the check above can tell the two apart
    c = leaf(model)
    g_live = ref - c
    s = desirable.to(F64) * 2 - 1
    live = (1 - torch.sigmoid(s * beta * (g_live - g_live.mean().clamp(min=0)))).mean()
    (g_undetached,) = torch.autograd.grad(live, [c])
    assert (g_undetached - g_const).abs().max() > 1e-3 * g_const.abs().max()


def test_kto_z0_is_clamped_at_zero():
    m, beta = 6, 100.0
    (model,), (ref,) = errors(m, 8, spread=0.01)
    model = model + 0.02  # the model is worse than the reference everywhere: mean(g) < 0
    desirable = labels(m, 8)
    assert (ref - model).mean() < 0
    got = kto_loss(model, ref, desirable, beta)
    assert_close(got, kto_reference(model, ref, desirable, beta, z0=0.0), 1e-13)
    unclamped = kto_reference(model, ref, desirable, beta, z0=0.0)  # z0=0 vs z0=mean(g) < 0 differ:
    g = ref - model
    s = desirable.to(F64) * 2 - 1
    with_negative = (1 - torch.sigmoid(s * beta * (g - g.mean()))).mean()
    assert abs(with_negative.item() - unclamped.item()) > 1e-6


def test_kto_z0_keyword_replaces_the_local_mean_detached_and_clamped():
    m, beta = 8, 300.0
    (model,), (ref,) = errors(m, 11, spread=0.01)
    desirable = labels(m, 11)
    local = (ref - model).mean()
    assert torch.equal(kto_loss(model, ref, desirable, beta, z0=local), kto_loss(model, ref, desirable, beta))
    for gathered in (0.004, -0.01, 0.0):
        a = leaf(model)
        z0 = torch.tensor([gathered], dtype=torch.float32, requires_grad=True)  # shape [1], another dtype
        got = kto_loss(a, ref, desirable, beta, z0=z0)
        expected_z0 = float(torch.tensor(gathered, dtype=torch.float32))
        b = leaf(model)
        want = kto_reference(b, ref, desirable, beta, z0=expected_z0)
        assert_close(got, want, 1e-12)
        g_a, g_z0 = torch.autograd.grad(got, [a, z0], allow_unused=True)
        assert g_z0 is None  # z0 is detached
        (g_b,) = torch.autograd.grad(want, [b])
        assert_close(g_a, g_b, 1e-9)


def test_kto_desirable_and_undesirable_signs():
    beta = 100.0
    ref = torch.tensor([0.10, 0.10, 0.10, 0.10], dtype=F64)
    model = leaf(torch.tensor([0.09, 0.09, 0.11, 0.11], dtype=F64))  # g = +0.01, +0.01, -0.01, -0.01
    desirable = torch.tensor([True, False, True, False])
    zero = torch.zeros((), dtype=F64)
    terms = [
        kto_loss(model[i : i + 1], ref[i : i + 1], desirable[i : i + 1], beta, z0=zero).item() for i in range(4)
    ]
    h = 1 / (1 + math.exp(-1.0))  # sigmoid(beta * |g|) = sigmoid(1)
    # better than the reference: low loss if desirable, high if undesirable; worse: the reverse
    assert terms == pytest.approx([1 - h, h, h, 1 - h], rel=1e-14)
    (grad,) = torch.autograd.grad(kto_loss(model, ref, desirable, beta, z0=zero), [model])
    # lowering the error lowers the loss of a desirable sample and raises that of an undesirable one
    assert grad[0] > 0 and grad[2] > 0 and grad[1] < 0 and grad[3] < 0


def test_kto_lambdas_weight_the_right_samples():
    m, beta = 10, 150.0
    (model,), (ref,) = errors(m, 3, spread=0.01)
    desirable = torch.tensor([True, False] * 5)
    for lambda_d, lambda_u in ((2.0, 0.0), (0.0, 3.0)):
        a = leaf(model)
        got = kto_loss(a, ref, desirable, beta, lambda_d, lambda_u)
        (grad,) = torch.autograd.grad(got, [a])
        silent = ~desirable if lambda_u == 0 else desirable
        assert torch.equal(grad[silent], torch.zeros_like(grad[silent]))
        assert (grad[~silent] != 0).all()
        unit = kto_reference(model, ref, desirable, beta)  # both lambdas 1: the weighted terms are the terms
        g = ref - model
        s = desirable.to(F64) * 2 - 1
        term = 1 - torch.sigmoid(s * beta * (g - g.mean().clamp(min=0)))
        weight = lambda_d if lambda_u == 0 else lambda_u
        assert_close(got, weight * term[~silent].sum() / m, 1e-13)
        assert got.item() != pytest.approx(unit.item())


def test_kto_float16_inputs_are_upcast_and_large_beta_is_finite():
    (model,), (ref,) = errors(16, 2, spread=0.05)
    loss = kto_loss(model.half(), ref.half(), labels(16, 2), 1000.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    a = leaf(model.float())
    (grad,) = torch.autograd.grad(kto_loss(a, ref.float(), labels(16, 2), 5000.0), [a])
    assert torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------- SDPO (winner-preserving)


def sdpo_reference(r_w: np.ndarray, r_l: np.ndarray, mu: float) -> float:
    ww = float(np.vdot(r_w, r_w))
    wl = float(np.vdot(r_w, r_l))
    return min(max((1 - mu) * ww / wl, 0.0), 1.0) if wl > 0 else 1.0


def residual_pair(shape, seed: int, coupling: float):
    """r_w, and r_l = coupling * r_w + noise: <r_w, r_l> has the sign of `coupling` (for large shapes)."""
    g = torch.Generator().manual_seed(seed)
    r_w = torch.randn(shape, generator=g, dtype=F64)
    r_l = coupling * r_w + 0.5 * torch.randn(shape, generator=g, dtype=F64)
    return r_w, r_l


@pytest.mark.parametrize("shape", [(3,), (5, 7), (2, 4, 8, 8), (1, 4, 16, 16)])
@pytest.mark.parametrize("mu", [0.0, 0.6, 0.9, 0.999])
def test_sdpo_scale_matches_float64_reference(shape, mu):
    for seed, coupling in itertools.product(SEEDS, (-1.0, -0.1, 0.0, 0.3, 1.0, 4.0)):
        r_w, r_l = residual_pair(shape, seed, coupling)
        got = sdpo_scale(r_w, r_l, mu)
        assert got.dim() == 0 and got.dtype == F64
        assert 0.0 <= got.item() <= 1.0
        assert got.item() == pytest.approx(sdpo_reference(r_w.numpy(), r_l.numpy(), mu), rel=1e-12, abs=0)


def test_sdpo_scale_is_one_when_inner_product_is_not_positive():
    r_w = torch.tensor([1.0, 0.0, 2.0], dtype=F64)
    for r_l in ([0.0, 5.0, 0.0], [-1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [-3.0, 0.0, -1.0]):
        r_l = torch.tensor(r_l, dtype=F64)
        assert torch.dot(r_w, r_l) <= 0
        assert torch.equal(sdpo_scale(r_w, r_l, 0.9), torch.ones((), dtype=F64))
    zero = torch.zeros(3, dtype=F64)  # <r_w, r_l> = 0 with r_w = 0 too: 1, not 0 / 0
    assert torch.equal(sdpo_scale(zero, zero, 0.5), torch.ones((), dtype=F64))


def test_sdpo_scale_is_clamped_to_one_and_below_one_when_aligned():
    r_w = torch.tensor([1.0, 2.0, -1.0], dtype=F64)
    # r_l nearly orthogonal but positive: (1 - mu) |r_w|^2 / <r_w, r_l> >> 1, clamped to 1
    assert torch.equal(sdpo_scale(r_w, torch.tensor([2.0, -0.99, 0.0], dtype=F64), 0.5), torch.ones((), dtype=F64))
    # r_l = 3 r_w: (1 - 0.5) |r_w|^2 / (3 |r_w|^2) = 1/6
    assert sdpo_scale(r_w, 3 * r_w, 0.5).item() == pytest.approx(1 / 6, rel=1e-15)
    assert sdpo_scale(r_w, r_w, 0.9).item() == pytest.approx(0.1, rel=1e-14)


def test_sdpo_scale_equals_the_output_space_gradient_form_of_the_reference_code():
    """lambda = (1 - mu) ||grad A||^2 / (grad B . grad A), A, B the mean MSEs of the winners' / losers' outputs."""
    for seed in SEEDS:
        r_w, r_l = residual_pair((2, 4, 8, 8), seed, 2.0)
        eps = torch.randn(2, 4, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(seed))
        out_w, out_l = leaf(eps + r_w), leaf(eps + r_l)
        (g_a,) = torch.autograd.grad(((out_w - eps) ** 2).mean(), [out_w])
        (g_b,) = torch.autograd.grad(((out_l - eps) ** 2).mean(), [out_l])
        expected = min(1.0, 0.4 * (g_a * g_a).sum().item() / (g_b * g_a).sum().item())
        assert expected < 1
        assert sdpo_scale(r_w, r_l, 0.6).item() == pytest.approx(expected, rel=1e-12)


def test_sdpo_scale_is_detached_and_float32_for_half_inputs():
    r_w, r_l = residual_pair((4, 8, 8), 1, 1.0)
    a, b = leaf(r_w), leaf(r_l)
    lam = sdpo_scale(a, b, 0.9)
    assert not lam.requires_grad and lam.grad_fn is None
    # float16 inner products would overflow past 65504; the scale is computed in float32
    big_w, big_l = (100 * r_w).half(), (100 * r_l).half()
    lam16 = sdpo_scale(big_w, big_l, 0.5)
    assert lam16.dtype == torch.float32 and torch.isfinite(lam16)
    assert lam16.item() == pytest.approx(sdpo_reference(big_w.double().numpy(), big_l.double().numpy(), 0.5), rel=1e-5)


# ---------------------------------------------------------------------------------------- winner_preserving


@pytest.mark.parametrize("m", SIZES)
def test_winner_preserving_keeps_the_value_and_scales_the_gradient(m):
    for seed, lam in itertools.product(SEEDS, (0.0, 0.137, 0.5, 1.0)):
        (err_l,), _ = errors(m, seed)
        a = leaf(err_l)
        for scale in (lam, torch.tensor(lam, dtype=torch.float32)):
            out = winner_preserving(a, scale)
            assert torch.equal(out, err_l) and out.dtype == F64
            weights = torch.randn(m, dtype=F64, generator=torch.Generator().manual_seed(seed))
            (grad,) = torch.autograd.grad((weights * out).sum(), [a])
            assert_close(grad, float(scale) * weights, 1e-15)  # a float32 0.137 is not float64's


@pytest.mark.parametrize("beta", [500.0, 5000.0])
def test_winner_preserving_inside_dpo_scales_loser_gradient_by_exactly_lambda(beta):
    for seed, m in itertools.product(SEEDS, (1, 4, 16)):
        (m_w, m_l), (r_w, r_l) = errors(m, seed, count=4)
        r_w, r_l = residual_pair((m, 4, 8, 8), seed, 1.5)
        lam = sdpo_scale(r_w, r_l, 0.9)
        assert 0 < lam.item() < 1
        a_w, a_l, b_w, b_l = leaf(m_w), leaf(m_l), leaf(m_w), leaf(m_l)
        ref_w, ref_l = m_w + 0.003, m_l - 0.002
        plain = dpo_loss(a_w, a_l, ref_w, ref_l, beta)
        preserved = dpo_loss(b_w, winner_preserving(b_l, lam), ref_w, ref_l, beta)
        assert torch.equal(plain, preserved)  # the loss value is unchanged
        g_w, g_l = torch.autograd.grad(plain, [a_w, a_l])
        p_w, p_l = torch.autograd.grad(preserved, [b_w, b_l])
        assert torch.equal(p_w, g_w)  # the winners' gradient is unchanged
        assert_close(p_l, lam.item() * g_l, 1e-15)  # the losers' is scaled by exactly lambda


# ---------------------------------------------------------------------------------------------------- MaPO


def mapo_reference(m_w, m_l, beta=0.1, snr=0.5, timesteps=1000.0):
    """METHOD.md's L_MaPO in float64 torch, f written literally as x / (exp(x) - 1) (errors well away from 0)."""

    def f(x):
        return x / (torch.exp(x) - 1)

    log_odds = f(snr * m_w) - f(snr * m_l)
    return m_w.mean() - (beta * torch.log(1 / (1 + torch.exp(-timesteps * log_odds)))).mean()


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("params", [(0.1, 0.5, 1000.0), (0.5, 0.5, 1000.0), (2.0, 1.0, 100.0), (0.1, 5.0, 1000.0)])
def test_mapo_matches_float64_reference_values_and_gradients(m, params):
    beta, snr, timesteps = params
    for seed in SEEDS:
        (m_w, m_l), _ = errors(m, seed, spread=0.01, count=4)
        a = [leaf(m_w), leaf(m_l)]
        b = [leaf(m_w), leaf(m_l)]
        got = mapo_loss(a[0], a[1], beta, snr, timesteps)
        want = mapo_reference(b[0], b[1], beta, snr, timesteps)
        assert got.dtype == F64 and got.dim() == 0
        assert_close(got, want, 1e-12)
        for x, y in zip(torch.autograd.grad(got, a), torch.autograd.grad(want, b), strict=True):
            assert_close(x, y, 1e-9)


def test_mapo_defaults_are_the_official_ones():
    (m_w, m_l), _ = errors(5, 1, count=4)
    assert torch.equal(mapo_loss(m_w, m_l), mapo_loss(m_w, m_l, 0.1, 0.5, 1000))


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_mapo_equal_errors_give_mean_plus_beta_log2(beta):
    for seed, m in itertools.product(SEEDS, SIZES):
        (m_w,), _ = errors(m, seed)
        got = mapo_loss(m_w, m_w.clone(), beta=beta)
        assert got.item() == pytest.approx(m_w.mean().item() + beta * math.log(2), rel=1e-15)


def test_mapo_winner_better_lowers_the_ratio_term():
    m_w = torch.tensor([0.08], dtype=F64)
    m_l = torch.tensor([0.12], dtype=F64)
    # f decreasing: log_odds > 0, logsigmoid(T * log_odds) near 0, loss near mean(m_w); swapped, much higher
    assert mapo_loss(m_w, m_l).item() < m_w.item() + 0.1 * math.log(2)
    assert mapo_loss(m_l, m_w).item() > m_l.item() + 0.1 * math.log(2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, F64])
def test_mapo_is_finite_at_errors_near_zero_with_the_limit_gradient(dtype):
    m, beta, snr, timesteps = 4, 0.1, 0.5, 1000.0
    for value in (0.0, 1e-30, 1e-12, 1e-7):
        a_w = leaf(torch.full((m,), value, dtype=dtype))
        a_l = leaf(torch.full((m,), value, dtype=dtype))
        loss = mapo_loss(a_w, a_l, beta, snr, timesteps)
        g_w, g_l = torch.autograd.grad(loss, [a_w, a_l])
        assert torch.isfinite(loss) and torch.isfinite(g_w).all() and torch.isfinite(g_l).all()
        # f(0) = 1, f'(0) = -1/2: log_odds = 0, d/dm_w = 1/M + beta T s / (4M), d/dm_l = -beta T s / (4M)
        tol = 1e-5 if dtype == F64 else 1e-3
        assert loss.item() == pytest.approx(value + beta * math.log(2), rel=tol)
        expected = beta * timesteps * snr / (4 * m)
        assert_close(g_w.to(F64), torch.full((m,), 1 / m + expected, dtype=F64), tol)
        assert_close(g_l.to(F64), torch.full((m,), -expected, dtype=F64), tol)
    # one error exactly 0 against a typical one, and huge errors: still finite
    for err_w, err_l in ((0.0, 0.1), (0.1, 0.0), (500.0, 0.1), (0.1, 500.0)):
        a_w, a_l = leaf(torch.tensor([err_w], dtype=dtype)), leaf(torch.tensor([err_l], dtype=dtype))
        loss = mapo_loss(a_w, a_l)
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in torch.autograd.grad(loss, [a_w, a_l]))


def test_mapo_float16_inputs_are_upcast():
    (m_w, m_l), _ = errors(6, 4, count=4)
    got = mapo_loss(m_w.half(), m_l.half())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(mapo_reference(m_w.half().double(), m_l.half().double()).item(), rel=1e-5)


# ------------------------------------------------------------------------------------------- regularisers


def regulariser_reference(m_w, r_w, sft_weight, winner_penalty):
    return sft_weight * m_w.mean() + winner_penalty * torch.clamp(m_w - r_w, min=0).mean()


@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (0.3, 2.5), (1e-3, 50.0)])
def test_winner_regulariser_matches_float64_reference(m, weights):
    for seed in SEEDS:
        (m_w,), (r_w,) = errors(m, seed, spread=0.01)
        a = [leaf(m_w), leaf(r_w)]
        b = [leaf(m_w), leaf(r_w)]
        got = winner_regulariser(a[0], a[1], *weights)
        want = regulariser_reference(b[0], b[1], *weights)
        assert got.dtype == F64 and got.dim() == 0
        assert_close(got, want, 1e-14)
        for x, y in zip(torch.autograd.grad(got, a), torch.autograd.grad(want, b), strict=True):
            assert_close(x, y, 1e-14)


def test_winner_penalty_counts_only_winners_the_model_denoises_worse():
    ref_w = torch.tensor([0.10, 0.10, 0.10, 0.10], dtype=F64)
    model_w = leaf(torch.tensor([0.12, 0.07, 0.10, 0.13], dtype=F64))  # D^w = +0.02, -0.03, 0, +0.03
    loss = winner_regulariser(model_w, ref_w, 0.0, 2.0)
    assert loss.item() == pytest.approx(2.0 * (0.02 + 0.03) / 4, rel=1e-12)
    (grad,) = torch.autograd.grad(loss, [model_w])
    assert grad[1] == 0 and grad[2] == 0
    assert grad[0].item() == pytest.approx(0.5) and grad[3].item() == pytest.approx(0.5)


@pytest.mark.parametrize("beta", [1.0, 5000.0])
def test_zero_regulariser_added_to_dpo_changes_nothing_bit_for_bit(beta):
    for seed, m in itertools.product(SEEDS, SIZES):
        (m_w, m_l), (r_w, r_l) = errors(m, seed, spread=0.01, count=4)
        a = [leaf(t) for t in (m_w, m_l, r_w, r_l)]
        b = [leaf(t) for t in (m_w, m_l, r_w, r_l)]
        plain = dpo_loss(*a, beta)
        zero = winner_regulariser(b[0], b[2], 0.0, 0)
        assert zero.item() == 0.0 and zero.requires_grad
        regularised = dpo_loss(*b, beta) + zero
        assert torch.equal(plain, regularised)
        for x, y in zip(torch.autograd.grad(plain, a), torch.autograd.grad(regularised, b), strict=True):
            assert torch.equal(x, y)


def test_winner_regulariser_float16_inputs_are_upcast():
    (m_w,), (r_w,) = errors(5, 0)
    assert winner_regulariser(m_w.half(), r_w.half(), 1.0, 1.0).dtype == torch.float32
    assert winner_regulariser(m_w.half(), r_w.half(), 0.0, 0.0).dtype == torch.float32


# ------------------------------------------------------------------------------------------- bad inputs


def test_bad_lengths_are_one_value_error_each():
    a3, a2 = torch.zeros(3, dtype=F64), torch.zeros(2, dtype=F64)
    yes3 = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^ref_err has 2 entries but the batch has M = 3"):
        kto_loss(a3, a2, yes3, 1.0)
    with pytest.raises(ValueError, match=r"^desirable must be a bool tensor of shape \[3\].*shape \(2,\)$"):
        kto_loss(a3, a3, yes3[:2], 1.0)
    with pytest.raises(ValueError, match=r"^model_err_l has 2 entries"):
        mapo_loss(a3, a2)
    with pytest.raises(ValueError, match=r"^ref_err_w has 2 entries"):
        winner_regulariser(a3, a2, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"^model_err_l must have shape \[M\].*got shape \(3, 1\)$"):
        winner_preserving(a3[:, None], 0.5)
    with pytest.raises(ValueError, match=r"^residual_w and residual_l must have the same shape.*\(2, 3\) and \(6,\)$"):
        sdpo_scale(torch.zeros(2, 3), torch.zeros(6), 0.5)
    with pytest.raises(ValueError, match=r"^residual_l must have at least one element"):
        sdpo_scale(torch.zeros(3), torch.zeros(0), 0.5)
    with pytest.raises(ValueError, match=r"^residual_w must be a floating-point tensor"):
        sdpo_scale(torch.zeros(3, dtype=torch.long), torch.zeros(3), 0.5)


@pytest.mark.parametrize(
    "desirable", [torch.ones(3, dtype=torch.long), torch.ones(3), torch.ones(3, 1, dtype=torch.bool), [True] * 3]
)
def test_non_bool_desirable_is_refused(desirable):
    a3 = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match=r"^desirable must be a bool tensor of shape \[3\] \(True = desirable"):
        kto_loss(a3, a3, desirable, 1.0)


@pytest.mark.parametrize("name", ["lambda_d", "lambda_u"])
@pytest.mark.parametrize("value", [-1.0, -1e-9, float("nan"), float("inf"), "one", None])
def test_bad_kto_lambdas_are_refused(name, value):
    a3 = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number >= 0 .*got {value!r}$"):
        kto_loss(a3, a3, torch.ones(3, dtype=torch.bool), 1.0, **{name: value})


@pytest.mark.parametrize("beta", [0, -1.0, float("nan"), float("inf"), "big"])
def test_bad_betas_are_refused(beta):
    a3 = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match=r"^beta must be a (finite )?number > 0 \(the KTO strength"):
        kto_loss(a3, a3, torch.ones(3, dtype=torch.bool), beta)
    with pytest.raises(ValueError, match=r"^beta must be a (finite )?number > 0 \(the weight of MaPO"):
        mapo_loss(a3, a3, beta=beta)


@pytest.mark.parametrize("name", ["snr", "timesteps"])
@pytest.mark.parametrize("value", [0, -0.5, float("nan")])
def test_bad_mapo_constants_are_refused(name, value):
    a3 = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number > 0"):
        mapo_loss(a3, a3, **{name: value})


def test_bad_z0_is_refused():
    a3 = torch.zeros(3, dtype=F64)
    yes3 = torch.ones(3, dtype=torch.bool)
    for z0 in (torch.zeros(2), torch.zeros((), dtype=torch.long), 0.5):
        with pytest.raises(ValueError, match=r"^z0 must be a one-element floating-point tensor"):
            kto_loss(a3, a3, yes3, 1.0, z0=z0)


@pytest.mark.parametrize("mu", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.9", None])
def test_mu_outside_zero_one_is_refused(mu):
    r = torch.ones(4)
    with pytest.raises(ValueError, match=r"^mu must be a number in \[0, 1\) .*got " + repr(mu).replace("(", r"\(")):
        sdpo_scale(r, r, mu)


@pytest.mark.parametrize("name", ["sft_weight", "winner_penalty"])
@pytest.mark.parametrize("value", [-1.0, -1e-12, float("nan"), float("inf"), "x"])
def test_negative_or_bad_regulariser_weights_are_refused(name, value):
    a3 = torch.zeros(3, dtype=F64)
    weights = {"sft_weight": 0.0, "winner_penalty": 0.0, name: value}
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number >= 0 .*got {value!r}$"):
        winner_regulariser(a3, a3, **weights)


@pytest.mark.parametrize("scale", [-0.1, 1.5, float("nan"), "half", torch.ones(2), torch.ones((), dtype=torch.long)])
def test_bad_winner_preserving_scale_is_refused(scale):
    with pytest.raises(ValueError, match=r"^scale must be a one-element floating-point tensor or a number in \[0, 1\]"):
        winner_preserving(torch.zeros(3, dtype=F64), scale)
