"""Permutation tests of Spearman's rho against scipy and against brute-force enumeration."""

from itertools import permutations, product

import numpy as np
import pytest
from scipy import stats as sp

from lossbarcode import stats
from lossbarcode.experiment import generalization_summary


def _scipy_permutation_p(x, y, n_resamples=np.inf):
    def rho(y_perm, axis=-1):
        # Vectorised Spearman: Pearson correlation of the ranks along ``axis``.
        ry = sp.rankdata(y_perm, axis=axis)
        rx = sp.rankdata(x)
        ry = ry - ry.mean(axis=axis, keepdims=True)
        rx = rx - rx.mean()
        return (ry @ rx) / (np.linalg.norm(ry, axis=axis) * np.linalg.norm(rx))

    return sp.permutation_test((y,), rho, permutation_type="pairings", vectorized=True,
                               n_resamples=n_resamples, rng=0).pvalue


def _two_sided(null, observed, adjustment=0):
    gamma = 1e-12  # round-off of equal rhos
    low = np.count_nonzero(null <= observed + gamma) + adjustment
    high = np.count_nonzero(null >= observed - gamma) + adjustment
    return min(1.0, 2 * min(low, high) / (null.size + adjustment))


def test_three_reversed_points_are_not_significant():
    x, y = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]
    assert sp.spearmanr(x, y).pvalue == 0.0  # the asymptotic p this module replaces
    test = stats.spearman_test(x, y)
    assert test.rho == pytest.approx(-1.0) and test.n == 3
    assert test.method == "exact" and test.n_permutations == 6
    assert test.p_value >= 1 / 3
    assert test.p_value == pytest.approx(_scipy_permutation_p(np.array(x), np.array(y)))


@pytest.mark.parametrize("n", [4, 5, 6, 7, 8])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_test_matches_scipy_for_small_n(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    y[1] = y[0]  # a tie: ranks are averaged as in spearmanr
    test = stats.spearman_test(x, y)
    assert test.method == "exact" and test.n_permutations == np.prod(np.arange(1, n + 1))
    assert test.rho == pytest.approx(sp.spearmanr(x, y).statistic)
    assert test.p_value == pytest.approx(_scipy_permutation_p(x, y))


def test_monte_carlo_test_for_larger_n_is_reproducible_and_never_zero():
    rng = np.random.default_rng(3)
    x = rng.normal(size=14)
    y = x + 2 * rng.normal(size=14)
    test = stats.spearman_test(x, y)
    assert test.method == "monte carlo" and test.n_permutations == stats.N_PERMUTATIONS
    assert test.rho == pytest.approx(sp.spearmanr(x, y).statistic)
    # Two independent samples of the same null: within a few standard errors of each other.
    reference = _scipy_permutation_p(x, y, n_resamples=stats.N_PERMUTATIONS)
    assert abs(test.p_value - reference) < 0.02
    assert stats.spearman_test(x, y) == test
    perfect = stats.spearman_test(np.arange(30.0), np.arange(30.0) ** 2)
    assert perfect.n_extreme == 0
    assert perfect.p_value == pytest.approx(2 / (stats.N_PERMUTATIONS + 1))
    assert perfect.p_text().startswith("≤ ") and "none of the 9,999" in perfect.describe()
    assert "Monte Carlo" in perfect.describe() and "exact" in stats.spearman_test(
        x[:5], y[:5]).describe()


def test_undefined_cases_say_why():
    too_few = stats.spearman_test([1.0, np.inf, 2.0], [0.1, 0.2, np.nan])
    assert too_few.rho is None and too_few.p_value is None and too_few.n == 1
    assert too_few.method == "undefined" and "at least 3" in too_few.reason
    assert too_few.p_text() == "—" and "undefined" in too_few.describe()
    flat = stats.spearman_test([1.0, 2.0, 3.0], [0.5, 0.5, 0.5])
    assert flat.rho is None and "constant" in flat.reason
    with pytest.raises(ValueError, match="pair up"):
        stats.spearman_test([1.0, 2.0], [1.0])


def _brute_force_stratified(groups):
    """Exact p of the n-weighted mean within-group rho, over every joint within-group
    permutation, each group's rho from scipy's spearmanr."""
    sizes = np.array([len(x) for x, _ in groups], dtype=float)
    weights = sizes / sizes.sum()
    observed = sum(w * sp.spearmanr(x, y).statistic
                   for w, (x, y) in zip(weights, groups, strict=True))
    rhos = [[sp.spearmanr(x, np.asarray(y)[list(p)]).statistic
             for p in permutations(range(len(x)))] for x, y in groups]
    null = np.array([sum(w * r for w, r in zip(weights, joint, strict=True))
                     for joint in product(*rhos)])
    return observed, _two_sided(null, observed)


def test_stratified_test_matches_brute_force_enumeration():
    rng = np.random.default_rng(5)
    groups = {f"run {n}": (rng.normal(size=n), rng.normal(size=n)) for n in (3, 4, 5)}
    groups["run 4"][1][:] = groups["run 4"][0] + 0.3 * rng.normal(size=4)
    result = stats.stratified_spearman(groups)
    observed, p = _brute_force_stratified(list(groups.values()))
    assert result.combined.method == "exact" and result.combined.n_permutations == 6 * 24 * 120
    assert result.combined.rho == pytest.approx(observed)
    assert result.combined.p_value == pytest.approx(p)
    assert result.combined.n == 12 and result.used == tuple(groups)
    for label, (x, y) in groups.items():
        assert result.groups[label] == stats.spearman_test(x, y)


def test_stratified_monte_carlo_agrees_with_the_exact_null():
    rng = np.random.default_rng(7)
    groups = {"a": (rng.normal(size=6), rng.normal(size=6)),
              "b": (rng.normal(size=7), rng.normal(size=7))}
    groups["b"][1][:] = groups["b"][0] + rng.normal(size=7)
    result = stats.stratified_spearman(groups)
    assert result.combined.method == "monte carlo"
    # The exact null of the weighted sum: every pair of within-group permutations.
    nulls = []
    for x, y in groups.values():
        perms = np.array(list(permutations(range(len(x)))))
        rx, ry = sp.rankdata(x), sp.rankdata(y)[perms]
        nulls.append(np.array([sp.pearsonr(rx, r).statistic for r in ry]) * len(x) / 13)
    null = (nulls[0][:, None] + nulls[1][None, :]).ravel()
    assert abs(result.combined.p_value - _two_sided(null, result.combined.rho)) < 0.02


def test_within_run_test_is_not_fooled_by_between_run_differences():
    # Simpson's paradox: within each run longer segments go with lower error, but the wider
    # run has both longer segments and higher error, so the pooled rho is positive.
    x = np.arange(6, dtype=float)
    groups = {"width 8": (x, 1.0 - 0.1 * x), "width 32": (x + 10, 3.0 - 0.1 * x)}
    pooled = stats.spearman_test(np.concatenate([g[0] for g in groups.values()]),
                                 np.concatenate([g[1] for g in groups.values()]))
    within = stats.stratified_spearman(groups)
    assert pooled.rho > 0.4
    assert within.combined.rho == pytest.approx(-1.0)
    assert all(t.rho == pytest.approx(-1.0) for t in within.groups.values())


def test_stratified_leaves_out_groups_without_a_defined_rho():
    result = stats.stratified_spearman({"short": ([1.0, 2.0], [2.0, 1.0]),
                                        "ok": ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])})
    assert result.used == ("ok",) and result.groups["short"].method == "undefined"
    assert result.combined == result.groups["ok"]
    none = stats.stratified_spearman({"short": ([1.0, 2.0], [2.0, 1.0])})
    assert none.combined.rho is None and none.combined.n == 2
    assert set(none.to_dict()) == {"groups", "combined", "used"}


def test_generalization_summary_uses_the_permutation_test():
    lengths = np.array([0.1, np.inf, 0.3, 0.2, np.nan])
    errors = np.array([0.3, 0.1, 0.1, 0.2, 0.4])
    summary = generalization_summary(lengths, errors)
    test = stats.spearman_test(lengths, errors)
    assert summary == {"spearman": test.rho, "p_value": test.p_value, "n": 3,
                       "method": "exact", "n_permutations": 6, "resolution": 0.0}
    # Lengths within the resolution tie at 0: 0.1 and 0.2 tie, which changes rho.
    tied = generalization_summary(lengths, errors, resolution=0.25)
    assert tied["resolution"] == 0.25 and tied["spearman"] != summary["spearman"]
