// poyo-relay's dashboard: live job list (EventSource), live job status, the new-job
// form's estimate, and auto-submitting pickers. Our own code, no dependencies; every value
// from the server is set with textContent, never parsed as HTML.
"use strict";

(function () {
  function age(iso) {
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (seconds >= size) return Math.floor(seconds / size) + unit;
    }
    return seconds + "s";
  }

  function credits(cost) {
    const value = cost.credits_charged !== null ? cost.credits_charged : cost.credits_estimated;
    if (value === null || value === undefined) return "—";
    return String(Math.round(value * 100) / 100);
  }

  function cell(className, child) {
    const td = document.createElement("td");
    td.className = className;
    if (child) td.appendChild(child);
    return td;
  }

  function badge(status) {
    const span = document.createElement("span");
    span.className = "badge status-" + status;
    span.textContent = status;
    return span;
  }

  function newRow(job) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const link = document.createElement("a");
    link.href = "/ui/jobs/" + encodeURIComponent(job.id);
    link.textContent = job.id;
    tr.appendChild(cell("id", link));
    const model = cell("model");
    model.textContent = job.model;
    tr.appendChild(model);
    tr.appendChild(cell("status", badge(job.status)));
    const progress = document.createElement("progress");
    progress.max = 100;
    const pct = document.createElement("span");
    pct.className = "pct";
    const td = cell("progress", progress);
    td.appendChild(document.createTextNode(" "));
    td.appendChild(pct);
    tr.appendChild(td);
    const time = document.createElement("time");
    time.dateTime = job.created_at;
    time.title = job.created_at;
    tr.appendChild(cell("age", time));
    tr.appendChild(cell("cost"));
    return tr;
  }

  function fill(tr, job) {
    const status = tr.querySelector(".status");
    status.replaceChildren(badge(job.status));
    const progress = tr.querySelector("progress");
    progress.value = job.progress;
    progress.textContent = job.progress + "%";
    tr.querySelector(".pct").textContent = job.progress + "%";
    tr.querySelector(".age time").textContent = age(job.created_at);
    tr.querySelector(".cost").textContent = credits(job.cost);
  }

  function matches(table, job) {
    const d = table.dataset;
    if (d.status && job.status !== d.status) return false;
    if (d.model && job.model !== d.model) return false;
    if (d.models && !d.models.split(",").includes(job.model)) return false;
    const day = job.created_at.slice(0, 10);
    if (d.createdAfter && day < d.createdAfter) return false;
    if (d.createdBefore && day > d.createdBefore) return false;
    return true;
  }

  function liveJobs(table) {
    const state = document.getElementById("live-state");
    const body = table.tBodies[0];
    const source = new EventSource(table.dataset.stream);
    source.onopen = () => { state.textContent = "Live: updates appear as they happen."; };
    source.onerror = () => { state.textContent = "Live updates paused; reconnecting…"; };
    source.onmessage = (message) => {
      const job = JSON.parse(message.data).job;
      let tr = body.querySelector('tr[data-job="' + CSS.escape(job.id) + '"]');
      if (!tr) {
        if (table.dataset.firstPage !== "yes" || !matches(table, job)) return;
        const empty = body.querySelector("tr.empty");
        if (empty) empty.remove();
        tr = newRow(job);
        body.insertBefore(tr, body.firstChild);
      }
      fill(tr, job);
    };
    setInterval(() => {
      for (const time of table.querySelectorAll(".age time")) time.textContent = age(time.dateTime);
    }, 10000);
  }

  function liveJob(facts) {
    const source = new EventSource(facts.dataset.stream);
    source.onmessage = (message) => {
      const job = JSON.parse(message.data).job;
      if (job.id !== facts.dataset.job) return;
      const status = document.getElementById("job-status");
      status.className = "badge status-" + job.status;
      status.textContent = job.status;
      document.getElementById("job-progress").value = job.progress;
    };
  }

  function estimates(form) {
    const output = document.getElementById("estimate");
    let timer = null;
    let asked = 0;
    async function ask() {
      const number = ++asked;
      const data = new URLSearchParams(new FormData(form));
      try {
        const response = await fetch(form.dataset.estimate, {
          method: "POST",
          body: data,
          credentials: "same-origin",
        });
        if (number !== asked) return; // a later answer is coming
        const answer = await response.json();
        if (answer.credits !== null && answer.credits !== undefined) {
          output.textContent = answer.credits + " credits (≈ US$" + answer.usd.toFixed(2) + ")";
        } else if (answer.reason) {
          output.textContent = "not known before it runs: " + answer.reason;
        } else {
          output.textContent = "— (complete the required fields)";
        }
      } catch (error) {
        output.textContent = "— (estimate unavailable)";
      }
    }
    form.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(ask, 250);
    });
    ask();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const table = document.getElementById("jobs");
    if (table && table.dataset.stream) liveJobs(table);
    const facts = document.getElementById("job");
    if (facts && facts.dataset.stream && !["succeeded", "failed"].includes(
      document.getElementById("job-status").textContent)) liveJob(facts);
    const form = document.getElementById("job-form");
    if (form) estimates(form);
    for (const select of document.querySelectorAll("select[data-autosubmit]")) {
      select.addEventListener("change", () => select.form.requestSubmit());
    }
  });
})();
