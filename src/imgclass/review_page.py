"""The review page: one self-contained HTML file where a person decides about suspicious images.

The review stage ranks images by issue; this module draws them as cards (thumbnail inlined as
base64, worst first, capped per issue) with keep / drop / relabel-as controls for mouse and keyboard.
The page builds labels.csv (sha256,action,new_class,note) itself and downloads it: no server, no
network, works from file://. "Load decisions" reads an existing labels.csv so a later session starts
from the committed decisions; rows about images not on the page are exported unchanged.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image, ImageOps

from imgclass import files

ISSUES = ("label", "outlier", "near_duplicate", "low_quality")
THUMBNAIL_PX = 128
MAX_PER_ISSUE = 300  # ~5 KB a thumbnail: 4 issues x 300 cards stay a few MB on 10,000-image datasets


def write_review_page(out_html: Path, cards: list[dict], classes: list[str], summary: dict,
                      max_per_issue: int = MAX_PER_ISSUE) -> None:
    """Write the review page to `out_html` (atomically).

    cards: dicts with sha256, path (shown), image (file to thumbnail), class, issue, score (higher is
    worse), suggested_class ("" if none), auto_drop (the stage drops it unless a person keeps it), reason
    (why it is listed or auto-dropped; shown on the card, "" for none).
    summary: counts to show at the top ({name: number or {name: number}})."""
    groups = _by_issue(cards)
    sections = [_section_html(issue, group, classes, max_per_issue) for issue, group in groups]
    shown = sum(min(len(group), max_per_issue) for _, group in groups)
    page = PAGE.format(
        title=f"imgclass review: {shown} of {len(cards)} findings",
        summary=_summary_html(summary),
        keys=_keys_html(classes),
        sections="\n".join(sections) or "<p>No suspicious images.</p>",
        style=STYLE,
        script=SCRIPT,
    )
    files.write_text(out_html, page)


def _by_issue(cards: list[dict]) -> list[tuple[str, list[dict]]]:
    """(issue, cards worst first) in ISSUES order, then any other issue alphabetically."""
    issues = sorted({c["issue"] for c in cards}, key=lambda i: (ISSUES.index(i) if i in ISSUES else len(ISSUES), i))
    return [(issue, sorted((c for c in cards if c["issue"] == issue), key=lambda c: -float(c["score"])))
            for issue in issues]


def _section_html(issue: str, group: list[dict], classes: list[str], max_per_issue: int) -> str:
    shown = group[:max_per_issue]
    left_out = len(group) - len(shown)
    note = f", {left_out} less suspicious left out (max_per_issue={max_per_issue})" if left_out else ""
    cards = "\n".join(_card_html(card, classes) for card in shown)
    return (f'<section id="issue-{_e(issue)}"><h2>{_e(issue)} <small>{len(shown)} shown, worst first{note}'
            f'</small></h2>\n<div class="cards">\n{cards}\n</div></section>')


def _card_html(card: dict, classes: list[str]) -> str:
    score = float(card["score"])
    suggested = card.get("suggested_class") or ""
    thumbnail = _thumbnail_data_uri(Path(card["image"]))
    image = (f'<img src="{thumbnail}" alt="{_e(card["path"])}">' if thumbnail
             else '<div class="missing">image unreadable</div>')
    reason = card.get("reason") or ""
    badge = '<div class="badge">auto-drop</div>' if card.get("auto_drop") else ""
    why = f'<div class="reason" title="{_e(reason)}">{_e(reason)}</div>' if reason else ""
    options = "".join(f'<option value="{_e(c)}"{" disabled" if c == card["class"] else ""}>'
                      f'{f"{i}: " if i <= 9 else ""}{_e(c)}</option>' for i, c in enumerate(classes, start=1))
    return f"""<article class="card" tabindex="0" data-sha256="{_e(card["sha256"])}" data-class="{_e(card["class"])}"
 data-suggested="{_e(suggested)}" data-auto-drop="{1 if card.get("auto_drop") else 0}"
 data-note="{_e(f"review: {card['issue']} {score:.2f}")}">
{image}
<div class="path" title="{_e(card["path"])} sha256 {_e(card["sha256"])}">{_e(card["path"])}</div>
<div>given <b>{_e(card["class"])}</b>{f" → suggested <b>{_e(suggested)}</b>" if suggested else ""}</div>
<div class="score">score {score:.3g}</div>
{badge}{why}
<div class="state"></div>
<div class="actions"><button type="button" data-act="keep">keep</button><button type="button" data-act="drop">drop</button>
<select aria-label="relabel as"><option value="">relabel as…</option>{options}</select></div>
<input class="note" type="text" placeholder="note (optional)" aria-label="note">
</article>"""


def _thumbnail_data_uri(image: Path) -> str | None:
    """A JPEG data: URI at most THUMBNAIL_PX on a side, transparency on white; None if unreadable."""
    try:
        with Image.open(image) as img:
            img.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG: decode at a reduced scale, much faster
            img = ImageOps.exif_transpose(img)
            img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            rgba = img.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    flat = Image.new("RGBA", rgba.size, "white")
    flat.alpha_composite(rgba)
    buffer = io.BytesIO()
    flat.convert("RGB").save(buffer, "JPEG", quality=80, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _summary_html(summary: dict) -> str:
    rows = "".join(f"<dt>{_e(str(key).replace('_', ' '))}</dt><dd>{_value_html(value)}</dd>"
                   for key, value in summary.items())
    return f'<dl class="summary">{rows}</dl>' if rows else ""


def _value_html(value) -> str:
    if isinstance(value, dict):
        return " ".join(f'<span class="count">{_e(str(k))} <b>{_value_html(v)}</b></span>' for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_html(v) for v in value)
    if isinstance(value, float):
        return _e(f"{value:.3g}")
    return _e(str(value))


def _keys_html(classes: list[str]) -> str:
    targets = " ".join(f"<kbd>{i}</kbd> {_e(c)}" for i, c in enumerate(classes[:9], start=1))
    return ("<kbd>j</kbd> <kbd>→</kbd> <kbd>↓</kbd> next · <kbd>←</kbd> <kbd>↑</kbd> previous · "
            "<kbd>k</kbd> keep · <kbd>d</kbd> drop · <kbd>r</kbd> relabel as suggested · "
            f"relabel as {targets} · <kbd>u</kbd> undecided · <kbd>n</kbd> note "
            "(<kbd>Enter</kbd> back) · mouse: the buttons and the select on each card")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


STYLE = """
body { font: 14px system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; background: #fafafa; }
header { padding: .6em 0; border-bottom: 1px solid #ccc; }
h1 { font-size: 1.3em; margin: .2em 0; } h2 { font-size: 1.1em; margin: 1.2em 0 .5em; } h2 small { font-weight: normal; color: #666; }
.summary { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: .4em 0; }
.summary dt { color: #666; } .summary dd { margin: 0; } .count { margin-right: .8em; }
.toolbar { display: flex; gap: 1em; align-items: center; flex-wrap: wrap; position: sticky; top: 0;
           background: #fafafa; padding: .4em 0; z-index: 1; }  /* Export stays at hand while scrolling */
.keys { color: #555; font-size: .9em; margin-top: .4em; }
kbd { border: 1px solid #bbb; border-radius: 3px; padding: 0 .3em; background: #fff; font-size: .9em; }
.cards { display: flex; flex-wrap: wrap; gap: .7em; align-items: flex-start; }
.card { scroll-margin-top: 4em; width: 170px; padding: .5em; background: #fff; border: 3px solid #ddd; border-radius: 6px; font-size: .85em; }
.card:focus-within { outline: 3px solid #f90; outline-offset: 1px; }
.card img, .card .missing { display: block; margin: 0 auto .3em; width: 128px; height: 128px; object-fit: contain; }
.card .missing { color: #a00; text-align: center; line-height: 128px; }
.path { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: #555; }
.badge { display: inline-block; background: #c62828; color: #fff; border-radius: 3px; padding: 0 .3em; margin: .2em 0; }
.reason { color: #555; overflow: hidden; display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; }
.state { font-weight: bold; margin: .2em 0; }
.actions { display: flex; gap: .2em; } .actions select { min-width: 0; flex: 1; }
.note { width: 100%; box-sizing: border-box; margin-top: .2em; }
.card[data-state=drop] { border-color: #c62828; background: #fdecea; }
.card[data-state=auto-drop] { border-color: #c62828; border-style: dashed; }
.card[data-state=keep] { border-color: #2e7d32; background: #edf7ed; }
.card[data-state=relabel] { border-color: #1565c0; background: #e8f0fb; }
"""

# Plain DOM. State lives in `decisions` (sha256 -> {action, new_class}) and `notes`, keyed by image:
# an image listed under two issues is one decision. `loaded` keeps labels.csv's rows in file order.
SCRIPT = r"""
const FIELDS = ['sha256', 'action', 'new_class', 'note'];
const cards = [...document.querySelectorAll('.card')];
const decisions = new Map(), notes = new Map();
let loaded = [], unexported = false;

const cardsOf = sha => cards.filter(c => c.dataset.sha256 === sha);
const onPage = new Set(cards.map(c => c.dataset.sha256));

function decide(card, action, newClass = '') {
  const sha = card.dataset.sha256;
  if (action === 'relabel' && (!newClass || newClass === card.dataset.class)) return;
  if (action) decisions.set(sha, {action, new_class: action === 'relabel' ? newClass : ''});
  else decisions.delete(sha);
  cardsOf(sha).forEach(render);
  showCounts();
  unexported = true;
}

function render(card) {
  const d = decisions.get(card.dataset.sha256);
  const auto = card.dataset.autoDrop === '1';
  const state = d ? d.action : auto ? 'auto-drop' : 'undecided';
  card.dataset.state = state;
  card.querySelector('.state').textContent =
    !d ? (auto ? 'drop (auto)' : 'undecided') : d.action === 'relabel' ? `relabel → ${d.new_class}` : d.action;
  card.querySelector('select').value = d && d.action === 'relabel' ? d.new_class : '';
  card.querySelector('.note').value = notes.get(card.dataset.sha256) || '';
}

function exportRows() {
  const rowOf = sha => ({sha256: sha, ...decisions.get(sha),
                         note: notes.get(sha) || cardsOf(sha)[0].dataset.note});
  const rows = [], done = new Set();
  for (const row of loaded) {  // labels.csv's order; rows about images not on this page unchanged
    if (!onPage.has(row.sha256)) rows.push(row);
    else if (done.has(row.sha256)) continue;
    else if (decisions.has(row.sha256)) rows.push(rowOf(row.sha256));  // else set back to undecided here
    done.add(row.sha256);
  }
  for (const sha of onPage) if (decisions.has(sha) && !done.has(sha)) rows.push(rowOf(sha));
  return rows;
}

function toCsv(rows) {
  const field = v => /[",\r\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
  return rows.map(r => r.map(v => field(v ?? '')).join(',') + '\n').join('');
}

function parseCsv(text) {  // RFC 4180: quoted fields may hold commas, quotes ("") and newlines
  const rows = [];
  let row = [], field = '', quoted = false;
  text = text.replace(/^\uFEFF/, '');  // spreadsheets add a BOM
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; }
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field); rows.push(row); row = []; field = '';
    } else field += c;
  }
  if (field || row.length) { row.push(field); rows.push(row); }
  return rows;
}

function loadDecisions(text) {
  const [header, ...body] = parseCsv(text);
  const at = Object.fromEntries(FIELDS.map(f => [f, header.indexOf(f)]));
  if (at.sha256 < 0 || at.action < 0) throw new Error(`the header must be ${FIELDS.join(',')}`);
  loaded = body.filter(r => r.some(v => v.trim()))
    .map(r => Object.fromEntries(FIELDS.map(f => [f, at[f] < 0 ? '' : (r[at[f]] ?? '')])));
  decisions.clear(); notes.clear();
  for (const row of loaded) {
    const sha = row.sha256.trim().toLowerCase();
    if (!onPage.has(sha)) continue;
    row.sha256 = sha;
    decisions.set(sha, {action: row.action.trim().toLowerCase(), new_class: row.new_class.trim()});
    notes.set(sha, row.note);
  }
  cards.forEach(render);
  showCounts();
}

function exportDecisions() {
  const csv = toCsv([FIELDS, ...exportRows().map(r => FIELDS.map(f => r[f]))]);
  const url = URL.createObjectURL(new Blob([csv], {type: 'text/csv'}));
  const link = Object.assign(document.createElement('a'), {href: url, download: 'labels.csv'});
  document.body.append(link);
  link.click();
  link.remove();
  unexported = false;
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function showCounts() {
  const by = {drop: 0, relabel: 0, keep: 0};
  decisions.forEach(d => by[d.action] = (by[d.action] || 0) + 1);
  const elsewhere = loaded.filter(r => !onPage.has(r.sha256)).length;
  document.getElementById('counts').textContent =
    `${decisions.size} decided on this page (${by.drop} drop, ${by.relabel} relabel, ${by.keep} keep)` +
    (elsewhere ? `; ${elsewhere} rows of labels.csv about images not on this page, exported unchanged` : '');
}

function move(card, step) {
  const next = cards[card ? cards.indexOf(card) + step : 0];
  if (next) { next.focus(); next.scrollIntoView({block: 'nearest'}); }
}

const NEXT = ['j', 'ArrowRight', 'ArrowDown'];  // with no card focused yet, these focus the first
const KEYS = {
  ...Object.fromEntries(NEXT.map(key => [key, c => move(c, 1)])),
  ArrowLeft: c => move(c, -1), ArrowUp: c => move(c, -1),
  k: c => { decide(c, 'keep'); move(c, 1); },
  d: c => { decide(c, 'drop'); move(c, 1); },
  r: c => c.dataset.suggested ? (decide(c, 'relabel', c.dataset.suggested), move(c, 1)) : c.querySelector('select').focus(),
  u: c => decide(c, ''),
  n: c => c.querySelector('.note').focus(),
};

document.addEventListener('keydown', e => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.target.matches('input, select, textarea')) return;
  const card = document.activeElement.closest && document.activeElement.closest('.card');
  const target = /^[1-9]$/.test(e.key) && card && card.querySelector('select').options[Number(e.key)];
  const action = target ? c => { decide(c, 'relabel', target.value); move(c, 1); } : KEYS[e.key];
  if (!action || (!card && !NEXT.includes(e.key))) return;
  e.preventDefault();  // arrows would scroll, n would type into the note
  action(card);
});

for (const card of cards) {
  card.querySelectorAll('button').forEach(b => b.addEventListener('click', () => decide(card, b.dataset.act)));
  card.querySelector('select').addEventListener('change', e => decide(card, 'relabel', e.target.value));
  const note = card.querySelector('.note');
  note.addEventListener('input', () => {
    notes.set(card.dataset.sha256, note.value);
    unexported = true;
    cardsOf(card.dataset.sha256).filter(c => c !== card).forEach(render);
  });
  note.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === 'Escape') card.focus(); });
  render(card);
}
document.getElementById('export').addEventListener('click', exportDecisions);
// closing the tab would lose every decision made since the last export
window.addEventListener('beforeunload', e => { if (unexported) e.preventDefault(); });
document.getElementById('load').addEventListener('change', async e => {
  const status = document.getElementById('load-status');
  try {
    loadDecisions(await e.target.files[0].text());
    status.textContent = `loaded ${loaded.length} rows from ${e.target.files[0].name}`;
  } catch (err) {
    status.textContent = `could not load ${e.target.files[0].name}: ${err.message}`;
  }
});
showCounts();
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title><style>{style}</style></head>
<body>
<header>
<h1>{title}</h1>
{summary}
<div class="toolbar"><button type="button" id="export">Export decisions</button>
<label>Load decisions <input type="file" id="load" accept=".csv,text/csv"></label>
<span id="load-status"></span> <span id="counts"></span></div>
<div class="keys">{keys}</div>
</header>
<main>
{sections}
</main>
<script>{script}</script>
</body></html>
"""
