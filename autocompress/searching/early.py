"""Early stopping of a full validation: stop once a candidate is certainly infeasible,
or (``both``) certainly feasible.

The validation set is read in a fixed, seeded, class-stratified order (see
:func:`autocompress.data.stratified_order`), shard after shard. The baseline's per-image
correctness in that order is measured once per run. After each shard of the contiguous
prefix, the candidate is compared with the baseline image by image: ``d = +1`` where the
baseline was right and the candidate wrong (``worse``), ``-1`` the reverse (``better``),
0 elsewhere. The candidate's accuracy drop on the *whole* selection set of ``N`` images is
``100 * mean(d)`` over all ``N``: a finite population, read without replacement.

The stopping rule is a sequential test that is valid at every look, not only at a fixed
number of them: a *betting* test for the mean of a finite population sampled without
replacement (Waudby-Smith and Ramdas, "Confidence sequences for sampling without
replacement", NeurIPS 2020; "Estimating means of bounded random variables by betting",
JRSS-B 2024). To test "the whole set's drop is at most ``delta``", a gambler starts with
capital 1 and bets, image by image, a fraction ``lam`` of it on ``d`` exceeding the mean
the images not yet read would have under that hypothesis,
``m_t = (N * delta - sum of d so far) / (images left)``; the capital
``K_t = prod(1 + lam_i (d_i - m_i))`` is then a nonnegative supermartingale under the
hypothesis (for every drop at most ``delta``), so by Ville's inequality it ever reaches
``1 / alpha`` with probability at most ``alpha``, whenever one looks. The validation stops
as certainly infeasible when the capital of "drop <= limit" reaches ``1 / alpha``; with
``both``, also as certainly feasible when the mirror test's capital ("drop >= the feasible
limit", betting on ``m_t - d``) does. Each side errs with probability below
``alpha = 1 - confidence``. ``lam`` is fixed before each shard from the shards before it
(the growth-rate-optimal bet for the running mean and variance, shrunk towards a prior,
capped at half of what keeps the capital positive), so the bet is predictable and the
guarantee needs no correction for the number of looks (where the Bonferroni split it
replaced spent ``alpha / 98`` per look at ImageNet scale). Sampling without replacement
makes the test end with certainty as the unread images run out: a candidate a tenth of a
point from the limit is decided a few shards before the end instead of never.

The guarantee holds for a uniformly random order; the stratified order interleaves the
classes (each class in a random order), which spreads every prefix over the classes
more evenly than a random order would and is measured, not assumed, in
``experiments/bench/early_stopping.py`` (wrong stops at the limit, 1,000 candidates a side).

A result stopped on either side is an estimate (the images read, the paired estimate, the
two bounds: the same tests inverted). A candidate stopped as feasible that would be a
Pareto point is validated on its remaining shards before the search reports it
(:class:`autocompress.searching.loop.SearchLoop`), so every reported point is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Mode = Literal["infeasible", "both", "off"]
Side = Literal["infeasible", "feasible"]

_PRIOR_IMAGES = 1.0  # the bet's running mean and variance start from one pseudo-image ...
_PRIOR_VARIANCE = 0.25  # ... of this variance (d in {-1, 0, 1}: a cautious first bet)
_CAP = 0.5  # at most half of the stake that would zero the capital on the worst image


def drop_upper_bound(worse: int, better: int, seen: int, confidence: float) -> float:
    """A one-sided upper confidence bound (level ``confidence``) on the accuracy drop in
    points on fresh images of the same distribution, from ``worse`` and ``better``
    discordant images among ``seen`` paired ones: Tango's score bound for a difference of
    matched proportions (Statistics in Medicine 17:891, 1998; the constrained maximum
    likelihood estimate of the ``better`` share under each candidate drop). Simulated
    (tests/test_confidence.py) it covers the true drop at about its confidence on
    thousands of images, and more often when a few discordant images are all there is,
    where the Agresti-Min and Wald bounds fall to 83-86 % at 0.95; the product of two
    exact Clopper-Pearson bounds (on the discordant share and on the worse share among
    them) is 50 % wider on 5,000 images. ``seen`` of 0 gives 100 (nothing known)."""
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


def _stakes(total: int, read: int, sum_x: float, sum_x2: float, deltas: np.ndarray, sign: float) -> np.ndarray:
    """The fraction of the capital staked on the next shard, per hypothesis: growth-rate
    optimal for the running mean and variance of ``x`` (shrunk towards 0 and
    ``_PRIOR_VARIANCE``) against each hypothesis's mean of the images left, 0 when the data
    lean the hypothesis's way."""
    mean = sum_x / (read + _PRIOR_IMAGES)
    variance = max((sum_x2 + _PRIOR_IMAGES * _PRIOR_VARIANCE) / (read + _PRIOR_IMAGES) - mean * mean, 1e-6)
    edge = sign * (mean - (total * deltas - sum_x) / (total - read))
    return np.maximum(0.0, edge / (variance + edge * edge))


@dataclass
class SequentialTest:
    """One side's betting tests of one candidate, shard by shard, for several hypotheses at
    once (``deltas``: population means, e.g. drops in points / 100). ``infeasible`` tests
    "mean <= delta" (rejected: certainly above), ``feasible`` tests "mean >= delta"
    (rejected: certainly below). ``x`` lies in ``[low, high]``: the paired differences in
    [-1, 1], or an indicator in [0, 1]."""

    total: int
    deltas: np.ndarray
    side: Side
    alpha: float
    low: float = -1.0
    high: float = 1.0
    read: int = 0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    log_capital: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.deltas = np.atleast_1d(np.asarray(self.deltas, dtype=np.float64))
        self.log_capital = np.zeros_like(self.deltas)

    @property
    def sign(self) -> float:
        return 1.0 if self.side == "infeasible" else -1.0

    def update(self, x: np.ndarray) -> np.ndarray:
        """Take one shard's values; per hypothesis, whether it is now rejected (at the
        confidence ``1 - alpha``, or because no values of the images left could hold it)."""
        n = len(x)
        if n:
            stakes = _stakes(self.total, self.read, self.sum_x, self.sum_x2, self.deltas, self.sign)
            before = self.sum_x + np.concatenate(([0.0], np.cumsum(x[:-1], dtype=np.float64)))
            means = (self.total * self.deltas[:, None] - before[None, :]) / (self.total - self.read - np.arange(n))
            reach = np.maximum(self.high - means, means - self.low).max(axis=1)  # the largest |x - m| a value can reach
            lam = np.minimum(stakes, _CAP / np.maximum(reach, 1e-12))
            self.log_capital += np.log1p(self.sign * lam[:, None] * (x[None, :] - means)).sum(axis=1)
            self.read += n
            self.sum_x += float(x.sum())
            self.sum_x2 += float(np.square(x, dtype=np.float64).sum())
        return self.rejected()

    def rejected(self) -> np.ndarray:
        left = self.total - self.read
        if self.side == "infeasible":
            certain = (self.sum_x + self.low * left) / self.total > self.deltas + 1e-12
        else:
            certain = (self.sum_x + self.high * left) / self.total < self.deltas - 1e-12
        return certain | (self.log_capital >= math.log(1 / self.alpha))


def _rejects(chunks: list[np.ndarray], total: int, delta: float, side: Side, alpha: float) -> bool:
    """Whether the test of ``delta`` rejects after ``chunks`` (at any of their looks: the
    running intersection of the confidence sequence, as valid as its last look)."""
    test = SequentialTest(total, np.array([delta]), side, alpha)
    return any(bool(test.update(d.astype(np.float64))[0]) for d in chunks)  # a rejection stands: stop there


def sequential_bounds(chunks: list[np.ndarray], total: int, alpha: float) -> tuple[float, float]:
    """(lower, upper) bounds on the whole set's drop in points after the shards ``chunks``
    (each side at ``1 - alpha``): the tests inverted, each threshold bisected between what
    the images left allow (to 0.001 points)."""
    read = sum(len(c) for c in chunks)
    sum_d = float(sum(float(c.sum()) for c in chunks))
    left = total - read
    low, high = (sum_d - left) / total, (sum_d + left) / total

    def bisect(side: Side) -> float:
        a, b = low, high  # infeasible side: rejected at a (drop > a certain), not at b; feasible: the mirror
        while b - a > 1e-5:
            mid = (a + b) / 2
            if (side == "infeasible") == _rejects(chunks, total, mid, side, alpha):
                a = mid
            else:
                b = mid
        return 100.0 * (a if side == "infeasible" else b)

    return bisect("infeasible"), bisect("feasible")


@dataclass
class EarlyStopping:
    """The rule for one run: the baseline's per-image correctness in evaluation order,
    the shards (looks), the allowed drop, the confidence of each side's stop, the mode, and
    ``decision_confidence``: where feasibility is decided on an upper confidence bound over
    the whole set (``constraints.accuracy.confidence``, :func:`drop_upper_bound`), a
    feasible stop must be certain of that bound, not of the drop alone (:func:`feasible_cells`)."""

    baseline: np.ndarray  # bool per position of the evaluation order
    shards: list[tuple[int, int]]
    max_drop_points: float
    confidence: float = 0.999
    # infeasible: stop what is certainly beyond the limit; both: also what is certainly within;
    # off: compare with the baseline image by image without ever stopping (a decision with
    # confidence needs the pairs)
    mode: Mode = "both"
    decision_confidence: float | None = None
    cells: list[tuple[int, float]] = field(init=False)  # (better images at least, drop the stop must be below)

    def __post_init__(self) -> None:
        self.baseline = np.asarray(self.baseline, dtype=bool)
        if self.shards and self.shards[-1][1] != len(self.baseline):
            raise ValueError(f"the shards cover {self.shards[-1][1]} images, the baseline {len(self.baseline)}")
        if self.mode not in ("infeasible", "both", "off"):
            raise ValueError(f"early stopping mode {self.mode!r}: expected infeasible, both or off")
        self.cells = (feasible_cells(self.baseline, self.max_drop_points, self.decision_confidence)
                      if self.mode == "both" else [])

    @property
    def alpha(self) -> float:
        return 1 - self.confidence

    def differences(self, shard: int, per_image: np.ndarray) -> np.ndarray:
        """One shard's ``d`` per image (int8: +1 baseline right and candidate wrong, -1 the reverse)."""
        start, stop = self.shards[shard]
        base = self.baseline[start:stop]
        mine = np.asarray(per_image, dtype=bool)
        if len(mine) != len(base):
            raise ValueError(f"shard {shard}: {len(mine)} results for {len(base)} images")
        return base.astype(np.int8) - mine.astype(np.int8)

    def start(self) -> Evidence:
        """The evidence of one candidate's validation, before its first shard."""
        return Evidence(self)


@dataclass
class Evidence:
    """A candidate's comparison with the baseline over the contiguous prefix of its shards,
    and the sequential tests on it."""

    rule: EarlyStopping
    looked: int = 0  # shards of the prefix taken into account
    worse: int = 0
    better: int = 0
    chunks: list = field(default_factory=list)  # d per shard (int8), for the bounds
    infeasible: SequentialTest | None = None
    feasible: SequentialTest | None = None  # drop below each cell's threshold
    fewer_better: SequentialTest | None = None  # better images below each cell's floor

    def __post_init__(self) -> None:
        rule, total = self.rule, len(self.rule.baseline)
        if rule.mode != "off":
            self.infeasible = SequentialTest(total, np.array([rule.max_drop_points / 100]), "infeasible", rule.alpha)
        if rule.cells:
            floors = np.array([floor for floor, _ in rule.cells], dtype=np.float64) / total
            split = len(rule.cells) > 1  # the cells' two tests share alpha
            self.feasible = SequentialTest(total, np.array([drop for _, drop in rule.cells]) / 100, "feasible",
                                           rule.alpha / 2 if split else rule.alpha)
            if split:
                self.fewer_better = SequentialTest(total, floors, "feasible", rule.alpha / 2, low=0.0, high=1.0)

    @property
    def positions(self) -> int:
        """Positions of the evaluation order read (the prefix's end)."""
        return self.rule.shards[self.looked - 1][1] if self.looked else 0

    def add(self, per_image: np.ndarray) -> Side | None:
        """The next shard of the prefix; the side the candidate is now certainly on (the
        validation stops), or None (go on; the last shard never stops: the result is exact)."""
        d = self.rule.differences(self.looked, per_image)
        self.looked += 1
        worse, better = discordant(d)
        self.worse, self.better = self.worse + worse, self.better + better
        self.chunks.append(d)
        x = d.astype(np.float64)
        side: Side | None = None
        if self.infeasible is not None and self.infeasible.update(x)[0]:
            side = "infeasible"
        if self.feasible is not None:
            below = self.feasible.update(x)
            if self.fewer_better is not None:  # every cell ruled out: its drop, or its better images
                below = below | self.fewer_better.update((d < 0).astype(np.float64))
            if side is None and bool(below.all()):
                side = "feasible"
        return None if self.looked >= len(self.rule.shards) else side

    def bounds(self) -> tuple[float, float]:
        """(lower, upper) anytime-valid bounds on the whole set's drop, in points."""
        return sequential_bounds(self.chunks, len(self.rule.baseline), self.rule.alpha)


def feasible_cells(baseline: np.ndarray, max_drop_points: float, confidence: float | None,
                   count: int = 24) -> list[tuple[int, float]]:
    """What a feasible stop must rule out, as cells ``(B0, D)``: a candidate whose whole-set
    ``better`` count is at least ``B0`` and whose drop is at least ``D`` points may be
    infeasible; the stop needs, for every cell, the drop certainly below ``D`` or the better
    images certainly below ``B0`` (an intersection-union test: only the cell the truth lies
    in can err, so the two tests at ``alpha / 2`` each keep the whole at ``alpha``).

    Without a decision with confidence: one cell, the limit. With one, feasibility is
    :func:`drop_upper_bound` over the whole set within the limit, a bound that widens with
    the discordant images ``2 B + drop``; ``B`` runs from 0 to the baseline's errors (a
    candidate is better only where the baseline was wrong), cut into ``count`` cells
    (quadratic spacing: fine where few are better), each with the largest drop whose bound
    is within the limit at the cell's top."""
    if confidence is None:
        return [(0, max_drop_points)]
    total = len(baseline)
    wrong = int(total - np.count_nonzero(baseline))
    right = total - wrong

    def largest_drop(better: int) -> float:
        def upper(drop_points: float) -> float:
            worse = min(right, max(0, better + round(drop_points / 100 * total)))
            return drop_upper_bound(worse, better, total, confidence)

        low, high = -100.0 * better / total, max_drop_points  # no fewer than 0 worse images
        if upper(low) > max_drop_points:
            return low
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if upper(mid) <= max_drop_points + 1e-9 else (low, mid)
        return low

    edges = sorted({round(wrong * (j / count) ** 2) for j in range(count + 1)})
    drops = [largest_drop(b) for b in edges]
    # a cell [edges[j], edges[j+1]]: the smaller of its ends' drops (the bound is not assumed monotone)
    return [(edges[j], min(drops[j], drops[j + 1])) for j in range(len(edges) - 1)] or [(0, drops[0])]


def discordant(d: np.ndarray) -> tuple[int, int]:
    """``(worse, better)`` of per-image differences ``d`` (+1 worse, -1 better)."""
    return int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0))


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
