"""Tests of the numerical checks in `alphaedit_lite.core.verify` (the null-space claim, AlphaEdit Eq. 10)."""
from __future__ import annotations

import math

import pytest
import torch

from alphaedit_lite.core.nullspace import null_space_projector
from alphaedit_lite.core.verify import nullspace_residual, preserved_change, projector_errors

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64


def test_preserved_change_without_w_is_the_scale_free_leak(gen):
    delta = torch.randn(5, 8, generator=gen, dtype=F64)    # (d_out, d_in)
    K0 = torch.randn(8, 30, generator=gen, dtype=F64)      # (d_in, n)
    expected = float(torch.linalg.matrix_norm(delta @ K0) / (torch.linalg.matrix_norm(delta) * torch.linalg.matrix_norm(K0)))
    got = preserved_change(delta, K0)
    assert math.isclose(got, expected, rel_tol=1e-12)
    assert 0 < got <= 1  # ‖ΔK0‖_F ≤ ‖Δ‖_F ‖K0‖_F
    assert math.isclose(preserved_change(7.0 * delta, 0.1 * K0), got, rel_tol=1e-12)  # scale-free
    # a rank-one Δ = a bᵀ with b ⟂ every key leaves preserved outputs exactly alone
    K0_low = torch.zeros(8, 30, dtype=F64)
    K0_low[:4] = K0[:4]                                    # keys span the first 4 coordinates only
    b = torch.zeros(8, dtype=F64)
    b[6] = 1.0
    assert preserved_change(torch.outer(torch.ones(5, dtype=F64), b), K0_low) == 0.0


def test_preserved_change_with_w_is_relative_to_the_layer_outputs(gen):
    W = torch.randn(5, 8, generator=gen, dtype=F64)
    delta = 1e-3 * torch.randn(5, 8, generator=gen, dtype=F64)
    K0 = torch.randn(8, 30, generator=gen, dtype=F64)
    expected = float(torch.linalg.matrix_norm(delta @ K0) / torch.linalg.matrix_norm(W @ K0))
    assert math.isclose(preserved_change(delta, K0, W), expected, rel_tol=1e-12)
    assert math.isclose(preserved_change(delta, K0, 2 * W), expected / 2, rel_tol=1e-12)
    assert preserved_change(delta.float(), K0.float(), W.float()) == pytest.approx(expected, rel=1e-5)


def test_preserved_change_degenerate_and_bad_shapes(gen):
    K0 = torch.randn(8, 30, generator=gen, dtype=F64)
    assert preserved_change(torch.zeros(5, 8, dtype=F64), K0) == 0.0  # no update, no change
    with pytest.raises(ValueError, match="delta's columns \\(d_in\\) is 7 but K0's rows \\(key dimension\\) is 8"):
        preserved_change(torch.zeros(5, 7, dtype=F64), K0)
    with pytest.raises(ValueError, match="W's shape"):
        preserved_change(torch.zeros(5, 8, dtype=F64), K0, torch.zeros(4, 8, dtype=F64))
    with pytest.raises(ValueError, match="2-D"):
        preserved_change(torch.zeros(8, dtype=F64), K0)


def test_nullspace_residual(make_keys, gen):
    P = null_space_projector(make_keys(10, 6, 30, 1e-3, 0) @ make_keys(10, 6, 30, 1e-3, 0).T / 30, 0.3).P
    X = torch.randn(4, 10, generator=gen, dtype=F64)
    assert nullspace_residual(X @ P, P) <= 1e-12                   # already in the null space
    Q = torch.eye(10, dtype=F64) - P
    assert math.isclose(nullspace_residual(X @ Q, P), 1.0, rel_tol=1e-10)  # wholly outside it
    mixed = X @ P + X @ Q
    expected = float(torch.linalg.matrix_norm(X @ Q) / torch.linalg.matrix_norm(mixed))
    assert math.isclose(nullspace_residual(mixed, P), expected, rel_tol=1e-10)
    assert nullspace_residual(torch.zeros(4, 10, dtype=F64), P) == 0.0
    with pytest.raises(ValueError, match="delta's columns is 9 but P's size is 10"):
        nullspace_residual(torch.zeros(4, 9, dtype=F64), P)
    with pytest.raises(ValueError, match="P must be square"):
        nullspace_residual(torch.zeros(4, 10, dtype=F64), torch.zeros(10, 9, dtype=F64))


def test_projector_errors_on_projectors_and_non_projectors(gen):
    Q, _ = torch.linalg.qr(torch.randn(9, 4, generator=gen, dtype=F64))
    P = Q @ Q.T
    errs = projector_errors(P)
    assert errs["symmetry"] <= 1e-15 and errs["idempotence"] <= 1e-14
    # 2P: symmetric, but (2P)² − 2P = 2P, so the relative idempotence error is exactly 1
    errs = projector_errors(2 * P)
    assert errs["symmetry"] <= 1e-15 and math.isclose(errs["idempotence"], 1.0, rel_tol=1e-12)
    # an oblique projector: idempotent but not symmetric
    A = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=F64)
    errs = projector_errors(A)
    assert errs["idempotence"] <= 1e-15
    assert math.isclose(errs["symmetry"], 1.0, rel_tol=1e-12)  # ‖A − Aᵀ‖_F = √2 = ‖A‖_F
    assert projector_errors(torch.zeros(3, 3, dtype=F64)) == {"symmetry": 0.0, "idempotence": 0.0}
    with pytest.raises(ValueError, match="P must be square"):
        projector_errors(torch.zeros(3, 2, dtype=F64))
