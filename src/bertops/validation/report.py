"""The validation report a person opens offline: one self-contained HTML page.

Inline CSS only, no scripts, no fonts or styles from a CDN (GX's own Data Docs pull theirs from
public CDNs, which an offline machine cannot load). Deterministic: same result, same bytes.
"""

from __future__ import annotations

import html

from bertops.validation.results import FileReport, ValidationResult

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;color:#222;
 padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pass{color:#11652b;font-weight:600}.fail{color:#b00020;font-weight:600}
.badge{display:inline-block;padding:.1em .6em;border-radius:.8em;color:#fff;font-size:.85em}
.badge.pass{background:#2e7d32}.badge.fail{background:#c62828}
.engine{color:#666;font-size:.85em}ul.ex{margin:0;padding-left:1.1em}
ul.ex li{font-family:ui-monospace,monospace;font-size:.85em;word-break:break-word}
.bar{background:#e8eef7;height:1em;width:320px}.bar div{background:#3b6fb6;height:100%}
.muted{color:#666}table.rules{table-layout:fixed}summary{cursor:pointer;color:#11652b}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _status(ok: bool, badge: bool = False) -> str:
    cls = "pass" if ok else "fail"
    word = "passed" if ok else "FAILED"
    return f'<span class="badge {cls}">{word}</span>' if badge else f'<span class="{cls}">{word}</span>'


def _anchor(report: FileReport) -> str:
    return "f-" + "".join(c if c.isalnum() else "-" for c in report.key)


def _balance(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return '<p class="muted">no labels counted</p>'
    rows = []
    for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        pct = 100.0 * n / total
        rows.append(f'<tr><td>{_e(label)}</td><td><div class="bar"><div style="width:{pct:.1f}%"></div></div></td>'
                    f'<td class="n">{n}</td><td class="n">{pct:.1f}%</td></tr>')
    return ("<table><tr><th>class</th><th>share</th><th>count</th><th>%</th></tr>" + "".join(rows) + "</table>")


def _file_section(report: FileReport, n_examples: int) -> str:
    title = f"{report.key}"
    parts = [f'<h2 id="{_anchor(report)}">{_e(title)} {_status(report.success, badge=True)}</h2>',
             f'<p class="muted">{_e(report.path)}: {report.records} records on {report.lines} lines</p>']
    rows = []
    for name, stats in sorted(report.rules.items(), key=lambda kv: (kv[1].success, kv[0])):
        examples = ""
        if stats.failures:
            shown = sorted(stats.failures, key=lambda f: f.sort_key())[:n_examples]
            items = "".join(f"<li>{_e(f.record or 'whole file')}: {_e(f.detail)}</li>" for f in shown)
            more = stats.failed - len(shown)
            if more > 0:
                items += f'<li class="muted">… and {more} more</li>'
            examples = f'<ul class="ex">{items}</ul>'
        elif stats.note:
            examples = _e(stats.note)
        engine = "GX" if stats.engine == "great_expectations" else "Python"
        rows.append(f"<tr><td>{_e(name)} <span class=\"engine\">{engine}</span></td>"
                    f"<td>{_status(stats.success)}</td><td class=\"n\">{stats.checked}</td>"
                    f"<td class=\"n\">{stats.failed}</td><td>{examples}</td></tr>")
    table = ('<table class="rules"><colgroup><col style="width:24%"><col style="width:8%"><col style="width:8%">'
             '<col style="width:7%"><col></colgroup><tr><th>rule</th><th>status</th><th>checked</th>'
             "<th>failed</th><th>failing records</th></tr>" + "".join(rows) + "</table>")
    if report.success:  # a passing file's rules fold away (<details> needs no script)
        n = len(report.rules)
        table = f"<details><summary>{n} rule{'s' if n != 1 else ''}, all passed</summary>{table}</details>"
    parts.append(table)
    if report.class_balance is not None:
        parts.append(f"<h3>Class balance ({_e(report.balance_unit)})</h3>" + _balance(report.class_balance))
    return "\n".join(parts)


def render_report(result: ValidationResult, n_examples: int = 10) -> str:
    first = result.first_failure()
    head = (f"<h1>Data validation {_status(result.success, badge=True)}</h1>"
            f"<p>{len(result.files)} files, {sum(f.records for f in result.files)} records, "
            f"{result.n_failures} failing record checks.</p>")
    if first is not None:
        head += (f'<p class="fail">First failure: {_e(first.file)}, {_e(first.record or "whole file")}: '
                 f"rule {_e(first.rule)}: {_e(first.detail)}</p>")
    if result.notes:
        head += "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in result.notes) + "</ul>"
    overview = ["<table><tr><th>file</th><th>records</th><th>rules</th><th>rules failed</th>"
                "<th>failures</th><th>status</th></tr>"]
    for report in result.files:
        failed_rules = sum(not s.success for s in report.rules.values())
        overview.append(f'<tr><td><a href="#{_anchor(report)}">{_e(report.key)}</a></td>'
                        f'<td class="n">{report.records}</td><td class="n">{len(report.rules)}</td>'
                        f'<td class="n">{failed_rules}</td><td class="n">{report.n_failures}</td>'
                        f"<td>{_status(report.success)}</td></tr>")
    overview.append("</table>")
    sections = [_file_section(r, n_examples) for r in result.files]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>bertops data validation</title>"
            f"<style>{_CSS}</style></head><body>\n{head}\n{''.join(overview)}\n"
            + "\n".join(sections) + "\n</body></html>\n")
