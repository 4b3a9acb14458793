// Web page of the recommender service: plain JS, same-origin API calls.
"use strict";

const $ = (id) => document.getElementById(id);

function cell(row, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  if (text === null || text === undefined || text === "") {
    td.textContent = "\u2014";
    td.classList.add("muted");
  } else {
    td.textContent = text;
  }
  row.appendChild(td);
  return td;
}

function genresCell(row, genres) {
  const td = document.createElement("td");
  for (const g of genres || []) {
    const span = document.createElement("span");
    span.className = "genre";
    span.textContent = g;
    td.appendChild(span);
  }
  row.appendChild(td);
}

// The error box sits inside the recommendations card, under its title:
// showing it moves no card.
function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// A failed recommendation request: the error, and no stale results (the
// right-hand table too when it showed the failed user's ratings).
function failRecs(message, clearRatings) {
  clearRecs("No recommendations: see the error above.");
  if (clearRatings) renderRatings(null, "No user selected.");
  showError(message);
}

// While a request is on its way the shown results are marked stale.
function setLoading(on) {
  $("results").classList.toggle("loading", on);
  $("results").setAttribute("aria-busy", on ? "true" : "false");
}

// The page's state in the address bar (history.replaceState), so results
// can be linked: ?user_id=42&k=10, or ?rated=2:5,11:4&age=30&gender=F&
// occupation=writer&zip=94110&k=10 for a new user (rated: movie:stars,
// most recent first).
function saveUrl(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") q.set(name, value);
  }
  q.set("k", $("k").value);
  history.replaceState(null, "", `${location.pathname}?${q}`);
}

// Display names of the candidate sources (others: "_" -> "-").
const SOURCE_LABELS = {two_tower: "two-tower"};

// Why a movie was recommended: the rated movie that brought it, else the
// sources that retrieved it.
function whyText(item) {
  if (item.because) return `because you liked ${item.because.title || item.because.movie_id}`;
  if (item.why) return item.why;
  return (item.sources || []).map((s) => SOURCE_LABELS[s] || s.replace(/_/g, "-")).join(", ");
}

function starsText(rating) {
  const n = Math.max(0, Math.min(5, Math.round(rating)));
  return "\u2605".repeat(n) + "\u2606".repeat(5 - n);
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    throw new Error((body && body.error) || `HTTP ${response.status}`);
  }
  return body;
}

// Only the answer to the latest recommendation request is shown.
let recsRequest = 0;
// What the "How many" select re-runs when it changes.
let lastRequest = null;

function renderRecs(items, title, note) {
  setLoading(false);
  $("recs-title").textContent = title;
  $("k-note").textContent = note || "";
  $("k-note").hidden = !note;
  const table = $("recs");
  table.dataset.updates = String(Number(table.dataset.updates || 0) + 1);
  const tbody = document.querySelector("#recs tbody");
  tbody.replaceChildren();
  for (const item of items) {
    const tr = document.createElement("tr");
    tr.dataset.movieId = item.movie_id;
    cell(tr, item.rank, "num");
    cell(tr, item.title, "title");
    cell(tr, item.year, "num");
    genresCell(tr, item.genres);
    // Labels: shown before the values when a narrow screen stacks the rows.
    cell(tr, item.director, "director").dataset.label = "Director";
    cell(tr, item.star, "star").dataset.label = "Star";
    cell(tr, item.score.toFixed(2), "num score").dataset.label = "Score";
    cell(tr, item.predicted_rating.toFixed(2), "num pred").dataset.label = "Pred.";
    cell(tr, whyText(item), "why");
    tbody.appendChild(tr);
  }
  $("recs-empty").hidden = items.length > 0;
  $("recs-empty").textContent = "No recommendations.";
  $("recs-order").hidden = items.length === 0;
}

function clearRecs(hint) {
  recsRequest++;  // drops answers still on their way
  setLoading(false);
  $("recs-title").textContent = "Recommendations";
  $("k-note").hidden = true;
  $("recs-order").hidden = true;
  document.querySelector("#recs tbody").replaceChildren();
  $("recs-empty").hidden = false;
  $("recs-empty").textContent = hint;
}

function renderRatings(data, emptyHint) {
  const u = data ? data.user : null;
  $("ratings-title").textContent = u
    ? `Recent ratings of user ${u.user_id} (${data.num_ratings} in all)`
    : "Recent ratings";
  const tbody = document.querySelector("#ratings tbody");
  tbody.replaceChildren();
  const rows = data ? data.ratings : [];
  for (const r of rows) {
    const tr = document.createElement("tr");
    cell(tr, r.title, "title");
    cell(tr, r.year, "num");
    cell(tr, r.director, "director").dataset.label = "Director";
    cell(tr, r.star, "star").dataset.label = "Star";
    cell(tr, r.rating === null ? null : starsText(r.rating), "stars");
    cell(tr, r.timestamp ? new Date(r.timestamp * 1000).toISOString().slice(0, 10) : null,
      "date");
    tbody.appendChild(tr);
  }
  $("ratings-empty").hidden = rows.length > 0;
  $("ratings-empty").textContent = emptyHint
    || (data ? "No ratings." : "New user: no ratings.");
}

async function recommendUser(userId) {
  showError("");
  lastRequest = () => recommendUser(userId);
  const request = ++recsRequest;
  const k = $("k").value;
  saveUrl({user_id: userId});
  setLoading(true);
  try {
    const [recs, ratings] = await Promise.all([
      api(`/recommend?user_id=${encodeURIComponent(userId)}&k=${k}`),
      api(`/users/${encodeURIComponent(userId)}/ratings?limit=10`),
    ]);
    if (request !== recsRequest) return;
    renderRecs(recs.items, `Recommendations for user ${userId}`, recs.k_note);
    renderRatings(ratings);
  } catch (e) {
    if (request === recsRequest) failRecs(e.message, true);
  }
}

// ---------------------------------------------------------------------------
// New user: movies they like (searched by title) and optional demographics.

// [{movie_id, title, year, director, star, rating}], most recent first.
const liked = [];

function demographics() {
  const values = {
    age: $("age").value.trim() === "" ? null : Number($("age").value),
    gender: $("gender").value || null,
    occupation: $("occupation").value || null,
    zip: $("zip").value.trim() || null,
  };
  // Sent when any is filled in: the service names the missing ones.
  return Object.values(values).some((v) => v !== null) ? values : null;
}

function renderLiked() {
  const list = $("liked");
  list.replaceChildren();
  for (const movie of liked) {
    const li = document.createElement("li");
    li.dataset.movieId = movie.movie_id;
    const name = document.createElement("span");
    name.className = "liked-title";
    name.textContent = movie.year ? `${movie.title} (${movie.year})` : movie.title;
    name.title = name.textContent;
    const select = document.createElement("select");
    select.className = "rating";
    select.setAttribute("aria-label", `your rating of ${movie.title}`);
    for (let r = 5; r >= 1; r--) {
      const opt = document.createElement("option");
      opt.value = String(r);
      opt.textContent = starsText(r);
      opt.title = `${r} of 5`;
      opt.selected = r === movie.rating;
      select.appendChild(opt);
    }
    select.addEventListener("change", () => {
      movie.rating = Number(select.value);
      renderLiked();
      recommendNewUser();
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.textContent = "\u00d7";
    remove.title = `remove ${movie.title}`;
    remove.setAttribute("aria-label", `remove ${movie.title}`);
    remove.addEventListener("click", () => {
      liked.splice(liked.indexOf(movie), 1);
      renderLiked();
      recommendNewUser();
    });
    li.append(name, select, remove);
    list.appendChild(li);
  }
  $("liked-empty").hidden = liked.length > 0;
  $("liked").hidden = liked.length === 0;
}

function addLiked(movie) {
  if (!liked.some((m) => m.movie_id === movie.movie_id)) {
    liked.unshift({...movie, rating: 5});
  }
  $("movie-search").value = "";
  hideResults();
  renderLiked();
  recommendNewUser();
}

// Title search as the visitor types (debounced; late answers dropped).
let searchTimer = null;
let searchRequest = 0;
let results = [];

function hideResults() {
  searchRequest++;
  clearTimeout(searchTimer);
  results = [];
  $("movie-results").replaceChildren();
  $("movie-results").hidden = true;
}

function renderResults(items, query) {
  results = items;
  const list = $("movie-results");
  list.replaceChildren();
  for (const movie of items) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.movieId = movie.movie_id;
    b.setAttribute("role", "option");
    const added = liked.some((m) => m.movie_id === movie.movie_id);
    const title = document.createElement("span");
    title.textContent = movie.year ? `${movie.title} (${movie.year})` : movie.title;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = added ? "added" : `${movie.num_ratings} ratings`;
    b.append(title, count);
    b.disabled = added;
    b.addEventListener("click", () => addLiked(movie));
    li.appendChild(b);
    list.appendChild(li);
  }
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = `No title contains \u201c${query}\u201d.`;
    list.appendChild(li);
  }
  list.hidden = false;
}

function searchSoon() {
  clearTimeout(searchTimer);
  const query = $("movie-search").value.trim();
  if (!query) { hideResults(); return; }
  searchTimer = setTimeout(async () => {
    const request = ++searchRequest;
    try {
      const body = await api(`/movies?q=${encodeURIComponent(query)}&limit=8`);
      if (request === searchRequest) renderResults(body.items, query);
    } catch (e) {
      if (request === searchRequest) showError(e.message);
    }
  }, 200);
}

async function recommendNewUser() {
  showError("");
  lastRequest = recommendNewUser;
  const demo = demographics();
  saveUrl({
    rated: liked.map((m) => `${m.movie_id}:${m.rating}`).join(","),
    age: $("age").value.trim(), gender: $("gender").value,
    occupation: $("occupation").value, zip: $("zip").value.trim(),
  });
  if (!liked.length && !demo) {
    clearRecs("Add movies you like or fill in your details.");
    renderNewUserRatings();
    return;
  }
  const body = {k: Number($("k").value), ...(demo || {})};
  if (liked.length) {
    body.ratings = liked.map((m) => ({movie_id: m.movie_id, rating: m.rating}));
  }
  const request = ++recsRequest;
  setLoading(true);
  try {
    const recs = await api("/recommend", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
    });
    if (request !== recsRequest) return;
    const c = recs.cold_start;
    const who = recs.cold_start_text || "";  // e.g. "F 25-34 writer"
    const n = recs.ratings_used || 0;
    const likes = `${n} movie${n === 1 ? "" : "s"} you like`;
    renderRecs(recs.items, n
      ? `Recommendations from ${likes}` + (c ? ` (${who})` : "")
      : `Recommendations for a new user (${who})`, recs.k_note);
    renderNewUserRatings();
  } catch (e) {
    if (request === recsRequest) failRecs(e.message, false);
  }
}

function renderNewUserRatings() {
  if (!liked.length) { renderRatings(null); return; }
  renderRatings({
    user: null, num_ratings: liked.length,
    ratings: liked.map((m) => ({...m, timestamp: null})),
  });
  $("ratings-title").textContent = "Movies you like";
}

// Restores the state of a linked address (see `saveUrl`) and runs its
// request; a value the page cannot take is named in the error box.
async function restoreFromUrl(maxK) {
  const q = new URLSearchParams(location.search);
  const problems = [];
  if (q.has("k")) {
    const k = q.get("k");
    if (/^[0-9]+$/.test(k) && Number(k) >= 1 && Number(k) <= maxK) {
      if (![...$("k").options].some((o) => o.value === String(Number(k)))) {
        const opt = document.createElement("option");
        opt.textContent = String(Number(k));
        $("k").appendChild(opt);
      }
      $("k").value = String(Number(k));
    } else {
      problems.push(`k must be an integer in 1..${maxK}, got "${k}"`);
    }
  }
  const userId = (q.get("user_id") || "").trim();
  if (userId) {
    $("user-id").value = userId;
    if (problems.length) { showError(`Link: ${problems.join("; ")}`); return; }
    await recommendUser(userId);
    return;
  }
  let any = false;
  for (const name of ["age", "gender", "occupation", "zip"]) {
    if (!q.has(name)) continue;
    any = true;
    const field = $(name);
    field.value = q.get(name);
    if (field.value !== q.get(name)) problems.push(`${name} "${q.get(name)}" is not one of the choices`);
  }
  const rated = (q.get("rated") || "").split(",").filter((x) => x.trim());
  const parsed = [];
  for (const part of rated) {
    const m = /^\s*([^:\s]+)\s*(?::\s*([1-5])\s*)?$/.exec(part);
    if (m) parsed.push({movie_id: m[1], rating: m[2] ? Number(m[2]) : 5});
    else problems.push(`rated: "${part}" is not movie_id:stars (1-5)`);
  }
  const found = await Promise.allSettled(parsed.map(
    (p) => api(`/movies/${encodeURIComponent(p.movie_id)}`)));
  found.forEach((r, i) => {
    if (r.status === "fulfilled") {
      if (!liked.some((m) => m.movie_id === r.value.movie_id)) {
        liked.push({...r.value, rating: parsed[i].rating});
      }
    } else {
      problems.push(`rated: ${r.reason.message}`);
    }
  });
  renderLiked();
  if (problems.length) { showError(`Link: ${problems.join("; ")}`); return; }
  if (any || liked.length) await recommendNewUser();
}

async function waitReady() {
  for (;;) {
    try {
      const r = await fetch("/health");
      if (r.ok) {
        $("status").textContent = "ready";
        $("status").className = "status ok";
        return;
      }
      const body = await r.json();
      $("status").textContent = body.status === "failed" ? "failed" : "loading models\u2026";
      if (body.status === "failed") {
        $("status").className = "status bad";
        showError(body.detail || "model loading failed");
        return;
      }
    } catch (e) {
      $("status").textContent = "offline";
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function init() {
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("user-id").value.trim();
    if (id) recommendUser(id); else showError("Enter a user id.");
  });
  $("new-user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    hideResults();
    recommendNewUser();
  });
  const search = $("movie-search");
  search.addEventListener("input", searchSoon);
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {  // picks the first match, never submits
      e.preventDefault();
      const first = results.find((m) => !liked.some((l) => l.movie_id === m.movie_id));
      if (first) addLiked(first);
    } else if (e.key === "Escape") {
      search.value = "";
      hideResults();
    }
  });
  document.addEventListener("click", (e) => {
    if (!e.target.closest(".search")) hideResults();
  });
  $("k").addEventListener("change", () => {
    if (lastRequest) lastRequest(); else saveUrl({});
  });
  renderLiked();
  await waitReady();
  try {
    const meta = await api("/meta");
    for (const o of meta.occupations) {
      const opt = document.createElement("option");
      opt.value = opt.textContent = o;
      $("occupation").appendChild(opt);
    }
    for (const id of meta.example_user_ids) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "example";
      b.textContent = id;
      b.addEventListener("click", () => {
        $("user-id").value = id;
        recommendUser(id);
      });
      $("examples").appendChild(b);
    }
    await restoreFromUrl(meta.max_k);
  } catch (e) {
    showError(e.message);
  }
  document.body.dataset.ready = "1";
}

init();
