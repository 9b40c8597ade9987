// A visitor crosses from one site to another in a real browser: lands on the shop from an ad
// click with GA's cookie, consents, identifies, follows a link to the brand's site that
// sluice.js decorated with a handoff token, and sends from there. Prints what it saw as JSON;
// the Rust test (tests/tests/identity.rs) checks what reached the vendors.
//   node tests/browser/crossdomain.mjs <shop landing url> <brand origin> <proxy port> <node url> <service key>
import { launch, fail } from "./lib.mjs";

const [landing, brand, proxyPort, node, key] = process.argv.slice(2);
if (!landing || !brand || !proxyPort || !node || !key) fail("usage: crossdomain.mjs <landing> <brand origin> <proxy port> <node url> <service key>");
const shop = new URL(landing).origin;
const shopProxy = `http://shop.localhost:${proxyPort}`;
const brandProxy = `http://brand.localhost:${proxyPort}`;

const browser = await launch();
try {
  const context = await browser.newContext();
  // GA's own first-party cookie, as gtag.js would have set it on the shop.
  await context.addCookies([{ name: "_ga", value: "GA1.1.1234.5678", url: shop }]);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  const answered = (url) => page.waitForResponse((r) => r.url() === url && r.status() === 200);
  let token = null;
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (r.isNavigationRequest() && url.origin === brand) token = url.searchParams.get("_sluice");
  });

  const handoff = answered(shopProxy + "/v1/handoff");
  await page.goto(landing);
  await page.waitForFunction(() => window.sluice && typeof window.sluice.track === "function");
  await handoff;
  let sent = answered(shopProxy + "/v1/batch");
  await page.evaluate(() => {
    sluice.consent({ analytics: true, ads: true });
    sluice.page("Landing");
    sluice.flush();
  });
  await sent;
  sent = answered(shopProxy + "/v1/batch");
  await page.evaluate(() => {
    sluice.identify("user-9", { plan: "pro" });
    sluice.track("Viewed Product", { sku: "sku-9" });
    sluice.flush();
  });
  await sent;
  // A person reads the product page before following the link, and by then the node has
  // processed the identify. Two batches a few milliseconds apart run on two processor
  // workers and are not ordered, so without this wait the brand's events could be stitched
  // before the identify is known.
  for (let attempt = 0; ; attempt++) {
    const profile = await fetch(`${node}/v1/identities/user-9`, { headers: { authorization: `Bearer ${key}` } });
    if (profile.status === 200 && (await profile.text()).includes("GCXCLICK9")) break;
    if (attempt > 200) fail(`the node never processed the identify: ${profile.status}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  // The link to the other site: decorated as it is clicked, accepted there, then events.
  const accepted = answered(brandProxy + "/v1/handoff/accept");
  await page.click("#brand");
  await accepted;
  await page.waitForFunction(() => window.sluice && typeof window.sluice.track === "function");
  sent = answered(brandProxy + "/v1/batch");
  await page.evaluate(() => {
    sluice.page("Brand Home");
    sluice.track("Viewed Collection", { collection: "summer" });
    sluice.flush();
  });
  await sent;
  const brandUrl = page.url();
  const shopCookies = await context.cookies(shopProxy);
  const brandCookies = await context.cookies(brandProxy);
  console.log(JSON.stringify({ errors, token, brandUrl, shopCookies, brandCookies }));
} finally {
  await browser.close();
}
