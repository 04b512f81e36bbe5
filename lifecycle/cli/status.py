"""`lifecycle status`: queues, workers, open and overdue requests, deliveries, notices in doubt,
nightly jobs."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import typer

from lifecycle.cli.app import app

# Exit statuses cron can alert on (README "Monitoring"): 0 all well; 1 something needs an
# operator (see report["attention"]); 2 bad usage or configuration (typer's and
# LifecycleError's); 3 a store could not be read (same as other "unreachable" errors), which
# wins over 1 because what it would have said is unknown.
EXIT_ATTENTION = 1
EXIT_UNREACHABLE = 3


@app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document for scripts."),
    timeout: float = typer.Option(
        1.0, "--timeout", min=0.1, max=30, help="Seconds to wait for workers to answer."
    ),
) -> None:
    """Show queue depths, workers online, open/overdue requests, failing deliveries, last runs.

    Exit status 0 when all is well; 1 when something needs attention (overdue or failed
    requests, failing deliveries, notices in doubt, a failed run, a stalled job); 2 for bad
    usage or configuration; 3 when the broker or a database was unreachable (what could be
    read is still shown).
    """
    # Here, not at the top: `lifecycle --help` and every other command import this module.
    from lifecycle.core.settings import get_settings
    from lifecycle.ops.status import build_report
    from workers.control import control_app

    s = get_settings()

    def flower_check() -> bool:
        # Here, not at the top: every command's start would pay for http.client.
        from http.client import HTTPConnection, HTTPSConnection

        from lifecycle.ops.flower_locator import locate

        # http.client, not httpx: httpx's import alone costs status a tenth of a second, and
        # a plain connection never consults a proxy from the environment for a loopback URL.
        url = urlsplit(f"{locate(s)}healthcheck")
        conn_type = HTTPSConnection if url.scheme == "https" else HTTPConnection
        conn = conn_type(url.hostname or "127.0.0.1", url.port, timeout=2)
        try:
            conn.request("GET", url.path or "/")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    # The ping needs only the broker's configuration, not the job runtime's task modules.
    report = build_report(s, app=control_app(s), flower_check=flower_check, worker_timeout=timeout)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        _render(report, s.timezone)
    if report["unreachable"]:
        raise typer.Exit(EXIT_UNREACHABLE)
    if report["attention"]:
        raise typer.Exit(EXIT_ATTENTION)


def _when(iso: str | None, tz: str) -> str:
    """An ISO timestamp as the site's local time, to the minute."""
    if not iso:
        return "-"
    from datetime import datetime
    from zoneinfo import ZoneInfo

    try:
        return datetime.fromisoformat(iso).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")
    except (ValueError, KeyError):
        return iso


def _render(report: dict[str, Any], tz: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, width=120, no_color=True)
    for line in report["unreachable"]:
        console.print(f"[bold red]{line}[/]")
    for line in report.get("attention", []):
        console.print(f"[bold red]needs attention: {line}[/]")

    broker = report.get("broker", {})
    if "queues" in broker:
        t = Table(title=f"Queues ({broker.get('url', '')})", title_justify="left")
        t.add_column("queue")
        t.add_column("waiting", justify="right")
        for name, n in broker["queues"].items():
            t.add_row(name, str(n))
        if broker.get("unacked") is not None:
            t.add_row("(delivered, not yet acked)", str(broker["unacked"]))
        console.print(t)
    workers = report.get("workers", {})
    if "online" in workers:
        names = ", ".join(workers["names"]) or "-"
        console.print(f"workers online: {workers['online']} ({names})")
    elif workers.get("error"):
        console.print(f"workers: {workers['error']}")

    req = report.get("requests")
    if req is not None:
        t = Table(title=f"Open requests: {req['open_total']}", title_justify="left")
        t.add_column("state")
        t.add_column("count", justify="right")
        for state, n in req["open_by_state"].items():
            t.add_row(state, str(n))
        console.print(t)
        t = Table(title="Legal deadlines per request kind", title_justify="left")
        for col in ("kind", "deadline (days)", "open", "due < 1 day", "overdue", "next due"):
            t.add_column(col)
        for kind, d in req.get("deadlines", {}).items():
            t.add_row(
                kind,
                str(d["deadline_days"]),
                str(d["open"]),
                str(d["due_within_1_day"]),
                str(d["overdue"]),
                d["next_due_at"] or "-",
            )
        console.print(t)
        days = req["deadline_days"]
        if req["overdue_total"]:
            t = Table(
                title=f"OVERDUE (past the legal deadline): {req['overdue_total']}",
                title_justify="left",
                title_style="bold red",
            )
            for col in ("request", "kind", "state", "age (days)"):
                t.add_column(col, justify="right" if col in ("request", "age (days)") else "left")
            for item in req["overdue"]:
                t.add_row(str(item["id"]), item["kind"], item["state"], f"{item['age_days']:.1f}")
            console.print(t)
            if req["overdue_total"] > len(req["overdue"]):
                console.print(f"... and {req['overdue_total'] - len(req['overdue'])} more")
        else:
            console.print(f"overdue requests (destruction: {days} days, rights: 10): 0")
        if req.get("failed_total"):
            t = Table(
                title=f"FAILED in the last 7 days: {req['failed_total']}",
                title_justify="left",
                title_style="bold red",
            )
            for col in ("request", "kind", "done before it failed", "reason"):
                t.add_column(col, justify="right" if col == "request" else "left")
            for item in req["failed"]:
                done = ", ".join(item.get("steps_done") or []) or "-"
                t.add_row(str(item["id"]), item["kind"], done, item["error"])
            console.print(t)
        else:
            console.print("failed requests (last 7 days): 0")
        for item in req.get("noted") or []:
            console.print(f"request {item['id']} ({item['kind']}) completed with a note: "
                          f"{item['note']}")  # fmt: skip

    deliveries = report.get("deliveries")
    if deliveries is not None:
        if not deliveries["available"]:
            console.print("failing deliveries: (notification module not installed)")
        elif not deliveries["failing_total"]:
            console.print("failing deliveries: 0")
        else:
            t = Table(
                title=f"Failing deliveries: {deliveries['failing_total']}", title_justify="left"
            )
            cols = ("id", "recipient", "kind", "request_id", "state", "attempts", "last_status")
            for col in cols:
                t.add_column(col)
            for d in deliveries["failing"]:
                t.add_row(*(str(d.get(c, "")) for c in cols))
            console.print(t)

    notices = report.get("notices")
    kept = (notices or {}).get("captured_addresses")
    if kept and (kept["waiting"] or kept["unrecorded"]):
        # A withdrawn member's address waiting for its notice: the operator should know (the
        # usual cause is a missing mail server) before the nightly job destroys it unsent.
        console.print(
            f"[yellow]notice addresses kept: {kept['waiting']} captured address(es) of "
            f"unsent notices (oldest {kept['oldest_days']} days; destroyed unsent after "
            f"{kept['destroy_after_days']} days); {kept['unrecorded']} destruction(s) not yet "
            "in the ledger (nightly notice job)[/yellow]"
        )
    if notices is not None and notices["available"]:
        if not notices["in_doubt_total"]:
            console.print("notices in doubt: 0")
        else:
            t = Table(
                title=f"Notices IN DOUBT (maybe delivered, not resent): "
                f"{notices['in_doubt_total']}",
                title_justify="left",
                title_style="bold red",
            )
            for col in ("notice", "kind", "in doubt", "resolve with"):
                t.add_column(col)
            for n in notices["in_doubt"]:
                t.add_row(str(n["notice_id"]), n["kind"], str(n["in_doubt"]), n["resolve"])
            console.print(t)

    _render_incidents(console, report.get("incidents"), tz)

    found = report.get("findings")
    if found is not None:
        # The stored data-map findings (datamap discover/check, the weekly scan).
        console.print(
            f"data-map findings open: {found['discovery_uncovered']} uncovered column(s) "
            f"(+{found['discovery_acknowledged']} acknowledged), {found['linkage']} wrong "
            "link(s)"
        )

    held = report.get("holds")
    if held is not None:
        if not held["active_total"]:
            console.print("legal holds: 0 active")
        else:
            t = Table(title=f"Legal holds active: {held['active_total']}", title_justify="left")
            for col in ("hold", "scope", "until"):
                t.add_column(col)
            for h in held["active"]:
                scope = f"category {h['category']}" if h["category"] else h["scope"]
                t.add_row(str(h["id"]), scope, h["until"])
            console.print(t)
        if held["held_requests"]:
            ids = ", ".join(map(str, held["held_requests"]))
            console.print(f"requests stopped by a legal hold: {ids}")

    jobs = report.get("jobs")
    if jobs is not None:
        t = Table(title="Nightly jobs: last run", title_justify="left")
        for col in ("job", "started", "finished", "outcome", "counts"):
            t.add_column(col)
        for j in jobs:
            counts = " ".join(f"{k}={v}" for k, v in (j["counts"] or {}).items())
            t.add_row(
                j["job"],
                _when(j["started_at"], tz),
                _when(j["finished_at"], tz),
                j["outcome"],
                counts,
            )
        if not jobs:
            t.add_row("(none recorded yet)", "", "", "", "")
        console.print(t)

    _render_unfinished(console, report.get("unfinished"))

    if "archive" in report and report["archive"].get("ok"):
        console.print(f"archive database: ok ({report['archive']['url']})")
    flower = report.get("flower")
    if flower is not None:
        state = "reachable" if flower["reachable"] else "NOT reachable (is `lifecycle up` running?)"
        console.print(f"flower: {state} at {flower['url']}")


def _render_incidents(console: Any, incidents: list[dict[str, Any]] | None, tz: str) -> None:
    """Open breach incidents and their 72-hour clock (시행령 제39조·제40조)."""
    from rich.table import Table

    if incidents is None:
        return
    if not incidents:
        console.print("breach incidents: 0 open")
        return
    t = Table(title=f"Breach incidents open: {len(incidents)}", title_justify="left")
    for col in ("incident", "detected", "deadline", "clock", "affected", "notified", "unsent",
                "no address", "report"):  # fmt: skip
        # The report's state must read whole: the other columns wrap instead.
        t.add_column(col, no_wrap=col == "report")
    for i in incidents:
        n = i["notices"]
        left = int(i["seconds_left"])
        hours = f"{abs(left) // 3600}h {abs(left) % 3600 // 60:02d}m"
        clock = f"OVERDUE {hours}" if left < 0 else f"{hours} left of 72h"
        state = i.get("report_state") or ("drafted" if i["reported_at"] else "none")
        if state == "submitted":
            # MM-DD HH:MM: the year is the incident's, the full time is in `incident show`.
            report = f"submitted {_when(i['submitted_at'], tz)[5:16]} to {i['submitted_to']}"
        elif state == "drafted":
            report = "drafted, NOT submitted" if i["report_grounds"] else "drafted"
        else:
            report = "due, not drafted" if state == "due" else "-"
        t.add_row(
            str(i["id"]), _when(i["detected_at"], tz), _when(i["deadline_at"], tz), clock,
            str(n["affected"]), str(n["sent"]), str(n["unsent"]), str(n["no_address"]), report,
        )  # fmt: skip
    console.print(t)


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _render_unfinished(console: Any, unfinished: dict[str, Any] | None) -> None:
    from rich.table import Table

    if unfinished is None:
        return
    jobs = unfinished["jobs"]
    if not jobs:
        console.print("unfinished jobs: 0")
    else:
        stalled = unfinished["stalled_total"]
        t = Table(
            title=f"Unfinished jobs: {unfinished['jobs_total']}"
            + (f" ({stalled} STALLED)" if stalled else ""),
            title_justify="left",
            title_style="bold red" if stalled else "",
        )
        for col in ("task", "ids", "state", "age", "last heartbeat", "re-dispatched"):
            t.add_column(col)
        for j in jobs:
            t.add_row(
                j["task"],
                j["ids"],
                j["state"],
                _age(j["age_seconds"]),
                f"{_age(j['heartbeat_age_seconds'])} ago",
                str(j["redispatches"]) if j["redispatches"] else "",
            )
        console.print(t)
    for b in unfinished["batches"]:
        console.print(
            f"sweep run {b['run_id']}: {b['pending']} batches pending, run age "
            f"{_age(b['age_seconds'])}, last batch done {_age(b['idle_seconds'])} ago"
        )
    for u in unfinished.get("unattended_runs") or []:
        console.print(f"[bold red]{u['reason']}[/]", markup=True, highlight=False)
    for n in unfinished["notices"]:
        console.print(
            f"notice {n['notice_id']} ({n['kind']}, {n['state']}): {n['unsent']} members not "
            f"sent yet, age {_age(n['age_seconds'])}, last progress {_age(n['idle_seconds'])} ago"
        )
