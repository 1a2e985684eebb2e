// Read, Neurons and Compare look at the same text unless it is changed in one of them.

import {$} from "./dom.js";

const DEFAULT_TEXT = "The Time Traveller (for so it will be convenient to speak of him) was expounding a " +
  "recondite matter to us. His grey eyes shone and twinkled, and his usually pale face was flushed " +
  "and animated.\n\"You must follow me carefully,\" he said.";

const TEXT_IDS = ["read-text", "neuron-text", "compare-text"];

export function setupSharedText() {
  for (const id of TEXT_IDS) {
    $(id).value = DEFAULT_TEXT;
    $(id).addEventListener("input", () => {
      for (const other of TEXT_IDS) if (other !== id) $(other).value = $(id).value;
    });
  }
}

export function setSharedText(text) {
  for (const id of TEXT_IDS) $(id).value = text;
}
