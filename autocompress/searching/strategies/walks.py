"""Walks from the baseline, one notch at a time: greedy (AQ4SViT-Greedy) and beam
(AQ4SViT-Beam), generalised to pruning and quantization together.

Each step probes every neighbour of the current configuration(s) (the drift proxy:
cheap), ranks the moves by memory saved per unit of drift added, and asks for the
full evaluation (through the gate) of the best move(s). Greedy accepts the best move
that is feasible on accuracy and freezes the dimension of each move that is not; beam
keeps the ``beam_width`` smallest feasible configurations. While two or more moves of a
greedy step add (almost) no drift, greedy first evaluates them all together: one full
evaluation instead of one each (on Fashion-MNIST, 16- and 8-bit steps took 13 of 33).
Without the proxy the probes are full evaluations and moves are ranked by measured
accuracy drop.

When no move is left (every dimension at its end or frozen) and the budget is not spent,
greedy trades: it takes one more notch in a frozen dimension while giving one back in
another, where the pair saves bytes overall; the trades are probed, ranked like moves
and evaluated in turn until one is accepted (the walk goes on from it) or
``max_failed_trades`` in a row break the limit. On Fashion-MNIST the walk ended with 13
of its 40 full evaluations unspent: the first block could not go from 25 % to
50 % pruned on its own, but could for one bit back on the head.

A move that saves less than ``min_step_share`` of the bytes still to save (to the memory
goal, or of the current footprint once it is met) is ranked after every larger move: each
full evaluation costs the same, and walking a tiny layer (the classification head) one
notch at a time spent most of a budget on Fashion-MNIST for 0.4 % of the model.

Beam respects the budget: each step it fully evaluates as many of its best-ranked
moves as the full evaluations left allow for the steps its best configuration could
still take (the notches left in the dimensions not ruled out), at most ``beam_width``,
at least one; a tight budget makes it greedy-like, an ample one the full beam. Like
greedy's frozen dimensions, a move at least as aggressive in every dimension as a
configuration that broke the accuracy limit is not tried.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from autocompress.searching.base import Strategy, StrategyOptions, register_strategy
from autocompress.searching.results import Request, Result
from autocompress.searching.space import Config
from autocompress.searching.strategies._moves import baseline_result, move_score, negligible


class WalkOptions(StrategyOptions):
    min_step_share: float = Field(
        0.02, ge=0, lt=1,
        description="a move saving less than this share of the bytes still to save (to the memory goal, or of the "
                    "current footprint once it is met) is evaluated only after every larger move; 0 ranks by score "
                    "alone")


class GreedyOptions(WalkOptions):
    """AQ4SViT-Greedy generalised to pruning and quantization."""

    name: Literal["greedy"] = Field(description="the strategy (each takes its own options besides seed)")
    free_share: float = Field(
        0.01, ge=0, lt=1,
        description="a move whose added drift is at most this share of the current configuration's drift is free; "
                    "while two or more moves are free, greedy first asks for one full evaluation of all of them "
                    "together, and takes them one at a time only if that breaks the accuracy limit; 0 takes every "
                    "move on its own")
    max_failed_trades: int = Field(
        3, ge=0,
        description="once no move is left, trade (one notch more in a frozen dimension, one less in another, fewer "
                    "bytes in all) until this many trades in a row break the accuracy limit; 0 ends the walk there")


class BeamOptions(WalkOptions):
    """AQ4SViT-Beam: the greedy moves, keeping the best ``beam_width`` configurations."""

    name: Literal["beam"] = Field(description="the strategy (each takes its own options besides seed)")
    beam_width: PositiveInt = Field(4, description="configurations kept at each step")
    conformance_settings = {"beam_width": 3}


class _Walk(Strategy):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.known: dict[Config, Result] = {self.space.baseline(): baseline_result(self.constraints.baseline_bytes,
                                                                                 self.constraints.baseline_energy_mj)}
        self.asked: set[tuple[Config, str]] = set()
        self.broken: list[Config] = []  # fully evaluated configurations that broke the accuracy limit
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def _ruled_out(self, config: Config) -> bool:
        """At least as aggressive everywhere as a configuration that broke the limit."""
        return any(all(a >= b for a, b in zip(config, broken)) for broken in self.broken)

    def _probe_missing(self, configs: list[Config]) -> list[Request] | None:
        """Probe requests for the configurations not known yet; None when all are known."""
        missing = [c for c in configs if c not in self.known]
        if not missing:
            return None
        fresh = [c for c in missing if (c, "probe") not in self.asked]
        self.asked.update((c, "probe") for c in fresh)
        return [self.request(c, "probe") for c in fresh]  # [] while waiting for answers

    def _rank_key(self, parent: Result, child: Result) -> tuple[bool, float]:
        """Larger moves first, then by saving per unit of signal added."""
        return (negligible(parent, child, self.constraints, self.options.min_step_share),
                -move_score(parent, child, self.signal, self.constraints))

    def _record(self, request: Request, result: Result) -> None:
        previous = self.known.get(request.config)
        if previous is None or result.evaluated or previous.gate == "not asked":
            self.known[request.config] = result


@register_strategy("greedy", GreedyOptions)
class GreedyStrategy(_Walk):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.current: Config = self.space.baseline()
        self.frozen: set[int] = set()
        self.ranked: list[tuple[int, Config]] | None = None
        self.awaiting: Config | None = None
        self.together: Config | None = None  # this step's free moves taken at once, while still to try
        self.broken_together: list[Config] = []  # free moves taken at once that broke the accuracy limit
        self.trades: list[Config] | None = None  # ranked trades of the current configuration, while trading
        self.failed_trades = 0  # trades in a row that broke the limit

    def ask(self, n: int) -> list[Request]:
        if self._done or self.awaiting is not None:
            return []
        if self.ranked is None:
            moves = self.space.neighbours(self.current, frozenset(self.frozen))
            known_broken = {d for d, c in moves if c in self.broken}  # after a trade: given back, known to break
            if known_broken:
                self.frozen |= known_broken
                moves = [(d, c) for d, c in moves if d not in known_broken]
            if not moves:
                return self._trade()
            probes = self._probe_missing([c for _, c in moves])
            if probes is not None:
                return probes
            parent = self.known[self.current]
            self.ranked = sorted(moves, key=lambda m: (*self._rank_key(parent, self.known[m[1]]), m[0]))
            self.together = self._free_moves_together(parent)
        if self.together is not None:
            probes = self._probe_missing([self.together])
            if probes is not None:
                return probes
            if self._still_free(self.together):
                self.awaiting = self.together
                self.asked.add((self.together, "full"))
                return [self.request(self.together, "full")]
            self.together = None
        dim, config = self.ranked[0]
        self.awaiting = config
        self.asked.add((config, "full"))
        return [self.request(config, "full")]

    def _trade(self) -> list[Request]:
        """The next trade to evaluate in full (probing the trades first), or the end of the walk."""
        if (self.failed_trades >= self.options.max_failed_trades
                or (self.full_left is not None and self.full_left <= 0)):
            self._done = True
            return []
        if self.trades is None:
            candidates = []
            for a in sorted(self.frozen):
                if self.current[a] + 1 >= len(self.space.dims[a].choices):
                    continue
                for b, notch in enumerate(self.current):
                    if b != a and notch > 0:
                        config = list(self.current)
                        config[a] += 1
                        config[b] -= 1
                        config = tuple(config)
                        if (config, "full") not in self.asked and not self._ruled_out(config):
                            candidates.append(config)
            probes = self._probe_missing(candidates)
            if probes is not None:
                return probes
            parent = self.known[self.current]
            smaller = [c for c in candidates if self.known[c].memory_bytes is not None
                       and self.known[c].memory_bytes < parent.memory_bytes]
            self.trades = sorted(smaller, key=lambda c: (-move_score(parent, self.known[c], self.signal,
                                                                     self.constraints), c))
        if not self.trades:
            self._done = True
            return []
        config = self.trades[0]
        self.awaiting = config
        self.asked.add((config, "full"))
        return [self.request(config, "full")]

    def _added_signal(self, parent: Result, child: Result) -> float | None:
        """The signal ``child`` adds to ``parent``; None while either is unknown."""
        parent_signal, child_signal = self.signal(parent), self.signal(child)
        return None if parent_signal is None or child_signal is None else child_signal - parent_signal

    def _free_moves_together(self, parent: Result) -> Config | None:
        """The configuration taking every free move of this step at once (each adds at most
        ``free_share`` of the parent's signal): None unless two or more are free, or when it
        was fully evaluated before."""
        parent_signal = self.signal(parent)
        if self.options.free_share <= 0 or parent_signal is None or parent_signal <= 0:
            return None
        allowance = self.options.free_share * parent_signal
        free = [(d, c) for d, c in self.ranked
                if (added := self._added_signal(parent, self.known[c])) is not None and added <= allowance]
        if len(free) < 2:
            return None
        together = list(self.current)
        for d, c in free:
            together[d] = c[d]
        together = tuple(together)
        if (together, "full") in self.asked or any(all(a >= b for a, b in zip(together, broken))
                                                   for broken in self.broken_together):
            return None  # tried, or at least as aggressive everywhere as a combination that broke the limit
        return together

    def _still_free(self, together: Config) -> bool:
        """The probe of the moves taken together adds at most the free share for each move."""
        parent = self.known[self.current]
        moves = sum(a != b for a, b in zip(together, self.current))
        added = self._added_signal(parent, self.known[together])
        return added is not None and added <= moves * self.options.free_share * self.signal(parent)

    def tell(self, request: Request, result: Result) -> None:
        self._record(request, result)
        if request.stage != "full" or request.config != self.awaiting:
            return
        self.awaiting = None
        if not self.acceptable(result) and result.evaluated:
            self.broken.append(request.config)
        if self.trades is not None:
            self.trades.pop(0)
            if self.acceptable(result):
                self.current, self.ranked, self.trades, self.failed_trades = request.config, None, None, 0
            else:
                self.failed_trades += 1
                self.trades = [c for c in self.trades if not self._ruled_out(c)]
            return
        if request.config == self.together:
            self.together = None
            if self.acceptable(result):
                self.current, self.ranked = request.config, None
            else:
                self.broken_together.append(request.config)
            return  # else one move at a time, as ranked
        dim, config = self.ranked.pop(0)
        if self.acceptable(result):
            self.current, self.ranked = config, None
        else:
            self.frozen.add(dim)
            if not self.ranked:
                self.ranked = None


@register_strategy("beam", BeamOptions)
class BeamStrategy(_Walk):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.width = self.options.beam_width
        self.beam: list[Config] = [self.space.baseline()]
        self.visited: set[Config] = set(self.beam)
        self.ranked: list[Config] | None = None
        self.parent: dict[Config, Config] = {}
        self.chosen: list[Config] = []
        self.feasible: list[Config] = []

    def _children(self) -> list[Config]:
        children: list[Config] = []
        for config in self.beam:
            for _, child in self.space.neighbours(config):
                if child not in self.visited and child not in children and not self._ruled_out(child):
                    children.append(child)
                    self.parent.setdefault(child, config)
        return children

    def ask(self, n: int) -> list[Request]:
        if self._done:
            return []
        if self.chosen:  # waiting for this step's full evaluations
            return []
        if self.ranked is None:
            children = self._children()
            if not children:
                self._done = True
                return []
            probes = self._probe_missing(children)
            if probes is not None:
                return probes

            self.ranked = sorted(children, key=lambda c: (*self._rank_key(self.known[self.parent[c]], self.known[c]), c))
            self.feasible = []
        if not self.ranked:  # every child tried, none feasible
            self._next_beam()
            return self.ask(n) if not self._done else []
        width = self._affordable_width()
        self.chosen = self.ranked[:width]
        del self.ranked[:width]
        self.asked.update((c, "full") for c in self.chosen)
        return [self.request(c, "full") for c in self.chosen]

    def _steps_left(self) -> int:
        """Steps the best configuration of the beam could still take: the notches left in
        its dimensions whose next move is not ruled out."""
        best = self.beam[0]
        steps = 0
        for d, config in self.space.neighbours(best):
            if not self._ruled_out(config):
                steps += len(self.space.dims[d].choices) - 1 - best[d]
        return steps

    def _affordable_width(self) -> int:
        """Moves to evaluate fully this step: what the budget left allows for the steps
        still possible, within [1, beam_width]."""
        if self.full_left is None:
            return self.width
        return max(1, min(self.width, self.full_left // max(1, self._steps_left())))

    def tell(self, request: Request, result: Result) -> None:
        self._record(request, result)
        if request.stage != "full" or request.config not in self.chosen:
            return
        self.chosen.remove(request.config)
        self.visited.add(request.config)
        if self.acceptable(result):
            self.feasible.append(request.config)
        elif result.evaluated:
            self.broken.append(request.config)
            self.ranked = [c for c in self.ranked or [] if not self._ruled_out(c)]
        if not self.chosen and (self.feasible or not self.ranked):
            self._next_beam()

    def _next_beam(self) -> None:
        if not self.feasible:
            self._done = True
            return
        by_size = sorted(self.feasible, key=lambda c: (self.known[c].memory_bytes, -self.known[c].accuracy, c))
        self.beam = by_size[: self.width]
        self.ranked, self.feasible = None, []
