// The search page: form -> POST search -> a list of passages with the best sentence marked.
"use strict";

const form = document.getElementById("search-form");
const queryBox = document.getElementById("query");
const modeSelect = document.getElementById("mode");
const kInput = document.getElementById("k");
const minScoreInput = document.getElementById("min-score");
const halfLifeInput = document.getElementById("half-life");
const sortSelect = document.getElementById("sort");
const collapseBox = document.getElementById("collapse");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const results = document.getElementById("results");
const MODES = ["dense", "lexical", "hybrid"];
const SORTS = ["score", "date"];
let inFlight = null; // the AbortController of the search being waited for

function showStatus(text) {
  statusLine.textContent = text;
}

function showError(text) {
  errorLine.textContent = text;
  errorLine.hidden = !text;
}

function clampK(value) {
  const k = Number.parseInt(value, 10);
  return Number.isFinite(k) ? Math.min(100, Math.max(1, k)) : 10;
}

/** A finite number from a text field, or null when it is empty or not a number. */
function numberOrNull(value) {
  const text = String(value ?? "").trim();
  const number = Number(text);
  return text && Number.isFinite(number) ? number : null;
}

/** The re-ranking options set on the form, named as the service names them. */
function rankingOptions() {
  const options = {};
  const minScore = numberOrNull(minScoreInput.value);
  const halfLife = numberOrNull(halfLifeInput.value);
  if (minScore !== null) options.min_score = minScore;
  if (halfLife !== null && halfLife > 0) options.recency_half_life_days = halfLife;
  if (sortSelect.value === "date") options.sort = "date";
  // Collapsing is the service's default; only turning it off needs saying.
  if (!collapseBox.checked) options.collapse = false;
  return options;
}

function articleLink(hit) {
  const params = new URLSearchParams({ id: hit.article_id, passage: hit.passage_id });
  if (hit.highlight) {
    params.set("mark", `${hit.start + hit.highlight.start}-${hit.start + hit.highlight.end}`);
  }
  return `static/article.html?${params}`;
}

function renderHit(hit) {
  const title = hit.title || hit.article_id;
  const meta = el("p", { class: "meta" },
    el("span", { class: "rank", "aria-label": `rank ${hit.rank}` }, `#${hit.rank}`),
    hit.date ? el("time", { datetime: hit.date }, formatDate(hit.date)) : null,
    hit.source ? el("span", { class: "source" }, hit.source) : null,
    el("span", { class: "score", title: "similarity score (higher is closer)" },
       `score ${hit.score.toFixed(3)}`),
    hit.duplicates ? renderCopies(hit) : null);
  const span = hit.highlight || {};
  const passage = el("p", { class: "passage" }, withSpan(hit.text, span.start, span.end));
  return el("li", { class: "hit", "data-passage-id": hit.passage_id },
    el("h2", { class: "hit-title" }, el("a", { href: articleLink(hit) }, title)),
    meta, passage);
}

/** "and N copies", each a link to that copy. */
function renderCopies(hit) {
  const n = hit.duplicates;
  const links = hit.duplicate_ids.map((id) =>
    el("a", { href: `static/article.html?${new URLSearchParams({ id })}` }, id));
  const list = links.flatMap((link, i) => (i ? [", ", link] : [link]));
  return el("span", { class: "copies", title: "the same story, also stored as" },
    `and ${n} ${n === 1 ? "copy" : "copies"} (`, ...list, ")");
}

function renderResults(answer) {
  results.replaceChildren(...answer.hits.map(renderHit));
  const n = answer.hits.length;
  const took = Math.round(answer.took_ms);
  const floor = numberOrNull(minScoreInput.value);
  const none = floor === null
    ? `No passages match “${answer.query}”. Try other words or another mode.`
    : `No passages match “${answer.query}” with a score of at least ${floor}.`;
  showStatus(n === 0 ? none : `${n} passage${n === 1 ? "" : "s"} (${answer.mode}, ${took} ms)`);
}

async function search({ pushHistory = true } = {}) {
  const query = queryBox.value.trim();
  showError("");
  if (!query) {
    results.replaceChildren();
    showStatus("Type a few words to search for.");
    queryBox.focus();
    return;
  }
  const request = { query, k: clampK(kInput.value), mode: modeSelect.value, highlight: true,
                    ...rankingOptions() };
  if (pushHistory) {
    const params = new URLSearchParams({ q: query, mode: request.mode, k: request.k });
    if (request.min_score !== undefined) params.set("min_score", request.min_score);
    if (request.recency_half_life_days !== undefined) {
      params.set("half_life", request.recency_half_life_days);
    }
    if (request.sort) params.set("sort", request.sort);
    if (request.collapse === false) params.set("collapse", "0");
    history.replaceState(null, "", `?${params}`);
  }
  if (inFlight) inFlight.abort(); // a newer search replaces the one still on its way
  const controller = new AbortController();
  inFlight = controller;
  results.setAttribute("aria-busy", "true");
  document.body.classList.add("loading");
  showStatus("Searching…");
  try {
    const answer = await fetchJSON("search", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(request),
      signal: controller.signal,
    });
    renderResults(answer);
  } catch (error) {
    if (error.name === "AbortError") return;
    results.replaceChildren();
    showStatus("");
    showError(error.message);
  } finally {
    if (inFlight === controller) {
      inFlight = null;
      results.removeAttribute("aria-busy");
      document.body.classList.remove("loading");
    }
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
for (const control of [modeSelect, sortSelect]) {
  control.addEventListener("change", () => { if (queryBox.value.trim()) search(); });
}

// "/" jumps to the search box from anywhere but a text field.
document.addEventListener("keydown", (event) => {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    queryBox.focus();
    queryBox.select();
  }
});

// A shared link (?q=...&mode=...&k=...&min_score=...&half_life=...&sort=...&collapse=0)
// runs its search on load.
(function restoreFromAddress() {
  const params = new URLSearchParams(location.search);
  if (MODES.includes(params.get("mode"))) modeSelect.value = params.get("mode");
  if (params.get("k")) kInput.value = clampK(params.get("k"));
  if (numberOrNull(params.get("min_score")) !== null) {
    minScoreInput.value = numberOrNull(params.get("min_score"));
  }
  if (numberOrNull(params.get("half_life")) !== null) {
    halfLifeInput.value = numberOrNull(params.get("half_life"));
  }
  if (SORTS.includes(params.get("sort"))) sortSelect.value = params.get("sort");
  if (params.get("collapse") === "0") collapseBox.checked = false;
  if (params.get("q")) {
    queryBox.value = params.get("q");
    search({ pushHistory: false });
  } else {
    showStatus("Type a question or a few words, then press Enter.");
  }
})();
