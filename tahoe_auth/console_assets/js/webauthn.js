// The browser's half of a passkey ceremony. The server sends WebAuthn options as the
// JSON of the Level 3 spec and takes the credential back as JSON (toJSON()), so the
// browser's own parsers do the base64url work.

export function passkeysSupported() {
  return (
    typeof window.PublicKeyCredential === "function" &&
    typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function" &&
    typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function"
  );
}

/** A new passkey for the creation options (JSON text): its RegistrationResponseJSON as text. */
export async function createPasskey(optionsJson) {
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(JSON.parse(optionsJson));
  const credential = await navigator.credentials.create({ publicKey });
  return JSON.stringify(credential.toJSON());
}

/** An assertion for the request options (JSON text): its AuthenticationResponseJSON as text. */
export async function usePasskey(optionsJson) {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(JSON.parse(optionsJson));
  const credential = await navigator.credentials.get({ publicKey });
  return JSON.stringify(credential.toJSON());
}

