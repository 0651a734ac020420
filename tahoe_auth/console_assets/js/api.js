// The console's only way to the JSON API (/auth/v1/, same origin through Envoy).
//
// The access token lives in this module's memory and nowhere else: never in
// localStorage or sessionStorage, which any script on the page could read. The refresh
// token is in an HttpOnly, SameSite=Strict cookie scoped to /auth/v1/browser, which no
// script can read; a reload gets a new access token from it. A platform administrator's
// key is held in memory too, so a reload asks for it again.

const API = "/auth/v1";
const CSRF = { "x-csrf-protection": "1" };
const REFRESH_AHEAD_MS = 60_000;

let session = null;
let refreshTimer = null;
let refreshing = null;
const listeners = new Set();

export class ApiError extends Error {
  constructor({ status = 0, code = 0, message = "", reason = "", metadata = {}, violations = [] }) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.reason = reason;
    this.metadata = metadata;
    this.violations = violations;
  }
}

/** Calls `listener(session, why)` on every change; why: signed-in, refreshed, expired, signed-out, tenant. */
export function onSession(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function currentSession() {
  return session;
}

function publish(next, why) {
  session = next;
  clearTimeout(refreshTimer);
  if (session?.kind === "user") {
    const wait = Math.max(5_000, session.expiresAt - Date.now() - REFRESH_AHEAD_MS);
    refreshTimer = setTimeout(() => refresh().catch(() => expire()), wait);
  }
  for (const listener of listeners) listener(session, why);
}

async function parse(response) {
  const text = await response.text();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    return { message: text.trim() };
  }
}

function errorFrom(response, body) {
  const details = Array.isArray(body.details) ? body.details : [];
  const info = details.find((d) => String(d["@type"] || "").endsWith("google.rpc.ErrorInfo")) || {};
  const bad = details.find((d) => String(d["@type"] || "").endsWith("google.rpc.BadRequest"));
  return new ApiError({
    status: response.status,
    code: body.code || 0,
    message: body.message || response.statusText,
    reason: info.reason || body.error || "",
    metadata: info.metadata || {},
    violations: bad?.fieldViolations || [],
  });
}

function networkError(cause) {
  return new ApiError({ status: 0, reason: "NETWORK", message: String(cause?.message || cause) });
}

async function send(method, url, { body, token, headers = {}, signal } = {}) {
  const all = { ...headers };
  if (token) all.authorization = `Bearer ${token}`;
  if (body !== undefined) all["content-type"] = "application/json";
  try {
    return await fetch(url, {
      method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  } catch (cause) {
    throw networkError(cause);
  }
}

function userSession(body) {
  return {
    kind: "user",
    token: body.accessToken,
    tenantId: body.tenantId,
    userId: body.userId,
    expiresAt: Date.now() + Number(body.expiresIn || 0) * 1000,
  };
}

/**
 * Password sign-in. Resolves to null once signed in, or to the second step's challenge
 * (MfaChallenge JSON) when the account has a second factor, or must set one up first.
 */
export async function signIn({ tenant, email, password }) {
  const response = await send("POST", `${API}/browser/login`, { body: { tenant, email, password }, headers: CSRF });
  const body = await parse(response);
  if (!response.ok) throw errorFrom(response, body);
  if (body.mfaChallenge) return body.mfaChallenge;
  publish(userSession(body), "signed-in");
  return null;
}

/** The challenge of a passwordless sign-in with a passkey of `tenant`'s. */
export async function beginPasskeySignIn(tenant) {
  const body = await publicCall("POST", "/passkeys:beginSignIn", { body: { tenant } });
  return body.challenge;
}

async function answerChallenge(challenge, answer) {
  const response = await send("POST", `${API}/browser/mfa:verify`, { body: { challenge, ...answer }, headers: CSRF });
  const body = await parse(response);
  if (!response.ok) throw errorFrom(response, body);
  return body;
}

/**
 * Answers a sign-in challenge: `answer` is { totpCode }, { recoveryCode } or
 * { passkeyCredentialJson }, or {} once a required enrollment is done. Signs in.
 */
export async function completeSignIn(challenge, answer) {
  publish(userSession(await answerChallenge(challenge, answer)), "signed-in");
}

/** Answers a step-up challenge: the same session, now with a fresh second factor. */
export async function completeStepUp(challenge, answer) {
  publish(userSession(await answerChallenge(challenge, answer)), "refreshed");
}

let stepUpHandler = null;
let steppingUp = null;

/**
 * Who asks the person for a second factor when a call is refused with MFA_REQUIRED:
 * `handler()` resolves once completeStepUp succeeded, and rejects if they gave up.
 * Calls refused meanwhile wait for the same step-up, then retry once.
 */
export function onStepUpNeeded(handler) {
  stepUpHandler = handler;
  return () => {
    if (stepUpHandler === handler) stepUpHandler = null;
  };
}

function stepUp() {
  steppingUp ??= Promise.resolve()
    .then(() => stepUpHandler())
    .finally(() => {
      steppingUp = null;
    });
  return steppingUp;
}

/** A platform administrator's key, checked by asking for the platform overview. */
export async function signInWithPlatformKey(key) {
  const response = await send("GET", `${API}/platform/overview`, { token: key });
  const body = await parse(response);
  if (!response.ok) throw errorFrom(response, body);
  publish({ kind: "platform", token: key, tenantId: "", userId: "", expiresAt: Infinity }, "signed-in");
}

/** A platform administrator looks at one tenant's pages ("" goes back to the platform's). */
export function viewTenant(tenantId) {
  if (session?.kind === "platform") publish({ ...session, tenantId }, "tenant");
}

function refresh() {
  refreshing ??= (async () => {
    const response = await send("POST", `${API}/browser/refresh`, { body: {}, headers: CSRF });
    const body = await parse(response);
    if (!response.ok) throw errorFrom(response, body);
    publish(userSession(body), "refreshed");
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/** At start: a session from the refresh cookie, if there is one. */
export async function resume() {
  try {
    await refresh();
    return true;
  } catch {
    return false;
  }
}

function expire() {
  if (session) publish(null, "expired");
}

export async function signOut() {
  const was = session;
  if (was?.kind === "user") {
    await send("POST", `${API}/browser/logout`, { body: {}, headers: CSRF }).catch(() => undefined);
  }
  publish(null, "signed-out");
}

function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined && one !== null && one !== "") params.append(name, String(one));
    }
  }
  const text = params.toString();
  return text ? `${API}${path}?${text}` : `${API}${path}`;
}

/** One call; a 401 on a user session refreshes once and retries, then ends the session. */
async function authorized(method, path, { body, query, signal } = {}) {
  if (!session) throw new ApiError({ status: 401, reason: "NO_SESSION", message: "not signed in" });
  const url = withQuery(path, query);
  let response = await send(method, url, { body, token: session.token, signal });
  if (response.status === 401 && session?.kind === "user") {
    const refused = errorFrom(response, await parse(response));
    try {
      await refresh();
    } catch {
      expire();
      throw refused;
    }
    response = await send(method, url, { body, token: session.token, signal });
  }
  if (response.status === 401) {
    const refused = errorFrom(response, await parse(response));
    expire();
    throw refused;
  }
  return response;
}

/** JSON in, JSON out: `call("GET", "/tenants/t1/users", { query: { pageSize: 50 } })`. */
export async function call(method, path, options = {}) {
  let response = await authorized(method, path, options);
  let body = await parse(response);
  if (response.status === 403 && session?.kind === "user" && stepUpHandler) {
    const refused = errorFrom(response, body);
    if (refused.reason === "MFA_REQUIRED") {
      try {
        await stepUp();
      } catch {
        throw refused;
      }
      response = await authorized(method, path, options);
      body = await parse(response);
    }
  }
  if (!response.ok) throw errorFrom(response, body);
  return body;
}

/** A call outside the console's session (accepting an invitation), with its own bearer if any. */
export async function publicCall(method, path, { body, token } = {}) {
  const response = await send(method, `${API}${path}`, { body, token });
  const parsed = await parse(response);
  if (!response.ok) throw errorFrom(response, parsed);
  return parsed;
}

/** The current tenant's resource path: tenantPath("/users") -> /tenants/{id}/users. */
export function tenantPath(suffix = "") {
  return `/tenants/${encodeURIComponent(session?.tenantId || "")}${suffix}`;
}

/**
 * A server stream (newline-delimited JSON): calls onMessage for each message until the
 * stream ends, `signal` aborts it, or an error arrives (thrown as an ApiError).
 */
export async function stream(path, { query, signal, onMessage } = {}) {
  if (!session) throw new ApiError({ status: 401, reason: "NO_SESSION", message: "not signed in" });
  let response;
  try {
    response = await fetch(withQuery(path, query), {
      headers: { authorization: `Bearer ${session.token}` },
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  } catch (cause) {
    if (signal?.aborted) return;
    throw networkError(cause);
  }
  if (!response.ok) {
    const refused = errorFrom(response, await parse(response));
    if (response.status === 401 && session?.kind === "user") await refresh().catch(() => expire());
    throw refused;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (!line) continue;
        const message = JSON.parse(line);
        // A stream that fails after it started ends with a google.rpc.Status line.
        if (message.code && message.message !== undefined && Object.keys(message).length <= 3) {
          throw errorFrom({ status: 500, statusText: "" }, message);
        }
        onMessage(message);
      }
    }
  } catch (error) {
    if (signal?.aborted) return;
    throw error instanceof ApiError ? error : networkError(error);
  }
}

/** A file from the API (an export): fetched with the bearer, handed to the browser to save. */
export async function download(path, { query, filename, type } = {}) {
  const response = await authorized("GET", path, { query });
  if (!response.ok) throw errorFrom(response, await parse(response));
  const blob = await response.blob();
  saveBlob(filename, type ? new Blob([blob], { type }) : blob);
}

export function saveBlob(filename, blob) {
  const url = URL.createObjectURL(blob);
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.download = filename;
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
