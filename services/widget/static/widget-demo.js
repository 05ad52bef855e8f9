/* The development demo's host script: what a platform's page does with the widget. It hands the widget the
   customer session (here from this page's fragment; a platform's backend renders it into the page), and listens
   for the session's end to get a new one (here it only says so). */
(() => {
  "use strict";
  const widget = document.getElementById("credits");
  const status = document.getElementById("demo-status");
  const token = new URLSearchParams(window.location.hash.slice(1)).get("session");
  if (token) {
    history.replaceState(null, "", window.location.pathname + window.location.search);
    widget.setSession(token);
  } else {
    status.textContent = "No session: open this page with #session=crs_... (creditrail dev prints a link).";
  }
  widget.addEventListener("creditrail:session-expired", (event) => {
    status.textContent = "The session ended (" + event.detail.code + "); a platform would fetch a new one now.";
  });
})();
