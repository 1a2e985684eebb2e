// The client of the server's /api: JSON requests, a busy server retried, a stream read line by line.

import {ApiError, showError} from "./errors.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function errorOf(response) {
  if (response.status === 429) return "The server is busy with other requests; try again in a moment.";
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON: fall through to the status line */ }
  return `The server answered ${response.status} ${response.statusText}`;
}

// One request; a 429 (busy) is retried a few times with a growing pause before it is reported.
export async function request(path, body, signal) {
  const init = body === undefined ? {signal} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body), signal,
  };
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, init);
    if (response.ok) return response;
    if (response.status === 429 && attempt < 4) {
      await sleep(250 * 2 ** attempt);
      continue;
    }
    const message = await errorOf(response);
    showError(message);
    throw new ApiError(message);
  }
}

export async function api(path, body, signal) {
  const response = await request(path, body, signal);
  return response.json();
}

// Reads an NDJSON body as it arrives and hands each parsed line to `onLine`.
export async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
  buffer += decoder.decode();
  if (buffer.trim()) onLine(JSON.parse(buffer));
}
