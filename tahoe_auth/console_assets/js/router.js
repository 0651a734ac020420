// Hash routes (#/users?q=ann): every page is /console/ to the server, so no path needs
// a fallback, and a reload or a bookmark lands on the same page.
import { useEffect, useState } from "./html.js";

export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  return { path, query: Object.fromEntries(new URLSearchParams(search)) };
}

export function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const changed = () => setRoute(parseHash());
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

/** `#/path?query`, for links: href=${href("/users", { q })}. */
export function href(path, query = {}) {
  const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== ""));
  const search = params.toString();
  return `#${path}${search ? `?${search}` : ""}`;
}

export function navigate(path, query = {}) {
  location.hash = href(path, query);
}
