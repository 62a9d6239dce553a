// The live recommendation panel: polls the JSON API and re-renders without a reload.
// Reasons mirror api/storefront/reasons.py; keep the two tables in step.
(function () {
  "use strict";
  var POLL_MS = 1500;
  var REASONS = {
    content: "Similar to what you viewed",
    popularity: "Popular now",
    trending: "Trending now",
    covisit: "Often viewed together",
    co_visitation: "Often viewed together",
    collaborative: "Shoppers like you chose this",
    cf: "Shoppers like you chose this",
    als: "Shoppers like you chose this",
    rating: "Matches your ratings",
    mf: "Matches your ratings",
    interest: "Popular in a category you like"
  };

  function reason(sources) {
    var best = null;
    Object.keys(sources || {}).forEach(function (name) {
      if (best === null || sources[name] > sources[best]) { best = name; }
    });
    return best === null ? "Picked for you" : (REASONS[best] || "Picked for you");
  }

  function price(value) { return "\u00a3" + Number(value).toFixed(2); }

  function card(item, why, recId, fresh) {
    var href = "/product/" + encodeURIComponent(item.item_id) +
      (recId ? "?rec=" + encodeURIComponent(recId) : "");
    var article = document.createElement("article");
    article.className = "card" + (fresh ? " fresh" : "");
    article.dataset.itemId = item.item_id;
    var link = document.createElement("a");
    link.href = href;
    var img = document.createElement("img");
    img.src = "/product/" + encodeURIComponent(item.item_id) + "/image.svg";
    img.alt = ""; img.width = 160; img.height = 160;
    var name = document.createElement("span");
    name.className = "name"; name.textContent = item.name;
    link.appendChild(img); link.appendChild(name);
    var cost = document.createElement("span");
    cost.className = "price"; cost.textContent = price(item.price);
    article.appendChild(link); article.appendChild(cost);
    if (why) {
      var r = document.createElement("span");
      r.className = "reason"; r.textContent = why;
      article.appendChild(r);
    }
    return article;
  }

  function render(container, entries, emptyText) {
    var signature = entries.map(function (e) { return e.item.item_id + "|" + e.why; }).join(";");
    if (container.dataset.signature === signature) { return false; }
    var before = {};
    container.querySelectorAll(".card").forEach(function (el) { before[el.dataset.itemId] = true; });
    var first = container.dataset.signature === undefined;
    container.dataset.signature = signature;
    container.replaceChildren();
    if (!entries.length) {
      var p = document.createElement("p");
      p.className = "empty"; p.textContent = emptyText;
      container.appendChild(p);
    }
    entries.forEach(function (e) {
      container.appendChild(card(e.item, e.why, e.recId, !first && !before[e.item.item_id]));
    });
    return !first;
  }

  function getJSON(url) {
    return fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error(url + ": " + r.status); } return r.json(); });
  }

  var panel = document.getElementById("recommended");
  if (!panel) { return; }
  var recBox = document.getElementById("recommended-items");
  var trendBox = document.getElementById("trending-items");
  var userId = panel.dataset.userId;
  var hasInterests = panel.dataset.hasInterests === "true";
  var updates = 0;
  // Seed the signatures with what the server rendered, so the first poll is not a "change".
  function seed(container) {
    var cards = container.querySelectorAll(".card");
    container.dataset.signature = Array.prototype.map.call(cards, function (el) {
      var r = el.querySelector(".reason");
      return el.dataset.itemId + "|" + (r ? r.textContent : "");
    }).join(";");
  }
  seed(recBox);
  if (trendBox) { seed(trendBox); }

  // Conditional polls: the ETag of the list on screen goes back in If-None-Match; a 304
  // means it is still current, so the panel keeps it (and the rec_id its links carry).
  var recTag = null, lastRecs = null, notModified = 0;
  function getRecs(url) {
    var headers = { Accept: "application/json" };
    if (recTag !== null && lastRecs !== null) { headers["If-None-Match"] = recTag; }
    // no-store: the page revalidates itself; the browser's cache must not answer for it.
    return fetch(url, { headers: headers, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 304) {
          notModified += 1;
          panel.dataset.notModified = String(notModified);
          return lastRecs;
        }
        if (!r.ok) { throw new Error(url + ": " + r.status); }
        recTag = r.headers.get("ETag");
        return r.json().then(function (body) { lastRecs = body; return body; });
      });
  }

  function poll() {
    if (document.hidden) { return Promise.resolve(); }
    var recs = getRecs("/api/recommendations?user_id=" + encodeURIComponent(userId) + "&k=8");
    var interests = hasInterests ? getJSON("/shop-api/interests") : Promise.resolve({ items: [] });
    var trending = trendBox ? getJSON("/shop-api/trending?k=8") : Promise.resolve(null);
    return Promise.all([recs, interests, trending]).then(function (answers) {
      var body = answers[0];
      var personal = body.items.some(function (it) {
        return Object.keys(it.sources || {}).some(function (s) { return s !== "popularity"; });
      });
      var entries;
      if (!personal && answers[1].items.length) {
        entries = answers[1].items.map(function (it) { return { item: it, why: it.reason, recId: null }; });
        panel.dataset.mode = "interests";
      } else {
        entries = body.items.map(function (it) {
          return { item: it, why: reason(it.sources), recId: body.rec_id };
        });
        panel.dataset.mode = "recommender";
      }
      if (render(recBox, entries, "Browse a few products and recommendations appear here.")) {
        updates += 1;
        panel.dataset.updates = String(updates);
      }
      if (answers[2]) {
        render(trendBox, answers[2].items.map(function (it) {
          return { item: it, why: it.reason, recId: null };
        }), "Nothing is trending yet.");
      }
    }).catch(function (err) { panel.dataset.error = String(err); });
  }

  panel.dataset.updates = "0";
  panel.dataset.notModified = "0";
  (function loop() {
    poll().then(function () { window.setTimeout(loop, POLL_MS); });
  })();
})();
