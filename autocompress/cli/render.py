"""How the command line shows a search: the live progress display and the Pareto table."""

from __future__ import annotations

import time

import click

from autocompress.cli.common import QUIET, say


def progress_display(budget_hint: int):
    """A live display of a search's progress (a line every 10 s when stderr is not a terminal)."""
    from rich.console import Console

    from autocompress.console import progress_bar

    console = Console(stderr=True)
    progress = progress_bar("full evaluations", "{task.fields[status]}", enabled=console.is_terminal and not QUIET["on"])
    task = progress.add_task("search", total=budget_hint, status="starting")
    last_line = [time.monotonic()]

    def update(state) -> None:  # an autocompress.engine.Progress
        best = state.best
        shown = f"{best['memory_saving']:.1%} saved at {best['accuracy_drop']:+.2f}" if best else "none yet"
        status = (f"proxy {state.proxy_evaluations}, gated out {state.gated_out}, stopped early "
                  f"{state.early_stopped}, failed {state.failed}, retried {state.retries}, in flight "
                  f"{state.in_flight}, best feasible: {shown}")
        progress.update(task, completed=state.full_evaluations, total=state.max_full_evaluations, status=status)
        if not console.is_terminal and time.monotonic() - last_line[0] >= 10:
            last_line[0] = time.monotonic()
            say(f"progress: {state.full_evaluations}/{state.max_full_evaluations} full evaluations, {status}, "
                f"{state.wall_seconds:.0f} s")

    return progress, update


def format_energy(mj: float | None) -> str:
    """Millijoules in the unit that reads best (mJ, uJ, nJ)."""
    if mj is None:
        return "-"
    from autocompress.vocabulary import energy_unit

    unit, scale = energy_unit(mj)
    return f"{mj / scale:.3g} {unit}"


def print_pareto(document: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    baseline = document["baseline"]
    stats = document["statistics"]
    if baseline is None:
        click.echo(f"{document['run_dir']}: no results yet (state: {document['state']})")
        return
    table = Table(title=f"Pareto set ({len(document['points'])} points; baseline {baseline['accuracy']:.2f} % top-1, "
                        f"{baseline['memory_bytes']:,} bytes)")
    held = document.get("holdout")
    # with a held-out split its figures come first: they decide the recommended point
    columns = (["id", "held-out %", "held-out drop", "at most", "top-1 % (selection)", "drop (selection)"] if held
               else ["id", "top-1 %", "drop"]) + ["bytes", "saved", "feasible", "drift"]
    energy = baseline.get("energy_mj") is not None
    if energy:
        columns += ["energy/image", "energy saved"]
    latency = baseline.get("latency_ms") is not None
    if latency:
        columns += ["ms (batch 1)"]
    for column in columns:
        table.add_column(column, justify="left" if column == "id" else "right")
    for p in document["points"]:
        marker = " *" if p["id"] == document["best"] else ""
        row = [p["id"] + marker]
        if held:
            measured = p.get("holdout")
            row += ["-", "-", "-"] if measured is None else [
                f"{measured['accuracy']:.2f}", f"{measured['accuracy_drop']:+.2f}",
                "-" if measured.get("drop_upper") is None else f"{measured['drop_upper']:+.2f}"]
        feasible = "yes" if p["feasible"] else "no"
        if held and p.get("holdout") is not None and p["feasible"]:
            feasible = "yes" if p["holdout"]["feasible"] else "selection only"
        row += [f"{p['accuracy']:.2f}", f"{p['accuracy_drop']:+.2f}", f"{p['memory_bytes']:,}",
                f"{p['memory_saving']:.1%}", feasible, "-" if p["proxy"] is None else f"{p['proxy']:.4f}"]
        if energy:
            row += [format_energy(p.get("energy_mj")),
                    "-" if p.get("energy_saving") is None else f"{p['energy_saving']:.1%}"]
        if latency:
            row += ["-" if p.get("latency_ms") is None else f"{p['latency_ms']:.2f}"]
        table.add_row(*row)
    Console(width=(160 if held else 120) + (30 if energy else 0)).print(table)
    if energy:
        click.echo(f"energy: estimate per image from the spikes and operations counted on the calibration batch "
                   f"(baseline {format_energy(baseline['energy_mj'])}, {baseline['synops']:,.0f} synaptic "
                   f"operations, firing rate {baseline['firing_rate']:.3f})"
                   + ("" if document["constraints"].get("max_energy_mj") is None else
                      f"; limit {format_energy(document['constraints']['max_energy_mj'])}"))
    if latency:
        click.echo(f"latency: median of a forward pass at batch 1 on the worker's device (baseline "
                   f"{baseline['latency_ms']:.2f} ms)" + ("" if document["constraints"].get("max_latency_ms") is None
                                                         else f"; limit {document['constraints']['max_latency_ms']:g} ms"))
    if held:
        base = held["baseline_accuracy"]
        confidence = held.get("confidence")
        click.echo(f"held out of the search: {held['images']:,} images ({held['fraction']:.0%} of the validation "
                   f"set); baseline there {'not measured yet' if base is None else f'{base:.2f} % top-1'}. "
                   "The held-out columns are measured on images the search never chose on"
                   + ("" if confidence is None else f" ('at most': the drop's upper bound at {confidence:.0%} "
                      "confidence)")
                   + "; the selection columns are what the search decided on, optimistic for the points it kept")
    click.echo(f"{stats['strategy']} (seed {stats['seed']}, {stats['granularity']} granularity, "
               f"{stats['workers']} workers): {stats['full_evaluations']} full evaluations, "
               f"{stats['proxy_evaluations']} proxy evaluations, {stats['gated_out']} gated out, "
               f"{stats.get('early_stopped', 0)} stopped early ({stats.get('stopped_feasible', 0)} as feasible, "
               f"{stats.get('completed', 0)} completed; {stats.get('validation_images', 0):,} validation images "
               f"read), {stats['failed']} failed, {stats['retries']} retried after a worker died, "
               f"{stats['wall_seconds']:.0f} s; "
               f"stopped by {stats['stopped_by']} (state: {document['state']})")
    stopped = document.get("early_stopped") or []
    for side, words, bound in (("infeasible", "certainly infeasible; accuracy estimated, never a point", "at_least"),
                               ("feasible", "certainly feasible; accuracy estimated, not a point even at its best",
                                "at_most")):
        some = [p for p in stopped if p.get("side", "infeasible") == side]
        if some:
            sign = ">=" if bound == "at_least" else "<="
            click.echo(f"stopped early ({words}): "
                       + ", ".join(f"{p['id']} after {p['images']:,} images (drop {sign} "
                                   f"{_number(p.get('accuracy_drop_' + bound))})" for p in some[:5])
                       + (f" and {len(some) - 5} more" if len(some) > 5 else ""))
    from autocompress.engine.pareto_file import recommendation_line

    confidence = (document.get("constraints") or {}).get("accuracy", {}).get("confidence")
    if not held and document["points"]:
        click.echo("no held-out split: every figure is measured on the images the search chose on, optimistic for "
                   "the points it kept" + ("" if confidence is None else
                                           f" (feasible: the drop's upper bound at {confidence:.0%} confidence within "
                                           "the limit)")
                   + "; data.validation.holdout keeps images out for a figure on fresh ones")
    click.echo(recommendation_line(document))


def _number(value) -> str:
    return "?" if value is None else f"{value:.2f}"
