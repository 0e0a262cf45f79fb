"""Early stopping of a full validation: stop once a candidate is certainly infeasible.

The validation set is read in a fixed, seeded, class-stratified order (see
:func:`autocompress.data.stratified_order`), shard after shard. The baseline's per-image
correctness in that order is measured once per run. After each shard of the contiguous
prefix, the candidate is compared with the baseline image by image: ``worse`` images the
baseline got right and the candidate wrong, ``better`` the reverse (the discordant pairs;
the concordant ones say nothing about the difference). The candidate's accuracy drop on
the *whole* set is ``100 * (W - B) / N`` (capitals: the counts over the whole set), so

    drop / 100 = r * (2 q - 1),   r = (W + B) / N (discordance),  q = W / (W + B)

and a lower confidence bound follows from two Clopper-Pearson bounds: r >= r_low (the
discordant count among the images seen) and q >= q_low (``worse`` among the discordant),
each at alpha / 2, hence drop >= 100 * r_low * (2 q_low - 1) when q_low > 1/2. The
validation stops at the first look where this bound exceeds the allowed drop. Each look
spends alpha / K (K looks, Bonferroni), so over a whole validation a candidate that is
feasible on the full set is stopped with probability below alpha = 1 - confidence.

The prefix of a random order is a sample drawn without replacement, stratified by
class; the binomial bounds ignore both (each only makes the sample's counts more
concentrated), so they are conservative. Candidates that are not stopped are validated
on every image: a feasible point's accuracy is always exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def _beta_ppf(p: float, a: float, b: float) -> float:
    from scipy.stats import beta

    return float(beta.ppf(p, a, b))


def drop_lower_bound(worse: int, better: int, seen: int, alpha: float) -> float:
    """A lower confidence bound (level ``1 - alpha``) on the accuracy drop in points over
    the whole set, from ``worse`` and ``better`` discordant images among ``seen``."""
    discordant = worse + better
    if seen <= 0 or discordant == 0:
        return 0.0
    half = alpha / 2
    r_low = _beta_ppf(half, discordant, seen - discordant + 1)
    r_high = 1.0 if discordant == seen else _beta_ppf(1 - half, discordant + 1, seen - discordant)
    q_low = 0.0 if worse == 0 else _beta_ppf(half, worse, better + 1)
    lean = 2 * q_low - 1
    return 100.0 * (r_low if lean > 0 else r_high) * lean


def drop_upper_bound(worse: int, better: int, seen: int, confidence: float) -> float:
    """A one-sided upper confidence bound (level ``confidence``) on the accuracy drop in
    points on fresh images of the same distribution, from ``worse`` and ``better``
    discordant images among ``seen`` paired ones: Tango's score bound for a difference of
    matched proportions (Statistics in Medicine 17:891, 1998; the constrained maximum
    likelihood estimate of the ``better`` share under each candidate drop). Simulated
    (tests/test_confidence.py) it covers the true drop at about its confidence on
    thousands of images, and more often when a few discordant images are all there is,
    where the Agresti-Min and Wald bounds fall to 83-86 % at 0.95; the product of two
    exact bounds (:func:`drop_lower_bound`, right for a stopping rule that must not be
    wrong) is 50 % wider on 5,000 images. ``seen`` of 0 gives 100 (nothing known)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    if seen <= 0:
        return 100.0
    n, x, y, z = float(seen), float(worse), float(better), float(norm.ppf(confidence))

    def score(d: float) -> float:
        a, b, c = 2 * n, -x - y + (2 * n - x + y) * d, -y * d * (1 - d)
        better_share = (math.sqrt(max(0.0, b * b - 4 * a * c)) - b) / (2 * a)
        variance, gap = n * (2 * better_share + d * (1 - d)), x - y - n * d
        if variance <= 0:  # no discordance at d = 0: the score says the estimate itself
            return math.inf if gap >= 0 else -math.inf
        return gap / math.sqrt(variance)

    top = 1 - 1e-12
    if score(top) > -z:
        return 100.0
    return 100.0 * brentq(lambda d: score(d) + z, (x - y) / n, top, xtol=1e-12)


@dataclass
class EarlyStopping:
    """The rule for one run: the baseline's per-image correctness in evaluation order,
    the shards (looks), the allowed drop, the confidence."""

    baseline: np.ndarray  # bool per position of the evaluation order
    shards: list[tuple[int, int]]
    max_drop_points: float
    confidence: float = 0.999
    # False: compare with the baseline image by image without ever stopping (feasibility
    # decided with confidence needs the pairs: evaluation.early_stopping off)
    enabled: bool = True
    alpha_per_look: float = field(init=False)

    def __post_init__(self) -> None:
        self.baseline = np.asarray(self.baseline, dtype=bool)
        if self.shards and self.shards[-1][1] != len(self.baseline):
            raise ValueError(f"the shards cover {self.shards[-1][1]} images, the baseline {len(self.baseline)}")
        self.alpha_per_look = (1 - self.confidence) / max(1, len(self.shards))

    def paired(self, shard: int, per_image: np.ndarray) -> tuple[int, int]:
        """``(worse, better)`` of one shard's per-image correctness against the baseline."""
        start, stop = self.shards[shard]
        base = self.baseline[start:stop]
        if len(per_image) != len(base):
            raise ValueError(f"shard {shard}: {len(per_image)} results for {len(base)} images")
        return paired_counts(base, per_image)

    def bound(self, worse: int, better: int, seen: int) -> float:
        return drop_lower_bound(worse, better, seen, self.alpha_per_look)

    def stops(self, worse: int, better: int, seen: int, looked: int) -> float | None:
        """The bound when the candidate is certainly infeasible after ``looked`` of the
        shards; None to go on (the last look never stops: the result is then exact)."""
        if not self.enabled or looked >= len(self.shards):
            return None
        value = self.bound(worse, better, seen)
        return value if value > self.max_drop_points + 1e-9 else None


def paired_counts(baseline, candidate) -> tuple[int, int]:
    """``(worse, better)``: images the baseline got right and the candidate wrong, and the
    reverse, from two per-image correctness arrays over the same images."""
    base, mine = np.asarray(baseline, dtype=bool), np.asarray(candidate, dtype=bool)
    return int(np.count_nonzero(base & ~mine)), int(np.count_nonzero(~base & mine))


def shard_bounds(count: int, shard_images: int) -> list[tuple[int, int]]:
    """``[start, stop)`` positions of consecutive shards of ``shard_images`` over ``count`` images."""
    if count <= 0:
        return []
    return [(start, min(start + shard_images, count)) for start in range(0, count, shard_images)]


def default_shard_images(count: int, batch_size: int, target_shards: int = 128) -> int:
    """Images per shard: whole batches (a sharded evaluation batches exactly as one
    pass does), about ``target_shards`` shards (50,000 images in batches of 128: 98
    shards of 512, so 8 or 16 workers end a validation within one shard of each
    other), at least one batch."""
    batches = max(1, math.ceil(count / (target_shards * batch_size)))
    return batches * batch_size


def pack(per_image: np.ndarray) -> bytes:
    return np.packbits(np.asarray(per_image, dtype=bool)).tobytes()


def unpack(data: bytes, count: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count).astype(bool)
