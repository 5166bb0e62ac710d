"""Seeded train/validation/test splits that keep groups (patients, source images) together."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["split_groups", "empty_subsets"]


def split_groups(
    items: Sequence[str],
    groups: Sequence[Hashable] | None = None,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    names: Sequence[str] = ("training", "validation", "test"),
) -> dict[str, list[str]]:
    """Split ``items`` into named subsets by whole groups.

    Groups (e.g. patients, or the source image of a set of tiles) are shuffled with ``seed`` and dealt
    to the subsets so that each subset's share of *items* comes as close as possible to ``ratios``;
    no group is ever split. Every subset with a positive ratio receives at least one group when there
    are at least as many groups as such subsets.

    Args:
        items: item identifiers (unique).
        groups: group of each item, same length as ``items``; ``None`` makes every item its own group.
        ratios: relative sizes of the subsets (normalised to sum 1).
        seed: seed of the shuffle; the same inputs and seed always give the same split.
        names: names of the subsets, same length as ``ratios``.

    Returns:
        ``{name: [item, ...]}`` with items in their input order.

    Raises:
        ValueError: on mismatched lengths, duplicate items, or negative/zero-sum ratios.
    """
    items = list(items)
    if len(set(items)) != len(items):
        raise ValueError("split_groups: items must be unique")
    groups = list(items) if groups is None else list(groups)
    if len(groups) != len(items):
        raise ValueError(f"split_groups: {len(items)} items but {len(groups)} groups")
    if len(names) != len(ratios):
        raise ValueError(f"split_groups: {len(names)} names but {len(ratios)} ratios")
    r = np.asarray(ratios, dtype=float)
    if (r < 0).any() or r.sum() <= 0:
        raise ValueError(f"split_groups: ratios must be >= 0 with a positive sum, got {list(ratios)}")
    r = r / r.sum()

    unique = sorted(set(groups), key=str)
    sizes = {g: 0 for g in unique}
    for g in groups:
        sizes[g] += 1
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]

    counts = np.zeros(len(r))
    assignment: dict[Hashable, int] = {}
    positive = [i for i in range(len(r)) if r[i] > 0]
    # First give each positive subset one group (largest ratio first) so that no subset is empty.
    seeded = positive if len(shuffled) >= len(positive) else []
    for k, subset in enumerate(sorted(seeded, key=lambda i: -r[i])):
        g = shuffled[k]
        assignment[g] = subset
        counts[subset] += sizes[g]
    total = len(items)
    for g in shuffled[len(seeded) :]:
        # the subset furthest below its target share gets the next group
        deficit = r * total - counts
        deficit[r == 0] = -np.inf
        subset = int(np.argmax(deficit))
        assignment[g] = subset
        counts[subset] += sizes[g]
    out: dict[str, list[str]] = {n: [] for n in names}
    for item, g in zip(items, groups):
        out[names[assignment[g]]].append(item)
    return out


def empty_subsets(parts: dict[str, list[str]], ratios: Sequence[float]) -> list[str]:
    """Names of the subsets of a split that were meant to hold items (positive ratio) but hold none.

    :func:`split_groups` leaves subsets empty when there are fewer groups than subsets with a positive ratio
    (e.g. after cases were skipped); callers warn about it, because an empty validation subset silently
    disables model selection and an empty test subset evaluation.

    Args:
        parts: the split, ``{name: [item, ...]}`` in the order of ``ratios``.
        ratios: the ratios the split was made with.

    Returns:
        The names of the empty subsets with a positive ratio, in order.

    Raises:
        ValueError: when ``parts`` and ``ratios`` differ in length.
    """
    if len(parts) != len(ratios):
        raise ValueError(f"empty_subsets: {len(parts)} subsets but {len(ratios)} ratios")
    return [name for (name, members), r in zip(parts.items(), ratios) if float(r) > 0 and not members]
