"""Exact checks of the SFT / Diffusion-DPO / Diffusion-RPO losses against METHOD.md (Notation to RPO)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rpo_bench.training.losses import (
    dpo_logits,
    dpo_loss,
    preference_diagnostics,
    rpo_logits,
    rpo_loss,
    rpo_loss_from_diffs,
    rpo_weights,
    sft_loss,
)

F64 = torch.float64
OPTIONS = list(itertools.product(("none", "M"), ("inside", "outside")))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def neg_logsigmoid(x: float) -> float:
    """-log sigmoid(x) = log(1 + e^-x), by hand with math (stable for the small |x| used here)."""
    return math.log1p(math.exp(-x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def random_errors(m: int, seed: int, dtype=F64, device="cpu", spread: float = 0.02):
    """Per-sample errors about 0.1 (a typical epsilon MSE), model minus reference about `spread`."""
    g = torch.Generator().manual_seed(seed)
    ref_w = 0.1 + 0.05 * torch.rand(m, generator=g, dtype=F64)
    ref_l = 0.1 + 0.05 * torch.rand(m, generator=g, dtype=F64)
    model_w = ref_w + spread * torch.randn(m, generator=g, dtype=F64)
    model_l = ref_l + spread * torch.randn(m, generator=g, dtype=F64)
    return tuple(t.to(dtype=dtype, device=device) for t in (model_w, model_l, ref_w, ref_l))


def random_embeddings(m: int, d: int, seed: int, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    u = 3.0 * torch.randn(m, d, generator=g, dtype=F64)  # any norm: rpo_weights normalises
    v = torch.randn(m, d, generator=g, dtype=F64)
    return u.to(dtype), v.to(dtype)


# ------------------------------------------------------------------------------------------ M = 1 is DPO


@pytest.mark.parametrize("weight_scale,placement", OPTIONS)
@pytest.mark.parametrize("pin_diagonal", [False, True])
def test_m1_rpo_equals_dpo_bit_for_bit(weight_scale, placement, pin_diagonal):
    betas = (0.1, 1.0, 37.3, 2500.0, 5000.0)
    for seed, beta, tau in itertools.product(range(5), betas, (1e-6, 0.25, 0.5, 7.0)):
        errs = random_errors(1, seed, spread=0.05)
        u, v = random_embeddings(1, 8, seed + 100)
        weights = rpo_weights(u, v, tau, pin_diagonal=pin_diagonal)
        assert torch.equal(weights, torch.ones(1, 1, dtype=F64))

        leaves = [e.clone().requires_grad_(True) for e in errs]
        rpo = rpo_loss(*leaves, weights, beta, weight_scale=weight_scale, placement=placement)
        dpo = dpo_loss(*leaves, beta)
        assert rpo.dtype == F64 and dpo.dtype == F64
        assert torch.equal(rpo, dpo), (seed, beta, tau, rpo.item(), dpo.item())
        g_rpo = torch.autograd.grad(rpo, leaves)
        g_dpo = torch.autograd.grad(dpo, leaves)
        for a, b in zip(g_rpo, g_dpo, strict=True):
            assert torch.equal(a, b)


def test_rpo_logits_diagonal_is_dpo_logits_bit_for_bit():
    errs = random_errors(7, 3)
    d_w, d_l = errs[0] - errs[2], errs[1] - errs[3]
    for beta in (0.3, 1.0, 2000.0, 5000.0):
        assert torch.equal(rpo_logits(d_w, d_l, beta).diagonal(), dpo_logits(d_w, d_l, beta))


# ------------------------------------------------------------------------------------- tau -> 0 is DPO / M


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("tau", [1e-4, 1e-6, 1e-30, 1e-46, 5e-324])  # the last two round to 0 in float32
def test_tiny_tau_gives_identity_weights(dtype, tau):
    # text mode: u_i = v_i = T(c_i), distinct prompts
    u, _ = random_embeddings(6, 32, 1, dtype)
    un = torch.nn.functional.normalize(u.double(), dim=1)
    cos = un @ un.T
    assert (cos - torch.eye(6, dtype=F64)).max() < 0.9  # distinct: every off-diagonal cosine well below 1
    for pin in (False, True):
        w = rpo_weights(u, u, tau, pin_diagonal=pin)
        assert w.dtype == dtype
        assert not torch.isnan(w).any()
        assert torch.equal(w, torch.eye(6, dtype=dtype))


def test_tiny_tau_with_duplicate_prompts_splits_evenly_without_nan():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=F64)
    w = rpo_weights(u, u, 1e-6)
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    assert torch.equal(w, expected)


@pytest.mark.parametrize("placement", ["inside", "outside"])
@pytest.mark.parametrize("weight_scale", ["none", "M"])
def test_tiny_tau_off_diagonal_is_log2_with_zero_gradient_and_grad_is_dpo_over_m(weight_scale, placement):
    m = 5
    u, _ = random_embeddings(m, 32, 2)
    weights = rpo_weights(u, u, 1e-4)
    assert torch.equal(weights, torch.eye(m, dtype=F64))
    for seed, beta in itertools.product(range(3), (1.0, 500.0, 5000.0)):
        leaves = [e.clone().requires_grad_(True) for e in random_errors(m, seed, spread=0.01)]
        dpo = dpo_loss(*leaves, beta)
        rpo = rpo_loss(*leaves, weights, beta, weight_scale=weight_scale, placement=placement)
        scale = m if weight_scale == "M" else 1
        if placement == "inside" and scale == 1:
            # M^2 terms: M diagonal DPO terms + (M^2 - M) off-diagonal terms -log sigmoid(0 * Z_ij) = log 2
            expected = dpo / m + (m * m - m) / (m * m) * math.log(2.0)
            torch.testing.assert_close(rpo, expected, rtol=1e-13, atol=0)
            g_rpo = torch.autograd.grad(rpo, leaves)
            g_dpo = torch.autograd.grad(dpo, leaves)
            for a, b in zip(g_rpo, g_dpo, strict=True):
                torch.testing.assert_close(a, b / m, rtol=1e-12, atol=1e-300)
        elif placement == "outside":
            # w_ij = 0 off the diagonal removes those terms entirely; the diagonal is scale * DPO term
            torch.testing.assert_close(rpo, scale * dpo / m, rtol=1e-13, atol=0)
            g_rpo = torch.autograd.grad(rpo, leaves)
            g_dpo = torch.autograd.grad(dpo, leaves)
            for a, b in zip(g_rpo, g_dpo, strict=True):
                torch.testing.assert_close(a, scale * b / m, rtol=1e-12, atol=1e-300)
        else:  # inside with w * M: off-diagonal still -log sigmoid(0) = log 2, diagonal uses M * Z_ii
            expected = dpo_loss(*leaves, m * beta) / m + (m - 1) / m * math.log(2.0)
            torch.testing.assert_close(rpo, expected, rtol=1e-13, atol=0)


def test_off_diagonal_terms_have_exactly_zero_gradient_at_tiny_tau():
    m = 4
    u, _ = random_embeddings(m, 16, 5)
    weights = rpo_weights(u, u, 1e-4)
    d_w = torch.tensor([0.03, -0.01, 0.02, -0.04], dtype=F64, requires_grad=True)
    d_l = torch.tensor([-0.02, 0.05, 0.01, 0.00], dtype=F64, requires_grad=True)
    # Each off-diagonal term on its own, as a 1 x 1 block: value log 2, gradient exactly zero.
    for i, j in itertools.product(range(m), range(m)):
        if i == j:
            continue
        for placement in ("inside", "outside"):
            term = rpo_loss_from_diffs(d_w[i : i + 1], d_l[j : j + 1], weights[i : i + 1, j : j + 1], 5000.0,
                                       placement=placement)  # fmt: skip
            expected = math.log(2.0) if placement == "inside" else 0.0  # outside: 0 * -log sigmoid(Z_ij)
            assert math.isclose(term.item(), expected, rel_tol=1e-15, abs_tol=0)
            for g in torch.autograd.grad(term, [d_w, d_l]):
                assert torch.equal(g.abs(), torch.zeros(m, dtype=F64))


# -------------------------------------------------------------------------------- permutation invariance


@pytest.mark.parametrize("weight_scale,placement", OPTIONS)
@pytest.mark.parametrize("pin_diagonal", [False, True])
def test_loss_is_invariant_to_permuting_the_pairs(weight_scale, placement, pin_diagonal):
    m = 6
    for seed in range(4):
        errs = random_errors(m, seed)
        u, v = random_embeddings(m, 12, seed + 50)  # `joint`/`image`-like: u_i != v_i
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(seed))
        assert not torch.equal(perm, torch.arange(m))
        w = rpo_weights(u, v, 0.5, pin_diagonal=pin_diagonal)
        w_p = rpo_weights(u[perm], v[perm], 0.5, pin_diagonal=pin_diagonal)
        torch.testing.assert_close(w_p, w[perm][:, perm], rtol=1e-14, atol=1e-15)
        loss = rpo_loss(*errs, w, 300.0, weight_scale=weight_scale, placement=placement)
        loss_p = rpo_loss(*(e[perm] for e in errs), w_p, 300.0, weight_scale, placement)
        torch.testing.assert_close(loss_p, loss, rtol=1e-13, atol=0)
        # permuting winners alone (not as pairs) must change the loss: the test can fail
        shuffled = rpo_loss(errs[0][perm], errs[1], errs[2][perm], errs[3], w, 300.0, weight_scale, placement)
        assert abs(shuffled.item() - loss.item()) > 1e-9


# -------------------------------------------------------------------------------- worked example, M = 2


def hand_example():
    """Two pairs, numbers chosen so that every step has a closed form.

    Embeddings (any norm; normalised inside):
      u_0 = (3, 4) -> (0.6, 0.8)      u_1 = (5, 0) -> (1, 0)
      v_0 = (0, 2) -> (0, 1)          v_1 = (0.5, 0) -> (1, 0)
    Cosines S_ij = u_i . v_j:  S = [[0.8, 0.6], [0.0, 1.0]]
    tau = 0.5:  S / tau = [[1.6, 1.2], [0.0, 2.0]]
    Row softmax of two entries a, b: w = (sigmoid(a - b), sigmoid(b - a)):
      w_00 = sigmoid(0.4) ~ 0.59869   w_01 = sigmoid(-0.4) ~ 0.40131
      w_10 = sigmoid(-2)  ~ 0.11920   w_11 = sigmoid(2)    ~ 0.88080
    Errors:  model_err_w = (0.30, 0.20), ref_err_w = (0.34, 0.20)  ->  D^w = (-0.04, 0.00)
             model_err_l = (0.25, 0.40), ref_err_l = (0.24, 0.42)  ->  D^l = ( 0.01, -0.02)
    beta = 100, so -(beta/2) = -50 and Z_ij = -50 (D^w_i - D^l_j):
      Z_00 = -50 (-0.04 - 0.01) =  2.5     Z_01 = -50 (-0.04 + 0.02) =  1.0
      Z_10 = -50 ( 0.00 - 0.01) =  0.5     Z_11 = -50 ( 0.00 + 0.02) = -1.0
    """
    u = torch.tensor([[3.0, 4.0], [5.0, 0.0]], dtype=F64)
    v = torch.tensor([[0.0, 2.0], [0.5, 0.0]], dtype=F64)
    errs = (
        torch.tensor([0.30, 0.20], dtype=F64),
        torch.tensor([0.25, 0.40], dtype=F64),
        torch.tensor([0.34, 0.20], dtype=F64),
        torch.tensor([0.24, 0.42], dtype=F64),
    )
    w = [[sigmoid(0.4), sigmoid(-0.4)], [sigmoid(-2.0), sigmoid(2.0)]]
    z = [[2.5, 1.0], [0.5, -1.0]]
    return u, v, errs, w, z


def test_hand_example_weights():
    u, v, _, w, _ = hand_example()
    got = rpo_weights(u, v, 0.5)
    assert got.shape == (2, 2)
    for i, j in itertools.product(range(2), range(2)):
        assert math.isclose(got[i, j].item(), w[i][j], rel_tol=1e-14)
    assert math.isclose(w[0][0], 0.598687660112452, rel_tol=1e-12)  # the arithmetic in the docstring
    assert math.isclose(w[1][1], 0.8807970779778823, rel_tol=1e-12)


def test_hand_example_logits_and_losses():
    u, v, errs, w, z = hand_example()
    beta = 100.0
    d_w, d_l = errs[0] - errs[2], errs[1] - errs[3]
    got_z = rpo_logits(d_w, d_l, beta)
    for i, j in itertools.product(range(2), range(2)):
        assert math.isclose(got_z[i, j].item(), z[i][j], rel_tol=1e-12)
    weights = rpo_weights(u, v, 0.5)

    # DPO: mean of -log sigmoid of the diagonal (2.5, -1.0)
    dpo = (neg_logsigmoid(2.5) + neg_logsigmoid(-1.0)) / 2  # (0.078889 + 1.313262) / 2 ~ 0.696076
    assert math.isclose(dpo_loss(*errs, beta).item(), dpo, rel_tol=1e-12)
    assert math.isclose(dpo, 0.696076, rel_tol=1e-6)

    # RPO inside: mean over the 4 terms of -log sigmoid(w_ij Z_ij)
    inside = sum(neg_logsigmoid(w[i][j] * z[i][j]) for i in range(2) for j in range(2)) / 4
    # w_ij Z_ij = (1.49672, 0.401312, 0.059601, -0.880797); with sp(x) = log(1 + e^x):
    # (sp(-1.49672) + sp(-0.401312) + sp(-0.059601) + sp(0.880797)) / 4
    #   = (0.202013 + 0.512489 + 0.663790 + 1.227540) / 4 ~ 0.651458
    assert math.isclose(rpo_loss(*errs, weights, beta).item(), inside, rel_tol=1e-12)
    assert math.isclose(inside, 0.651458, rel_tol=1e-6)

    # weight_scale M (M = 2): -log sigmoid(2 w_ij Z_ij)
    inside_m = sum(neg_logsigmoid(2 * w[i][j] * z[i][j]) for i in range(2) for j in range(2)) / 4
    assert math.isclose(rpo_loss(*errs, weights, beta, weight_scale="M").item(), inside_m, rel_tol=1e-12)

    # placement outside: mean of w_ij * -log sigmoid(Z_ij)
    outside = sum(w[i][j] * neg_logsigmoid(z[i][j]) for i in range(2) for j in range(2)) / 4
    got = rpo_loss(*errs, weights, beta, placement="outside").item()
    assert math.isclose(got, outside, rel_tol=1e-12)
    outside_m = 2 * outside
    got = rpo_loss(*errs, weights, beta, weight_scale="M", placement="outside").item()
    assert math.isclose(got, outside_m, rel_tol=1e-12)

    # the four variants really differ (a swapped option would be caught)
    assert len({round(x, 9) for x in (inside, inside_m, outside, outside_m)}) == 4
    # a transposed Z (Z_ji instead of Z_ij) would give a different number
    transposed = sum(neg_logsigmoid(w[i][j] * z[j][i]) for i in range(2) for j in range(2)) / 4
    assert abs(transposed - inside) > 1e-3


def test_hand_example_diagnostics():
    u, v, errs, w, _ = hand_example()
    weights = rpo_weights(u, v, 0.5)
    diag = preference_diagnostics(*errs, 100.0, weights=weights)
    assert all(isinstance(x, float) for x in diag.values())
    assert diag["acc_diag"] == 0.5  # Z_00 = 2.5 > 0, Z_11 = -1.0 < 0
    assert diag["acc_offdiag"] == 1.0  # Z_01 = 1.0 > 0, Z_10 = 0.5 > 0
    assert math.isclose(diag["reward_margin"], (2.5 - 1.0) / 2, rel_tol=1e-12)
    assert math.isclose(diag["d_w_mean"], -0.02, rel_tol=1e-12)
    assert math.isclose(diag["d_l_mean"], -0.005, rel_tol=1e-12)
    assert math.isclose(diag["weight_diag_mean"], (w[0][0] + w[1][1]) / 2, rel_tol=1e-14)

    def row_entropy(row):
        return -sum(p * math.log(p) for p in row)

    assert math.isclose(diag["weight_entropy"], (row_entropy(w[0]) + row_entropy(w[1])) / 2, rel_tol=1e-12)
    assert math.isclose(diag["model_err_w_mean"], 0.25, rel_tol=1e-12)
    assert math.isclose(diag["model_err_l_mean"], 0.325, rel_tol=1e-12)
    assert math.isclose(diag["ref_err_w_mean"], 0.27, rel_tol=1e-12)
    assert math.isclose(diag["ref_err_l_mean"], 0.33, rel_tol=1e-12)


# ------------------------------------------------------------------------------------------- diagnostics


def test_diagnostics_m1_offdiag_is_nan_and_dpo_defaults():
    errs = random_errors(1, 0)
    diag = preference_diagnostics(*errs, 5000.0)
    assert math.isnan(diag["acc_offdiag"])
    assert diag["weight_diag_mean"] == 1.0 and diag["weight_entropy"] == 0.0
    logit = -(5000.0 / 2) * ((errs[0] - errs[2]) - (errs[1] - errs[3])).item()
    assert diag["acc_diag"] == (1.0 if logit > 0 else 0.0)
    assert math.isclose(diag["reward_margin"], logit, rel_tol=1e-12)


def test_diagnostics_uniform_weights_entropy_is_log_m_and_identity_is_zero():
    errs = random_errors(4, 1)
    uniform = preference_diagnostics(*errs, 10.0, weights=torch.full((4, 4), 0.25, dtype=F64))
    assert math.isclose(uniform["weight_entropy"], math.log(4), rel_tol=1e-14)
    assert uniform["weight_diag_mean"] == 0.25
    ident = preference_diagnostics(*errs, 10.0, weights=torch.eye(4, dtype=F64))
    assert ident["weight_entropy"] == 0.0 and ident["weight_diag_mean"] == 1.0


def test_diagnostics_accuracy_counts_on_a_known_matrix():
    # D^w = (0.02, 0, -0.01) (ref errors 0), D^l = (0.01, -0.01, 0.01), beta = 10: Z_ij = -5 (D^w_i - D^l_j)
    #   row 0: -0.05, -0.15, -0.05
    #   row 1:  0.05, -0.05,  0.05
    #   row 2:  0.10,  0.00,  0.10      (Z_21 = -5 (-0.01 + 0.01) is exactly 0: a tie, counted half)
    zero = torch.zeros(3, dtype=F64)
    d_w = torch.tensor([0.02, 0.0, -0.01], dtype=F64)
    d_l = torch.tensor([0.01, -0.01, 0.01], dtype=F64)
    diag = preference_diagnostics(d_w, d_l, zero, zero, 10.0)
    assert diag["acc_diag"] == 1 / 3  # only Z_22
    assert diag["acc_offdiag"] == 3.5 / 6  # Z_10, Z_12, Z_20, and half of the tie Z_21
    assert math.isclose(diag["reward_margin"], (-0.05 - 0.05 + 0.10) / 3, abs_tol=1e-15)
    tied = preference_diagnostics(zero, zero, zero, zero, 10.0)
    assert tied["acc_diag"] == 0.5 and tied["acc_offdiag"] == 0.5  # no preference yet, not "always wrong"


def test_diagnostics_run_without_grad_on_leaves_that_require_it():
    leaves = [e.clone().requires_grad_(True) for e in random_errors(3, 2)]
    w = torch.full((3, 3), 1 / 3, dtype=F64, requires_grad=True)
    diag = preference_diagnostics(*leaves, 100.0, weights=w)
    assert all(isinstance(x, float) and not math.isnan(x) for x in diag.values())


# ------------------------------------------------------------------------------------------ pin_diagonal


def test_pin_diagonal_makes_same_prompt_pair_the_row_maximum():
    # image mode: the winner image of pair 0 looks more like the loser of pair 1 than its own loser
    u = torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.2], [0.3, 0.3, 1.0]], dtype=F64)
    v = torch.tensor([[0.0, 0.2, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
    free = rpo_weights(u, v, 0.5)
    assert free[0].argmax().item() == 1 and free[0, 0] < free[0, 1]
    pinned = rpo_weights(u, v, 0.5, pin_diagonal=True)
    for i in range(3):
        others = torch.cat([pinned[i, :i], pinned[i, i + 1 :]])
        assert (pinned[i, i] > others).all()
    torch.testing.assert_close(pinned.sum(dim=1), torch.ones(3, dtype=F64), rtol=0, atol=1e-15)
    # pinned value: S_00 = 1 against the unchanged off-diagonal cosines
    un = torch.nn.functional.normalize(u, dim=1)
    vn = torch.nn.functional.normalize(v, dim=1)
    s01, s02 = (un[0] @ vn[1]).item(), (un[0] @ vn[2]).item()
    expected = math.exp(1 / 0.5) / (math.exp(1 / 0.5) + math.exp(s01 / 0.5) + math.exp(s02 / 0.5))
    assert math.isclose(pinned[0, 0].item(), expected, rel_tol=1e-13)


def test_pin_diagonal_is_not_beaten_by_an_identical_column():
    # u_0 is exactly v_1; in float32 this vector's self-cosine rounds to 1 + 1 ulp (1.0000001), which would
    # beat the pinned S_00 = 1 without the clamp to [-1, 1]. With it the two tie (a genuine tie: cosine 1).
    x = [1.5409960746765137, -0.293428897857666, -2.1787893772125244]
    u = torch.tensor([x, [0.9, 0.1, 0.4]], dtype=torch.float32)
    v = torch.tensor([[0.0, 0.0, 1.0], x], dtype=torch.float32)
    pinned = rpo_weights(u, v, 1e-6, pin_diagonal=True)
    assert not torch.isnan(pinned).any()
    assert pinned[0, 0] == pinned[0, 1] == 0.5
    assert pinned[1, 1] == 1.0


# --------------------------------------------------------------------------------- weight_scale, outside


@pytest.mark.parametrize("placement", ["inside", "outside"])
def test_weight_scale_m_multiplies_weights_by_m(placement):
    m = 5
    errs = random_errors(m, 9)
    w = rpo_weights(*random_embeddings(m, 8, 9), 0.5)
    scaled = rpo_loss(*errs, w, 200.0, weight_scale="M", placement=placement)
    manual = rpo_loss(*errs, w * m, 200.0, weight_scale="none", placement=placement)
    assert torch.equal(scaled, manual)
    assert not torch.isclose(scaled, rpo_loss(*errs, w, 200.0, placement=placement))


def test_outside_placement_is_the_weighted_mean_formula():
    m = 4
    errs = random_errors(m, 11)
    w = rpo_weights(*random_embeddings(m, 8, 11), 0.75)
    beta = 150.0
    d_w = (errs[0] - errs[2]).tolist()
    d_l = (errs[1] - errs[3]).tolist()
    wl = w.tolist()
    pairs = list(itertools.product(range(m), range(m)))
    expected = sum(wl[i][j] * neg_logsigmoid(-(beta / 2) * (d_w[i] - d_l[j])) for i, j in pairs)
    got = rpo_loss(*errs, w, beta, placement="outside")
    assert math.isclose(got.item(), expected / (m * m), rel_tol=1e-12)
    expected_in = sum(neg_logsigmoid(wl[i][j] * -(beta / 2) * (d_w[i] - d_l[j])) for i, j in pairs)
    assert math.isclose(rpo_loss(*errs, w, beta).item(), expected_in / (m * m), rel_tol=1e-12)


def test_weights_are_not_detached_inside_the_loss():
    errs = random_errors(3, 4)
    w = rpo_weights(*random_embeddings(3, 4, 4), 0.5).requires_grad_(True)
    (g,) = torch.autograd.grad(rpo_loss(*errs, w, 100.0), [w])
    assert g.abs().sum() > 0


# ------------------------------------------------------------------------------------------- rpo_weights


def test_rpo_weights_rows_sum_to_one_and_ignore_embedding_norms():
    u, v = random_embeddings(5, 10, 21)
    w = rpo_weights(u, v, 0.5)
    assert w.shape == (5, 5) and (w > 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(5, dtype=F64), rtol=0, atol=1e-15)
    scales = torch.tensor([[0.01], [3.0], [100.0], [1.0], [7.0]], dtype=F64)
    torch.testing.assert_close(rpo_weights(u * scales, v * scales.flip(0), 0.5), w, rtol=1e-13, atol=1e-15)
    # against a direct computation
    un, vn = torch.nn.functional.normalize(u, dim=1), torch.nn.functional.normalize(v, dim=1)
    torch.testing.assert_close(w, torch.softmax(un @ vn.T / 0.5, dim=1), rtol=1e-13, atol=1e-15)


def test_rpo_weights_infinite_tau_is_uniform():
    u, v = random_embeddings(4, 6, 3)
    uniform = torch.full((4, 4), 0.25, dtype=F64)
    torch.testing.assert_close(rpo_weights(u, v, math.inf), uniform, rtol=0, atol=0)


def test_rpo_weights_float16_embeddings_are_computed_in_float32():
    u, v = random_embeddings(4, 6, 3, torch.float16)
    w = rpo_weights(u, v, 1e-6)
    assert w.dtype == torch.float32 and not torch.isnan(w).any()


def test_rpo_weights_local_rows_match_full_matrix_rows():
    u, v = random_embeddings(6, 8, 13)
    for pin in (False, True):
        full = rpo_weights(u, v, 0.5, pin_diagonal=pin)
        kwargs = {"diag_offset": 3} if pin else {}
        part = rpo_weights(u[3:], v, 0.5, pin_diagonal=pin, **kwargs)
        torch.testing.assert_close(part, full[3:], rtol=1e-14, atol=1e-16)


# ------------------------------------------------------------------------------------- stability, dtypes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("placement", ["inside", "outside"])
def test_float32_large_beta_is_finite_and_matches_float64(device, placement):
    m = 8
    # differences of ~1e-2 at beta = 5000 give logits of several hundred, where log(sigmoid(.)) would be -inf
    errs64 = random_errors(m, 17, spread=0.03)
    d = (errs64[0] - errs64[2]) - (errs64[1] - errs64[3])
    assert (2500 * d).abs().max() > 150
    w64 = rpo_weights(*random_embeddings(m, 8, 17), 0.5)
    for loss_fn in (
        lambda e, w: dpo_loss(*e, 5000.0),
        lambda e, w: rpo_loss(*e, w, 5000.0, placement=placement),
        lambda e, w: rpo_loss(*e, w, 5000.0, weight_scale="M", placement=placement),
    ):
        leaves32 = [e.to(device=device, dtype=torch.float32).requires_grad_(True) for e in errs64]
        loss32 = loss_fn(leaves32, w64.to(device=device, dtype=torch.float32))
        assert loss32.dtype == torch.float32 and loss32.device.type == device
        grads = torch.autograd.grad(loss32, leaves32)
        assert torch.isfinite(loss32) and all(torch.isfinite(g).all() for g in grads)
        leaves64 = [e.clone().requires_grad_(True) for e in errs64]
        loss64 = loss_fn(leaves64, w64)
        grads64 = torch.autograd.grad(loss64, leaves64)
        # float32 rounding of D (~1e-8) times beta/2 moves logits by ~1e-5 relative
        torch.testing.assert_close(loss32.double().cpu(), loss64, rtol=1e-3, atol=1e-3)
        for a, b in zip(grads, grads64, strict=True):
            torch.testing.assert_close(a.double().cpu(), b, rtol=1e-3, atol=1e-2)


def test_half_precision_errors_are_upcast():
    errs = [e.half() for e in random_errors(3, 5)]
    assert dpo_loss(*errs, 5000.0).dtype == torch.float32
    assert rpo_loss(*errs, torch.eye(3, dtype=torch.float16), 5000.0).dtype == torch.float32
    assert sft_loss(errs[0]).dtype == torch.float32


def test_sft_loss_is_the_mean_of_the_per_sample_errors():
    err = torch.tensor([0.1, 0.2, 0.6], dtype=F64, requires_grad=True)
    loss = sft_loss(err)
    assert math.isclose(loss.item(), 0.3, rel_tol=1e-15)
    (g,) = torch.autograd.grad(loss, [err])
    torch.testing.assert_close(g, torch.full((3,), 1 / 3, dtype=F64), rtol=1e-15, atol=0)


# ---------------------------------------------------------------------------- blocks, global contrast


@pytest.mark.parametrize("weight_scale,placement", OPTIONS)
def test_row_blocks_from_two_processes_sum_to_full_loss(weight_scale, placement):
    m, half = 6, 3
    errs = random_errors(m, 23)
    d_w, d_l = errs[0] - errs[2], errs[1] - errs[3]
    w = rpo_weights(*random_embeddings(m, 8, 23), 0.5)
    full = rpo_loss(*errs, w, 400.0, weight_scale=weight_scale, placement=placement)
    parts = [
        rpo_loss_from_diffs(d_w[rows], d_l, w[rows], 400.0, weight_scale, placement)
        for rows in (slice(0, half), slice(half, m))
    ]
    torch.testing.assert_close(parts[0] + parts[1], full * m * m, rtol=1e-13, atol=0)
    # the whole block through from_diffs is the same single implementation
    assert torch.equal(rpo_loss_from_diffs(d_w, d_l, w, 400.0, weight_scale, placement) / (m * m), full)


@pytest.mark.parametrize("weight_scale,placement", OPTIONS)
def test_global_contrast_recipe_gives_the_full_batch_gradient(weight_scale, placement):
    """The recipe in rpo_loss_from_diffs' docstring: live local rows/cols, detached gathered values."""
    m, beta = 6, 400.0
    procs = [torch.arange(0, 2), torch.arange(2, 6)]  # uneven split, 2 "processes"
    errs = random_errors(m, 29)
    d_w_all, d_l_all = (errs[0] - errs[2]), (errs[1] - errs[3])
    w = rpo_weights(*random_embeddings(m, 8, 29), 0.5, pin_diagonal=True)

    full_w = d_w_all.clone().requires_grad_(True)
    full_l = d_l_all.clone().requires_grad_(True)
    full = rpo_loss_from_diffs(full_w, full_l, w, beta, weight_scale, placement) / m**2
    g_full_w, g_full_l = torch.autograd.grad(full, [full_w, full_l])

    g_w = torch.zeros(m, dtype=F64)
    g_l = torch.zeros(m, dtype=F64)
    value = torch.zeros((), dtype=F64)
    for p in procs:
        others = torch.tensor([i for i in range(m) if i not in p.tolist()])
        local_w = d_w_all[p].clone().requires_grad_(True)
        local_l = d_l_all[p].clone().requires_grad_(True)
        cols_l = d_l_all.detach().clone()  # all-gathered, detached ...
        cols_l = cols_l.index_put((p,), local_l)  # ... with this process's own columns kept live
        rows = rpo_loss_from_diffs(local_w, cols_l, w[p], beta, weight_scale, placement, num_pairs=m)
        cols = rpo_loss_from_diffs(
            d_w_all[others].detach(), local_l, w[others][:, p], beta, weight_scale, placement, num_pairs=m
        )
        gw, gl = torch.autograd.grad((rows + cols) / m**2, [local_w, local_l])
        g_w[p], g_l[p] = gw, gl
        value = value + rows.detach() / m**2
    torch.testing.assert_close(value, full.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(g_w, g_full_w, rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(g_l, g_full_l, rtol=1e-12, atol=1e-300)


def test_num_pairs_defaults_to_the_number_of_columns():
    d_w = torch.tensor([0.01, -0.02], dtype=F64)
    d_l = torch.tensor([0.00, 0.03, -0.01], dtype=F64)
    w = torch.full((2, 3), 1 / 3, dtype=F64)
    default = rpo_loss_from_diffs(d_w, d_l, w, 100.0, "M")
    explicit = rpo_loss_from_diffs(d_w, d_l, w, 100.0, "M", num_pairs=3)
    assert torch.equal(default, explicit)
    assert not torch.equal(default, rpo_loss_from_diffs(d_w, d_l, w, 100.0, "M", num_pairs=6))


# ------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("beta", [0, 0.0, -1.0, -5000, float("nan"), float("inf"), "big", None])
def test_bad_beta_is_a_value_error_naming_it(beta):
    errs = random_errors(2, 0)
    w = torch.eye(2, dtype=F64)
    for call in (
        lambda: dpo_loss(*errs, beta),
        lambda: rpo_loss(*errs, w, beta),
        lambda: rpo_loss_from_diffs(errs[0], errs[1], w, beta),
        lambda: preference_diagnostics(*errs, beta),
    ):
        with pytest.raises(ValueError, match=r"beta must be .*> 0.*got " + repr(beta).replace("(", r"\(")):
            call()


@pytest.mark.parametrize("tau", [0, 0.0, -0.5, float("nan"), "warm"])
def test_bad_tau_is_a_value_error_naming_it(tau):
    u, v = random_embeddings(2, 4, 0)
    with pytest.raises(ValueError, match=r"tau must be .*> 0.*got " + repr(tau)):
        rpo_weights(u, v, tau)


@pytest.mark.parametrize(
    "name,value",
    [("weight_scale", "m"), ("weight_scale", "mean"), ("weight_scale", None), ("placement", "Outside"),
     ("placement", "inner"), ("placement", "")],
)  # fmt: skip
def test_unknown_option_strings_are_value_errors_naming_them(name, value):
    errs = random_errors(2, 0)
    w = torch.eye(2, dtype=F64)
    kwargs = {name: value}
    with pytest.raises(ValueError, match=rf"{name} must be one of .* got {value!r}"):
        rpo_loss(*errs, w, 1.0, **kwargs)
    with pytest.raises(ValueError, match=rf"{name} must be one of"):
        rpo_loss_from_diffs(errs[0], errs[1], w, 1.0, **kwargs)


def test_mismatched_shapes_are_value_errors():
    a3 = torch.zeros(3, dtype=F64)
    a2 = torch.zeros(2, dtype=F64)
    w3 = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match=r"model_err_l has 2 entries but the batch has M = 3"):
        dpo_loss(a3, a2, a3, a3, 1.0)
    with pytest.raises(ValueError, match=r"ref_err_l has 2 entries"):
        rpo_loss(a3, a3, a3, a2, w3, 1.0)
    with pytest.raises(ValueError, match=r"weights must have shape \[3, 3\].*got shape \(2, 2\)"):
        rpo_loss(a3, a3, a3, a3, torch.eye(2, dtype=F64), 1.0)
    with pytest.raises(ValueError, match=r"weights must have shape \[3, 3\].*got shape \(3,\)"):
        rpo_loss(a3, a3, a3, a3, a3, 1.0)
    with pytest.raises(ValueError, match=r"model_err_w must have shape \[M\].*got shape \(3, 1\)"):
        rpo_loss(a3[:, None], a3, a3, a3, w3, 1.0)
    with pytest.raises(ValueError, match=r"model_err_w must have shape \[M\] with M >= 1.*got shape \(0,\)"):
        dpo_loss(a3[:0], a3[:0], a3[:0], a3[:0], 1.0)
    with pytest.raises(ValueError, match=r"weights must have shape \[2, 3\]"):
        rpo_loss_from_diffs(a2, a3, w3, 1.0)
    with pytest.raises(ValueError, match=r"model_err_w must have shape \[M\]"):
        sft_loss(torch.zeros(2, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"preference_diagnostics|weights must have shape \[3, 3\]"):
        preference_diagnostics(a3, a3, a3, a3, 1.0, weights=torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match=r"floating-point"):
        dpo_loss(*(torch.zeros(3, dtype=torch.long),) * 4, 1.0)


def test_bad_embedding_shapes_are_value_errors():
    u = torch.randn(3, 4, dtype=F64)
    with pytest.raises(ValueError, match=r"same embedding size d, got 4 and 5"):
        rpo_weights(u, torch.randn(3, 5, dtype=F64), 0.5)
    with pytest.raises(ValueError, match=r"v must be a tensor of shape \[M, d\].*got \(4,\)"):
        rpo_weights(u, torch.randn(4, dtype=F64), 0.5)
    with pytest.raises(ValueError, match=r"diag_offset=2"):
        rpo_weights(u, u, 0.5, pin_diagonal=True, diag_offset=2)
    with pytest.raises(ValueError, match=r"only applies with pin_diagonal=True, got diag_offset=1$"):
        rpo_weights(u[:2], u, 0.5, diag_offset=1)


@pytest.mark.parametrize("num_pairs", [0, -2, 2.5, True])
def test_bad_num_pairs_is_a_value_error(num_pairs):
    a2 = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match=rf"num_pairs must be an int >= 1.*got {num_pairs!r}"):
        rpo_loss_from_diffs(a2, a2, torch.eye(2, dtype=F64), 1.0, "M", num_pairs=num_pairs)
