// Helpers shared by the search page and the article view. Every string from the server
// reaches the page as a text node (textContent / createTextNode), never as HTML.
"use strict";

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/**
 * `text` with the span [start, end) wrapped in `wrap` (a <mark> by default).
 * The server counts characters as Python does (code points); JavaScript strings count
 * UTF-16 units, which differ past the first emoji. So slice by code points.
 */
function withSpan(text, start, end, wrap) {
  const chars = Array.from(text);
  const fragment = document.createDocumentFragment();
  const valid = Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start < end
    && end <= chars.length;
  if (!valid) {
    fragment.append(document.createTextNode(text));
    return fragment;
  }
  const inner = wrap ? wrap() : el("mark");
  inner.append(document.createTextNode(chars.slice(start, end).join("")));
  fragment.append(document.createTextNode(chars.slice(0, start).join("")), inner,
                  document.createTextNode(chars.slice(end).join("")));
  return fragment;
}

/** The server's `detail` as one readable line (a 422's detail is a list of errors). */
function detailMessage(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((item) => {
      const loc = (item.loc || []).filter((part) => !["body", "query", "path"].includes(part));
      return loc.length ? `${loc.join(".")}: ${item.msg}` : String(item.msg || item);
    }).join("; ");
  }
  return `The server answered ${response.status} ${response.statusText}`.trim();
}

/** fetch + JSON; throws an Error whose message is the server's detail. */
async function fetchJSON(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Error("Could not reach the search service. Is it still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    // an error page that is not JSON: fall through to the status line
  }
  if (!response.ok) throw new Error(detailMessage(body, response));
  if (body === null) throw new Error("The server's answer was not JSON.");
  return body;
}

/** "30 Aug 2021" from "2021-08-30"; the input unchanged if it is not such a date. */
function formatDate(iso) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(iso || "");
  if (!match) return iso || "";
  const date = new Date(Date.UTC(+match[1], +match[2] - 1, +match[3]));
  return date.toLocaleDateString("en-GB", { day: "numeric", month: "short", year: "numeric",
                                             timeZone: "UTC" });
}

/** Only http(s) links from the data become hrefs (no javascript: URLs). */
function safeHref(url) {
  try {
    const parsed = new URL(url, document.baseURI);
    return ["http:", "https:"].includes(parsed.protocol) ? parsed.href : null;
  } catch (_) {
    return null;
  }
}
