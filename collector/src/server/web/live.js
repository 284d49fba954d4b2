// The live calls page's one script, served from the binary at /static/live.js: keeps the
// table of /live current from /live/events (server-sent events). Each `call` event carries
// one call's whole row; cells get text only (never markup). Without it the page still
// shows the calls as they were when it was drawn.
"use strict";
(function () {
  var table = document.querySelector("table.live");
  var status = document.getElementById("live-status");
  if (!table || !status || !window.EventSource) {
    return;
  }
  var body = table.tBodies[0];
  var columns = ["agent", "state", "caller", "callee", "start", "trigger", "mos"];
  var lost = 0;

  function find(agent, call) {
    for (var i = 0; i < body.rows.length; i++) {
      var r = body.rows[i];
      if (r.dataset.agent === agent && r.dataset.call === call) {
        return r;
      }
    }
    return null;
  }

  var since = encodeURIComponent(status.dataset.since || "");
  var source = new EventSource("/live/events?since=" + since);
  source.onopen = function () {
    status.textContent = lost ? "Live; " + lost + " events lost: reload for the exact state." : "Live.";
  };
  source.onerror = function () {
    status.textContent = "Disconnected; reconnecting…";
  };
  source.addEventListener("call", function (ev) {
    var c = JSON.parse(ev.data);
    var r = find(c.agent, c.call);
    if (!r) {
      r = body.insertRow(0);
      r.dataset.agent = c.agent;
      r.dataset.call = c.call;
      for (var i = 0; i < columns.length; i++) {
        r.insertCell(-1);
      }
    }
    for (var j = 0; j < columns.length; j++) {
      r.cells[j].textContent = String(c[columns[j]]);
    }
    r.className = c.ended ? "ended" : "";
    var none = document.getElementById("live-none");
    if (none) {
      none.remove();
    }
  });
  source.addEventListener("lost", function (ev) {
    lost += JSON.parse(ev.data).count;
    status.textContent = "Live; " + lost + " events lost: reload for the exact state.";
  });
})();
