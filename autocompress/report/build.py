"""The report of a run: PNG plots and one self-contained ``report.html`` (images
embedded), built from the run store alone.

- ``pareto.png``: top-1 accuracy against footprint (MB) of every fully evaluated
  candidate, the Pareto front, the baseline, the feasible region of the constraints
  (shaded) and the chosen point;
- ``configs.png``: the chosen and Pareto configurations per unit: bit-width of each
  quantized layer, pruning rate of each channel group;
- ``proxy.png``: drift against accuracy drop (Spearman correlation in the title) and
  the gate's threshold over the full evaluations;
- ``progress.png``: hypervolume and best feasible footprint against full evaluations
  and against wall time;
- ``sensitivity.png``: per dimension, the drift (and the accuracy drop where fully
  evaluated) of the candidates that moved that dimension alone, against its pruning
  rate or bit-width (pareto.json's ``sensitivity``).
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402

from autocompress.atomic import atomic_write  # noqa: E402
from autocompress.engine import RunStore, pareto_document  # noqa: E402
from autocompress.engine.pareto_file import recommendation_line  # noqa: E402
from autocompress.report.style import REPORT_STYLE  # noqa: E402
from autocompress.vocabulary import energy_unit  # noqa: E402
from autocompress.searching import hypervolume, pareto_front  # noqa: E402
from autocompress.vocabulary import BITS_CHOICES  # noqa: E402

MB = 1e6
PLOTS = ("pareto", "configs", "proxy", "progress", "sensitivity")


@dataclass
class _Run:
    document: dict
    constraints: object
    fulls: list  # Records of full evaluations, in order
    elapsed: list[float]  # wall seconds of the search when each full evaluation finished
    thresholds: list[tuple[int, float | None]]  # (full evaluations so far, gate threshold) per journal row


def _load(store: RunStore) -> _Run:
    sessions = store.sessions()
    offsets, total = {}, 0.0
    for s in sessions:  # search time: each session's own span, gaps between sessions left out
        offsets[s["id"]] = (total, s["started_at"])
        total += max(0.0, (s["ended_at"] or s["updated_at"]) - s["started_at"])
    fulls, elapsed, thresholds, count = [], [], [], 0
    for record in store.records():
        if record.kind == "full":
            fulls.append(record)
            count += 1
            base, start = offsets.get(record.session, (0.0, record.finished_at))
            elapsed.append(base + record.finished_at - start)
        thresholds.append((count, record.gate_threshold))
    return _Run(pareto_document(store), store.constraints(), fulls, elapsed, thresholds)


def bit_colours() -> tuple[list[int], ListedColormap, BoundaryNorm]:
    """One colour per bit-width a spec may choose (7 included), bins bounded half-way between them."""
    levels = list(BITS_CHOICES)
    cmap = ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 1, len(levels))))
    middles = [(a + b) / 2 for a, b in zip(levels, levels[1:])]
    return levels, cmap, BoundaryNorm([levels[0] - 0.5, *middles, levels[-1] + 8], cmap.N)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, format="png"))
    plt.close(fig)
    return path


def plot_pareto(run: _Run, path: Path) -> Path:
    c, doc = run.constraints, run.document
    fig, ax = plt.subplots(figsize=(7.5, 5))
    xs = np.array([r.result.memory_bytes for r in run.fulls]) / MB
    ys = np.array([r.result.accuracy for r in run.fulls])
    feasible = np.array([bool(r.result.feasible) for r in run.fulls], dtype=bool)
    limit_bytes = [c.baseline_bytes * (1 - c.min_saving)] if c.min_saving is not None else []
    if c.max_bytes is not None:
        limit_bytes.append(c.max_bytes)
    x_limit = min(limit_bytes) / MB if limit_bytes else c.baseline_bytes / MB
    y_limit = c.baseline_accuracy - c.max_drop_points
    y_low = min([y_limit - 2, *(ys.tolist() or [y_limit])])
    y_low -= 0.04 * (c.baseline_accuracy + 1.5 - y_low)  # room below the lowest point
    ax.fill_between([0, x_limit], y_limit, 100.5, color="tab:green", alpha=0.12,
                    label=f"feasible: drop <= {c.max_drop_points:g} pts, <= {x_limit:.3g} MB")
    ax.scatter(xs[~feasible], ys[~feasible], s=18, color="0.55", label="evaluated, infeasible")
    ax.scatter(xs[feasible], ys[feasible], s=18, color="tab:green", label="evaluated, feasible")
    front = sorted(doc["points"], key=lambda p: p["memory_bytes"])
    if front:
        fx = [p["memory_bytes"] / MB for p in front]
        fy = [p["accuracy"] for p in front]
        ax.step(fx, fy, where="post", color="tab:blue", lw=1.6, label="Pareto front")
        ax.scatter(fx, fy, s=36, color="tab:blue", zorder=3)
    tuned = doc.get("tuned")
    if tuned:  # fine-tuned points (arrows from the search's accuracy) and the front they make
        for entry in tuned["finetuned"].values():
            if entry.get("state") != "done":
                continue
            x = entry["memory_bytes"] / MB
            ax.annotate("", xy=(x, entry["accuracy"]), xytext=(x, entry["accuracy_before"]),
                        arrowprops=dict(arrowstyle="->", color="tab:purple", lw=1.2), zorder=4)
        tuned_front = sorted(tuned["points"], key=lambda p: p["memory_bytes"])
        ax.step([p["memory_bytes"] / MB for p in tuned_front], [p["accuracy"] for p in tuned_front], where="post",
                color="tab:purple", lw=1.4, ls="--", label="Pareto front after fine-tuning")
        ys = np.concatenate([ys, [e["accuracy"] for e in tuned["finetuned"].values() if e.get("accuracy") is not None]])
        y_low = min(y_low, float(ys.min()) - 1.0)
    ax.scatter([c.baseline_bytes / MB], [c.baseline_accuracy], marker="*", s=220, color="black", zorder=4,
               label=f"baseline ({c.baseline_accuracy:.2f} %, {c.baseline_bytes / MB:.3g} MB)")
    best = next((p for p in doc["points"] if p["id"] == doc["best"]), None)
    if best is not None:
        ax.scatter([best["memory_bytes"] / MB], [best["accuracy"]], s=260, facecolors="none", edgecolors="red",
                   linewidths=2, zorder=5, label=f"recommended {best['id']} ({best['memory_saving']:.1%} saved)")
    ax.set_xlim(0, c.baseline_bytes / MB * 1.05)
    ax.set_ylim(max(0.0, y_low), min(100.5, c.baseline_accuracy + 1.5))
    ax.set_xlabel("Footprint (MB)")
    ax.set_ylabel("Top-1 accuracy (%)")
    ax.set_title(f"{doc['spec']}: accuracy vs memory ({len(run.fulls)} full evaluations)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_energy(run: _Run, path: Path, baseline_rates: dict) -> Path:
    """Energy estimate vs accuracy of every full evaluation (with the energy limit), and
    the firing rate of each neuron layer: the baseline against the chosen point."""
    c, doc = run.constraints, run.document
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    fulls = [r.result for r in run.fulls if r.result.energy_mj is not None and r.result.exact]
    base = doc["baseline"]["energy_mj"]
    unit, scale = energy_unit(base)
    feasible = [r for r in fulls if r.feasible]
    other = [r for r in fulls if not r.feasible]
    left.scatter([r.energy_mj / scale for r in other], [r.accuracy for r in other], s=18, color="0.55",
                 label="evaluated, infeasible")
    left.scatter([r.energy_mj / scale for r in feasible], [r.accuracy for r in feasible], s=18, color="tab:green",
                 label="evaluated, feasible")
    left.scatter([base / scale], [c.baseline_accuracy], marker="*", s=220, color="black", zorder=4,
                 label=f"baseline ({base / scale:.3g} {unit})")
    if c.max_energy_mj is not None:
        left.axvline(c.max_energy_mj / scale, color="tab:red", ls="--", lw=1, label="energy limit")
    left.axhline(c.baseline_accuracy - c.max_drop_points, color="tab:green", ls=":", lw=1, label="accuracy limit")
    left.set_xlabel(f"Energy estimate per image ({unit})")
    left.set_ylabel("Top-1 accuracy (%)")
    left.set_title("accuracy vs energy")
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="lower right")
    best = next((r.result for r in run.fulls if r.result.candidate_id == doc["best"]), None)
    names = list(baseline_rates)
    x = np.arange(len(names))
    right.bar(x - 0.2, [baseline_rates[n] for n in names], width=0.4, color="0.6", label="baseline")
    if best is not None and best.rates:
        right.bar(x + 0.2, [best.rates.get(n, 0.0) for n in names], width=0.4, color="tab:blue",
                  label=f"chosen {best.candidate_id}")
    right.set_xticks(x, [n.replace("patch_embed.", "pe.").replace("blocks.", "b.") for n in names], rotation=90,
                     fontsize=6)
    right.set_ylabel("Firing rate (spikes per neuron per time step)")
    right.set_title("firing rate per neuron layer")
    right.legend(fontsize=8)
    return _save(fig, path)


def plot_configs(run: _Run, path: Path) -> Path:
    doc = run.document
    points = sorted(doc["points"], key=lambda p: p["memory_bytes"])
    labels = [p["id"] + (" (chosen)" if p["id"] == doc["best"] else "") for p in points]
    layers = sorted({k for p in points for k in (p["config"] or {}).get("bits", {})})
    groups = sorted({k for p in points for k in (p["config"] or {}).get("prune", {})})
    panels = [(layers, "bits", "Weight bit-width per layer", 32), (groups, "prune", "Pruning rate per channel group", 0.0)]
    panels = [panel for panel in panels if panel[0]]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.5 + 3.2 * len(panels), 0.9 + 0.26 * max(
        [len(p[0]) for p in panels] or [4])), squeeze=False)
    if not panels or not points:
        axes[0][0].text(0.5, 0.5, "no Pareto points yet", ha="center", va="center")
        axes[0][0].axis("off")
        return _save(fig, path)
    for ax, (units, key, title, default) in zip(axes[0], panels):
        values = np.array([[(p["config"] or {}).get(key, {}).get(u, default) for p in points] for u in units],
                          dtype=float)
        if key == "bits":
            levels, cmap, norm = bit_colours()
            image = ax.imshow(values, aspect="auto", cmap=cmap, norm=norm)
            bar = fig.colorbar(image, ax=ax, ticks=levels)
            bar.set_label("bits (32 = not quantized)")
        else:
            image = ax.imshow(values, aspect="auto", cmap="magma_r", vmin=0, vmax=1)
            fig.colorbar(image, ax=ax).set_label("fraction of channels removed")
        for (i, j), value in np.ndenumerate(values):
            text = f"{value:g}" if key == "bits" else f"{value:.2f}".rstrip("0").rstrip(".")
            ax.text(j, i, text, ha="center", va="center", fontsize=6,
                    color="white" if (key == "bits" and value <= 4) or (key == "prune" and value >= 0.5) else "black")
        ax.set_yticks(range(len(units)), units, fontsize=7)
        ax.set_xticks(range(len(points)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("Pareto point (smallest footprint first)")
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_proxy(run: _Run, path: Path) -> Path:
    from scipy.stats import spearmanr

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.3))
    pairs = [(r.result.drift, r.result.accuracy_drop) for r in run.fulls
             if r.result.drift is not None and not r.result.early_stopped]
    stopped = [(r.result.drift, r.result.accuracy_drop) for r in run.fulls
               if r.result.drift is not None and r.result.early_stopped]
    if stopped:
        left.scatter(*zip(*stopped), s=16, facecolors="none", edgecolors="tab:gray",
                     label=f"stopped early ({len(stopped)}; drop estimated, not in Spearman)")
    if len(pairs) >= 3:
        drift, drop = map(np.array, zip(*pairs))
        constant = np.ptp(drift) == 0 or np.ptp(drop) == 0
        rho = "undefined (constant)" if constant else f"{spearmanr(drift, drop).statistic:.3f}"
        left.scatter(drift, drop, s=16, color="tab:purple")
        left.set_title(f"Drift vs accuracy drop: Spearman {rho} (n={len(pairs)})", fontsize=10)
    else:
        left.set_title("Drift vs accuracy drop: too few points", fontsize=10)
    left.axhline(run.constraints.max_drop_points, color="tab:red", ls="--", lw=1,
                 label=f"allowed drop ({run.constraints.max_drop_points:g} pts)")
    left.set_xlabel("Membrane-potential drift (mean cosine distance)")
    left.set_ylabel("Top-1 accuracy drop (points)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    counts = [n for n, t in run.thresholds if t is not None]
    values = [t for n, t in run.thresholds if t is not None]
    total = max(1, len(run.fulls))
    if values:
        right.step(counts + [total], values + [values[-1]], where="post", color="tab:orange", label="threshold")
        if counts[0] > 0:
            right.axvspan(0, counts[0], color="0.9", label="no threshold yet: every candidate passes")
        drifts = [r.result.drift for r in run.fulls if r.result.drift is not None]
        right.set_ylim(0, max(values + drifts) * 1.1)
        right.legend(fontsize=8, loc="lower right")
        right.set_title("Gate threshold (candidates drifting more are not evaluated)", fontsize=10)
    else:
        right.set_title("Gate threshold: never set (every candidate passed)", fontsize=10)
    right.set_xlim(0, total)
    right.set_xlabel("Full evaluations so far")
    right.set_ylabel("Drift threshold")
    right.grid(alpha=0.3)
    return _save(fig, path)


def plot_progress(run: _Run, path: Path) -> Path:
    c = run.constraints
    hv, best = [], []
    results = []
    for record in run.fulls:
        results.append(record.result)
        hv.append(hypervolume(pareto_front(results), c))
        feasible = [r.memory_bytes for r in results if r.feasible]
        best.append(min(feasible) / MB if feasible else np.nan)
    steps = np.arange(1, len(results) + 1)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharey="row")
    for col, (x, xlabel) in enumerate(((steps, "Full evaluations"), (np.array(run.elapsed), "Wall time (s)"))):
        axes[0][col].step(x, hv, where="post", color="tab:blue")
        axes[0][col].set_ylabel("Hypervolume (saving x accuracy/baseline)")
        axes[1][col].step(x, best, where="post", color="tab:green")
        axes[1][col].set_ylabel("Best feasible footprint (MB)")
        axes[1][col].set_xlabel(xlabel)
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(alpha=0.3)
            ax.set_xlim(0, max(1.0, float(x.max()) if len(x) else 1.0))
    axes[0][0].set_title("Search progress by full evaluations", fontsize=10)
    axes[0][1].set_title("Search progress by wall time", fontsize=10)
    return _save(fig, path)


def plot_sensitivity(run: _Run, path: Path) -> Path:
    rows = run.document.get("sensitivity") or []
    kinds = [k for k in ("prune", "bits") if any(r["kind"] == k for r in rows)] or ["prune"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.3), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        names = list(dict.fromkeys(r["dimension"] for r in rows if r["kind"] == kind))
        for i, name in enumerate(names):
            mine = [r for r in rows if r["dimension"] == name and r["proxy"] is not None]
            colour = plt.cm.tab10(i % 10)
            ax.plot([r["choice"] for r in mine], [r["proxy"] for r in mine], "o-", ms=4, color=colour, label=name)
            for r in mine:
                if r["accuracy_drop"] is not None:
                    ax.annotate(f"{r['accuracy_drop']:+.1f}", (r["choice"], r["proxy"]), fontsize=7, color=colour,
                                xytext=(3, 3), textcoords="offset points")
        if kind == "bits":
            ax.set_xscale("log", base=2)
            ticks = sorted({r["choice"] for r in rows if r["kind"] == "bits"})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.invert_xaxis()
        ax.set_xlabel("pruning rate" if kind == "prune" else "bit-width")
        ax.set_ylabel("Membrane-potential drift")
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize=7, ncol=2)
            ax.set_title(f"{'Pruning' if kind == 'prune' else 'Quantization'} sensitivity, one dimension at a time "
                         "(labels: accuracy drop, pts)", fontsize=9)
        else:
            ax.set_title("No candidate of this run moved one dimension alone", fontsize=10)
    return _save(fig, path)


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(run_dir: str | os.PathLike) -> Path:
    """Write the PNGs and report.html into ``run_dir``; return the HTML's path."""
    run_dir = Path(run_dir)
    with RunStore.open_reader(run_dir) as store:
        run = _load(store)
        baseline_energy = store.meta("baseline_energy")
    if run.constraints is None:
        raise ValueError(f"{run_dir}: no baseline measured yet, nothing to report")
    paths = {
        "pareto": plot_pareto(run, run_dir / "pareto.png"),
        "configs": plot_configs(run, run_dir / "configs.png"),
        "proxy": plot_proxy(run, run_dir / "proxy.png"),
        "progress": plot_progress(run, run_dir / "progress.png"),
        "sensitivity": plot_sensitivity(run, run_dir / "sensitivity.png"),
    }
    baseline_rates = (baseline_energy or {}).get("rates")
    if run.document["baseline"].get("energy_mj") and baseline_rates:
        paths["energy"] = plot_energy(run, run_dir / "energy.png", baseline_rates)
    doc, c = run.document, run.constraints
    stats = doc["statistics"]
    held = doc.get("holdout")
    points = []
    for p in doc["points"]:
        row = [p["id"] + (" *" if p["id"] == doc["best"] else "")]
        if held:  # the held-out figures first: they decide the recommended point
            m = p.get("holdout")
            row += ["-", "-", "-", "-"] if m is None else [
                f"{m['accuracy']:.2f}", f"{m['accuracy_drop']:+.2f}",
                "-" if m.get("drop_upper") is None else f"{m['drop_upper']:+.2f}", "yes" if m["feasible"] else "no"]
        row += [f"{p['accuracy']:.2f}", f"{p['accuracy_drop']:+.2f}", f"{p['memory_bytes']:,}",
                f"{p['memory_saving']:.1%}", "yes" if p["feasible"] else "no",
                "-" if p["proxy"] is None else f"{p['proxy']:.4f}"]
        points.append(row)
    header = ["id (* recommended)"] + (
        ["held-out top-1 %", "held-out drop (pts)", "at most (pts)", "feasible held out", "selection top-1 %",
         "selection drop (pts)", "bytes", "saved", "feasible on selection"] if held else
        ["top-1 %", "drop (pts)", "bytes", "saved", "feasible"]) + ["drift"]
    if doc["baseline"].get("energy_mj"):
        header += ["energy / image (mJ)", "energy saved", "firing rate"]
        for row, p in zip(points, doc["points"]):
            row += ["-" if p.get("energy_mj") is None else f"{p['energy_mj']:.4g}",
                    "-" if p.get("energy_saving") is None else f"{p['energy_saving']:.1%}",
                    "-" if p.get("firing_rate") is None else f"{p['firing_rate']:.3f}"]
    held_note = ""
    if held:
        base = held["baseline_accuracy"]
        confidence = held.get("confidence")
        held_note = (f"<p>{held['images']:,} validation images ({held['fraction']:.0%}) were held out of the search; "
                     f"the baseline scores {'(not measured yet)' if base is None else f'{base:.2f} %'} on them. "
                     "The held-out columns are measured once, after the search, on images it never chose on"
                     + ("" if confidence is None else f" (at most: the drop's upper bound at {confidence:.0%} "
                        "confidence)")
                     + "; the recommended point is the last of the selection-feasible points, tested from the "
                     "largest down, to pass before the first that fails. The selection columns are what the "
                     "search decided on, optimistic for the points it kept.</p>")
    tuned_section = ""
    if doc.get("tuned"):
        rows = [[cid, f"{e['epoch']}/{e['epochs']}", e["state"], f"{e['memory_bytes']:,}",
                 f"{e['accuracy_before']:.2f}", "-" if e.get("accuracy") is None else f"{e['accuracy']:.2f}",
                 "yes" if e["feasible_before"] else "no",
                 "-" if e.get("feasible") is None else ("yes" if e["feasible"] else "no"),
                 "-" if not e.get("holdout") else f"{e['holdout']['accuracy']:.2f}"]
                for cid, e in doc["tuned"]["finetuned"].items()]
        best_tuned = doc["tuned"]["best"]
        tuned_section = (
            "<h2>Fine-tuned points</h2><p>Recovery fine-tuning (<code>autocompress finetune</code>): the candidate's "
            "structure and bit-widths kept, quantization-aware training with distillation from the uncompressed "
            "model. Accuracy after is measured on the exported tuned file; the tuned front counts each fine-tuned "
            f"candidate at its tuned accuracy. Best feasible point after fine-tuning: "
            f"<b>{html.escape(str(best_tuned))}</b>.</p>"
            + _table(rows, ["id", "epochs", "state", "bytes", "top-1 % before", "top-1 % after", "feasible before",
                            "feasible after", "held-out top-1 % after"]))
    stat_rows = [[k, v] for k, v in stats.items()]
    def bound(value) -> str:
        return "-" if value is None else f"{value:+.2f}"

    stopped = [[p["id"], p.get("side", "infeasible"), f"{p['images']:,}", f"{p['accuracy_estimate']:.2f}",
                bound(p.get("accuracy_drop_at_least")), bound(p.get("accuracy_drop_at_most")),
                f"{p['memory_bytes']:,}", "-" if p["proxy"] is None else f"{p['proxy']:.4f}"]
               for p in doc.get("early_stopped", [])]
    stopped_section = "" if not stopped else (
        "<h2>Stopped early</h2><p>Validation stopped once these candidates were certainly beyond the accuracy "
        "limit (infeasible) or certainly within it (feasible); their accuracy is an estimate over the images seen, "
        "with anytime-valid bounds on the drop over the whole selection set. None is a Pareto point: a stopped "
        "candidate that would be a point, the best or a near miss is validated on its remaining images first.</p>"
        + _table(stopped, ["id", "side", "images seen", "top-1 % (estimate)", "drop at least (pts)",
                           "drop at most (pts)", "bytes", "drift"]))
    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'
        f"<figcaption>{name}.png</figcaption></figure>" for name, path in paths.items())
    summary = html.escape(recommendation_line(doc))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>autocompress report: {html.escape(doc['spec'])}</title>
<style>{REPORT_STYLE}</style></head><body>
<h1>{html.escape(doc['spec'])}</h1>
<p>Run directory <code>{html.escape(str(run_dir.resolve()))}</code>, state <b>{html.escape(doc['state'])}</b>.
Baseline {c.baseline_accuracy:.2f} % top-1, {c.baseline_bytes:,} bytes. Constraints: accuracy drop at most
{c.max_drop_points:g} points{'' if c.min_saving is None else f', memory saving at least {c.min_saving:.0%}'}
{'' if c.max_bytes is None else f', at most {c.max_bytes:,} bytes'}.</p>
<p><b>{summary}</b></p>
<h2>Pareto points</h2>{_table(points, header)}{held_note}
{tuned_section}
{stopped_section}
<h2>Plots</h2>{images}
<h2>Search statistics</h2>{_table(stat_rows, ['statistic', 'value'])}
</body></html>
"""
    return atomic_write(run_dir / "report.html", lambda tmp: Path(tmp).write_text(page))
