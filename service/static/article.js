// The whole-article view: GET /articles/{id}; the passage that was found is outlined and
// its best sentence marked (?passage=ID&mark=START-END, offsets in the article's text).
// Below it, the articles closest to it: GET /articles/{id}/related.
"use strict";

const params = new URLSearchParams(location.search);
const articleId = params.get("id");
const RELATED_K = 5;

function passageSpan(article) {
  const wanted = Number.parseInt(params.get("passage"), 10);
  return (article.passages || []).find((p) => p.passage_id === wanted) || null;
}

function markSpan() {
  const match = /^(\d+)-(\d+)$/.exec(params.get("mark") || "");
  return match ? { start: +match[1], end: +match[2] } : null;
}

/** The article text with the passage outlined and the sentence marked, all as text nodes. */
function renderText(text, passage, mark) {
  const box = document.getElementById("article-text");
  if (!passage) {
    box.append(document.createTextNode(text));
    return null;
  }
  const chars = Array.from(text);
  const slice = (a, b) => chars.slice(a, b).join("");
  const inPassage = mark && passage.start <= mark.start && mark.end <= passage.end
    ? withSpan(slice(passage.start, passage.end), mark.start - passage.start, mark.end - passage.start)
    : document.createTextNode(slice(passage.start, passage.end));
  const found = el("span", { class: "found-passage", id: "found", tabindex: "-1" }, inPassage);
  box.append(document.createTextNode(slice(0, passage.start)), found,
             document.createTextNode(slice(passage.end)));
  return found;
}

function renderArticle(article) {
  document.title = `${article.title || article.id} · Passage search`;
  document.getElementById("article-title").textContent = article.title || article.id;
  const meta = document.getElementById("article-meta");
  const href = article.url ? safeHref(article.url) : null;
  meta.append(...[
    article.date ? el("time", { datetime: article.date }, formatDate(article.date)) : null,
    article.source ? el("span", { class: "source" }, article.source) : null,
    href ? el("a", { href, rel: "noopener noreferrer" }, "original") : null,
    el("span", { class: "article-id" }, `id ${article.id}`),
  ].filter(Boolean));
  const found = renderText(article.text, passageSpan(article), markSpan());
  document.getElementById("status").textContent = "";
  document.getElementById("article").hidden = false;
  if (found) found.scrollIntoView({ block: "nearest" });
}

function renderRelated(answer) {
  const section = document.getElementById("related");
  const items = answer.related.map((related) => {
    const link = `article.html?${new URLSearchParams({ id: related.article_id })}`;
    return el("li", { class: "related-item", "data-article-id": related.article_id },
      el("a", { href: link }, related.title || related.article_id),
      el("span", { class: "meta" },
        related.date ? el("time", { datetime: related.date }, formatDate(related.date)) : null,
        related.source ? el("span", { class: "source" }, related.source) : null,
        el("span", { class: "score", title: "cosine similarity (higher is closer)" },
           `score ${related.score.toFixed(3)}`)));
  });
  document.getElementById("related-list").replaceChildren(...items);
  document.getElementById("related-status").textContent =
    items.length ? "" : "No other articles in the collection.";
  section.hidden = false;
}

async function loadRelated() {
  try {
    renderRelated(await fetchJSON(
      `../articles/${encodeURIComponent(articleId)}/related?k=${RELATED_K}`));
  } catch (error) {
    document.getElementById("related-status").textContent =
      `Related articles could not be loaded: ${error.message}`;
    document.getElementById("related").hidden = false;
  }
}

(async function load() {
  if (history.length > 1) {
    document.getElementById("back").addEventListener("click", (event) => {
      event.preventDefault();
      history.back();
    });
  }
  const status = document.getElementById("status");
  if (!articleId) {
    status.textContent = "";
    showArticleError("No article given: this page needs ?id=ARTICLE_ID.");
    return;
  }
  try {
    renderArticle(await fetchJSON(`../articles/${encodeURIComponent(articleId)}`));
    await loadRelated();
  } catch (error) {
    status.textContent = "";
    showArticleError(error.message);
  }
})();

function showArticleError(message) {
  const line = document.getElementById("error");
  line.textContent = message;
  line.hidden = false;
}
