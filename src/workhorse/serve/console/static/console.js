// The review queue's keyboard: number keys pick a label, "/" types one, "a" accepts the answer,
// "s" skips, j/k move; extract tasks edit the answer's JSON and save with Ctrl+Enter. Each
// correction is POSTed with the session's CSRF token; the next card is shown when it is stored.
"use strict";

(function () {
  const queue = document.getElementById("queue");
  if (!queue) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const kind = queue.dataset.kind;
  const cards = Array.from(queue.querySelectorAll("article.card"));
  const labels = new Set(Array.from(document.querySelectorAll("#labels option")).map((o) => o.value));
  const skipped = new Set(queue.dataset.skip ? queue.dataset.skip.split(",") : []);
  let current = 0;

  function show(index) {
    if (index >= cards.length) {
      finish();
      return;
    }
    current = Math.max(0, index);
    cards.forEach((card, i) => { card.hidden = i !== current; });
    const field = cards[current].querySelector("textarea.fields");
    if (field) field.focus();
  }

  function finish() {
    cards.forEach((card) => { card.hidden = true; });
    const link = document.getElementById("next-batch");
    const url = new URL(link.href);
    url.searchParams.set("skip", Array.from(skipped).join(","));
    link.href = url.pathname + url.search;
    document.getElementById("queue-done").hidden = false;
    link.focus();
  }

  function status(card, text, failed) {
    const line = card.querySelector(".status");
    line.textContent = text;
    line.classList.toggle("error", Boolean(failed));
  }

  async function save(card, correction) {
    status(card, "saving…");
    let response;
    try {
      response = await fetch(`/ui/api/calls/${card.dataset.call}/feedback`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(correction),
        credentials: "same-origin",
      });
    } catch (error) {
      status(card, `not saved: ${error}`, true);
      return;
    }
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
      status(card, `not saved: ${message}`, true);
      return;
    }
    card.dataset.done = "true";
    status(card, "saved");
    show(current + 1);
  }

  function acceptAnswer(card) {
    const answer = JSON.parse(card.dataset.answer);
    if (kind === "classify") return Array.isArray(answer) ? { labels: answer } : { label: answer };
    return { fields: answer };
  }

  function saveFields(card) {
    const text = card.querySelector("textarea.fields").value;
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      status(card, `not valid JSON: ${error.message}`, true);
      return;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      status(card, "the answer must be a JSON object of fields", true);
      return;
    }
    save(card, { fields: value });
  }

  function saveTyped(card, input) {
    const label = input.value.trim();
    if (!labels.has(label)) {
      status(card, `"${label}" is not one of the task's labels`, true);
      return;
    }
    input.blur();
    save(card, { label });
  }

  queue.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-label]");
    if (button) save(cards[current], { label: button.dataset.label });
  });

  document.addEventListener("keydown", (event) => {
    const card = cards[current];
    if (!card || card.hidden) return;
    const target = event.target;
    if (target.classList && target.classList.contains("label-input")) {
      if (event.key === "Enter") { event.preventDefault(); saveTyped(card, target); }
      if (event.key === "Escape") target.blur();
      return;
    }
    if (target.tagName === "TEXTAREA") {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); saveFields(card); }
      if (event.key === "Escape") target.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || target.tagName === "INPUT" || target.tagName === "SELECT") return;
    if (kind === "classify" && /^[1-9]$/.test(event.key)) {
      const button = card.querySelectorAll("button[data-label]")[Number(event.key) - 1];
      if (button) { event.preventDefault(); save(card, { label: button.dataset.label }); }
    } else if (event.key === "/" && kind === "classify") {
      event.preventDefault();
      card.querySelector(".label-input").focus();
    } else if (event.key === "a") {
      event.preventDefault();
      save(card, acceptAnswer(card));
    } else if (event.key === "s") {
      event.preventDefault();
      skipped.add(card.dataset.call);
      show(current + 1);
    } else if (event.key === "j") {
      event.preventDefault();
      show(current + 1);
    } else if (event.key === "k") {
      event.preventDefault();
      show(current - 1);
    }
  });

  show(0);
  queue.dataset.ready = "true"; // the keys work from here on
})();
