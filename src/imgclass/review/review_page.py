"""The review page: an HTML file, and thumbnails beside it, where a person decides about suspicious images.

The review stage lists its findings in one order: the flagged ones, most suspicious image first, then
the next most suspicious images below the thresholds (as issues.csv lists them). This module puts every
finding once, in that order, as compact JSON inside the page, and the page draws one page of cards at a
time, filtered by issue, given class, suggested class and flagged / below threshold, with keep / drop /
relabel-as controls for mouse and keyboard.
Thumbnails are files, thumbs/<sha256>.jpg beside the page, loaded lazily: made once per image (a rerun
makes only the new ones), so thousands of findings stay a few MB of HTML and seconds of work.

The page builds labels.csv (sha256,action,new_class,note) itself and downloads it: no server, no
network (the Content-Security-Policy allows local images only), works from file://. Decisions are kept
by sha256, whatever page or filter shows the card. "Load decisions" reads an existing labels.csv so a
later session starts from the committed decisions; rows about images not listed are exported unchanged.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

from imgclass import files
from imgclass.progress import track

ISSUES = ("label", "outlier", "near_duplicate", "low_quality")
THUMBNAIL_PX = 128
THUMBS = "thumbs"  # the folder beside the page
PAGE_SIZE = 60  # cards drawn at once: a few screens, and never thousands of DOM nodes
# One finding in the page's JSON is a list of these, in this order: keys once, not 20,000 times.
FIELDS = ("sha256", "path", "class", "issue", "score", "note", "suggested", "auto_drop", "reason", "thumbnail",
          "flagged")


def write_review_page(out_html: Path, cards: list[dict], classes: list[str], summary: dict,
                      page_size: int = PAGE_SIZE) -> None:
    """Write the review page to `out_html` and its thumbnails to `out_html`'s folder / thumbs (atomically).

    cards: in the order the page lists them (the review's: flagged first, most suspicious first); dicts
    with sha256, path (shown), image (file to thumbnail), class, issue, score (higher is worse),
    suggested_class ("" if none), auto_drop (the stage drops it unless a person keeps it), reason (why it
    is listed or auto-dropped; shown on the card, "" for none), flagged (False: listed below the
    thresholds, marked as such; default True).
    summary: counts to show at the top ({name: number or {name: number}})."""
    with_thumbnail = write_thumbnails(Path(out_html).parent / THUMBS, cards)
    data = {"fields": FIELDS, "page_size": page_size, "thumbs": THUMBS,
            "filters": _filter_values(cards, classes),
            "findings": [_finding(card, card["sha256"] in with_thumbnail) for card in cards]}
    below = sum(1 for card in cards if not card.get("flagged", True))
    title = f"imgclass review: {len(cards) - below:,} findings flagged, {below:,} below threshold"
    page = PAGE.format(title=_e(title), summary=_summary_html(summary), keys=_keys_html(classes),
                       relabel_options=_relabel_options_html(classes), findings=_script_json(data),
                       style=STYLE, script=SCRIPT)
    files.write_text(out_html, page)


def _finding(card: dict, has_thumbnail: bool) -> list:
    """The card as the page's JSON holds it (FIELDS); Python formats the numbers the page shows."""
    score = float(card["score"])
    finding = {"sha256": card["sha256"], "path": str(card["path"]), "class": card["class"], "issue": card["issue"],
               "score": f"{score:.3g}", "note": f"review: {card['issue']} {score:.2f}",  # the exported default
               "suggested": card.get("suggested_class") or "", "auto_drop": int(bool(card.get("auto_drop"))),
               "reason": card.get("reason") or "", "thumbnail": int(has_thumbnail),
               "flagged": int(bool(card.get("flagged", True)))}
    return [finding[field] for field in FIELDS]


def _filter_values(cards: list[dict], classes: list[str]) -> dict[str, list]:
    """Each filter's choices in the order its select lists them ("" as suggested class: none; flagged 1
    or 0: below threshold)."""
    suggested = {c["suggested_class"] for c in cards if c.get("suggested_class")}
    issues = sorted({c["issue"] for c in cards}, key=lambda i: (ISSUES.index(i) if i in ISSUES else len(ISSUES), i))
    return {"issue": issues, "class": _classes_first(classes, {c["class"] for c in cards}),
            "suggested": ["", *_classes_first(classes, suggested)], "flagged": [1, 0]}


def _classes_first(classes: list[str], present: set[str]) -> list[str]:
    return [*classes, *sorted(present - set(classes))]


def write_thumbnails(folder: Path, cards: list[dict]) -> set[str]:
    """folder/<sha256>.jpg for every listed image that lacks one, and no other file there (stale
    thumbnails and a killed run's temporary files go). Returns the sha256s that have a thumbnail: an
    unreadable image has none (and is tried again next time)."""
    images: dict[str, Path] = {}
    for card in cards:
        images.setdefault(_checked_sha256(card["sha256"]), Path(card["image"]))
    folder.mkdir(parents=True, exist_ok=True)
    _remove_all_but(folder, {f"{sha}.jpg" for sha in images})
    present = {path.stem for path in folder.glob("*.jpg")}
    missing = [sha for sha in images if sha not in present]

    def make(sha: str) -> bool:
        return _write_thumbnail(images[sha], folder / f"{sha}.jpg")

    # Pillow releases the GIL while decoding, resizing and encoding: threads use every core
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        made = list(track(pool.map(make, missing), "review page", total=len(missing), unit="thumbnail"))
    return present | {sha for sha, ok in zip(missing, made) if ok}


def _checked_sha256(sha: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha):  # it names a file: nothing else may reach the file system
        raise ValueError(f"{sha!r}: not a sha256 (64 lowercase hex digits)")
    return sha


def _remove_all_but(folder: Path, keep: set[str]) -> None:
    for path in folder.iterdir():
        if path.name not in keep and path.is_file():
            path.unlink(missing_ok=True)


def _write_thumbnail(image: Path, path: Path) -> bool:
    jpeg = _thumbnail_jpeg(image)
    if jpeg is None:
        return False
    files.write_bytes(path, jpeg)
    return True


def _thumbnail_jpeg(image: Path) -> bytes | None:
    """JPEG bytes at most THUMBNAIL_PX on a side, transparency on white; None if unreadable."""
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
    return buffer.getvalue()


def _script_json(data: dict) -> str:
    """Compact JSON that cannot end its <script> element early: every "<" escaped (so "</" and "<!--")."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


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
    return ("<kbd>j</kbd> <kbd>→</kbd> <kbd>↓</kbd> next (on to the next page) · "
            "<kbd>←</kbd> <kbd>↑</kbd> previous · "
            "<kbd>k</kbd> keep · <kbd>d</kbd> drop · <kbd>r</kbd> relabel as suggested · "
            f"relabel as {targets} · <kbd>u</kbd> undecided · <kbd>n</kbd> note "
            "(<kbd>Enter</kbd> back) · mouse: the buttons and the select on each card")


def _relabel_options_html(classes: list[str]) -> str:
    """The relabel select's options, shared by every card (the page disables the card's own class)."""
    return '<option value="">relabel as…</option>' + "".join(
        f'<option value="{_e(c)}">{f"{i}: " if i <= 9 else ""}{_e(c)}</option>' for i, c in enumerate(classes, start=1))


def _e(text) -> str:
    return html.escape(str(text), quote=True)


STYLE = """
body { font: 14px system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; background: #fafafa; }
header { padding: .6em 0 0; }
h1 { font-size: 1.3em; margin: .2em 0; } h2 { font-size: 1.1em; margin: 1.2em 0 .5em; } h2 small { font-weight: normal; color: #666; }
.summary { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: .4em 0; }
.summary dt { color: #666; } .summary dd { margin: 0; } .count { margin-right: .8em; }
.toolbar { position: sticky; top: 0; background: #fafafa; padding: .4em 0; z-index: 1;
           border-bottom: 1px solid #ccc; }  /* Export, the filters and the pages stay at hand while scrolling */
.toolbar > div { display: flex; gap: 1em; align-items: center; flex-wrap: wrap; margin: .2em 0; }
#showing { font-weight: bold; } .pager { display: flex; gap: .3em; align-items: center; }
.keys { color: #555; font-size: .9em; margin: .4em 0; }
kbd { border: 1px solid #bbb; border-radius: 3px; padding: 0 .3em; background: #fff; font-size: .9em; }
.cards { display: flex; flex-wrap: wrap; gap: .7em; align-items: flex-start; }
.card { scroll-margin-top: 7em; width: 170px; padding: .5em; background: #fff; border: 3px solid #ddd; border-radius: 6px; font-size: .85em; }
.card:focus-within { outline: 3px solid #f90; outline-offset: 1px; }
.card img, .card .missing { display: block; margin: 0 auto .3em; width: 128px; height: 128px; object-fit: contain; }
.card .missing { color: #a00; text-align: center; line-height: 128px; }
.path { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: #555; }
.badge { display: inline-block; background: #c62828; color: #fff; border-radius: 3px; padding: 0 .3em; margin: .2em 0; }
.badge.below { background: #757575; }
.card[data-flagged="0"] { border-style: dotted; }  /* listed after the flagged ones, not flagged itself */
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
# an image listed under two issues is one decision, and a decision outlives the page or filter that
# showed its card. `loaded` keeps labels.csv's rows in file order. Only the current page has cards.
SCRIPT = r"""
const DATA = JSON.parse(document.getElementById('findings').textContent);
const FINDINGS = DATA.findings.map(row => {  // a loop: several times faster than Object.fromEntries
  const finding = {};
  DATA.fields.forEach((field, i) => { finding[field] = row[i]; });
  return finding;
});
const LISTED = new Map();  // sha256 -> its first finding (whose note an export defaults to)
FINDINGS.forEach(f => LISTED.has(f.sha256) || LISTED.set(f.sha256, f));
const FIELDS = ['sha256', 'action', 'new_class', 'note'];
const TEMPLATE = document.getElementById('card').content.firstElementChild;
const FILTERS = ['issue', 'class', 'suggested', 'flagged'].map(field => ({
  field, select: document.getElementById(`filter-${field}`), values: DATA.filters[field], chosen: null}));
const decisions = new Map(), notes = new Map();
let loaded = [], unexported = false, view = FINDINGS, page = 0;

const number = n => n.toLocaleString('en-US');
const named = (field, value) =>
  field === 'flagged' ? (value ? 'flagged' : 'below threshold') : value === '' ? 'none' : value;
const shownCards = () => [...document.querySelectorAll('.card')];
const cardsOf = sha => shownCards().filter(c => c.dataset.sha256 === sha);
const pageCount = () => Math.max(1, Math.ceil(view.length / DATA.page_size));
const passes = (f, except) =>
  FILTERS.every(flt => flt === except || flt.chosen === null || f[flt.field] === flt.chosen);

function applyFilters() {
  view = FINDINGS.filter(f => passes(f, null));
  countChoices();
  showPage(0);
}

function countChoices() {  // each choice counts what it would show, given the other filters
  for (const flt of FILTERS) {
    const counts = new Map();
    let any = 0;
    for (const f of FINDINGS) {
      if (!passes(f, flt)) continue;
      any++;
      counts.set(f[flt.field], (counts.get(f[flt.field]) || 0) + 1);
    }
    flt.select.replaceChildren(new Option(`any (${number(any)})`, ''),
      ...flt.values.map((v, i) => new Option(`${named(flt.field, v)} (${number(counts.get(v) || 0)})`, String(i))));
    flt.select.value = flt.chosen === null ? '' : String(flt.values.indexOf(flt.chosen));
  }
}

function showPage(index, focus = null) {  // focus: 'first' or 'last' card (keyboard), else back to the top
  page = Math.min(Math.max(index, 0), pageCount() - 1);
  const start = page * DATA.page_size, shown = view.slice(start, start + DATA.page_size);
  document.querySelector('main').replaceChildren(...sections(shown));
  const filtered = FILTERS.filter(flt => flt.chosen !== null)
    .map(flt => `${flt.field}: ${named(flt.field, flt.chosen)}`);
  document.getElementById('showing').textContent =
    (shown.length ? `showing ${number(start + 1)}–${number(start + shown.length)} of ${number(view.length)} findings`
                  : 'no findings') + (filtered.length ? ` (${filtered.join(', ')})` : '');
  document.getElementById('page-of').textContent = `page ${number(page + 1)} of ${number(pageCount())}`;
  document.getElementById('first').disabled = document.getElementById('prev').disabled = page === 0;
  document.getElementById('next').disabled = document.getElementById('last').disabled = page === pageCount() - 1;
  const cards = shownCards();
  if (focus && cards.length) focusCard(focus === 'first' ? cards[0] : cards[cards.length - 1]);
  else window.scrollTo(0, 0);
}

const SECTIONS = {  // flagged findings first, then those below the thresholds: both most suspicious first
  1: {id: 'flagged', title: 'flagged', note: 'most suspicious first'},
  0: {id: 'below-threshold', title: 'below threshold',
      note: 'the next most suspicious images, not flagged: a look at what the thresholds leave out'},
};

function sections(shown) {  // the page's findings under a heading for flagged and one for below threshold
  if (!shown.length) return [Object.assign(document.createElement('p'),
    {textContent: FINDINGS.length ? 'No finding passes these filters.' : 'No suspicious images.'})];
  const groups = [];
  for (const f of shown) {
    if (!groups.length || groups.at(-1).flagged !== f.flagged) groups.push({flagged: f.flagged, findings: []});
    groups.at(-1).findings.push(f);
  }
  return groups.map(({flagged, findings}) => {
    const {id, title, note} = SECTIONS[flagged];
    const section = Object.assign(document.createElement('section'), {id});
    const heading = document.createElement('h2');
    const total = view.filter(f => f.flagged === flagged).length;
    heading.append(`${title} `, Object.assign(document.createElement('small'),
      {textContent: `${number(total)} findings, ${note}`}));
    const cards = Object.assign(document.createElement('div'), {className: 'cards'});
    cards.append(...findings.map(cardFor));
    section.append(heading, cards);
    return section;
  });
}

function cardFor(f) {
  const card = TEMPLATE.cloneNode(true);
  Object.assign(card.dataset, {sha256: f.sha256, class: f.class, suggested: f.suggested, autoDrop: f.auto_drop,
                               note: f.note, flagged: f.flagged});
  const part = selector => card.querySelector(selector);
  if (f.thumbnail) {
    Object.assign(part('img'), {src: `${DATA.thumbs}/${f.sha256}.jpg`, alt: f.path});
    part('.missing').remove();
  } else part('img').remove();
  Object.assign(part('.path'), {textContent: f.path, title: `${f.path} sha256 ${f.sha256}`});
  part('.given').textContent = f.class;
  if (f.suggested) part('.suggested b').textContent = f.suggested;
  else part('.suggested').remove();
  part('.score').textContent = `${f.issue} ${f.score}`;
  if (!f.auto_drop) part('.badge.auto').remove();
  if (f.flagged) part('.badge.below').remove();
  if (f.reason) Object.assign(part('.reason'), {textContent: f.reason, title: f.reason});
  else part('.reason').remove();
  for (const option of part('select').options) option.disabled = option.value === f.class;
  listen(card);
  render(card);
  return card;
}

function listen(card) {
  card.querySelectorAll('button').forEach(b => b.addEventListener('click', () => decide(card, b.dataset.act)));
  card.querySelector('select').addEventListener('change', e => decide(card, 'relabel', e.target.value));
  const note = card.querySelector('.note');
  note.addEventListener('input', () => {
    notes.set(card.dataset.sha256, note.value);
    unexported = true;
    cardsOf(card.dataset.sha256).filter(c => c !== card).forEach(render);
  });
  note.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === 'Escape') card.focus(); });
}

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
  const rowOf = sha => ({sha256: sha, ...decisions.get(sha), note: notes.get(sha) || LISTED.get(sha).note});
  const rows = [], done = new Set();
  for (const row of loaded) {  // labels.csv's order; rows about images not listed here unchanged
    if (!LISTED.has(row.sha256)) rows.push(row);
    else if (done.has(row.sha256)) continue;
    else if (decisions.has(row.sha256)) rows.push(rowOf(row.sha256));  // else set back to undecided here
    done.add(row.sha256);
  }
  for (const sha of LISTED.keys()) if (decisions.has(sha) && !done.has(sha)) rows.push(rowOf(sha));
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
    if (!LISTED.has(sha)) continue;
    row.sha256 = sha;
    decisions.set(sha, {action: row.action.trim().toLowerCase(), new_class: row.new_class.trim()});
    notes.set(sha, row.note);
  }
  shownCards().forEach(render);
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
  const elsewhere = loaded.filter(r => !LISTED.has(r.sha256)).length;
  document.getElementById('counts').textContent =
    `${decisions.size} decided in this review (${by.drop} drop, ${by.relabel} relabel, ${by.keep} keep)` +
    (elsewhere ? `; ${elsewhere} rows of labels.csv about images not in this review, exported unchanged` : '');
}

function focusCard(card) {
  card.focus();
  card.scrollIntoView({block: 'nearest'});
}

function move(card, step) {  // past either end of the page: on to the next or previous page
  const cards = shownCards();
  const at = card ? cards.indexOf(card) + step : 0;
  if (at >= cards.length && page < pageCount() - 1) showPage(page + 1, 'first');
  else if (at < 0 && page > 0) showPage(page - 1, 'last');
  else if (cards[at]) focusCard(cards[at]);
}

function moveOn(card) {  // after a decision: past the image's other cards (its issues are listed together)
  const cards = shownCards();
  let last = cards.indexOf(card);
  while (cards[last + 1] && cards[last + 1].dataset.sha256 === card.dataset.sha256) last++;
  move(cards[last], 1);
}

const NEXT = ['j', 'ArrowRight', 'ArrowDown'];  // with no card focused yet, these focus the first
const KEYS = {
  ...Object.fromEntries(NEXT.map(key => [key, c => move(c, 1)])),
  ArrowLeft: c => move(c, -1), ArrowUp: c => move(c, -1),
  k: c => { decide(c, 'keep'); moveOn(c); },
  d: c => { decide(c, 'drop'); moveOn(c); },
  r: c => c.dataset.suggested ? (decide(c, 'relabel', c.dataset.suggested), moveOn(c)) : c.querySelector('select').focus(),
  u: c => decide(c, ''),
  n: c => c.querySelector('.note').focus(),
};

document.addEventListener('keydown', e => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.target.matches('input, select, textarea')) return;
  const card = document.activeElement.closest && document.activeElement.closest('.card');
  const target = /^[1-9]$/.test(e.key) && card && card.querySelector('select').options[Number(e.key)];
  const action = target ? c => { decide(c, 'relabel', target.value); moveOn(c); } : KEYS[e.key];
  if (!action || (!card && !NEXT.includes(e.key))) return;
  e.preventDefault();  // arrows would scroll, n would type into the note
  action(card);
});

for (const flt of FILTERS) {
  flt.select.addEventListener('change', () => {
    flt.chosen = flt.select.value === '' ? null : flt.values[Number(flt.select.value)];
    applyFilters();
  });
}
const PAGER = {first: () => 0, prev: () => page - 1, next: () => page + 1, last: () => pageCount() - 1};
for (const [id, to] of Object.entries(PAGER)) {
  document.getElementById(id).addEventListener('click', () => showPage(to()));
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
applyFilters();
showCounts();
"""

# img-src: the thumbnails only, never the network. 'self' when the page is served; file: when it is
# opened from disk, where CSP gives the page an opaque origin that 'self' need not match.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title><style>{style}</style></head>
<body>
<header>
<h1>{title}</h1>
{summary}
<div class="keys">{keys}</div>
</header>
<div class="toolbar">
<div><button type="button" id="export">Export decisions</button>
<label>Load decisions <input type="file" id="load" accept=".csv,text/csv"></label>
<span id="load-status"></span> <span id="counts"></span></div>
<div><label>issue <select id="filter-issue"></select></label>
<label>class <select id="filter-class"></select></label>
<label>suggested <select id="filter-suggested"></select></label>
<label>flagged <select id="filter-flagged"></select></label>
<span class="pager"><button type="button" id="first">« first</button>
<button type="button" id="prev">‹ previous</button> <span id="page-of"></span>
<button type="button" id="next">next ›</button> <button type="button" id="last">last »</button></span>
<span id="showing"></span></div>
</div>
<main></main>
<template id="card"><article class="card" tabindex="0">
<img loading="lazy" alt=""><div class="missing">image unreadable</div>
<div class="path"></div>
<div>given <b class="given"></b><span class="suggested"> → suggested <b></b></span></div>
<div class="score"></div>
<div class="badge auto">auto-drop</div><div class="badge below">below threshold</div><div class="reason"></div>
<div class="state"></div>
<div class="actions"><button type="button" data-act="keep">keep</button><button type="button" data-act="drop">drop</button>
<select aria-label="relabel as">{relabel_options}</select></div>
<input class="note" type="text" placeholder="note (optional)" aria-label="note">
</article></template>
<script type="application/json" id="findings">{findings}</script>
<script>{script}</script>
</body></html>
"""
