/*! Sluice collector: track(event, props) page(name, props) identify(userId, traits)
 consent({analytics: true, ads: false}) reset() flush(); queued calls: sluice.push(["track", "x"]) */
(function (w, d, n) {
  var s = d.currentScript,
    base = s.src.replace(/\/sluice\.js([?#].*)?$/, ""),
    key = s.getAttribute("data-write-key"),
    queue = [],
    timer = 0,
    tries = 0,
    hold = 0,
    token = "",
    domains = [],
    P = "_sluice",
    early = w.sluice;
  function load(k) {
    try { return JSON.parse(localStorage.getItem("sluice_" + k)); } catch (e) { return null; }
  }
  function save(k, v) {
    try { localStorage.setItem("sluice_" + k, JSON.stringify(v)); } catch (e) { /* private mode */ }
  }
  var user = load("user"), consent = load("consent");
  function id() {
    return w.crypto && crypto.randomUUID ? crypto.randomUUID() : Date.now() + "-" + Math.random().toString(36).slice(2);
  }
  function add(type, event) {
    event.type = type;
    event.messageId = id();
    event.timestamp = new Date().toISOString();
    if (user) event.userId = user;
    event.context = {
      page: { path: location.pathname, url: location.href, search: location.search, referrer: d.referrer, title: d.title },
      userAgent: n.userAgent,
      locale: n.language,
      library: { name: "sluice.js", version: "1" }
    };
    if (consent) event.context.consent = { categoryPreferences: consent };
    queue.push(event);
    if (queue.length >= 20) flush();
    else if (!timer) timer = setTimeout(flush, 1000);
  }
  // Sends everything queued; on page hide with sendBeacon, which outlives the page.
  function flush(beacon) {
    clearTimeout(timer);
    timer = 0;
    if (hold && beacon !== true) return;
    while (queue.length) send(queue.splice(0, 50), beacon === true);
  }
  function send(batch, beacon) {
    var url = base + "/v1/batch",
      body = JSON.stringify({ batch: batch, writeKey: key, sentAt: new Date().toISOString() });
    if (beacon && n.sendBeacon && n.sendBeacon(url, new Blob([body], { type: "text/plain" }))) return;
    // text/plain keeps it a simple CORS request: no preflight.
    fetch(url, { method: "POST", body: body, credentials: "include", keepalive: body.length < 60000, headers: { "Content-Type": "text/plain" } })
      .then(function (r) {
        if (r.status > 499 || r.status == 429) throw r.status;
        tries = 0;
      })
      .catch(function () {
        // The network or the proxy failed: keep the events and retry, a few times.
        if (tries++ < 5) {
          queue = batch.concat(queue).slice(0, 500);
          timer = timer || setTimeout(flush, 1000 << tries);
        }
      });
  }
  function post(path, body) {
    body.writeKey = key;
    return fetch(base + path, { method: "POST", body: JSON.stringify(body), credentials: "include", headers: { "Content-Type": "text/plain" } })
      .then(function (r) { return r.json(); });
  }
  function handoff() {
    post("/v1/handoff", {}).then(function (h) {
      domains = h.domains || [];
      if ((token = h.token || "")) setTimeout(handoff, 9e4);
    }, function () {});
  }
  function decorate(e) {
    var a = e.target.closest && e.target.closest("a[href]"), h = a && a.hostname;
    if (token && h && h != location.hostname && domains.some(function (x) { return h == x || h.slice(-x.length - 1) == "." + x; })) {
      var u = new URL(a.href);
      u.searchParams.set(P, token);
      a.href = u.href;
    }
  }
  d.addEventListener("mousedown", decorate, true);
  d.addEventListener("click", decorate, true);
  var here = new URL(location.href), given = here.searchParams.get(P);
  if (given) {
    hold = 1;
    here.searchParams.delete(P);
    history.replaceState(history.state, "", here.href);
    post("/v1/handoff/accept", { token: given })["catch"](function () {}).then(function () {
      hold = 0;
      flush();
      handoff();
    });
  } else handoff();
  var api = {
    track: function (event, properties) { add("track", { event: event, properties: properties || {} }); },
    page: function (name, properties) { add("page", { name: name || d.title, properties: properties || {} }); },
    identify: function (userId, traits) {
      if (userId) save("user", (user = String(userId)));
      add("identify", { traits: traits || {} });
    },
    consent: function (categories) { save("consent", (consent = categories)); },
    reset: function () { save("user", (user = null)); },
    flush: flush,
    push: function (call) { api[call[0]].apply(api, call.slice(1)); }
  };
  w.sluice = api;
  if (early && early.forEach) early.forEach(api.push);
  d.addEventListener("visibilitychange", function () { if (d.visibilityState == "hidden") flush(true); });
  w.addEventListener("pagehide", function () { flush(true); });
})(window, document, navigator);
