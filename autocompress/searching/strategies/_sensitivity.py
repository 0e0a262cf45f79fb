"""Per-dimension sensitivity (PSViT's and PrimeSVT's analysis step), for any strategy
that wants it: every dimension probed alone at every one of its choices, then
allocations that trade the bytes each choice saves against the signal it adds.

The allocations come from a Lagrangian sweep: for a price ``lam`` each dimension takes
independently the choice that maximises ``saved - lam * added signal``, assuming (only
to propose, never to judge) that savings and signals add up across dimensions. Sweeping
``lam`` from high to low walks from the free moves to everything at its most aggressive
choice; the allocations are the distinct points of that walk, with the one-notch steps
between them filled in, each probed so that seeds are chosen on measured footprints.
"""

from __future__ import annotations

from autocompress.searching.results import Request, Result
from autocompress.searching.space import Config, SearchSpace


class Sensitivity:
    """Two rounds of probes: every dimension alone at each of its choices, then the
    allocations of the sweep (:meth:`path`), so that the seeds are chosen on measured
    footprints and signals rather than on the additive estimate."""

    def __init__(self, space: SearchSpace, baseline_bytes: int, signal):
        self.space = space
        self.baseline_bytes = baseline_bytes
        self.signal = signal
        base = space.baseline()
        self.keys = [(d, k) for d, dim in enumerate(space.dims) for k in range(1, len(dim.choices))]
        self.configs = {key: base[: key[0]] + (key[1],) + base[key[0] + 1:] for key in self.keys}
        self.results: dict[tuple[int, int], Result] = {}
        self.walk: list[Config] | None = None  # the sweep's allocations, once every dimension is probed
        self.measured: dict[Config, Result] = {}
        self.asked: set[Config] = set()

    @property
    def complete(self) -> bool:
        return self.walk is not None and all(config in self.measured for config in self.walk)

    def requests(self, make, n: int) -> list[Request]:
        """Up to ``n`` probe requests (built by ``make(config, stage)``) not asked yet."""
        if len(self.results) == len(self.keys) and self.walk is None:
            self.walk = self.path()
        todo = list(self.configs.values()) if self.walk is None else self.walk
        fresh = [config for config in todo if config not in self.asked][:n]
        self.asked.update(fresh)
        return [make(config, "probe") for config in fresh]

    def tell(self, config: Config, result: Result) -> None:
        """Record a probe (those of other configurations are ignored)."""
        changed = [(d, k) for d, k in enumerate(config) if k != 0]
        if len(changed) == 1 and changed[0] in self.configs:
            self.results.setdefault(changed[0], result)
        if config in self.asked:
            self.measured.setdefault(config, result)

    def table(self) -> dict[tuple[int, int], tuple[float, float]]:
        """``(d, k) -> (bytes saved, signal added)`` against the least signal any probe gave
        (compensation alone moves the signal off zero); the added signal is made
        non-decreasing along each dimension's choices. Unusable probes are left out."""
        signal = self.signal
        values = {key: (r.memory_bytes, signal(r)) for key, r in self.results.items()
                  if r.error is None and r.memory_bytes is not None and signal(r) is not None}
        if not values:
            return {}
        floor = min(s for _, s in values.values())
        out: dict[tuple[int, int], tuple[float, float]] = {}
        for d, dim in enumerate(self.space.dims):
            worst = 0.0
            for k in range(1, len(dim.choices)):
                if (d, k) not in values:
                    continue
                size, value = values[(d, k)]
                worst = max(worst, value - floor)
                out[(d, k)] = (float(self.baseline_bytes - size), worst)
        return out

    def allocations(self) -> list[Config]:
        """The distinct points of the Lagrangian sweep, from the least to the most aggressive."""
        table = self.table()
        ratios = sorted({saved / added for saved, added in table.values() if added > 0 and saved > 0})
        points: list[Config] = []
        for lam in [float("inf")] + ratios[::-1] + [0.0]:
            config = []
            for d, dim in enumerate(self.space.dims):
                best, best_value = 0, 0.0
                for k in range(1, len(dim.choices)):
                    if (d, k) not in table:
                        continue
                    s, a = table[(d, k)]
                    value = (s if a == 0 else -1.0) if lam == float("inf") else s - lam * a
                    if value > best_value or (value == best_value and best and s > table[(d, best)][0]):
                        best, best_value = k, value
                config.append(best)
            if not points or points[-1] != tuple(config):
                points.append(tuple(config))
        return points

    def path(self) -> list[Config]:
        """The sweep's allocations with the steps between them filled in, one notch of one
        dimension at a time (the dimension that saves most per signal added first), so
        that neighbouring allocations differ by little; the baseline left out."""
        table = self.table()

        def ratio(d: int, k: int) -> float:
            saved, added = table.get((d, k), (0.0, 0.0))
            return saved / added if added > 0 else float("inf")

        points = self.allocations()
        walk: list[Config] = []
        current = list(self.space.baseline())
        for target in points:
            while tuple(current) != target:
                moves = [d for d in range(len(current)) if current[d] != target[d]]
                d = max(moves, key=lambda m: (ratio(m, target[m]), -m))
                current[d] += 1 if target[d] > current[d] else -1
                if any(current) and tuple(current) not in walk:
                    walk.append(tuple(current))
        return walk

    def seeds(self, count: int, meets) -> list[Config]:
        """Up to ``count`` allocations of the path whose measured footprint ``meets`` the
        memory limits, spread evenly from the least to the most aggressive."""
        usable = [config for config in self.walk or []
                  if (r := self.measured.get(config)) is not None and r.error is None
                  and r.memory_bytes is not None and meets(r.memory_bytes)]
        if count <= 0 or not usable:
            return []
        if len(usable) <= count:
            return usable
        step = (len(usable) - 1) / (count - 1) if count > 1 else 0
        return list(dict.fromkeys(usable[round(i * step)] for i in range(count)))
