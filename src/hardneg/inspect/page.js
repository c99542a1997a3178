// hardneg inspector: renders the run embedded in #hardneg-data (static) or fetched from the local
// server (serve). Every text from the data is set with textContent, never parsed as HTML.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("hardneg-data").textContent);
  var IDX = D.index, NQ = IDX.id.length, PAGE = 50;
  var state = {page: 0, rows: [], current: -1};
  var docs = D.docs || {id: {}, text: {}};

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function $(id) { return document.getElementById(id); }
  function fmt(v) { return v === null || v === undefined ? "–" : Number(v).toFixed(4); }

  function docId(k) { return k < 0 ? "(text only)" : docs.id[k]; }
  function docText(k) { return k < 0 ? D.compare.extra[-k - 1] : docs.text[k]; }

  // A text's first 200 characters, the rest behind a click.
  function textCell(t) {
    t = t || "";
    if (t.length <= 200) return el("td", {cls: "text", text: t});
    var det = el("details", null, [el("summary", {text: t.slice(0, 200) + "…"}), el("div", {text: t})]);
    return el("td", {cls: "text"}, [det]);
  }

  function detail(i) {
    if (D.details) return Promise.resolve(D.details[i]);
    return fetch("api/query/" + i).then(function (r) { return r.json(); }).then(function (d) {
      Object.assign(docs.id, d.docs.id); Object.assign(docs.text, d.docs.text); return d;
    });
  }

  // ---- the query list
  function filters() {
    return {q: $("search").value.trim().toLowerCase(), shortfall: $("f-shortfall").value,
            reason: $("f-reason").value, relabelled: $("f-relabelled").checked,
            changed: $("f-changed") ? $("f-changed").checked : false, audit: $("f-audit") ? $("f-audit").value : ""};
  }
  function matches(i, f) {
    if (f.q && IDX.id[i].toLowerCase() !== f.q && IDX.text[i].toLowerCase().indexOf(f.q) < 0 &&
        IDX.id[i].toLowerCase().indexOf(f.q) < 0) return false;
    if (f.shortfall === "short" && !(IDX.shortfall[i] > 0)) return false;
    if (f.shortfall === "full" && IDX.shortfall[i] > 0) return false;
    if (f.reason !== "" && !(Math.floor(IDX.reasons[i] / Math.pow(2, +f.reason)) % 2)) return false;
    if (f.relabelled && !(IDX.relabelled[i] > 0)) return false;
    if (f.changed && IDX.changed[i] !== 1) return false;
    if (f.audit !== "" && IDX.audit[i] !== +f.audit) return false;
    return true;
  }
  function refilter() {
    var f = filters(), rows = [];
    for (var i = 0; i < NQ; i++) if (matches(i, f)) rows.push(i);
    state.rows = rows; state.page = 0; drawList();
  }
  function drawList() {
    var body = $("qlist"), rows = state.rows, start = state.page * PAGE;
    body.textContent = "";
    rows.slice(start, start + PAGE).forEach(function (i) {
      var tr = el("tr", {cls: "qrow", "data-q": String(i)}, [
        el("td", {text: IDX.id[i]}), el("td", {cls: "text", text: IDX.text[i]}),
        el("td", {cls: "num", text: String(IDX.candidates[i])}), el("td", {cls: "num", text: String(IDX.selected[i])}),
        el("td", {cls: "num", text: String(IDX.shortfall[i])})]);
      tr.addEventListener("click", function () { show(i); });
      body.appendChild(tr);
    });
    var pages = Math.max(1, Math.ceil(rows.length / PAGE));
    $("count").textContent = rows.length + " of " + NQ + " queries · page " + (state.page + 1) + " of " + pages;
    $("prev").disabled = state.page === 0; $("next").disabled = state.page + 1 >= pages;
  }

  // ---- one query
  function scoreHeads() { return D.teachers.map(function (t) { return el("th", {text: t}); }); }
  // The similarity rules' evidence for candidate j: each rule's value (and the positive it was near),
  // with "≥" where it reached the rule's threshold (why the rule dropped it).
  var RULES = Object.keys(D.evidence || {});
  function evidenceCell(d, j) {
    var parts = [];
    RULES.forEach(function (k) {
      var v = (d.cand.similarity[k] || [])[j];
      if (v === null || v === undefined) return;
      var rule = D.evidence[k], hit = rule.threshold !== null && v >= rule.threshold;
      var near = (d.cand.nearest[k] || [])[j];
      parts.push(k + " " + fmt(v) + (rule.threshold === null ? "" : (hit ? " ≥ " : " < ") + rule.threshold) +
                 (near !== undefined && near >= 0 ? " to " + docId(near) : ""));
    });
    return el("td", {cls: "evidence", title: RULES.map(function (k) { return k + ": " + D.evidence[k].label; }).join("; "),
                     text: parts.join("; ")});
  }
  function show(i) {
    state.current = i;
    detail(i).then(function (d) {
      var box = $("detail"), reason = $("f-reason").value;
      box.textContent = "";
      box.appendChild(el("h2", {id: "detail-title", text: IDX.id[i]}));
      box.appendChild(el("p", {cls: "query", text: IDX.text[i]}));
      var pt = el("table", {id: "positives"}, [el("tr", null, [el("th", {text: "positive"}), el("th", {text: "grade"})]
        .concat(scoreHeads()).concat([el("th", {text: "text"})]))]);
      d.pos.doc.forEach(function (k, j) {
        pt.appendChild(el("tr", {cls: "pos"}, [el("td", {text: docId(k)}), el("td", {cls: "num", text: String(d.pos.grade[j])})]
          .concat(D.teachers.map(function (t) { return el("td", {cls: "num", text: fmt((d.pos.scores[t] || [])[j])}); }))
          .concat([textCell(docText(k))])));
      });
      box.appendChild(pt);
      if (d.relabelled.length) box.appendChild(el("p", {text: "relabelled as positive: " + d.relabelled.map(docId).join(", ")}));
      var ct = el("table", {id: "candidates"}, [el("tr", null, [el("th", {text: "rank"}), el("th", {text: "document"})]
        .concat(scoreHeads()).concat([el("th", {text: "status"}), el("th", {text: "reason"})])
        .concat(RULES.length ? [el("th", {text: "similarity to positives"})] : []).concat([el("th", {text: "text"})]))]);
      var shown = 0;
      d.cand.doc.forEach(function (k, j) {
        var r = d.cand.reason[j];
        if (reason !== "" && String(r) !== reason) return;
        shown++;
        var status = D.status[d.cand.status[j]] + (d.cand.hidden && d.cand.hidden[j] ? " · hidden positive" : "");
        ct.appendChild(el("tr", {cls: "cand " + D.status[d.cand.status[j]] + (d.cand.hidden && d.cand.hidden[j] ? " hidden" : ""),
                              "data-reason": D.reasons[r] || "kept"}, [
          el("td", {cls: "num", text: String(d.cand.rank[j])}), el("td", {text: docId(k)})]
          .concat(D.teachers.map(function (t) { return el("td", {cls: "num", text: fmt(d.cand.scores[t][j])}); }))
          .concat([el("td", {text: status}), el("td", {text: D.reasons[r]})])
          .concat(RULES.length ? [evidenceCell(d, j)] : []).concat([textCell(docText(k))])));
      });
      box.appendChild(el("p", {text: shown + " of " + d.cand.doc.length + " candidates" +
        (reason !== "" ? " (reason " + D.reasons[+reason] + ")" : "")}));
      box.appendChild(ct);
      if (d.compare) box.appendChild(sideBySide(d.compare));
    });
  }

  // ---- compare
  function sideBySide(c) {
    var a = {}, b = {};
    c.a.forEach(function (k) { a[k] = 1; }); c.b.forEach(function (k) { b[k] = 1; });
    function col(list, other, title, gone) {
      var t = el("table", {cls: "side"}, [el("tr", null, [el("th", {text: title}), el("th", {text: "text"})])]);
      list.forEach(function (k) {
        t.appendChild(el("tr", {cls: other[k] ? "same" : gone}, [el("td", {text: docId(k)}), textCell(docText(k))]));
      });
      return el("div", {cls: "half"}, [t]);
    }
    return el("div", {id: "side-by-side"}, [
      el("h3", {text: "Negatives: this run vs " + D.compare.other + " (" + c.added + " added, " + c.removed +
        " removed, " + c.kept + " kept)"}),
      el("div", {cls: "halves"}, [col(c.a, b, "this run", "removed"), col(c.b, a, "other", "added")])]);
  }
  function drawCompare() {
    if (!D.compare) return;
    var c = D.compare, box = $("compare");
    box.appendChild(el("p", {id: "compare-counts", text: c.changed + " of " + c.matched + " matched queries changed; " +
      c.totals.added + " negatives added, " + c.totals.removed + " removed, " + c.totals.kept + " kept (" + c.kind +
      ": " + c.other + "; " + c.missing + " queries not in it, " + c.unmatched_other + " of its queries unmatched)"}));
  }

  // ---- setup
  function setup() {
    $("title").textContent = "hardneg inspect: " + D.run;
    D.reasons.forEach(function (r, i) {
      if (i > 0) $("f-reason").appendChild(el("option", {value: String(i), text: r}));
    });
    if (!D.compare) $("f-changed-box").remove();
    if (D.audit_outcomes) D.audit_outcomes.forEach(function (o, i) {
      $("f-audit").appendChild(el("option", {value: String(i), text: o}));
    }); else $("f-audit-box").remove();
    ["search", "f-shortfall", "f-reason", "f-relabelled", "f-changed", "f-audit"].forEach(function (id) {
      if (!$(id)) return;
      $(id).addEventListener(id === "search" ? "input" : "change", function () {
        refilter(); if (state.current >= 0 && id === "f-reason") show(state.current);
      });
    });
    $("prev").addEventListener("click", function () { state.page--; drawList(); });
    $("next").addEventListener("click", function () { state.page++; drawList(); });
    $("manifest").textContent = JSON.stringify(D.manifest, null, 2);
    drawCompare();
    refilter();
    var drawn = D.charts.map(function (c) {
      var div = el("div", {cls: "chart", id: c.id});
      $("charts").appendChild(div);
      return vegaEmbed("#" + c.id, c.spec, {actions: false, renderer: "svg"}).catch(function (e) { console.error(e); });
    });
    if (NQ) show(0);
    document.body.setAttribute("data-ready", "1");
    window.hardnegTimes = {ready: performance.now()};  // read by benchmarks/inspect_page.py
    Promise.all(drawn).then(function () { window.hardnegTimes.charts = performance.now(); });
  }
  setup();
})();
