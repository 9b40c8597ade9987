// The destination catalogue in a real browser: a member finds TikTok and PostgreSQL, adds each
// to a pipeline through the form the definition generates (secrets named, never typed),
// reviews the diff and deploys it, then sends a test event to each from the pipeline page,
// from this browser to the data plane and back. Screenshots land in
// tests/browser/screenshots/catalogue-*.png (or $SLUICE_SCREENSHOTS). Prints what it saw as
// JSON; a failed expectation exits non-zero with the reason.
//   node catalogue.mjs <console url> <email> <password> <tenant id> <node url> <tiktok endpoint> <pg schema>
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { launch, fail, accessibility } from "./lib.mjs";

const [base, email, password, tenant, nodeUrl, tiktokEndpoint, schema] = process.argv.slice(2);
if (!schema) fail("usage: catalogue.mjs <console url> <email> <password> <tenant id> <node url> <tiktok endpoint> <pg schema>");

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = process.env.SLUICE_SCREENSHOTS || path.join(here, "screenshots");
mkdirSync(shots, { recursive: true });
let shotNumber = 0;
const shot = (page, name) =>
  page.screenshot({ path: path.join(shots, `catalogue-${String(++shotNumber).padStart(2, "0")}-${name}.png`), fullPage: true });

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** Adds a definition from the catalogue: fills the form, checks the diff, deploys. */
async function add(page, id, fill) {
  await page.goto(`${base}/#/t/${encodeURIComponent(tenant)}/catalogue`);
  const card = page.locator(`#catalogue article[data-definition="${id}"]`);
  await card.locator("button.add-destination").click();
  const dialog = page.getByRole("dialog");
  await dialog.locator(".settings-form").waitFor();
  const filled = await fill(dialog);
  await shot(page, `${id}-form`);
  const violations = await accessibility(page);
  expect(violations.length === 0, `the ${id} form: ${violations.join("; ")}`);
  await dialog.getByRole("button", { name: "Review", exact: true }).click();
  const diff = page.getByRole("dialog").locator("pre.diff");
  await diff.waitFor();
  const added = await diff.locator("span.add").allInnerTexts();
  expect(added.some((l) => l.includes(`type: "${id}"`)), `the diff adds type ${id}: ${added.join(" | ")}`);
  // The one line a first destination replaces is an empty list's.
  const removed = await diff.locator("span.del").allInnerTexts();
  expect(removed.every((l) => /^- destinations: \[\]$/.test(l.trim())), `adding a destination removes no line of the author's: ${removed.join(" | ")}`);
  await shot(page, `${id}-review`);
  await page.getByRole("dialog").getByRole("button", { name: "Deploy", exact: true }).click();
  await page.waitForSelector("dialog", { state: "detached" });
  await page.locator(`#destinations tr[data-destination="${filled.name}"]`).waitFor();
  return { added, ...filled };
}

/** A test send from the pipeline page, repeated while the node has not applied the revision. */
async function testSend(page, name) {
  await page.locator(`#destinations tr[data-destination="${name}"] button.test-destination`).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Data plane").fill(nodeUrl);
  let outcome = null;
  let lastError = "";
  for (let attempt = 0; attempt < 60 && !outcome; attempt++) {
    await dialog.locator("#send-test").click();
    await page.waitForFunction(() => {
      const r = document.querySelector("#test-result");
      return r && !r.querySelector(".loading") && r.childElementCount > 0;
    });
    if (await dialog.locator("[data-outcome]").count()) {
      outcome = await dialog.locator("[data-outcome]").getAttribute("data-outcome");
    } else {
      lastError = await dialog.locator("#test-result").innerText();
      await page.waitForTimeout(500);
    }
  }
  expect(outcome, `the test send of ${name} never got an answer: ${lastError}`);
  const result = {
    outcome,
    summary: await dialog.locator("[data-outcome] .alert").first().innerText(),
    response: await dialog.locator(".response-body").count() ? await dialog.locator(".response-body").innerText() : null,
    request: await dialog.locator(".request-line").count() ? await dialog.locator(".request-line").innerText() : null,
    body: await dialog.locator(".request-body").count() ? await dialog.locator(".request-body").innerText() : null,
  };
  await shot(page, `${name}-test`);
  await dialog.getByRole("button", { name: "Close", exact: true }).click();
  await page.waitForSelector("dialog", { state: "detached" });
  return result;
}

const browser = await launch();
let failure = null;
const seen = {};
try {
  const context = await browser.newContext({ viewport: { width: 1366, height: 800 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e}`));
  page.on("console", (m) => {
    // 4xx answers the page handles: the session check before sign-in (401), and the test
    // send retried while the node has not yet applied the revision (404).
    if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  await page.goto(`${base}/`);
  await page.getByRole("heading", { name: "Sign in to Sluice" }).waitFor();
  await page.getByLabel("E-mail").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("nav[aria-label=Tenant]").waitFor();

  // The catalogue: every definition as a card; search narrows it.
  await page.getByRole("navigation", { name: "Tenant" }).getByRole("link", { name: "Destinations", exact: true }).click();
  await page.locator("#catalogue article").first().waitFor();
  seen.cards = await page.locator("#catalogue article").count();
  expect(seen.cards >= 15, `the catalogue lists every definition: ${seen.cards}`);
  await page.getByLabel("Search").fill("warehouse");
  expect(await page.locator("#catalogue article").count() === 1, "searching for warehouse finds PostgreSQL alone");
  await page.getByLabel("Search").fill("");
  await shot(page, "catalogue");
  const violations = await accessibility(page);
  expect(violations.length === 0, `the catalogue: ${violations.join("; ")}`);

  seen.tiktok = await add(page, "tiktok", async (dialog) => {
    await dialog.getByLabel("Pixel code").fill("PIXEL123");
    const token = await dialog.getByLabel("Access token").inputValue();
    expect(token === "TIKTOK_ACCESS_TOKEN", `the secret's name is suggested, not its value asked for: ${token}`);
    await dialog.getByLabel(/^Endpoint/).fill(tiktokEndpoint);
    return { name: await dialog.getByLabel("Destination name").inputValue() };
  });
  seen.postgres = await add(page, "postgres", async (dialog) => {
    const secret = await dialog.getByLabel("Connection URL").inputValue();
    expect(secret === "POSTGRES_CONNECTION_URL", `the connection secret's suggested name: ${secret}`);
    await dialog.getByLabel(/^Table/).fill("orders");
    await dialog.getByLabel(/^Schema/).fill(schema);
    return { name: await dialog.getByLabel("Destination name").inputValue() };
  });
  seen.revision = await page.locator(".page-head .badge.info").innerText();

  seen.tiktokTest = await testSend(page, seen.tiktok.name);
  seen.postgresTest = await testSend(page, seen.postgres.name);
  expect(problems.length === 0, problems.join("; "));
  seen.screenshotCount = shotNumber;
  console.log(JSON.stringify(seen));
} catch (e) {
  failure = `${e.stack || e}`;
} finally {
  await browser.close();
}
if (failure) fail(failure);
