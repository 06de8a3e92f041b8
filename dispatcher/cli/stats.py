"""``dispatcher stats``: aggregate counts that may be shared (small cells withheld)."""

from __future__ import annotations

import json
import sys

import click

from dispatcher.cli import AppContext, pass_app
from dispatcher.db import session_scope
from dispatcher.sharing.cells import safe_row, spreadsheet_writer
from dispatcher.sharing.stats import report


@click.command("stats")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--k",
    type=int,
    default=None,
    help="withhold counts below this (default: the stats_min_cell setting, 5)",
)
@pass_app
def stats(app: AppContext, fmt: str, k: int | None) -> None:
    """Counts per campaign, day and outcome, and opt-in / unsubscribe rates.

    Nothing in it identifies a person; counts below k are withheld (shown as <k, null in
    JSON), and so is any cell that would let a withheld one be worked out from a total.
    """
    k = k if k is not None else app.settings.stats_min_cell
    if k < 1:
        raise click.ClickException("--k must be at least 1")
    with session_scope(app.sessions) as session:
        data = report(session, k)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    shown = f"<{k}"
    if fmt == "csv":
        # One table: summary rows first (campaign "*"), then the delivery cells.
        writer = spreadsheet_writer(sys.stdout)
        writer.writerow(["campaign", "day", "outcome", "count"])
        for key, value in data["summary"].items():
            writer.writerow(safe_row(["*", "", key, shown if value is None else value]))
        for cell in data["deliveries"]:
            count = cell["count"]
            writer.writerow(
                safe_row(
                    [
                        cell["campaign"],
                        cell["day"],
                        cell["outcome"],
                        shown if count is None else count,
                    ]
                )
            )
        return
    for key, value in data["summary"].items():
        click.echo(f"{key:<30}{shown if value is None else value}")
    click.echo("")
    click.echo(f"{'campaign':<32}{'day':<12}{'outcome':<28}{'count':>7}")
    for cell in data["deliveries"]:
        count = shown if cell["count"] is None else str(cell["count"])
        click.echo(f"{cell['campaign'][:31]:<32}{cell['day']:<12}{cell['outcome']:<28}{count:>7}")
    click.echo(f"\ncounts under {k}, and cells that would reveal them, are shown as {shown}")


COMMANDS = [stats]
