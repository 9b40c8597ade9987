// The /sluice.js collector in a real browser: a page on one origin loads the collector from the
// proxy on another origin (same site), sends through it with fetch and with sendBeacon on page
// hide, and the first-party cookie comes back HttpOnly. Prints what it saw as JSON; the Rust test
// (tests/tests/proxy.rs) checks what reached the bus.
//   node tests/browser/collector.mjs <page url> <proxy url>
import { launch, fail } from "./lib.mjs";

const [pageUrl, proxyUrl] = process.argv.slice(2);
if (!pageUrl || !proxyUrl) fail("usage: collector.mjs <page url> <proxy url>");

const browser = await launch();
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const answers = [];
  page.on("response", (r) => {
    if (r.url().startsWith(proxyUrl + "/v1/")) answers.push(r.status());
  });

  await page.goto(pageUrl);
  await page.waitForFunction(() => window.sluice && typeof window.sluice.track === "function");
  // The page queued a call before the script loaded; then these:
  await page.evaluate(() => {
    sluice.consent({ analytics: true, ads: false });
    sluice.page("Home", { section: "landing" });
    sluice.track("Viewed Product", { sku: "sku-1", price: 19.5 });
    sluice.flush();
  });
  await page.waitForResponse((r) => r.url() === proxyUrl + "/v1/batch");

  // A second visit: the cookie set by the first answer comes back.
  await page.reload();
  await page.waitForFunction(() => window.sluice && typeof window.sluice.track === "function");
  await page.evaluate(() => {
    sluice.identify("user-42", { plan: "pro" });
    sluice.track("Added To Cart", { sku: "sku-1" });
    sluice.flush();
  });
  await page.waitForResponse((r) => r.url() === proxyUrl + "/v1/batch");

  const scriptCookie = await page.evaluate(() => document.cookie);
  // Queued but not flushed: page hide sends it with sendBeacon.
  await page.evaluate(() => sluice.track("Left Page", {}));
  await page.goto("about:blank");
  const cookies = await context.cookies(proxyUrl);
  console.log(JSON.stringify({ answers, errors, cookies, scriptCookie }));
} finally {
  await browser.close();
}
