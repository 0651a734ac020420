// Loaded beside main.js, not by it: when a file of the console's module graph fails to
// load (a network error, a 503), main.js never runs and the page would stay on its
// static "Loading" line for good. This says so and offers a reload instead.
const PATIENCE_MS = 10_000;

setTimeout(() => {
  const app = document.getElementById("app");
  const stuck = app?.querySelector(".loading");
  if (!stuck || app.dataset.started) return;
  stuck.textContent = "The console did not load. Check the connection, then ";
  stuck.setAttribute("role", "alert");
  const again = document.createElement("button");
  again.type = "button";
  again.textContent = "reload the page";
  again.addEventListener("click", () => location.reload());
  stuck.append(again, ".");
}, PATIENCE_MS);
