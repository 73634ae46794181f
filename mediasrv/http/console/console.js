/* mediasrv web console: streams and sessions from the ZLMediaKit-style API,
 * a player per stream, kick and close buttons.  Every name shown comes from
 * clients (stream names, parameters), so the DOM is built with textContent
 * only, never innerHTML. */
(function () {
  "use strict";

  var REFRESH_MS = 2000;
  var state = { secret: sessionStorage.getItem("mediasrv.secret") || "", timer: null, player: null,
                playing: null, streams: [], sessions: [] };
  window.mediasrvConsole = state;  // for tests and curious operators

  var $ = function (id) { return document.getElementById(id); };

  function setStatus(text, isError) {
    var el = $("status");
    el.textContent = text;
    el.className = "status" + (isError ? " error" : "");
  }

  function api(name, args) {
    var body = Object.assign({}, args || {}, { secret: state.secret });
    return fetch("/index/api/" + name, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      cache: "no-store"
    }).then(function (r) { return r.json(); }).then(function (reply) {
      if (reply.code !== 0 && name !== "close_stream") {
        var err = new Error(reply.msg || ("code " + reply.code));
        err.reply = reply;
        throw err;
      }
      return reply;
    });
  }

  function age(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }

  function bytes(n) {
    var units = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function button(parent, label, action, onClick, danger) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.action = action;
    if (danger) b.className = "danger";
    b.addEventListener("click", onClick);
    parent.appendChild(b);
    parent.appendChild(document.createTextNode(" "));
    return b;
  }

  /* getMediaList has one item per output schema; the console shows one row per stream */
  function groupStreams(items) {
    var byKey = {}, order = [];
    items.forEach(function (m) {
      var key = m.vhost + "/" + m.app + "/" + m.stream;
      if (!byKey[key]) { byKey[key] = { item: m, schemas: [], readers: 0 }; order.push(key); }
      byKey[key].schemas.push(m.schema);
      byKey[key].readers = Math.max(byKey[key].readers, m.totalReaderCount || 0);
    });
    return order.map(function (k) { return byKey[k]; });
  }

  function trackText(tracks, type) {
    var t = (tracks || []).filter(function (x) { return x.codec_type === type; })[0];
    if (!t) return "-";
    var name = (t.codec_id_name || "").replace(/^Codec/, "");
    return type === 0 ? name + " " + t.width + "x" + t.height : name + " " + t.sample_rate + " Hz";
  }

  function renderStreams(groups) {
    var body = $("streams").tBodies[0];
    body.textContent = "";
    $("stream-count").textContent = "(" + groups.length + ")";
    groups.forEach(function (g) {
      var m = g.item, name = m.app + "/" + m.stream;
      var row = body.insertRow();
      row.dataset.stream = name;
      cell(row, name, "id");
      cell(row, g.schemas.join(" "));
      cell(row, trackText(m.tracks, 0));
      cell(row, trackText(m.tracks, 1));
      cell(row, g.readers, "num");
      cell(row, age(m.aliveSecond), "num");
      cell(row, bytes(m.totalBytes || 0), "num");
      var actions = cell(row, "");
      button(actions, "FLV", "play-flv", function () { play(m, "flv"); });
      if (g.schemas.indexOf("hls") >= 0) button(actions, "HLS", "play-hls", function () { play(m, "hls"); });
      button(actions, "close", "close", function () {
        api("close_stream", { schema: m.schema, vhost: m.vhost, app: m.app, stream: m.stream, force: 1 })
          .then(refresh).catch(function (e) { setStatus("close: " + e.message, true); });
      }, true);
    });
  }

  function renderSessions(sessions) {
    var body = $("sessions").tBodies[0];
    body.textContent = "";
    $("session-count").textContent = "(" + sessions.length + ")";
    sessions.forEach(function (s) {
      var row = body.insertRow();
      row.dataset.session = s.id;
      cell(row, s.id, "id");
      cell(row, s.protocol || s.typeid);
      cell(row, s.role || "");
      cell(row, s.peer_ip + ":" + s.peer_port);
      cell(row, s.stream ? s.app + "/" + s.stream : (s.app || ""));
      cell(row, s.alive_seconds != null ? age(s.alive_seconds) : "", "num");
      cell(row, bytes(s.bytes_in || 0), "num");
      cell(row, bytes(s.bytes_out || 0), "num");
      var actions = cell(row, "");
      button(actions, "kick", "kick", function () {
        api("kick_session", { id: s.id }).then(refresh)
          .catch(function (e) { setStatus("kick: " + e.message, true); });
      }, true);
    });
  }

  function refresh() {
    if (!state.secret) { setStatus("enter the API secret (api.secret)", true); return Promise.resolve(); }
    return Promise.all([api("getMediaList"), api("getAllSession")]).then(function (r) {
      state.streams = groupStreams(r[0].data || []);
      state.sessions = r[1].data || [];
      renderStreams(state.streams);
      renderSessions(state.sessions);
      setStatus("connected; updated " + new Date().toLocaleTimeString());
    }).catch(function (e) { setStatus(e.message, true); });
  }

  function stopPlayer() {
    var p = state.player;
    state.player = null;
    state.playing = null;
    if (!p) return;
    try {
      if (p.kind === "flv") { p.obj.pause(); p.obj.unload(); p.obj.detachMediaElement(); p.obj.destroy(); }
      else if (p.kind === "hls") { p.obj.destroy(); }
    } catch (e) { /* a player that already failed */ }
    var video = $("player");
    video.removeAttribute("src");
    video.load();
  }

  function play(m, kind) {
    stopPlayer();
    var video = $("player"), path = "/" + m.app + "/" + m.stream;
    var url = kind === "flv" ? path + ".live.flv" : path + "/hls.m3u8";
    $("player-title").textContent = "(" + kind.toUpperCase() + " " + m.app + "/" + m.stream + ")";
    $("player-info").textContent = location.origin + url;
    state.playing = { kind: kind, stream: m.app + "/" + m.stream, url: url };
    if (kind === "flv") {
      if (!window.mpegts || !mpegts.getFeatureList().mseLivePlayback) {
        $("player-info").textContent = "this browser cannot play HTTP-FLV (no MSE)";
        return;
      }
      var p = mpegts.createPlayer({ type: "flv", isLive: true, url: url },
        { enableStashBuffer: false, liveBufferLatencyChasing: true, lazyLoad: false });
      p.on(mpegts.Events.ERROR, function (type, detail) {
        $("player-info").textContent = "player error: " + type + " " + detail;
      });
      p.attachMediaElement(video);
      p.load();
      state.player = { kind: "flv", obj: p };
    } else if (window.Hls && Hls.isSupported()) {
      var h = new Hls({ liveSyncDurationCount: 2 });
      h.on(Hls.Events.ERROR, function (ev, data) {
        if (data.fatal) $("player-info").textContent = "player error: " + data.type + " " + data.details;
      });
      h.loadSource(url);
      h.attachMedia(video);
      state.player = { kind: "hls", obj: h };
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = url;
      state.player = { kind: "native", obj: null };
    } else {
      $("player-info").textContent = "this browser cannot play HLS";
      return;
    }
    var started = video.play();
    if (started && started.catch) started.catch(function () { /* autoplay policy: controls remain */ });
  }

  $("secret").value = state.secret;
  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    state.secret = $("secret").value;
    sessionStorage.setItem("mediasrv.secret", state.secret);
    refresh();
  });
  var fromHash = new URLSearchParams(location.hash.slice(1)).get("secret");
  if (fromHash) {  // for scripted use: /console/#secret=... (never sent to the server in the URL)
    state.secret = fromHash;
    $("secret").value = fromHash;
    history.replaceState(null, "", location.pathname);
  }
  refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
})();
