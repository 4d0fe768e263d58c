"""The pruned k-center greedy selects what the plain greedy selects, and covers as well."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ad_core.models.patchcore.coreset import k_center_greedy, k_center_greedy_plain, random_projection


def clustered(n=6000, d=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(30, d, generator=gen) * 4
    return centres[torch.randint(30, (n,), generator=gen)] + torch.randn(n, d, generator=gen)


def covering_radius(x, idx, proj_dim=128, seed=0):
    z = random_projection(x, proj_dim, seed)
    return torch.cdist(z, z[idx]).min(1).values.max().item()


@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_greedy_matches_plain_greedy(seed):
    x = clustered(seed=seed).double().float()
    k = 60
    fast = k_center_greedy(x, k, seed=seed)
    plain = k_center_greedy_plain(x, k, seed=seed)
    assert fast.tolist() == plain.tolist()


def test_pruned_greedy_covers_like_plain_greedy_on_larger_sets():
    x = clustered(n=20000, d=152)
    fast = k_center_greedy(x, 1000)
    plain = k_center_greedy_plain(x, 1000)
    assert len(set(fast.tolist())) == 1000
    assert covering_radius(x, fast) <= covering_radius(x, plain) * 1.02


def test_selection_is_far_better_than_random():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8000, 2, generator=gen) @ torch.randn(2, 16, generator=gen)  # a plane in 16-D
    fast = k_center_greedy(x, 200)
    rand = torch.randperm(8000, generator=torch.Generator().manual_seed(0))[:200]
    assert covering_radius(x, fast) < 0.6 * covering_radius(x, rand)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="between 1 and 10"):
        k_center_greedy(torch.randn(10, 4), 11)


def test_extending_an_existing_bank_continues_the_greedy():
    """Retraining with --load_bank: picks among new rows, farthest from the old bank first."""
    x = clustered(n=4000, seed=2)
    old = clustered(n=300, seed=3)
    fast = k_center_greedy(x, 50, existing=old)
    plain = k_center_greedy_plain(x, 50, existing=old)
    assert fast.tolist() == plain.tolist()
    z, zo = random_projection(x, 128), random_projection(old, 128)
    assert fast[0] == torch.cdist(z, zo).amin(1).argmax()
    # a new point lying on the old bank is never picked before the far ones
    near_old = torch.cat([x, old[:5]])
    picked = k_center_greedy(near_old, 50, existing=old)
    assert not set(picked.tolist()) & set(range(len(x), len(x) + 5))
    with pytest.raises(ValueError, match="do not match rows of width"):
        k_center_greedy(x, 5, existing=torch.randn(3, 7))


def test_chunked_greedy_with_progress_picks_the_same_points():
    """The panels' progress bar splits the greedy into chunks; the picks must not change."""
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((3000, 40)).astype(np.float32))
    seen = []
    whole = k_center_greedy(x, 300, seed=1)
    chunked = k_center_greedy(x, 300, seed=1, progress=lambda done, total: seen.append((done, total)))
    assert torch.equal(whole, chunked)
    assert seen[-1] == (300, 300) and len(seen) == 50 and all(a < b for (a, _), (b, _) in itertools.pairwise(seen))
