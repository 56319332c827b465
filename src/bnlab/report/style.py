"""The HTML report's stylesheet: system fonts, nothing fetched (the page is self-contained)."""

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --zebra: #f6f8fa;
  --accent: #0969da; --ok: #1a7f37; --warn: #9a6700; --bg: #ffffff; }
* { box-sizing: border-box; }
body { margin: 0; background: #eef1f4; color: var(--fg); line-height: 1.5;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 20px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
h2 { font-size: 21px; margin: 0 0 6px; display: flex; align-items: center; gap: 10px;
  flex-wrap: wrap; }
h3 { font-size: 16px; margin: 26px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h4 { font-size: 15px; margin: 0 0 8px; }
nav, section.run { background: var(--bg); border: 1px solid var(--line); border-radius: 8px;
  padding: 20px 24px; margin: 20px 0; }
nav h2 { font-size: 17px; }
nav ol { margin: 0; padding-left: 22px; }
a { color: var(--accent); }
.muted { color: var(--muted); font-weight: normal; font-size: 13px; }
.description { margin: 0 0 4px; font-size: 15px; }
.note { color: var(--warn); background: #fff8c5; border: 1px solid #eed888; border-radius: 6px;
  padding: 6px 10px; font-size: 14px; }
.badge { font-size: 12px; font-weight: 600; padding: 2px 9px; border-radius: 999px;
  border: 1px solid currentColor; }
.badge.ok { color: var(--ok); background: #dafbe1; }
.badge.warn { color: var(--warn); background: #fff8c5; }
.badge.bad { color: #cf222e; background: #ffebe9; }
.damage { color: #82071e; background: #ffebe9; border: 1px solid #ff818266; border-radius: 6px;
  padding: 6px 12px; font-size: 14px; }
ol.layers { font-size: 12px; margin: 0 0 8px; padding-left: 20px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 5px 10px; text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid var(--line); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even), table.facts tr:nth-child(even) { background: var(--zebra); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.facts { width: 100%; }
table.facts th { width: 140px; color: var(--muted); font-weight: 600; }
table.results { width: 100%; border: 1px solid var(--line); }
.ci { color: var(--muted); font-size: 12px; }
ul.verdicts { list-style: none; padding: 0; margin: 0; }
ul.verdicts li { border-left: 4px solid var(--line); background: var(--zebra);
  padding: 6px 12px; margin: 6px 0; border-radius: 0 6px 6px 0; }
ul.verdicts li.win { border-left-color: var(--ok); }
figure { margin: 0; }
figure img { display: block; width: 100%; height: auto; border: 1px solid var(--line);
  border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.models { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr));
  gap: 16px; align-items: start; }
.model { border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; }
table.summary { width: 100%; font-size: 13px; }
table.summary th, table.summary td { padding: 3px 6px; }
table.summary td:nth-child(2) { white-space: nowrap; }
table.variables { font-size: 12px; margin-top: 8px; }
table.variables th, table.variables td { padding: 2px 6px; }
.bnlab-summary p { margin: 0 0 4px; }
.type { display: block; color: var(--muted); font-size: 12px; }
dl.totals { display: grid; grid-template-columns: auto auto; gap: 0 12px; margin: 10px 0 4px;
  font-size: 13px; }
dl.totals dt { color: var(--muted); }
dl.totals dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
.pytorch { color: var(--muted); font-size: 12px; margin: 6px 0 0; }
"""
