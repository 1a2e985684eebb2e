// The error bar, and the guard that sends every failure of an event handler to it.

import {$} from "./dom.js";

export class ApiError extends Error {}

export function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

// Runs an event handler; any failure ends up in the error bar, never as an unhandled rejection.
export function guard(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (err) {
      if (err && err.name === "AbortError") return;
      if (!(err instanceof ApiError)) showError(String(err && err.message ? err.message : err));
    }
  };
}
