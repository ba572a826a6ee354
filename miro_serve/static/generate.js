// The Generate page: one request per image, each shown as soon as it arrives.
"use strict";
(function () {
  const form = document.getElementById("gen-form");
  const gallery = document.getElementById("gallery");
  const errorBox = document.getElementById("gen-error");
  const busy = document.getElementById("busy");
  const $ = (id) => document.getElementById(id);
  let queue = Promise.resolve();
  let pending = 0;

  function values(selector, onlyTicked) {
    const parts = [];
    document.querySelectorAll(selector).forEach((el) => {
      if (onlyTicked) {
        const box = document.querySelector(`.use-negative[data-reward="${el.dataset.reward}"]`);
        if (!box || !box.checked) return;
      }
      parts.push(`${el.dataset.reward}=${el.value}`);
    });
    return parts.join(",");
  }

  function preset() {
    const kind = $("preset-kind");
    if (!kind) return "high";
    if (kind.value !== "pair") return kind.value;
    return `pair:${$("pair-a").value},${$("pair-b").value}@${$("pair-t").value}`;
  }

  function params(seed) {
    const p = new URLSearchParams({
      prompt: $("prompt").value,
      preset: preset(),
      target: values("input.target", false),
      negative: values("input.negative", true),
      guidance: $("guidance").value,
      guidance_interval: `${$("interval-lo").value},${$("interval-hi").value}`,
      steps: $("steps").value,
      seed: String(seed),
      best_of: $("best-of").value,
    });
    if (Number($("best-of").value) > 1) p.set("select_by", $("select-by").value);
    if ($("caption-guidance")) p.set("caption_guidance", $("caption-guidance").value);
    return p;
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function card(data) {
    const fig = document.createElement("figure");
    fig.className = "gen";
    const img = document.createElement("img");
    img.src = data.image;
    img.alt = data.manifest.prompt;
    const cap = document.createElement("figcaption");
    cap.textContent = `${data.manifest.prompt} · seed ${data.manifest.seed} · ${data.manifest.seconds} s`;
    const pre = document.createElement("pre");
    pre.className = "manifest";
    pre.textContent = JSON.stringify(data.manifest, null, 1);
    fig.append(img, cap, pre);
    gallery.prepend(fig);
  }

  async function draw(p) {
    const response = await fetch("/api/generate?" + p.toString());
    let data;
    try {
      data = await response.json();
    } catch (err) {
      throw new Error(`the server answered ${response.status}`);
    }
    if (!response.ok) throw new Error(data.error || `the server answered ${response.status}`);
    card(data);
  }

  function enqueue(p) {
    pending += 1;
    busy.textContent = `drawing… (${pending} queued)`;
    queue = queue
      .then(() => draw(p))
      .catch((err) => showError(err.message))
      .finally(() => {
        pending -= 1;
        busy.textContent = pending ? `drawing… (${pending} queued)` : "";
      });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    errorBox.hidden = true;
    const n = Math.max(1, Math.min(16, Number($("n").value) || 1));
    const seed = Number($("seed").value) || 0;
    const step = Math.max(1, Number($("best-of").value) || 1);
    for (let i = 0; i < n; i++) enqueue(params(seed + i * step));
  });

  document.querySelectorAll("input[type=range]").forEach((el) => {
    const out = el.parentElement.querySelector("output");
    el.addEventListener("input", () => { if (out) out.textContent = el.value; });
    el.addEventListener("change", () => {
      if (out) out.textContent = el.value;
      if ($("live").checked) {
        errorBox.hidden = true;
        enqueue(params(Number($("seed").value) || 0));
      }
    });
  });

  const kind = $("preset-kind");
  if (kind) kind.addEventListener("change", () => { $("pair-fields").hidden = kind.value !== "pair"; });
})();
