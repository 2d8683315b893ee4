"""The HTML page around the pieces: one file, styles inlined, no script, no external URL.

A Content-Security-Policy forbids every fetch and every script, so even a value that slipped
past escaping could neither run nor send anything. A machine-readable summary sits in a
<script type="application/json"> element (data, never run).
"""

from __future__ import annotations

from .graph import DAG_STYLE
from .svg import esc, script_json

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'none'; base-uri 'none'; form-action 'none'"

STYLE = DAG_STYLE + """
:root{--ok:#2e9d52;--cached:#2b8cbe;--bad:#d7301f;--skip:#a8a8a8;--gated:#ee8a12;--run:#6a51a3;--wait:#d9d9d9;--plan:#8fa3bf;
--ink:#1d232b;--muted:#6b7380;--line:#d5dae1;--bg:#fff;--soft:#f5f7fa}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;color:var(--ink);background:var(--bg)}
header{padding:18px 28px 8px;border-bottom:1px solid var(--line);background:var(--soft)}
h1{margin:0 0 6px;font-size:21px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}main{padding:0 28px 40px}small,.muted{color:var(--muted)}
nav a{margin-right:14px;color:var(--cached);text-decoration:none}
.facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0}.facts dt{color:var(--muted)}.facts dd{margin:0;word-break:break-all}
.scroll{overflow:auto;max-height:560px;max-width:100%;display:inline-block;vertical-align:top;border:1px solid var(--line);border-radius:4px}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 9px;text-align:left;border-bottom:1px solid #eef0f3;white-space:nowrap}
th{position:sticky;top:0;background:var(--soft)}td{font-variant-numeric:tabular-nums}
tr.selected td{background:#fff4d6;font-weight:600}.mark{color:#b86e00}th.sel-metric{color:#b86e00}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600;color:#fff}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}.badge.warn{background:var(--gated)}
ul.warnings{padding-left:18px}li.warning{margin:3px 0}
.status-succeeded{background:var(--ok)}.status-failed{background:var(--bad)}.status-gated{background:var(--gated)}.status-running{background:var(--run)}
pre{white-space:pre-wrap;word-break:break-word;background:#fff3f1;border:1px solid #f3c5bd;padding:6px 9px;border-radius:4px;margin:4px 0 10px}
.figure{overflow:auto;border:1px solid var(--line);border-radius:4px;padding:6px;background:#fff}
.caption{color:var(--muted);margin:4px 0 6px}
.legend{display:inline-flex;align-items:center;margin-right:14px;font-size:12px}.legend i{width:12px;height:12px;border-radius:3px;margin-right:5px;display:inline-block}
.legend.state-succeeded i{background:var(--ok)}.legend.state-cached i{background:var(--cached)}.legend.state-failed i{background:var(--bad)}
.legend.state-skipped i{background:var(--skip)}.legend.state-gated i{background:var(--gated)}.legend.state-running i{background:var(--run)}
.legend.state-pending i{background:var(--wait)}.legend.state-planned i{background:var(--plan)}
svg text{font-family:inherit}
.gantt .label{font-size:12px;fill:var(--ink)}.gantt .dur{font-size:11px;fill:var(--muted)}.gantt .tick{font-size:10px;fill:var(--muted)}
.gantt .grid{stroke:#eef0f3}.gantt .bar{stroke:none}.gantt .critical{stroke:#111;stroke-width:1.6}
.gantt .state-succeeded{fill:var(--ok)}.gantt .state-cached{fill:var(--cached)}.gantt .state-failed{fill:var(--bad)}.gantt .state-gated{fill:var(--gated)}
.gantt .state-running{fill:var(--run)}.gantt .state-skipped{fill:var(--skip)}.gantt .item{fill:#74c476}.gantt .item.failed{fill:var(--bad)}
.plots{display:flex;flex-wrap:wrap;gap:10px}.scatter{background:#fff;border:1px solid var(--line);border-radius:4px}
.scatter .frame{fill:none;stroke:var(--line)}.scatter .grid{stroke:#f0f2f5}.scatter .tick{font-size:10px;fill:var(--muted)}
.scatter .axis{font-size:11px;fill:var(--ink)}.scatter .ptitle{font-size:12px;font-weight:600;fill:var(--ink)}
.scatter .pt{fill:#2b8cbe;fill-opacity:.55}.scatter .pt.sel{fill:#ffb000;fill-opacity:1;stroke:#7a4b00;stroke-width:1.5}
.scatter .mean{fill:none;stroke:#6a51a3;stroke-width:1.5;stroke-dasharray:4 3}
.error b{color:var(--bad)}
"""


def page(title: str, body: str, summary: dict | None = None, subtitle: str = "", nav: list[tuple[str, str]] | None = None) -> str:
    links = "".join(f'<a href="#{anchor}">{esc(label)}</a>' for anchor, label in (nav or []))
    data = f'<script type="application/json" id="dagsmith-summary">{script_json(summary)}</script>' if summary is not None else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>{esc(title)}</h1>{subtitle}" + (f"<nav>{links}</nav>" if links else "") + "</header>"
            f"<main>{body}</main>{data}</body></html>\n")


def section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{content}</section>'
