// Progressive enhancement only: every page reads and works without this file.
"use strict";
(function () {
  // Times: the server writes UTC; show them in the viewer's timezone, exact UTC on hover.
  var fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    second: "2-digit", timeZoneName: "short"
  });
  // In tables, a compact form (the page says whose timezone; the year only when not this one).
  var thisYear = new Date().getFullYear();
  var compact = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"
  });
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (isNaN(when.getTime())) { return; }
    el.title = el.textContent;
    var inTable = el.closest("td") !== null;
    el.textContent = inTable && when.getFullYear() === thisYear ? compact.format(when) : fmt.format(when);
  });

  // Sortable tables: a click on a header sorts by that column (numbers by data-sort).
  function key(cell) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    var n = Number(raw);
    return raw !== "" && !isNaN(n) ? n : raw.toLowerCase();
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var body = table.tBodies[0];
    if (!body) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      while (th.firstChild) { button.appendChild(th.firstChild); }
      th.appendChild(button);
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", function () {
        var up = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
          other.setAttribute("aria-sort", "none");
        });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });

  // A pause's end in the viewer's own time: without this script the field is read as UTC
  // (the label says so); with it, the local time is sent as an instant with its offset.
  document.querySelectorAll("form.pause").forEach(function (form) {
    var input = form.querySelector("input[name=until]");
    var label = form.querySelector(".until-zone");
    if (!input || !label) { return; }
    label.textContent = "until (your time, optional)";
    form.addEventListener("submit", function () {
      if (!input.value) { return; }
      var when = new Date(input.value);  // a datetime-local value reads as local time
      if (isNaN(when.getTime())) { return; }
      var hidden = document.createElement("input");
      hidden.type = "hidden";
      hidden.name = "until";
      hidden.value = when.toISOString();
      input.removeAttribute("name");
      form.appendChild(hidden);
    });
  });

  // Bulk actions ask first (like Sidekiq's "retry all").
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
