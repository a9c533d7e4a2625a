"""The training objectives of rpo-bench as pure functions of tensors.

SFT, Diffusion-DPO and Diffusion-RPO (METHOD.md "Notation" to "RPO"), and the plug-ins of METHOD.md "More methods":
Diffusion-KTO (``kto_loss``), Diffusion-SDPO's winner-preserving loser scale (``sdpo_scale``,
``winner_preserving``), MaPO (``mapo_loss``) and the SFT / winner-penalty regulariser for DPO and RPO
(``winner_regulariser``).

Nothing here touches a model, a file or a device choice: the trainer runs the UNet forwards, reduces them to
per-sample denoising errors of shape [M] (mean over all latent elements, see METHOD.md "Notation") and passes
them in. Keeping the maths in one small module lets tests check the identities METHOD.md requires exactly
(M = 1 gives DPO, tau -> 0 gives DPO / M in the gradient, permutation invariance).

Conventions shared by every function:
- ``model_err_*`` are err_theta (carry gradients), ``ref_err_*`` are err_ref (computed under no_grad);
  D = model_err - ref_err. Winners are ``*_w``, losers ``*_l``; index i is the pair.
- beta follows the ``dpo-half`` convention of the official Diffusion-DPO code: the 1/2 in -(beta/2) is written
  out, so beta = 5000 here equals 2500 in the diffusers example, which folds the 1/2 into beta. ``kto_loss``
  has no 1/2 (convention ``kto``, official default beta 1000); MaPO's beta is a weight, not a KL strength.
- Any float dtype and any device. 16-bit inputs are upcast to float32 first: at beta = 5000 a logit is
  2500 x D, and half-precision arithmetic on errors near 0.1 (ulp 6e-5) would add rounding noise of order
  0.1 to it; better still, reduce the errors in float32 before calling. The result has the promoted dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Recorded next to beta in every run so that beta values are comparable across codebases.
BETA_CONVENTION = "dpo-half"
#: The beta convention of ``kto_loss``: sigmoid(s * beta * (g - z0)), no factor 1/2 (official default beta 1000).
KTO_CONVENTION = "kto"
WEIGHT_SCALES = ("none", "M")
PLACEMENTS = ("inside", "outside")

__all__ = [
    "BETA_CONVENTION",
    "KTO_CONVENTION",
    "PLACEMENTS",
    "WEIGHT_SCALES",
    "dpo_logits",
    "dpo_loss",
    "kto_loss",
    "mapo_loss",
    "preference_credit",
    "preference_diagnostics",
    "rpo_logits",
    "rpo_loss",
    "rpo_loss_from_diffs",
    "rpo_weights",
    "sdpo_scale",
    "sft_loss",
    "winner_preserving",
    "winner_regulariser",
]


# ----------------------------------------------------------------------------------------------- validation


def _positive(name: str, value: float, meaning: str, *, allow_inf: bool = False) -> float:
    """``value`` as a Python float, or a ValueError that names the value and what is accepted."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a number > 0 ({meaning}), got {value!r}") from None
    if not (number > 0) or (math.isinf(number) and not allow_inf):
        accepted = "a number > 0" if allow_inf else "a finite number > 0"
        raise ValueError(f"{name} must be {accepted} ({meaning}), got {value!r}")
    return number


def _non_negative(name: str, value: float, meaning: str) -> float:
    """``value`` as a finite Python float >= 0, or a ValueError that names the value and what is accepted."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a finite number >= 0 ({meaning}), got {value!r}") from None
    if not (number >= 0) or math.isinf(number):
        raise ValueError(f"{name} must be a finite number >= 0 ({meaning}), got {value!r}")
    return number


def _choice(name: str, value: str, accepted: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in accepted:
        options = ", ".join(repr(a) for a in accepted)
        raise ValueError(f"{name} must be one of {options} (exactly, case-sensitive), got {value!r}")
    return value


def _vector(name: str, t: Tensor, length: int | None = None) -> Tensor:
    """Check a per-sample vector of shape [M] (M >= 1) and bring 16-bit floats up to float32."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [M], got {type(t).__name__}")
    if t.dim() != 1 or t.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape [M] with M >= 1 (one value per pair, already reduced over the latent), "
            f"got shape {tuple(t.shape)}"
        )
    if length is not None and t.shape[0] != length:
        raise ValueError(f"{name} has {t.shape[0]} entries but the batch has M = {length} pairs")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return _at_least_float32(t)


def _at_least_float32(t: Tensor) -> Tensor:
    return t.float() if t.is_floating_point() and torch.finfo(t.dtype).bits < 32 else t


def _errors(
    model_err_w: Tensor, model_err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    model_err_w = _vector("model_err_w", model_err_w)
    m = model_err_w.shape[0]
    return (
        model_err_w,
        _vector("model_err_l", model_err_l, m),
        _vector("ref_err_w", ref_err_w, m),
        _vector("ref_err_l", ref_err_l, m),
    )


def _weight_block(weights: Tensor, rows: int, cols: int) -> Tensor:
    if not isinstance(weights, Tensor):
        raise ValueError(
            f"weights must be a torch.Tensor of shape [{rows}, {cols}], got {type(weights).__name__}"
        )
    if tuple(weights.shape) != (rows, cols):
        raise ValueError(
            f"weights must have shape [{rows}, {cols}] (rows = winners i, columns = losers j), "
            f"got shape {tuple(weights.shape)}"
        )
    if not weights.is_floating_point():
        raise ValueError(f"weights must be a floating-point tensor, got dtype {weights.dtype}")
    return _at_least_float32(weights)


# ----------------------------------------------------------------------------------------------------- SFT


def sft_loss(model_err_w: Tensor) -> Tensor:
    """SFT: plain epsilon-prediction MSE on the preferred images, i.e. the mean of the per-sample errors.

    ``model_err_w`` is already the per-sample mean over latent elements (shape [M]), so this is the batch mean
    of those means, which equals the element mean of the usual MSE because every sample has the same size.
    """
    return _vector("model_err_w", model_err_w).mean()


# ----------------------------------------------------------------------------------------------------- DPO


def _half_beta(beta: float) -> float:
    # One place builds -(beta / 2), so DPO and the RPO diagonal are the same float operations (bit for bit).
    return -(_positive("beta", beta, "the KL strength, dpo-half convention: 5000 = diffusers' 2500") / 2)


def dpo_logits(d_w: Tensor, d_l: Tensor, beta: float) -> Tensor:
    """logit_i = -(beta / 2) * (D^w_i - D^l_i) from already-formed D vectors of shape [M].

    The 1/2 is written out as in the official Diffusion-DPO code (convention ``dpo-half``): its launchers use
    beta = 5000, which equals 2500 in the diffusers example where the 1/2 is folded into beta.
    """
    d_w = _vector("d_w", d_w)
    d_l = _vector("d_l", d_l, d_w.shape[0])
    return _half_beta(beta) * (d_w - d_l)


def dpo_loss(
    model_err_w: Tensor, model_err_l: Tensor, ref_err_w: Tensor, ref_err_l: Tensor, beta: float
) -> Tensor:
    """Diffusion-DPO: mean_i -log sigmoid(-(beta/2) * (D^w_i - D^l_i)), with D = err_theta - err_ref.

    F.logsigmoid rather than log(sigmoid(.)): at beta = 5000 the logits reach hundreds and sigmoid
    underflows to 0, which would give an infinite loss and NaN gradients.
    """
    model_err_w, model_err_l, ref_err_w, ref_err_l = _errors(model_err_w, model_err_l, ref_err_w, ref_err_l)
    logits = dpo_logits(model_err_w - ref_err_w, model_err_l - ref_err_l, beta)
    return (-F.logsigmoid(logits)).mean()


# ----------------------------------------------------------------------------------------------------- RPO


def rpo_weights(
    u: Tensor, v: Tensor, tau: float, pin_diagonal: bool = False, *, diag_offset: int = 0
) -> Tensor:
    """Contrast weights w_ij = softmax_j(cos(u_i, v_j) / tau), row by row, diagonal included (METHOD.md).

    ``u`` ([M, d], one row per winner i) and ``v`` ([M, d], one row per loser j) may have any norm: they are
    L2-normalised here, so callers can pass raw CLIP features. ``pin_diagonal`` sets S_ii = 1 so the
    same-prompt pair always has the largest weight of its row (for the ``image`` and ``joint`` embedding
    modes, where u_i and v_i are different images and need not be the closest pair).

    Well-defined for every tau > 0, including tau -> 0: each row is shifted by its maximum *before* dividing
    by tau, so the exponents are <= 0 and the best column has exponent exactly 0. With distinct prompts a
    tiny tau therefore gives exactly the identity (DPO), never inf - inf = NaN; tau = inf gives uniform
    weights. A tau too small for the dtype acts as its smallest normal number (the same limit).
    Cosines are clamped to [-1, 1] (rounding can exceed 1 by an ulp, which would beat a pinned diagonal).
    Embeddings do not depend on theta; gradients still flow if the caller passes tensors that require them.

    For ``contrast = global`` a process can compute its own rows only: pass its local ``u`` rows [R, d], all
    the gathered ``v`` [C, d], and ``diag_offset`` = the global index of its first row (row i pins column
    i + diag_offset). The softmax is per row, so these rows equal the same rows of the full matrix.
    Returns [R, C] (square [M, M] in the usual call), in the promoted dtype of u and v (at least float32).
    """
    tau = _positive(
        "tau", tau, "the softmax temperature on the cosine similarity; tau -> 0 gives DPO", allow_inf=True
    )
    for name, t in (("u", u), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(
                f"{name} must be a tensor of shape [M, d] with M, d >= 1 (one embedding per row), got {shape}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if u.shape[1] != v.shape[1]:
        raise ValueError(f"u and v must have the same embedding size d, got {u.shape[1]} and {v.shape[1]}")
    rows, cols = u.shape[0], v.shape[0]
    if not pin_diagonal and diag_offset != 0:
        raise ValueError(f"diag_offset only applies with pin_diagonal=True, got diag_offset={diag_offset!r}")
    if pin_diagonal and not (
        isinstance(diag_offset, int) and 0 <= diag_offset and diag_offset + rows <= cols
    ):
        raise ValueError(
            f"with pin_diagonal, row i pins column i + diag_offset, which must exist: need 0 <= diag_offset "
            f"and diag_offset + {rows} rows <= {cols} columns, got diag_offset={diag_offset!r}"
        )
    dtype = torch.promote_types(_at_least_float32(u).dtype, _at_least_float32(v).dtype)
    u_n = F.normalize(u.to(dtype), dim=1)
    v_n = F.normalize(v.to(dtype), dim=1)
    sim = (u_n @ v_n.T).clamp(-1.0, 1.0)
    if pin_diagonal:
        sim = sim.clone()
        idx = torch.arange(rows, device=sim.device)
        sim[idx, idx + diag_offset] = 1.0
    shifted = sim - sim.max(dim=1, keepdim=True).values  # <= 0, exactly 0 at the row maximum
    # A tau below the dtype's smallest normal number would round to 0 in the division (0 / 0 = NaN); it acts
    # as that number instead, which is already the hard-argmax limit.
    return torch.softmax(shifted / max(tau, torch.finfo(dtype).tiny), dim=1)


def rpo_logits(d_w: Tensor, d_l: Tensor, beta: float) -> Tensor:
    """Z_ij = -(beta / 2) * (D^w_i - D^l_j) for every winner i ([R]) and loser j ([C]); returns [R, C].

    On a square batch the diagonal is exactly (bit for bit) ``dpo_logits(d_w, d_l, beta)``.
    """
    d_w = _vector("d_w", d_w)
    d_l = _vector("d_l", d_l)
    return _half_beta(beta) * (d_w[:, None] - d_l[None, :])


def rpo_loss_from_diffs(
    d_w_rows: Tensor,
    d_l_cols: Tensor,
    weights: Tensor,
    beta: float,
    weight_scale: str = "none",
    placement: str = "inside",
    *,
    num_pairs: int | None = None,
) -> Tensor:
    """SUM (not mean) of the RPO terms over one block of the logit matrix: rows = winners, columns = losers.

    ``d_w_rows`` [R] are D^w of the block's rows, ``d_l_cols`` [C] are D^l of its columns, ``weights``
    [R, C] the matching block of w. Term ij is -log sigmoid(w_ij Z_ij) (``placement="inside"``, the parent
    method) or w_ij * -log sigmoid(Z_ij) (``"outside"``); ``weight_scale="M"`` multiplies w by
    ``num_pairs`` (the M of the whole contrast, so the average weight is 1). ``num_pairs`` defaults to C,
    which is right whenever the block spans all columns; pass the total M explicitly for a block that does
    not.

    It returns a sum so that blocks add up: ``rpo_loss`` is this over the full [M, M] block divided by M * M,
    and for ``contrast = global`` (METHOD.md RPO 6) a process with local pairs P can build its share from the
    all-gathered, detached D^w, D^l of the other processes (with D of P itself kept live):
        rows   = sum over (i in P, all j)        with live D^w_P and live D^l_P in the columns of P
        cols   = sum over (i not in P, j in P)   with detached D^w of the others and live D^l_P
        loss_P = (rows + cols) / M_total**2
    Summed over processes, the gradients of loss_P are exactly those of the full-batch loss (every term's
    dependence on D^w_i is seen by the owner of i, on D^l_j by the owner of j, once each). The *values* count
    cross-process terms twice, so log the value from ``rows`` alone (summed over processes, the rows give
    the full sum).
    """
    d_w_rows = _vector("d_w_rows", d_w_rows)
    d_l_cols = _vector("d_l_cols", d_l_cols)
    weights = _weight_block(weights, d_w_rows.shape[0], d_l_cols.shape[0])
    _choice("weight_scale", weight_scale, WEIGHT_SCALES)
    _choice("placement", placement, PLACEMENTS)
    z = rpo_logits(d_w_rows, d_l_cols, beta)
    if weight_scale == "M":
        m = d_l_cols.shape[0] if num_pairs is None else num_pairs
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(
                f"num_pairs must be an int >= 1 (the M of the whole contrast), got {num_pairs!r}"
            )
        weights = weights * float(m)
    if placement == "inside":
        terms = -F.logsigmoid(weights * z)
    else:
        terms = weights * -F.logsigmoid(z)
    return terms.sum()


def rpo_loss(
    model_err_w: Tensor,
    model_err_l: Tensor,
    ref_err_w: Tensor,
    ref_err_l: Tensor,
    weights: Tensor,
    beta: float,
    weight_scale: str = "none",
    placement: str = "inside",
) -> Tensor:
    """Diffusion-RPO (our reconstruction, METHOD.md RPO 1-4): mean over all i, j of -log sigmoid(w_ij Z_ij).

    Z_ij = -(beta/2) (D^w_i - D^l_j) contrasts every winner with every loser of the micro-batch from the 2M
    errors DPO already has (no extra UNet pass); the diagonal is the DPO logit. ``weights`` [M, M] come from
    ``rpo_weights`` on frozen CLIP embeddings; they are constants w.r.t. theta, but this function does not
    detach them, the caller decides. Options: ``weight_scale`` "none" | "M" (w * M, average weight 1) and
    ``placement`` "inside" (default, as in the parent method) | "outside" (mean of w_ij * -log sigmoid(Z_ij)).
    With M = 1 (weights [[1.]]) this is DPO bit for bit; with weights = identity the off-diagonal terms are
    the constant log 2 and the gradient is DPO's divided by M.
    """
    model_err_w, model_err_l, ref_err_w, ref_err_l = _errors(model_err_w, model_err_l, ref_err_w, ref_err_l)
    m = model_err_w.shape[0]
    total = rpo_loss_from_diffs(
        model_err_w - ref_err_w, model_err_l - ref_err_l, weights, beta, weight_scale, placement, num_pairs=m
    )
    return total / (m * m)


# ------------------------------------------------------------------------------------------ more methods
# METHOD.md "More methods": each a plug-in on the same per-sample errors. The formulas are METHOD.md's; where the
# public code they were read from differs, the comment at the function says how.


def kto_loss(
    model_err: Tensor,
    ref_err: Tensor,
    desirable: Tensor,
    beta: float,
    lambda_d: float = 1.0,
    lambda_u: float = 1.0,
    *,
    z0: Tensor | None = None,
) -> Tensor:
    """Diffusion-KTO (convention ``kto``): mean over x of lambda(x) * (1 - sigmoid(s(x) * beta * (g(x) - z0))).

    Unpaired: ``model_err``, ``ref_err`` [M] are one sample each, ``desirable`` [M] (bool) labels them
    (s = +1 desirable with weight ``lambda_d``, s = -1 undesirable with ``lambda_u``). g = ref_err - model_err
    (> 0 when the model denoises x better than the reference) and z0 = max(0, mean of g), detached. METHOD.md
    takes that mean over all processes: pass it as ``z0`` (e.g. the all-reduced mean of the local means of g),
    which is then used instead of the local mean, still detached and clamped at 0. No factor 1/2 (official
    default beta 1000).

    Reference code (jacklishufan/diffusion-kto, train_kto_sd_v1.5.py, default ``--bce_offset none --halo
    sigmoid --loss kto``): kl = accelerator.reduce(g.mean().detach(), "mean").clamp(min=0), the same z0 (a mean
    of per-process means, equal to the global mean when the processes hold equal batches). It computes 1 - h;
    here 1 - h is written sigmoid(-s * beta * (g - z0)), the same value without the rounding of 1 - h to 0
    (and of its gradient to 0) once h rounds to 1 at beta = 1000.
    """
    model_err = _vector("model_err", model_err)
    m = model_err.shape[0]
    ref_err = _vector("ref_err", ref_err, m)
    if not isinstance(desirable, Tensor) or desirable.dtype != torch.bool or tuple(desirable.shape) != (m,):
        if isinstance(desirable, Tensor):
            got = f"dtype {desirable.dtype}, shape {tuple(desirable.shape)}"
        else:
            got = type(desirable).__name__
        raise ValueError(
            f"desirable must be a bool tensor of shape [{m}] (True = desirable, False = undesirable), got {got}"
        )
    beta = _positive("beta", beta, "the KTO strength, convention kto: no 1/2, official default 1000")
    lambda_d = _non_negative("lambda_d", lambda_d, "the weight of desirable samples, 1 by default")
    lambda_u = _non_negative("lambda_u", lambda_u, "the weight of undesirable samples, 1 by default")
    g = ref_err - model_err
    if z0 is None:
        offset = g.detach().mean()
    else:
        if not isinstance(z0, Tensor) or z0.numel() != 1 or not z0.is_floating_point():
            got = f"dtype {z0.dtype}, shape {tuple(z0.shape)}" if isinstance(z0, Tensor) else repr(z0)
            raise ValueError(
                f"z0 must be a one-element floating-point tensor (the mean of g over all processes), got {got}"
            )
        offset = z0.detach().reshape(()).to(device=g.device, dtype=g.dtype)
    offset = offset.clamp(min=0)
    def constant(value: float) -> Tensor:  # in g's dtype: a float32 0.3 would not be float64's 0.3
        return torch.tensor(value, dtype=g.dtype, device=g.device)

    sign = torch.where(desirable, constant(1.0), constant(-1.0))
    weight = torch.where(desirable, constant(lambda_d), constant(lambda_u))
    return (weight * torch.sigmoid(-(sign * beta * (g - offset)))).mean()


def _residual(name: str, t: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (eps_theta - eps, any shape), got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{name} must have at least one element, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return _at_least_float32(t)


def sdpo_scale(residual_w: Tensor, residual_l: Tensor, mu: float) -> Tensor:
    """Diffusion-SDPO's loser-gradient scale: a detached 0-dim tensor in [0, 1].

    lambda = clamp((1 - mu) <r_w, r_w> / <r_w, r_l>, 0, 1) if <r_w, r_l> > 0, else 1, where r_w, r_l are the
    residuals eps_theta(z_t) - eps of the micro-batch's winners and losers (same shape, any shape) and the inner
    products run over every element. mu in [0, 1) (official 0.9 for SD1.5 DPO, 0.6 for SDXL).

    Reference code (AIDC-AI/Diffusion-SDPO, train.py, get_adaptive_lose_l_scale): it takes the output-space
    gradients gA, gB of the mean MSEs A = mean(r_w^2), B = mean(r_l^2), i.e. 2 r_w / N and 2 r_l / N with the
    same N, so ||gA||^2 / (gB . gA) is the ratio above (residuals of the detached model output against the
    noise, one scalar for the whole micro-batch, detached: as METHOD.md). Differences: it divides by
    (gB . gA + 1e-9), where the 1e-9 is on the 4 / N^2 scale of those gradients (a relative change of about
    1e-9 / (gB . gA), usually under 1e-4), and casts lambda to the model output's dtype; here there is no
    epsilon and lambda is computed in at least float32. It asserts 0 <= mu <= 1; METHOD.md says mu < 1 (mu = 1
    would stop the losers' gradient whenever <r_w, r_l> > 0), and so does this function.
    """
    residual_w = _residual("residual_w", residual_w)
    residual_l = _residual("residual_l", residual_l)
    if residual_w.shape != residual_l.shape:
        raise ValueError(
            f"residual_w and residual_l must have the same shape (winners and losers of one micro-batch), "
            f"got {tuple(residual_w.shape)} and {tuple(residual_l.shape)}"
        )
    try:
        mu_value = float(mu)
    except (TypeError, ValueError, RuntimeError):
        mu_value = math.nan
    if isinstance(mu, (bool, str)) or not (0.0 <= mu_value < 1.0):
        raise ValueError(
            f"mu must be a number in [0, 1) (the share of the winners' error decrease to keep; official 0.9 "
            f"SD1.5, 0.6 SDXL), got {mu!r}"
        )
    dtype = torch.promote_types(residual_w.dtype, residual_l.dtype)
    with torch.no_grad():
        r_w = residual_w.detach().to(dtype).flatten()
        r_l = residual_l.detach().to(dtype).flatten()
        ww = torch.dot(r_w, r_w)
        wl = torch.dot(r_w, r_l)
        aligned = wl > 0
        # Divide by 1 where <r_w, r_l> <= 0 so that the unused branch holds no inf or NaN.
        ratio = ((1.0 - mu_value) * ww / torch.where(aligned, wl, torch.ones_like(wl))).clamp(0.0, 1.0)
        return torch.where(aligned, ratio, torch.ones_like(ratio)).detach()


def winner_preserving(model_err_l: Tensor, scale: Tensor | float) -> Tensor:
    """err_l.detach() + scale * (err_l - err_l.detach()): the losers' errors with the same value (bit for bit)
    and their gradient multiplied by ``scale`` (``sdpo_scale``'s lambda; treated as a constant).

    ``scale`` is a one-element floating-point tensor (not checked for range, to avoid a device sync) or a
    number in [0, 1]. Use the result in place of ``model_err_l`` in ``dpo_loss`` or ``rpo_loss``.
    """
    model_err_l = _vector("model_err_l", model_err_l)
    if isinstance(scale, Tensor):
        if scale.numel() != 1 or not scale.is_floating_point():
            raise ValueError(
                f"scale must be a one-element floating-point tensor or a number in [0, 1], "
                f"got dtype {scale.dtype}, shape {tuple(scale.shape)}"
            )
        factor: Tensor | float = scale.detach().reshape(()).to(device=model_err_l.device, dtype=model_err_l.dtype)
    else:
        try:
            factor = float(scale)
        except (TypeError, ValueError):
            factor = math.nan
        if isinstance(scale, bool) or not (0.0 <= factor <= 1.0):
            raise ValueError(
                f"scale must be a one-element floating-point tensor or a number in [0, 1] (sdpo_scale's lambda), "
                f"got {scale!r}"
            )
    frozen = model_err_l.detach()
    return frozen + factor * (model_err_l - frozen)


# Taylor coefficients of x / (e^x - 1) = sum_n B_n x^n / n! (Bernoulli numbers): 1 - x/2 + even powers.
_BERNOULLI_EVEN = (1.0 / 12, -1.0 / 720, 1.0 / 30240, -1.0 / 1209600, 1.0 / 47900160)
_SERIES_BELOW = 0.1  # |x| < 0.1: the series to x^10 is exact in float64 (next term ~5e-22 relative)


def _x_over_expm1(x: Tensor) -> Tensor:
    """f(x) = x / (e^x - 1), f(0) = 1, finite with finite gradients for every finite x.

    Near 0 the quotient is 0 / 0 (and its autograd gradient subtracts two terms of size 1/x), so |x| < 0.1 uses
    the series; elsewhere x / expm1(x) for x < 0, and f(-x) * e^{-x} for x > 0 (expm1 of a large x would
    overflow to inf, and inf / inf has a NaN gradient). Each branch sees only inputs it handles (torch.where
    passes NaN gradients from an unused branch otherwise).
    """
    small = x.abs() < _SERIES_BELOW
    x_small = torch.where(small, x, torch.zeros_like(x))
    y = x_small * x_small
    even = torch.zeros_like(x_small)
    for coefficient in reversed(_BERNOULLI_EVEN):
        even = (even + coefficient) * y
    series = 1.0 - 0.5 * x_small + even
    x_big = torch.where(small, torch.ones_like(x), x)
    positive = x_big > 0
    a = torch.where(positive, -x_big, x_big)  # a <= -0.1: expm1(a) in (-1, -0.095], no overflow
    big = a / torch.expm1(a) * torch.where(positive, torch.exp(a), torch.ones_like(a))
    return torch.where(small, series, big)


def mapo_loss(
    model_err_w: Tensor, model_err_l: Tensor, beta: float = 0.1, snr: float = 0.5, timesteps: float = 1000
) -> Tensor:
    """MaPO (reference-free): mean(m_w) - mean(beta * logsigmoid(T * (f(s m_w) - f(s m_l)))), f(x) = x/(e^x - 1).

    m_w, m_l are the model's errors on winners and losers ([M] each), s = ``snr`` (0.5), T = ``timesteps``
    (1000, the scheduler's number of training timesteps), beta the ratio-loss weight (0.1). f is decreasing,
    so log_odds > 0 when the model denoises the winner better. With m_w == m_l the loss is mean(m_w) +
    beta * log 2.

    Reference code (mapo-t2i/mapo, utils.py, compute_loss; args --beta_mapo 0.1, --snr_value 0.5, T =
    noise_scheduler.config.num_train_timesteps): the same formula and signs. It writes f as
    x / (torch.exp(x) - 1), which is NaN at an error of exactly 0 and loses precision near it; here f is
    evaluated stably (``_x_over_expm1``).
    """
    model_err_w = _vector("model_err_w", model_err_w)
    model_err_l = _vector("model_err_l", model_err_l, model_err_w.shape[0])
    beta = _positive("beta", beta, "the weight of MaPO's ratio loss, official 0.1")
    snr = _positive("snr", snr, "the constant s in f(s * err), official 0.5")
    timesteps = _positive("timesteps", timesteps, "T, the number of training timesteps, official 1000")
    log_odds = _x_over_expm1(snr * model_err_w) - _x_over_expm1(snr * model_err_l)
    return model_err_w.mean() - (beta * F.logsigmoid(timesteps * log_odds)).mean()


def winner_regulariser(
    model_err_w: Tensor, ref_err_w: Tensor, sft_weight: float, winner_penalty: float
) -> Tensor:
    """sft_weight * mean(err_theta(x^w)) + winner_penalty * mean(max(0, D^w)), D^w = model_err_w - ref_err_w.

    The regularisers METHOD.md offers for DPO and RPO (ours, off by default): an SFT term on the winners, and
    DPOP's penalty mapped to diffusion by log p ~ -err (only winners the model denoises worse than the
    reference, D^w > 0, count). Both weights >= 0. With both 0 the result is an exact zero (+0 or -0) that
    stays in the graph, so adding it to a loss leaves that loss and its gradients unchanged, bit for bit.
    """
    model_err_w = _vector("model_err_w", model_err_w)
    ref_err_w = _vector("ref_err_w", ref_err_w, model_err_w.shape[0])
    sft_weight = _non_negative("sft_weight", sft_weight, "the weight of mean(err_theta(x^w)), 0 = off")
    winner_penalty = _non_negative("winner_penalty", winner_penalty, "the weight of mean(max(0, D^w)), 0 = off")
    if sft_weight == 0 and winner_penalty == 0:
        return model_err_w.sum() * 0.0
    penalty = torch.clamp(model_err_w - ref_err_w, min=0).mean()
    return sft_weight * model_err_w.mean() + winner_penalty * penalty


# --------------------------------------------------------------------------------------------- diagnostics


#: Differences of D within this many units in the last place of the errors' own size count as ties: the model and
#: the reference are the same weights at step 1, but their two forward passes (with and without gradients, under
#: autocast, on a GPU) may round differently, and that rounding is not a preference.
TIE_ULPS = 16


def preference_credit(d_diff: Tensor, scale: Tensor) -> Tensor:
    """Per pair: 1 when the winner is preferred (D^w - D^l < 0, i.e. logit > 0), 0 when the loser is, 0.5 for a
    tie, where a tie is |D^w - D^l| within TIE_ULPS rounding units of ``scale`` (the four errors summed)."""
    tolerance = TIE_ULPS * torch.finfo(d_diff.dtype).eps * scale.abs()
    tied = d_diff.abs() <= tolerance
    won = (d_diff < 0) & ~tied
    return won.to(d_diff.dtype) + 0.5 * tied.to(d_diff.dtype)


def preference_diagnostics(
    model_err_w: Tensor,
    model_err_l: Tensor,
    ref_err_w: Tensor,
    ref_err_l: Tensor,
    beta: float,
    weights: Tensor | None = None,
) -> dict[str, float]:
    """The per-step numbers of METHOD.md section 7 (the loss itself is the caller's), as Python floats.

    They answer the common "the DPO loss is flat" question: accuracies near 0.5 and a margin near 0 mean the
    model has not moved away from the reference yet. Accuracies use the unweighted logits Z_ij (the sign of
    w_ij Z_ij is the same whenever w_ij > 0) and count a tie as half (``preference_accuracy``): at step 1 the
    model IS the reference, every logit is 0, and "acc 0.00" would read as "always wrong" instead of "no
    preference yet". ``weights=None`` means DPO (w = identity): diagonal mean 1, entropy 0.
        acc_diag          share of i with logit_i = Z_ii > 0, ties counted half
        acc_offdiag       share of (i, j), i != j, with Z_ij > 0, ties counted half (NaN when M = 1)
        weight_diag_mean  mean of w_ii
        weight_entropy    mean over rows of -sum_j w_ij log w_ij, in nats (0 <= H <= log M)
        d_w_mean, d_l_mean, reward_margin (= mean_i logit_i), and the means of the four error vectors.
    """
    with torch.no_grad():
        model_err_w, model_err_l, ref_err_w, ref_err_l = _errors(
            model_err_w, model_err_l, ref_err_w, ref_err_l
        )
        m = model_err_w.shape[0]
        d_w = model_err_w - ref_err_w
        d_l = model_err_l - ref_err_l
        z = rpo_logits(d_w, d_l, beta)
        diag = z.diagonal()
        scale = (model_err_w + ref_err_w)[:, None] + (model_err_l + ref_err_l)[None, :]
        credit = preference_credit(d_w[:, None] - d_l[None, :], scale)
        out = {
            "acc_diag": credit.diagonal().mean().item(),
            "acc_offdiag": math.nan,
            "weight_diag_mean": 1.0,
            "weight_entropy": 0.0,
            "d_w_mean": d_w.mean().item(),
            "d_l_mean": d_l.mean().item(),
            "reward_margin": diag.mean().item(),
            "model_err_w_mean": model_err_w.mean().item(),
            "model_err_l_mean": model_err_l.mean().item(),
            "ref_err_w_mean": ref_err_w.mean().item(),
            "ref_err_l_mean": ref_err_l.mean().item(),
        }
        if m > 1:
            off = ~torch.eye(m, dtype=torch.bool, device=z.device)
            out["acc_offdiag"] = credit[off].mean().item()
        if weights is not None:
            w = _weight_block(weights, m, m).detach()
            out["weight_diag_mean"] = w.diagonal().mean().item()
            out["weight_entropy"] = (-torch.special.xlogy(w, w).sum(dim=1)).mean().item()
    return out
