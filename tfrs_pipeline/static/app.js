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

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
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

function renderRecs(items, title) {
  $("recs-title").textContent = title;
  const tbody = document.querySelector("#recs tbody");
  tbody.replaceChildren();
  for (const item of items) {
    const tr = document.createElement("tr");
    tr.dataset.movieId = item.movie_id;
    cell(tr, item.rank, "num");
    cell(tr, item.title, "title");
    cell(tr, item.year, "num");
    genresCell(tr, item.genres);
    cell(tr, item.director, "director");
    cell(tr, item.star, "star");
    cell(tr, item.predicted_rating.toFixed(2), "num");
    tbody.appendChild(tr);
  }
  $("recs-empty").hidden = items.length > 0;
  $("recs-empty").textContent = "No recommendations.";
}

function renderRatings(data) {
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
    cell(tr, r.director, "director");
    cell(tr, r.star, "star");
    const n = Math.round(r.rating);
    cell(tr, "\u2605".repeat(n) + "\u2606".repeat(5 - n), "stars");
    cell(tr, new Date(r.timestamp * 1000).toISOString().slice(0, 10), "date");
    tbody.appendChild(tr);
  }
  $("ratings-empty").hidden = rows.length > 0;
  $("ratings-empty").textContent = data ? "No ratings." : "New user: no ratings.";
}

async function recommendUser(userId) {
  showError("");
  const k = $("k").value;
  try {
    const [recs, ratings] = await Promise.all([
      api(`/recommend?user_id=${encodeURIComponent(userId)}&k=${k}`),
      api(`/users/${encodeURIComponent(userId)}/ratings?limit=10`),
    ]);
    renderRecs(recs.items, `Recommendations for user ${userId}`);
    renderRatings(ratings);
  } catch (e) {
    showError(e.message);
  }
}

async function recommendNewUser() {
  showError("");
  const body = {
    age: Number($("age").value), gender: $("gender").value,
    occupation: $("occupation").value, zip: $("zip").value.trim(),
    k: Number($("k").value),
  };
  try {
    const recs = await api("/recommend", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
    });
    const c = recs.cold_start;
    renderRecs(recs.items, `Recommendations for a new user (${c.user_gender}, ` +
      `age ${c.bucketized_user_age}+, ${c.user_occupation_label})`);
    renderRatings(null);
  } catch (e) {
    showError(e.message);
  }
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
    recommendNewUser();
  });
  await waitReady();
  try {
    const meta = await api("/meta");
    for (const o of meta.occupations) {
      const opt = document.createElement("option");
      opt.value = opt.textContent = o;
      if (o === "writer") opt.selected = true;
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
  } catch (e) {
    showError(e.message);
  }
  document.body.dataset.ready = "1";
}

init();
