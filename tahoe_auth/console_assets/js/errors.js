// API errors in plain words, from the ErrorInfo reason the server puts in every error
// (google.rpc.Status JSON); the server's own message is kept for what the table lacks.

const REASONS = {
  INVALID_CREDENTIALS: "The tenant, email or password is not right.",
  LOGIN_THROTTLED: "Too many sign-in attempts. Wait a moment and try again.",
  USER_DISABLED: "This account is disabled. Ask an administrator of the tenant.",
  SUBJECT_DISABLED: "This account is disabled. Ask an administrator of the tenant.",
  TENANT_SUSPENDED: "This tenant is suspended.",
  REFRESH_TOKEN_INVALID: "Your session has ended. Sign in again.",
  REFRESH_TOKEN_REUSED: "Your session was ended for safety. Sign in again.",
  INVALID_TOKEN: "Your session has ended. Sign in again.",
  NO_CREDENTIAL: "You are not signed in.",
  NO_SESSION: "You are not signed in.",
  PERMISSION_DENIED: "You do not have permission to do this.",
  PRIVILEGE_ESCALATION: "You cannot grant permissions you do not have yourself.",
  LAST_OWNER: "The tenant must keep at least one owner.",
  ROLE_IN_USE: "This role is still assigned to users. Remove it from them first.",
  ALREADY_EXISTS: "Something with that name already exists.",
  NOT_FOUND: "It was not found. It may have been deleted.",
  INVITATION_INVALID: "This invitation is not valid: it was used, revoked, or it expired.",
  RATE_LIMITED: "Too many requests. Wait a moment and try again.",
  QUOTA_EXCEEDED: "The tenant's quota is used up for this period.",
  RESOURCE_EXHAUSTED: "Too many requests. Wait a moment and try again.",
  UNAVAILABLE: "The service is busy or unreachable. Try again in a moment.",
  NETWORK: "The server could not be reached. Check the connection and try again.",
  CSRF_HEADER_MISSING: "The request was refused as a possible cross-site request.",
  SIGNING_KEY_REVOKED: "Your session was signed with a revoked key. Sign in again.",
  CLIENT_CREDENTIALS_INVALID: "The client id or secret is not right.",
  MFA_CODE_INVALID:
    "That did not work: the code is wrong or already used, or this sign-in step expired. Try a new code, or start again.",
  MFA_REQUIRED: "This needs a recent check of your second factor.",
  LINK_INVALID: "This link no longer works: it was used, a newer one replaced it, or it expired. Ask for a new one.",
  MFA_ENROLLMENT_REQUIRED: "Set up a second factor first: your tenant requires one.",
};

// A passkey ceremony the browser refused: a DOMException, by its name.
const PASSKEY_PROBLEMS = {
  NotAllowedError: "The passkey prompt was cancelled or timed out, or no passkey here matches.",
  InvalidStateError: "This device already holds a passkey for this account.",
  SecurityError: "Passkeys need the console's own address: a host name over HTTPS, or localhost.",
  NotSupportedError: "This browser or device cannot use passkeys.",
};

// PASSWORD_REJECTED names the rule in its metadata; for the length rules the server's
// message, which says the length, is the plainer one.
const PASSWORD_RULES = {
  common: "This password is too common: it appears in lists of breached passwords. Choose another.",
  contains_email: "The password must not contain the email address, nor the name before the @.",
  contains_tenant_name: "The password must not contain the tenant's name.",
};

const BY_STATUS = {
  400: "The request was not valid.",
  401: "You are not signed in.",
  403: "You do not have permission to do this.",
  404: "It was not found.",
  409: "It changed or conflicts with something else. Reload and try again.",
  429: "Too many requests. Wait a moment and try again.",
  503: "The service is unavailable. Try again in a moment.",
};

function sentence(text) {
  const trimmed = String(text || "").trim();
  if (!trimmed) return "";
  const first = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

/** What to tell a person about `error` (an ApiError, or anything thrown). */
export function plainWords(error) {
  if (!error) return "";
  if (typeof DOMException !== "undefined" && error instanceof DOMException && PASSKEY_PROBLEMS[error.name]) {
    return PASSKEY_PROBLEMS[error.name];
  }
  if (error.reason === "PASSWORD_REJECTED") {
    return PASSWORD_RULES[error.metadata?.rule] || sentence(error.message) || "The password was refused.";
  }
  const known = REASONS[error.reason];
  const violations = (error.violations || []).map((v) => sentence(`${v.field}: ${v.description}`)).join(" ");
  // INVALID_ARGUMENT and FAILED_PRECONDITION say what was wrong in their message.
  if (known && error.reason !== "INVALID_ARGUMENT") return violations ? `${known} ${violations}` : known;
  const message = sentence(error.message);
  if (message && !/^HTTP \d+\.?$/.test(message)) return violations ? `${message} ${violations}` : message;
  return BY_STATUS[error.status] || "Something went wrong. Try again.";
}
