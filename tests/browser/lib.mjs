// Launches Debian's Chromium through playwright-core, headless, as every browser test here does.
import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.SLUICE_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-quic",
      "--no-first-run",
      "--disable-sync",
    ],
  });
}

// Fails the process with a message, for the Rust test that runs the script to show.
export function fail(message) {
  console.error(message);
  process.exit(1);
}
