"""Counting statistics of common.physics.noise: Poisson sampling, binomial thinning, split counts."""

import pytest
import torch

from common.physics.noise import poisson, split_counts, thin

N = 200_000  # samples per statistical test: relative standard error of a variance ~0.3%


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _poisson_counts(mean: float, seed: int = 0) -> torch.Tensor:
    return poisson(torch.full((N,), mean, dtype=torch.float64), generator=_gen(seed))


def test_poisson_is_deterministic_for_a_seeded_generator():
    lam = torch.rand(1000, generator=_gen(1)) * 20
    torch.testing.assert_close(poisson(lam, _gen(7)), poisson(lam, _gen(7)))
    assert not torch.equal(poisson(lam, _gen(7)), poisson(lam, _gen(8)))


def test_poisson_sample_mean_and_variance_equal_the_expectation():
    counts = _poisson_counts(30.0)
    assert counts.mean().item() == pytest.approx(30.0, rel=0.01)
    assert counts.var().item() == pytest.approx(30.0, rel=0.03)
    assert torch.equal(counts, counts.round())


def test_poisson_keeps_float_dtype_and_converts_integer_input():
    assert poisson(torch.ones(3, dtype=torch.float64), _gen()).dtype == torch.float64
    assert poisson(torch.ones(3, dtype=torch.int32), _gen()).dtype == torch.float32


def test_thinning_keeps_fraction_times_mean():
    counts = _poisson_counts(40.0)
    thinned = thin(counts, 0.25, _gen(1))
    assert thinned.mean().item() == pytest.approx(0.25 * counts.mean().item(), rel=0.01)
    assert (thinned <= counts).all()


# Binomial thinning of Poisson(lambda) is Poisson(f lambda): a reduced-dose study has Poisson statistics.
def test_thinned_poisson_counts_are_poisson_variance_equals_mean():
    thinned = thin(_poisson_counts(40.0), 0.1, _gen(1))
    assert thinned.var().item() / thinned.mean().item() == pytest.approx(1.0, abs=0.03)


def test_thinning_fixed_counts_is_binomial_not_poisson():
    # a known count n gives variance n f (1 - f), so the Poisson property above comes from the input
    thinned = thin(torch.full((N,), 100.0), 0.5, _gen(2))
    assert thinned.var().item() == pytest.approx(100 * 0.5 * 0.5, rel=0.03)


def test_thinning_with_fraction_one_returns_the_counts():
    counts = _poisson_counts(5.0)[:100]
    torch.testing.assert_close(thin(counts, 1.0), counts)


def test_thinning_is_deterministic_for_a_seeded_generator():
    counts = _poisson_counts(10.0)[:1000]
    torch.testing.assert_close(thin(counts, 0.3, _gen(3)), thin(counts, 0.3, _gen(3)))


def test_split_halves_sum_to_the_input():
    counts = _poisson_counts(20.0)
    a, b = split_counts(counts, _gen(4))
    torch.testing.assert_close(a + b, counts)
    assert (a >= 0).all() and (b >= 0).all()


def test_split_halves_of_poisson_counts_are_uncorrelated_halves_of_the_mean():
    a, b = split_counts(_poisson_counts(20.0), _gen(5))
    assert a.mean().item() == pytest.approx(10.0, rel=0.01) and b.mean().item() == pytest.approx(10.0, rel=0.01)
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(corr) < 0.02  # standard error 1/sqrt(N) = 0.002


def test_split_integer_counts_keeps_shape():
    counts = torch.randint(0, 50, (4, 5, 6), generator=_gen(6))
    a, b = split_counts(counts, _gen(6))
    assert a.shape == counts.shape and torch.equal((a + b).long(), counts)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match="fraction"):
        thin(torch.ones(3), fraction)


@pytest.mark.parametrize(
    "counts, message",
    [
        (torch.tensor([1.0, -1.0]), "negative"),
        (torch.tensor([1.0, 2.5]), "integer"),
        (torch.tensor([1.0, float("nan")]), "NaN"),
    ],
)
def test_bad_counts_are_refused(counts, message):
    with pytest.raises(ValueError, match=message):
        thin(counts, 0.5)
    with pytest.raises(ValueError, match=message):
        split_counts(counts)


@pytest.mark.parametrize("expected", [torch.tensor([1.0, -0.5]), torch.tensor([float("inf")])])
def test_bad_expected_counts_are_refused(expected):
    with pytest.raises(ValueError, match="expected"):
        poisson(expected)
