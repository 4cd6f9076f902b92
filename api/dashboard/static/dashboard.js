// jobstack dashboard: keeps each page's live part current over Server-Sent Events.
// The server sends the live part re-rendered (escaped HTML from its own templates);
// only the sections ([data-part]) that changed are swapped, so focus and the section
// being read stay put.
"use strict";

(function () {
  const live = document.getElementById("live");
  const status = document.querySelector("[data-live-status]");
  if (!live || !window.EventSource) {
    if (status) status.textContent = "Not live: reload for news";
    return;
  }

  function say(text, state) {
    if (!status) return;
    status.textContent = text;
    status.dataset.state = state;
  }

  function swap(html) {
    const incoming = document.createElement("div");
    incoming.innerHTML = html;
    const parts = incoming.querySelectorAll("[data-part]");
    if (parts.length === 0) {
      live.innerHTML = html;
      return;
    }
    parts.forEach(function (part) {
      const current = live.querySelector('[data-part="' + part.dataset.part + '"]');
      if (!current) {
        live.appendChild(part);
      } else if (current.innerHTML !== part.innerHTML) {
        const focused = document.activeElement;
        const keep = focused && current.contains(focused) ? focused.outerHTML : null;
        // An open <details> (a traceback being read) stays open.
        const open = Array.from(current.querySelectorAll("details[open]")).map(function (d) {
          return d.textContent;
        });
        current.replaceWith(part);
        part.querySelectorAll("details").forEach(function (d) {
          if (open.indexOf(d.textContent) >= 0) d.open = true;
        });
        if (keep) {
          const again = Array.from(part.querySelectorAll("a, button, input, select")).find(
            function (el) { return el.outerHTML === keep; });
          if (again) again.focus();
        }
      }
    });
  }

  const source = new EventSource("/live?src=" + encodeURIComponent(live.dataset.liveSrc));
  source.addEventListener("open", function () { say("Live", "live"); });
  source.addEventListener("render", function (event) {
    swap(event.data);
    say("Live · updated " + new Date().toLocaleTimeString(), "live");
  });
  source.addEventListener("end", function (event) {
    source.close();
    if (event.data === "401") {
      window.location.assign("/sign-in?next=" + encodeURIComponent(location.pathname + location.search));
    } else {
      say("Not live (" + event.data + "): reload the page", "stopped");
    }
  });
  source.addEventListener("error", function () { say("Reconnecting…", "reconnecting"); });
})();
