"""Quantizer grids that use all 2^b levels, measured against the restricted symmetric
grid autocompress uses (2^b - 1 levels: a "2-bit" channel has 3), on the digits
reference with the spec's compression defaults (BatchNorm folded, MSE clipping,
BatchNorm recalibration).

    python experiments/bench/grids.py [--budget 40] [--write]

Grids, per output channel, each with MSE clipping over the same range fractions:
- ``restricted`` (autocompress): integers in [-(2^(b-1)-1), 2^(b-1)-1], scale = range / (2^(b-1)-1);
- ``full symmetric``: integers in [-2^(b-1), 2^(b-1)-1] (one more level, on the side of
  the channel where it lowers the error most), one scale;
- ``asymmetric``: integers in [0, 2^b-1] with a zero point per channel (its byte is not
  counted in the footprints below, so this grid is favoured).

The alternatives are written here, as fake quantization swapped into the candidate
builder of this process; they are not in the library (see the README, "Compression
operators"). Printed: top-1 and drift of uniform configurations, and the best feasible
point of a greedy search at the budget.
"""

from __future__ import annotations

import sys

import torch

from _results import DIGITS_SPEC, budget_arguments, publish, run_search
import autocompress.compress.candidate as candidate
from autocompress.compress.quantization import CLIP_RATIOS
from autocompress.engine import Setup, Worker
from autocompress.spec import load_spec
from autocompress.vocabulary import FULL_PRECISION


def _keep_best(flat, candidates):
    best = torch.full((flat.shape[0],), float("inf"))
    out = flat.clone()
    for deq in candidates:
        error = ((deq - flat) ** 2).sum(1)
        better = error < best
        best = torch.where(better, error, best)
        out[better] = deq[better]
    return out


def full_symmetric(weight: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1)
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    top = flat.abs().amax(1)

    def grid(ratio, sign):
        scale = torch.where(top > 0, top * ratio / qmax, torch.ones_like(top))
        return sign * torch.clamp(torch.round(sign * flat / scale[:, None]), -qmax, qmax - 1) * scale[:, None]

    return _keep_best(flat, (grid(r, s) for r in CLIP_RATIOS for s in (1.0, -1.0))).reshape(weight.shape)


def asymmetric(weight: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2 ** bits - 1
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    low, high = flat.amin(1).clamp(max=0), flat.amax(1).clamp(min=0)

    def grid(ratio):
        scale = torch.where(high > low, (high - low) * ratio / levels, torch.ones_like(high))
        zero = torch.round(-low * ratio / scale)
        q = torch.clamp(torch.round(flat / scale[:, None]) + zero[:, None], 0, levels)
        return (q - zero[:, None]) * scale[:, None]

    return _keep_best(flat, (grid(r) for r in CLIP_RATIOS)).reshape(weight.shape)


GRIDS = {"restricted (autocompress)": None, "full symmetric": full_symmetric, "asymmetric": asymmetric}
ORIGINAL = candidate.fake_quantize


def use_grid(function) -> None:
    """Swap the candidate builder's fake quantization for ``function`` (None: the library's)."""
    if function is None:
        candidate.fake_quantize = ORIGINAL
        return

    @torch.no_grad()
    def fake_quantize(net, bits, *, clip=False):
        modules = dict(net.named_modules())
        for path, b in bits.items():
            if b != FULL_PRECISION:
                modules[path].weight.copy_(function(modules[path].weight, b))

    candidate.fake_quantize = fake_quantize


def main() -> int:
    args = budget_arguments(__doc__)
    spec = load_spec(DIGITS_SPEC)
    uniform = [(rate, bits) for rate in (0.0, 0.25) for bits in (4, 3, 2)]
    rows: dict = {}
    searches = []
    for label, function in GRIDS.items():
        use_grid(function)
        setup = Setup.open(spec, say=lambda _m: None)
        worker = Worker(setup.session, setup.groups)
        for rate, bits in uniform:
            config = {"prune": {g.name: rate for g in setup.groups.groups} if rate else {},
                      "bits": {u.name: bits for u in setup.space.units.values() if u.kind == "bits"}}
            _memory, drift, _activity = worker.probe(config)
            rows.setdefault((rate, bits), []).append(f"{worker.full(config).accuracy:.2f} / {drift:.3f}")
        run = run_search(spec, {"budget.max_full_evaluations": args.budget})
        best = run.best
        searches.append(f"| {label} | " + ("none | - | -" if best is None else
                                           f"{best.memory_bytes:,} | {best.memory_saving:.1%} | {best.accuracy:.2f}")
                        + f" | {run.full_evaluations} |")
        print(label, searches[-1], file=sys.stderr)
    use_grid(None)
    lines = ["Uniform configurations (every group pruned at the rate with the default VBP importance; every layer "
             "at the bit-width), top-1 % / drift:", "",
             "| prune | bits | " + " | ".join(GRIDS) + " |", "|---:|---:|" + "---:|" * len(GRIDS)]
    lines += [f"| {rate:.0%} | {bits} | " + " | ".join(cells) + " |" for (rate, bits), cells in rows.items()]
    lines += ["", f"Greedy search, block granularity, 1.5 points, at most {args.budget} full evaluations:", "",
              "| grid | best feasible bytes | saved | top-1 % | full evaluations |", "|---|---:|---:|---:|---:|"]
    lines += searches
    publish("grids", "Quantizer grids with all 2^b levels", "python experiments/bench/grids.py --write",
            "\n".join(lines), write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
