// Preact with hooks and htm's tagged templates (vendor/README.md): components without a
// compiler. Every module imports them from here, so the vendored file is named once.
export {
  html,
  render,
  useCallback,
  useContext,
  createContext,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
} from "../vendor/preact-htm.js";
