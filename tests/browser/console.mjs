// The web console in a real browser, as a platform engineer walks through it: first-run setup,
// sign-in, a tenant, a service key generated with the keyboard alone and copied, a data plane
// started with that key and seen connected, a pipeline edited (an error shown at its line, then
// saved and applied by the node), an archive query answered by the data plane straight to the
// browser, a viewer who cannot change anything, the key revoked and the node seen
// disconnected, the audit log filtered. A screenshot of every page lands in
// tests/browser/screenshots/ (or $SLUICE_SCREENSHOTS). Prints what it saw as JSON; any failed
// expectation exits non-zero with the reason.
//   node console.mjs <console url> <grpc url> <sluice binary> <data-plane port> <email> <password> <setup url> <setup token>
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { launch, fail, accessibility } from "./lib.mjs";

const [base, grpc, sluice, nodePort, email, password, setupBase, setupToken] = process.argv.slice(2);
if (!setupToken) fail("usage: console.mjs <console url> <grpc url> <sluice> <node port> <email> <password> <setup url> <setup token>");

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = process.env.SLUICE_SCREENSHOTS || path.join(here, "screenshots");
rmSync(shots, { recursive: true, force: true });
mkdirSync(shots, { recursive: true });
let shotNumber = 0;
const shot = (page, name) =>
  page.screenshot({ path: path.join(shots, `${String(++shotNumber).padStart(2, "0")}-${name}.png`), fullPage: true });

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** Problems the page itself reports: script errors, CSP refusals, failed loads. */
function watch(page, problems) {
  page.on("pageerror", (e) => problems.push(`page error: ${e}`));
  page.on("console", (m) => {
    // Expected: 4xx answers the page handles, and the deliberately unreachable data plane
    // addresses (a closed port on loopback, and one off loopback that the CSP refuses).
    if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())
      && ![m.text(), m.location()?.url || ""].some((t) => t.includes("127.0.0.1:9/") || t.includes("10.255.255.1"))) {
      problems.push(`console: ${m.text()}`);
    }
  });
}

const text = (page, selector) => page.locator(selector).first().innerText();
/** Saving a pipeline asks for a review: the diff, and a change message. */
async function deploy(page, message = "") {
  const dialog = page.getByRole("dialog");
  await dialog.locator("pre.diff").waitFor();
  if (message) await dialog.getByLabel("Change message").fill(message);
  await dialog.getByRole("button", { name: "Deploy", exact: true }).click();
  await page.waitForSelector("dialog", { state: "detached" });
}
/** A link of the sidebar (pages link to each other too). */
const nav = (page, name) => page.getByRole("navigation", { name: "Tenant" }).getByRole("link", { name, exact: true });
const seen = {};
let dataPlane = null;
const state = mkdtempSync(path.join(tmpdir(), "sluice-console-node-"));

function startDataPlane(serviceKey, controlUrl = grpc) {
  const child = spawn(sluice, ["data-plane", "--roles", "all", "--http-addr", `127.0.0.1:${nodePort}`,
    "--proxy-addr", "127.0.0.1:0", "--state-dir", state], {
    env: { ...process.env, SLUICE_CONTROL_URL: controlUrl, SLUICE_SERVICE_KEY: serviceKey, SLUICE_NODE_NAME: "dc1-edge", SLUICE_POLICY_ALLOW_HOSTS: "127.0.0.1",
      SLUICE_ARCHIVE_FLUSH_SECS: "1", SLUICE_STATUS_INTERVAL_SECS: "1", SLUICE_LOG_FORMAT: "json" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  child.log = "";
  child.stderr.on("data", (chunk) => { child.log = (child.log + chunk).slice(-20000); });
  return child;
}


/**
 * A vendor on loopback: answers each request for an event with the next status scripted for
 * that event id (then 200), and keeps the ids it delivered.
 */
const vendor = { script: {}, delivered: [] };
const vendorServer = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => { body += c; });
  req.on("end", () => {
    const id = req.headers["idempotency-key"];
    const status = vendor.script[id]?.shift() ?? 200;
    if (status === 200) vendor.delivered.push(id);
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(status === 200 ? { ok: true } : { error: { message: `vendor says ${status}` } }));
  });
});
await new Promise((resolve) => vendorServer.listen(0, "127.0.0.1", resolve));
const vendorUrl = `http://127.0.0.1:${vendorServer.address().port}/hook`;

/** Events to the node's receiver as an SDK sends them. */
async function sendEvents(writeKey, batch) {
  const sent = await fetch(`http://127.0.0.1:${nodePort}/v1/batch`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Basic ${Buffer.from(`${writeKey}:`).toString("base64")}` },
    body: JSON.stringify({ batch }),
  });
  expect(sent.status === 200, `the receiver took the events: ${sent.status}`);
}

let failure = null;
const browser = await launch();
try {
  // First-run setup on a fresh control plane: the owner from the one-time token.
  {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const problems = [];
    watch(page, problems);
    await page.goto(`${setupBase}/`);
    await page.getByRole("link", { name: "Create the owner account" }).click();
    await page.getByLabel("Setup token").fill("not-the-token");
    await page.getByLabel("Your e-mail").fill("first@example.com");
    await page.getByLabel("Password").fill("a first owner password");
    await page.getByRole("button", { name: "Create owner" }).click();
    await page.getByRole("alert").filter({ hasText: "wrong setup token" }).waitFor();
    await shot(page, "setup-wrong-token");
    await page.getByLabel("Setup token").fill(setupToken);
    await page.getByRole("button", { name: "Create owner" }).click();
    await page.getByRole("heading", { name: "No tenants yet" }).waitFor();
    await shot(page, "setup-done-empty-tenants");
    expect(problems.length === 0, `setup: ${problems.join("; ")}`);
    seen.setup = "owner created";
    await context.close();
  }

  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    permissions: ["clipboard-read", "clipboard-write"],
  });
  const page = await context.newPage();
  const problems = [];
  watch(page, problems);

  // Sign in: a wrong password is refused with a message, the right one gets in.
  await page.goto(`${base}/`);
  await page.getByRole("heading", { name: "Sign in to Sluice" }).waitFor();
  await shot(page, "sign-in");
  await page.getByLabel("E-mail").fill(email);
  await page.getByLabel("Password").fill("wrong password!");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").waitFor();
  seen.wrongPassword = await text(page, "[role=alert]");
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();

  // A new owner has no tenant: the empty state says what to do.
  await page.getByRole("heading", { name: "No tenants yet" }).waitFor();
  await page.click("#create-tenant");
  await page.getByLabel("Name").fill("acme");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.getByRole("heading", { name: "No keys yet" }).waitFor();
  await shot(page, "keys-empty");
  const tenantId = decodeURIComponent(new URL(page.url()).hash.split("/")[2]);
  seen.tenantId = tenantId;

  // The overview of a new tenant: nothing flows yet, and the checklist says where to start.
  await nav(page, "Overview").click();
  await page.locator("#onboarding li[data-step]").first().waitFor();
  const steps = async () => page.locator("#onboarding li[data-step]").evaluateAll((items) =>
    Object.fromEntries(items.map((li) => [li.dataset.step, li.dataset.done === "true"])));
  seen.checklistNew = await steps();
  expect(Object.values(seen.checklistNew).every((done) => !done), `a new tenant has done nothing: ${JSON.stringify(seen.checklistNew)}`);
  expect(await page.locator("#onboarding li.next a.button", { hasText: "Go to pipelines" }).count() === 1, "the first step links to pipelines");
  expect(await page.locator("figure.chart-box").count() === 3, "three charts");
  await shot(page, "overview-new-tenant");
  await nav(page, "Service keys").click();
  await page.getByRole("heading", { name: "No keys yet" }).waitFor();

  // The key dialog with the keyboard alone.
  await page.focus("#generate-key");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.activeElement?.name === "name");
  for (const label of ["Role", "Pipeline", "Source"]) {
    expect(!(await page.getByLabel(label, { exact: true }).isVisible()), `a service key's dialog hides ${label}`);
  }
  await page.keyboard.type("dc1 data plane");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#new-key");
  await page.waitForFunction(() => document.activeElement?.id === "new-key");
  const serviceKey = await page.inputValue("#new-key");
  expect(serviceKey.startsWith("slk_svc_"), `a service key: ${serviceKey}`);
  expect((await text(page, "dialog [role=alert]")).includes("You will not see it again"), "the once-only warning");
  await page.keyboard.press("Escape");
  await page.getByText("Press “I have copied it” to close this.").waitFor();
  expect(await page.inputValue("#new-key") === serviceKey, "Escape does not close the key's dialog");
  await page.focus("#new-key");
  await page.keyboard.press("Tab");
  expect(await page.evaluate(() => document.activeElement?.id) === "copy-key", "Tab reaches Copy");
  await page.keyboard.press("Enter");
  await page.getByText("Copied to the clipboard.").waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  expect(copied === serviceKey, "the clipboard holds the key");
  await shot(page, "key-shown-once");
  // The next step is the lines to run a data plane with this key and this control plane.
  seen.serviceSnippet = await text(page, "#snippet-code");
  expect(seen.serviceSnippet.includes(`SLUICE_SERVICE_KEY=${serviceKey}`) && seen.serviceSnippet.includes("SLUICE_CONTROL_URL=http://"),
    `the data plane lines carry the key and the control plane: ${seen.serviceSnippet}`);
  const pastedControlUrl = seen.serviceSnippet.match(/SLUICE_CONTROL_URL=(\S+)/)[1];
  await page.getByLabel("Send from").selectOption("compose");
  expect((await text(page, "#snippet-code")).includes("docker compose -f deploy/docker-compose.yml"), "the docker compose lines");
  for (let i = 0; i < 8 && await page.evaluate(() => document.activeElement?.textContent) !== "I have copied it"; i++) {
    await page.keyboard.press("Tab");
  }
  expect(await page.evaluate(() => document.activeElement?.textContent) === "I have copied it", "Tab reaches the close button");
  await page.keyboard.press("Enter");
  await page.waitForSelector("dialog", { state: "detached" });
  await page.locator("tr[data-key-id]").first().waitFor();
  expect(!(await page.content()).includes(serviceKey), "the key is gone from the page once the dialog closes");
  const prefix = await text(page, "tr[data-key-id] code");
  expect(serviceKey.startsWith(prefix), `the list shows the key's prefix ${prefix}`);
  await page.reload();
  await page.locator("tr[data-key-id]").first().waitFor();
  expect(!(await page.content()).includes(serviceKey), "a reload never shows the key again");
  seen.keyPrefix = prefix;
  await shot(page, "keys-list");

  // A pipeline: created from the template, an error shown at its line, then fixed.
  await nav(page, "Pipelines").click();
  await page.getByRole("heading", { name: "No pipelines yet" }).waitFor();
  await shot(page, "pipelines-empty");
  await page.click("#new-pipeline");
  await page.getByLabel("Name").fill("web");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.waitForSelector("#spec-editor");
  const broken = `sources:\n  - name: web\narchive:\n  dataset: events\n  retention: forever\n`;
  await page.fill("#spec-editor", broken);
  await page.click("#save-pipeline");
  await deploy(page);
  await page.locator("#spec-errors li").first().waitFor();
  seen.specError = await text(page, "#spec-errors li");
  expect(/^Line 5/.test(seen.specError), `the error points at line 5: ${seen.specError}`);
  expect(await page.locator(".gutter .bad").count() === 1, "the gutter marks the line");
  await shot(page, "pipeline-error-at-line");
  // A number where a name is due is refused, not saved as text; a missing colon is named.
  const specError = async (spec) => {
    await page.fill("#spec-editor", spec);
    await page.click("#save-pipeline");
    await deploy(page);
    await page.locator("#spec-errors li").first().waitFor();
    return text(page, "#spec-errors li");
  };
  seen.numberAsName = await specError(`# the web site\nsources:\n  - name: web\narchive:\n  dataset: 42\n`);
  expect(/^Line 5/.test(seen.numberAsName) && seen.numberAsName.includes("quote it"), `dataset: 42 is refused at its line: ${seen.numberAsName}`);
  seen.missingColon = await specError(`sources:\n  - name: web\narchive\n  dataset: events\n`);
  expect(/^Line 3/.test(seen.missingColon) && seen.missingColon.includes("colon") && !seen.missingColon.includes("?"),
    `a missing colon is named at its line: ${seen.missingColon}`);
  // Saved as written, comments and all, with a change message.
  const commented = `# the web site: one source for now\nsources:\n  - name: web   # the marketing site\narchive:\n  dataset: events\n`;
  await page.fill("#spec-editor", commented);
  await page.click("#save-pipeline");
  seen.reviewDiff = await page.getByRole("dialog").locator("pre.diff .add").allInnerTexts();
  expect(seen.reviewDiff.some((l) => l.includes("# the marketing site")), `the review shows the change: ${seen.reviewDiff}`);
  await shot(page, "pipeline-review-before-deploy");
  await deploy(page, "the marketing site as the first source");
  await page.locator("#save-status").getByText("Saved revision 2").waitFor();
  expect(await page.inputValue("#spec-editor") === commented, "the document is kept as written, comments included");
  await page.locator(".revisions .revision-message", { hasText: "the marketing site as the first source" }).waitFor();
  await shot(page, "pipeline-saved");

  // An ingest key for the web source.
  await nav(page, "Service keys").click();
  await page.click("#generate-key");
  await page.getByLabel("Name").fill("website");
  await page.getByLabel("Type").selectOption("ingest");
  await page.getByLabel("Source").locator("option[value=web]").waitFor({ state: "attached" });
  expect(await page.getByLabel("Source", { exact: true }).isVisible() && !(await page.getByLabel("Role", { exact: true }).isVisible()),
    "an ingest key's dialog shows Source and hides Role");
  await page.getByRole("button", { name: "Generate", exact: true }).click();
  const writeKey = await page.inputValue("#new-key");
  expect(writeKey.startsWith("slk_ing_"), `an ingest key: ${writeKey}`);
  seen.ingestSnippet = await text(page, "#snippet-code");
  expect(seen.ingestSnippet.includes(`data-write-key="${writeKey}"`), `the sluice.js tag carries the new write key: ${seen.ingestSnippet}`);
  await shot(page, "ingest-key-snippets");
  await page.getByRole("button", { name: "I have copied it" }).click();

  // The data plane, started as the key dialog's lines say (the control URL they name, the key
  // from the clipboard), shows up connected.
  dataPlane = startDataPlane(copied, pastedControlUrl);
  await nav(page, "Data planes").click();
  // The route renders after the hashchange event, so the focus move is waited for, not sampled.
  expect(await page.waitForFunction(() => document.activeElement?.id === "main", null, { timeout: 5000 }).then(() => true, () => false),
    "a route change moves focus to the page");
  expect(await page.locator("[aria-live]:not([role])").count() === 0 && await page.locator("#app[aria-live]").count() === 0,
    "no app-wide live region (a refresh is not announced)");
  await page.locator("tr[data-node-id] .badge.ok", { hasText: "connected" }).waitFor({ timeout: 30000 });
  seen.connected = await text(page, "tr[data-node-id]");
  // Connected comes first; the applied version follows with the node's next status report.
  await page.locator("tr[data-node-id] .config-state", { hasText: "up to date" }).waitFor({ timeout: 30000 });
  expect(seen.connected.includes("dc1-edge"), `the node's name: ${seen.connected}`);
  await shot(page, "fleet-connected");
  // Leaving the data planes page while its request is out ends its polling: visit it three
  // times, each left at once, then count its requests from elsewhere.
  {
    let polls = 0;
    const count = (r) => { if (r.url().includes("/data-planes")) polls += 1; };
    await page.evaluate(async (t) => {
      for (let i = 0; i < 3; i++) {
        location.hash = `#/t/${t}/fleet`;
        await new Promise((r) => setTimeout(r, 0));
        location.hash = `#/t/${t}/keys`;
        await new Promise((r) => setTimeout(r, 0));
      }
    }, encodeURIComponent(tenantId));
    await page.locator("tr[data-key-id]").first().waitFor();
    await page.waitForTimeout(500);
    page.on("request", count);
    await page.waitForTimeout(6000);
    page.off("request", count);
    expect(polls === 0, `the data planes page stopped polling once left, not ${polls} requests`);
    await nav(page, "Data planes").click();
  }

  // Edit the pipeline; the node applies the new version.
  await nav(page, "Pipelines").click();
  await page.getByRole("link", { name: "web" }).click();
  await page.waitForSelector("#spec-editor");
  await page.fill("#spec-editor", `{\n  "sources": [{ "name": "web" }, { "name": "app" }],\n  "archive": { "dataset": "events" }\n}\n`);
  await page.keyboard.press("Control+s");
  await deploy(page, "an app source");
  await page.locator("#save-status").getByText("Saved revision 3").waitFor();
  const version = (await text(page, "#save-status")).match(/config version (\d+)/)[1];
  await page.getByRole("button", { name: "Diff" }).first().click();
  await page.locator("#revision-diff .add").first().waitFor();
  await shot(page, "pipeline-revisions-diff");
  await nav(page, "Data planes").click();
  await page.locator("tr[data-node-id] .badge.ok", { hasText: `v${version}` }).waitFor({ timeout: 30000 });
  seen.appliedVersion = Number(version);
  await shot(page, "fleet-applied");

  // A source's setup lines, with the address the node advertises; the curl one works as pasted.
  await nav(page, "Pipelines").click();
  await page.getByRole("link", { name: "web" }).click();
  await page.locator('#sources tr[data-source="web"]').getByRole("button", { name: "Set up" }).click();
  await page.getByLabel("Send from").selectOption("curl");
  const curl = await text(page, "#snippet-code");
  expect(curl.includes(`http://127.0.0.1:${nodePort}/v1/track`), `curl goes to the node's receiver: ${curl}`);
  {
    const { execFileSync } = await import("node:child_process");
    const answer = execFileSync("sh", ["-c", curl.replace("<write key>", writeKey)], { encoding: "utf8" });
    expect(answer.includes('"success":true'), `the pasted curl line was accepted: ${answer}`);
  }
  for (const kind of ["segment-node", "rudder-python", "segment-go", "segment-ios", "segment-android"]) {
    await page.getByLabel("Send from").selectOption(kind);
    expect((await text(page, "#snippet-code")).includes(`127.0.0.1:${nodePort}`), `${kind} names the receiver`);
  }
  await page.click("#copy-snippet");
  await page.getByText("Copied.").waitFor();
  await shot(page, "source-setup-snippets");
  await page.getByRole("button", { name: "Done" }).click();

  // An event through the receiver, then SQL from this browser straight to the data plane.
  const sent = await fetch(`http://127.0.0.1:${nodePort}/v1/track`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Basic ${Buffer.from(`${writeKey}:`).toString("base64")}` },
    body: JSON.stringify({ type: "track", event: "Signed Up", userId: "u-1", properties: { plan: "pro" } }),
  });
  expect(sent.status === 200, `the receiver took the event: ${sent.status}`);
  await nav(page, "Archive query").click();
  expect(await page.inputValue("input[name=url]") === `http://127.0.0.1:${nodePort}`, "the query address is the one the tenant's node advertises");
  await page.fill("textarea[name=sql]", "SELECT event, count(*) AS n FROM events WHERE event = 'Signed Up' GROUP BY event");
  for (let attempt = 0; attempt < 40; attempt++) {
    await page.click("#run-query");
    await page.waitForFunction(() => !document.querySelector("#run-query").disabled);
    if ((await page.locator("#query-rows").count()) && (await text(page, "#query-rows")) === "1 row") break;
    await page.waitForTimeout(500);
  }
  expect((await text(page, "#query-rows")) === "1 row", "the query returned the event");
  seen.queryRow = await text(page, "table tbody tr");
  expect(seen.queryRow.includes("Signed Up"), `the row: ${seen.queryRow}`);
  seen.queryTime = await text(page, "#query-time");
  const download = page.waitForEvent("download");
  await page.click("#download-csv");
  seen.csvName = (await download).suggestedFilename();
  await shot(page, "query-rows");
  await page.fill("input[name=url]", "http://127.0.0.1:9");
  await page.click("#run-query");
  await page.getByRole("alert").filter({ hasText: "cannot reach the data plane" }).waitFor();
  await shot(page, "query-unreachable");
  // Plain HTTP off loopback is refused by the console's own policy, and the message says so.
  await page.fill("input[name=url]", "http://10.255.255.1:8090");
  await page.click("#run-query");
  await page.getByRole("alert").filter({ hasText: "Content-Security-Policy refused" }).waitFor();
  seen.cspRefusal = await text(page, "[role=alert]");
  await shot(page, "query-refused-by-csp");
  await page.fill("input[name=url]", "http://127.0.0.1:9");
  await page.click("#run-query");
  await page.getByRole("alert").filter({ hasText: "cannot reach the data plane" }).waitFor();
  await page.fill("input[name=url]", `http://127.0.0.1:${nodePort}`);

  // The live inspector: a destination that refuses an event, one that fails then recovers.
  await nav(page, "Pipelines").click();
  await page.getByRole("link", { name: "web" }).click();
  await page.waitForSelector("#spec-editor");
  await page.fill("#spec-editor", JSON.stringify({
    sources: [{ name: "web" }, { name: "app" }],
    destinations: [{ name: "hooks", webhook: { url: vendorUrl }, retry: { max_attempts: 5, within_seconds: 3 } }],
    archive: { dataset: "events" },
  }, null, 2));
  await page.click("#save-pipeline");
  await deploy(page, "deliver to the hooks endpoint");
  await page.locator("#save-status").getByText("Saved revision 4").waitFor();
  const withHooks = (await text(page, "#save-status")).match(/config version (\d+)/)[1];
  await nav(page, "Data planes").click();
  await page.locator("tr[data-node-id] .badge.ok", { hasText: `v${withHooks}` }).waitFor({ timeout: 30000 });
  seen.appliedVersion = Number(withHooks);

  await nav(page, "Live events").click();
  await page.getByRole("heading", { name: "Live events" }).waitFor();
  // Every data-plane page shares the address this browser last used (the query page's bad one).
  expect(await page.inputValue("input[name=url]") === "http://127.0.0.1:9", "the live page remembers the last node address");
  await page.fill("input[name=url]", `http://127.0.0.1:${nodePort}`);
  await page.click("#live-toggle");
  await page.locator("#live-status").getByText("Live from node").waitFor();
  // The vendor refuses the first event outright: it is dead-lettered.
  vendor.script = { "ev-broken": [400] };
  await sendEvents(writeKey, [{ type: "track", event: "Broken Order", messageId: "ev-broken", userId: "u-2", properties: { total: 12 } }]);
  const brokenRow = page.locator('tr[data-event-id="ev-broken"]');
  await brokenRow.locator('[data-destination="hooks"]', { hasText: "dead lettered" }).waitFor({ timeout: 20000 });
  await brokenRow.getByRole("button", { name: "Show stages" }).click();
  const brokenStages = page.locator("tr.live-detail:not([hidden]) .stage-cols");
  await brokenStages.getByText("Attempt · 400").waitFor();
  seen.liveDeadLettered = await brokenStages.innerText();
  expect(seen.liveDeadLettered.includes("Broken Order") && seen.liveDeadLettered.includes("vendor says 400"),
    `input and the vendor's answer side by side: ${seen.liveDeadLettered}`);
  await shot(page, "live-dead-lettered");

  // The fleet page shows the destination failing with the vendor's answer.
  await nav(page, "Data planes").click();
  const hooksHealth = page.locator('#destination-health tr[data-destination="hooks"]');
  // The state and the counts may arrive in different status reports: wait for both.
  await page.locator('#destination-health tr[data-destination="hooks"][data-state="failing"]', { hasText: "1 dead-lettered" }).waitFor({ timeout: 30000 });
  seen.destinationFailing = await hooksHealth.innerText();
  seen.counterOrder = await page.locator("tr[data-node-id] .counters span").evaluateAll((spans) => spans.map((x) => x.title));
  const at = (k) => seen.counterOrder.indexOf(k);
  expect(at("received") === 0 && at("received") < at("processed") && at("processed") < at("delivered") && at("delivered") < at("archived")
    && at("archived") < at("web/hooks.routed") && at("web/hooks.routed") < at("web/hooks.delivered"),
    `counters in flow order: ${seen.counterOrder}`);
  expect(seen.destinationFailing.includes("HTTP 400") && seen.destinationFailing.includes("1 dead-lettered"),
    `the failing destination's state, last error and counts: ${seen.destinationFailing}`);
  await shot(page, "fleet-destination-failing");

  // Filtered to one event name: the vendor fails twice, then takes it.
  await nav(page, "Live events").click();
  await page.getByLabel("Event", { exact: true }).fill("Paid Order");
  await page.click("#live-toggle");
  await page.locator("#live-status").getByText("Live from node").waitFor();
  vendor.script = { "ev-paid": [503, 503] };
  await sendEvents(writeKey, [
    { type: "track", event: "Paid Order", messageId: "ev-paid", userId: "u-3", properties: { total: 40 } },
    { type: "track", event: "Browsed", messageId: "ev-other", userId: "u-3" },
  ]);
  const paid = page.locator('tr[data-event-id="ev-paid"]');
  await paid.locator('[data-destination="hooks"]', { hasText: "delivered" }).waitFor({ timeout: 30000 });
  expect(await page.locator('tr[data-event-id="ev-broken"], tr[data-event-id="ev-other"]').count() === 0,
    "the event filter holds back other events");
  await paid.getByRole("button", { name: "Show stages" }).click();
  const paidStages = page.locator("tr.live-detail:not([hidden]) .stage-cols");
  await paidStages.getByText("Attempt · 200").waitFor();
  seen.liveAttempts = await paidStages.locator(".attempt h4").allInnerTexts();
  expect(seen.liveAttempts.length === 3 && seen.liveAttempts[0].includes("503") && seen.liveAttempts[2].includes("200"),
    `two failed attempts then the delivery: ${seen.liveAttempts}`);
  expect((await paidStages.innerText()).includes("retrying"), "the retrying outcome between attempts");
  await shot(page, "live-retried-then-delivered");
  await page.click("#live-toggle");
  await page.locator("#live-status").getByText("Paused").waitFor();

  // The event's trace, from the live row: every stage up to its archive file.
  await paid.getByRole("link", { name: "Trace" }).click();
  await page.getByRole("heading", { name: "Event trace" }).waitFor();
  await page.locator('#trace-stages li[data-stage="archived"]').waitFor({ timeout: 20000 }).catch(async () => {
    await page.click("#trace-run"); // the archiver flushes every second: ask again
    await page.locator('#trace-stages li[data-stage="archived"]').waitFor({ timeout: 20000 });
  });
  seen.traceStages = await page.locator("#trace-stages li").evaluateAll((items) => items.map((li) => li.dataset.stage));
  for (const stage of ["received", "governed", "shaped", "attempt", "outcome", "archived"]) {
    expect(seen.traceStages.includes(stage), `the trace passes ${stage}: ${seen.traceStages}`);
  }
  seen.traceArchiveFile = await text(page, '#trace-stages li[data-stage="archived"]');
  expect(/\.parquet/.test(seen.traceArchiveFile), `the archive file: ${seen.traceArchiveFile}`);
  await shot(page, "trace-from-ring");

  // The dead letter, browsed and replayed from the console; the vendor takes it now.
  await nav(page, "Dead letters").click();
  await page.locator('#dlq-overview tr[data-destination="hooks"]').getByText("1", { exact: true }).waitFor();
  await page.locator('#dlq-overview tr[data-destination="hooks"]').getByRole("button", { name: "Browse" }).click();
  const entry = page.locator('#dlq-entries tr[data-event-id="ev-broken"]');
  await entry.waitFor();
  seen.dlqEntry = await entry.innerText();
  expect(seen.dlqEntry.includes("refused with HTTP 400"), `the entry's last answer: ${seen.dlqEntry}`);
  await entry.getByRole("checkbox").check();
  await shot(page, "dlq-entry-selected");
  await page.click("#dlq-replay");
  await page.getByText("Replayed 1.").waitFor();
  await page.locator("#dlq-entries").getByText("This dead-letter queue is empty.").waitFor();
  await shot(page, "dlq-replayed");
  for (let i = 0; i < 100 && !vendor.delivered.includes("ev-broken"); i++) await page.waitForTimeout(100);
  expect(vendor.delivered.includes("ev-broken"), `the replayed event reached the vendor: ${vendor.delivered}`);

  // Healthy again on the fleet page.
  await nav(page, "Data planes").click();
  await page.locator('#destination-health tr[data-destination="hooks"][data-state="ok"]').waitFor({ timeout: 30000 });
  await shot(page, "fleet-destination-recovered");

  // The overview has ticked every step from what the nodes reported; the write key's last
  // use came from the node too.
  await nav(page, "Overview").click();
  await page.getByRole("heading", { name: "Set up: done" }).waitFor({ timeout: 30000 });
  seen.checklistDone = await steps();
  expect(Object.values(seen.checklistDone).every((done) => done), `every step done: ${JSON.stringify(seen.checklistDone)}`);
  seen.overviewTiles = await page.locator("#rates .tile").allInnerTexts();
  await shot(page, "overview-flowing");
  await nav(page, "Service keys").click();
  const websiteKey = page.locator("tr[data-key-id]", { hasText: "website" });
  await websiteKey.waitFor();
  seen.writeKeyLastUsed = await websiteKey.locator("td").nth(5).innerText();
  expect(seen.writeKeyLastUsed !== "never", `the write key's last use: ${seen.writeKeyLastUsed}`);

  // A viewer, invited through the members page, reads but cannot change anything.
  await nav(page, "Members").click();
  await page.click("#add-member");
  await page.getByLabel("E-mail").fill("viewer@example.com");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  const invite = await page.inputValue("input[aria-label='Invitation link']");
  await page.getByRole("button", { name: "Done" }).click();
  // A second invitation: a new link replaces the first, then it is withdrawn.
  await page.click("#add-member");
  await page.getByLabel("E-mail").fill("later@example.com");
  await page.getByRole("button", { name: "Add", exact: true }).click();
  const firstLink = await page.inputValue("input[aria-label='Invitation link']");
  await page.getByRole("button", { name: "Done" }).click();
  await page.getByRole("button", { name: "New link for later@example.com" }).click();
  const secondLink = await page.inputValue("input[aria-label='Invitation link']");
  expect(secondLink.includes("#/invite/") && secondLink !== firstLink, "a new link, not the old one");
  await page.getByRole("button", { name: "Done" }).click();
  await shot(page, "members");
  await page.getByRole("button", { name: "Withdraw the invitation of later@example.com" }).click();
  await page.getByRole("button", { name: "Withdraw", exact: true }).click();
  // The page draws its tables again after the change: wait for that, then read it.
  await page.getByText("Withdrew the invitation of later@example.com.").waitFor();
  await page.locator('tr[data-invitation="viewer@example.com"]').waitFor();
  expect(await page.locator('tr[data-invitation="later@example.com"]').count() === 0, "the withdrawn invitation is gone, the other stays");
  {
    const viewerContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const viewer = await viewerContext.newPage();
    watch(viewer, problems);
    await viewer.goto(invite);
    await viewer.getByLabel("Choose a password").fill("a viewer password");
    await viewer.getByRole("button", { name: "Create account" }).click();
    await viewer.getByRole("heading", { name: "Overview" }).waitFor();
    await nav(viewer, "Service keys").click();
    await viewer.locator("tr[data-key-id]").first().waitFor();
    expect(await viewer.locator("#generate-key").count() === 0, "a viewer has no Generate button");
    expect(await viewer.getByRole("button", { name: /^Revoke/ }).count() === 0, "a viewer has no Revoke button");
    await shot(viewer, "viewer-keys");
    await nav(viewer, "Pipelines").click();
    await viewer.getByRole("link", { name: "web" }).click();
    await viewer.waitForSelector("#spec-editor");
    expect(await viewer.locator("#spec-editor").getAttribute("readonly") !== null, "a viewer's editor is read-only");
    expect(await viewer.locator("#save-pipeline").count() === 0, "a viewer has no Save button");
    expect(await viewer.getByRole("button", { name: "Roll back" }).count() === 0, "a viewer cannot roll back");
    await shot(viewer, "viewer-pipeline");
    await nav(viewer, "Members").click();
    await viewer.getByRole("heading", { name: "Members" }).waitFor();
    expect(await viewer.locator("#add-member").count() === 0, "a viewer cannot add members");
    // A viewer watches the live stream and browses dead letters, but cannot replay them.
    await nav(viewer, "Live events").click();
    await viewer.click("#live-toggle");
    await viewer.locator('tr[data-event-id="ev-paid"]').waitFor();
    await shot(viewer, "viewer-live");
    await nav(viewer, "Dead letters").click();
    await viewer.locator('#dlq-overview tr[data-destination="hooks"]').waitFor();
    await shot(viewer, "viewer-dead-letters");
    seen.viewer = "read-only";
    await viewerContext.close();
  }

  // Revoke the service key: the running data plane is disconnected at once.
  await nav(page, "Service keys").click();
  await page.getByRole("button", { name: "Revoke dc1 data plane" }).click();
  await page.getByRole("button", { name: "Revoke key" }).click();
  await page.locator("tr[data-key-id] .badge.danger", { hasText: "revoked" }).waitFor();
  await shot(page, "key-revoked");
  await nav(page, "Data planes").click();
  await page.locator("tr[data-node-id] .badge.danger", { hasText: "disconnected" }).waitFor({ timeout: 30000 });
  await shot(page, "fleet-disconnected");

  // The audit log, filtered to revocations.
  await nav(page, "Audit log").click();
  await page.locator("table tbody tr").first().waitFor();
  await page.getByLabel("Action").fill("key.revoke");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForFunction(() => {
    const actions = [...document.querySelectorAll("table tbody tr td:nth-child(3)")].map((td) => td.textContent);
    return actions.length > 0 && actions.every((a) => a === "key.revoke");
  });
  seen.auditRows = await page.locator("table tbody tr").count();
  expect(seen.auditRows === 1, `one revocation in the log, not ${seen.auditRows}`);
  await shot(page, "audit-filtered");
  // Pipeline changes name their pipeline (not its id) and carry the change message.
  await page.getByLabel("Action").fill("pipeline.update");
  await page.getByRole("button", { name: "Filter" }).click();
  const appChange = page.locator("table tbody tr", { hasText: "an app source" });
  await appChange.waitFor();
  seen.auditPipelineRow = await appChange.innerText();
  expect(seen.auditPipelineRow.includes("pipeline web") && !/[0-9a-f]{8}-[0-9a-f]{4}-/.test(seen.auditPipelineRow),
    `names, not ids: ${seen.auditPipelineRow}`);
  // A date range: today has entries, tomorrow has none.
  const day = (offset) => new Date(Date.now() + offset * 86400000).toISOString().slice(0, 10);
  await page.getByLabel("From (UTC)").fill(day(0));
  await page.getByRole("button", { name: "Filter" }).click();
  await appChange.waitFor();
  await page.getByLabel("From (UTC)").fill(day(1));
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByRole("heading", { name: "Nothing matches" }).waitFor();
  await page.getByLabel("From (UTC)").fill("");
  await page.getByLabel("Action").fill("");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.locator("table tbody tr").first().waitFor();
  await shot(page, "audit-named");

  // A reload keeps the page and the session; signing out ends it.
  await page.reload();
  await page.getByRole("heading", { name: "Audit log" }).waitFor();
  await shot(page, "audit-after-reload");

  // Static files: brotli when asked, cached for good under the versioned path, revalidated.
  {
    const index = await fetch(`${base}/`).then((r) => r.text());
    const appPath = index.match(/\/ui\/v\/[0-9a-f]+\/js\/app\.js/)?.[0];
    expect(appPath, `the index names a versioned app.js: ${index}`);
    const br = await fetch(`${base}${appPath}`, { headers: { "accept-encoding": "br" } });
    expect(br.headers.get("content-encoding") === "br" && br.headers.get("cache-control").includes("immutable"),
      `app.js in brotli, immutable: ${br.headers.get("content-encoding")} ${br.headers.get("cache-control")}`);
    const again = await fetch(`${base}${appPath}`, { headers: { "if-none-match": br.headers.get("etag") } });
    expect(again.status === 304, `revalidation by ETag: ${again.status}`);
    seen.assets = { appPath, etag: br.headers.get("etag") };
  }

  // 250 more events, so the archive page has more than one page of rows.
  await sendEvents(writeKey, Array.from({ length: 250 }, (_, i) => ({
    type: "track", event: "Bulk", messageId: `bulk-${i}`, userId: `u-${i}`,
    properties: { note: "a long property value that would widen a table if the page let it ".repeat(4), i },
  })));

  // Every page at a large and a laptop width: no sideways scroll, a screenshot, and axe-core
  // finds no serious or critical violation.
  const violations = [];
  const tour = [
    ["Overview", "#rates"], ["Data planes", "#destination-health"], ["Live events", "#live-toggle"],
    ["Service keys", "tr[data-key-id]"], ["Pipelines", "table"], ["web", "#sources"], ["Destinations", "#catalogue article"],
    ["Archive query", "#run-query"], ["Dead letters", "#dlq-overview"], ["Members", "table"], ["Audit log", "table"],
  ];
  for (const [width, height] of [[1366, 800], [1024, 700]]) {
    await page.setViewportSize({ width, height });
    for (const [link, ready] of tour) {
      if (link === "web") await nav(page, "Pipelines").click();
      await (link === "web" ? page.getByRole("link", { name: "web", exact: true }) : nav(page, link)).click();
      await page.locator(ready).first().waitFor();
      if (link === "Archive query") {
        await page.fill("input[name=url]", `http://127.0.0.1:${nodePort}`);
        await page.fill("textarea[name=sql]", "SELECT * FROM events ORDER BY received_at");
        for (let attempt = 0; attempt < 40; attempt++) {
          await page.click("#run-query");
          await page.waitForFunction(() => !document.querySelector("#run-query").disabled);
          if ((await page.locator("#result-page").count()) && /of 2\d\d/.test(await text(page, "#result-page"))) break;
          await page.waitForTimeout(500);
        }
        seen.resultPage = await text(page, "#result-page");
        expect(/^Rows 1–100 of 2\d\d$/.test(seen.resultPage), `the first page of the result: ${seen.resultPage}`);
        expect(await page.locator("table tbody tr").count() === 100, "one page of rows is rendered");
        await page.click("#result-next");
        expect((await text(page, "#result-page")).startsWith("Rows 101–200"), "the next page");
      }
      const [scroll, inner, wide] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth,
        [...document.querySelectorAll("body *")].filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth)
          .slice(0, 4).map((e) => `${e.tagName.toLowerCase()}.${e.className}#${e.id} right=${Math.round(e.getBoundingClientRect().right)}`)]);
      expect(scroll <= inner, `${link} at ${width} px scrolls sideways: ${scroll} > ${inner}, past the edge: ${wide.join(", ")}`);
      await shot(page, `tour-${width}-${link.toLowerCase().replaceAll(" ", "-")}`);
      for (const v of await accessibility(page)) violations.push(`${link} at ${width} px: ${v}`);
    }
  }
  expect(violations.length === 0, `accessibility:\n${violations.join("\n")}`);
  seen.axe = "no serious or critical violations on any page at 1366 and 1024 px";
  await page.click("#sign-out");
  await page.getByRole("heading", { name: "Sign in to Sluice" }).waitFor();
  await page.reload();
  await page.getByRole("heading", { name: "Sign in to Sluice" }).waitFor();

  expect(problems.length === 0, problems.join("; "));
  seen.screenshots = shots;
  seen.screenshotCount = shotNumber;
  console.log(JSON.stringify(seen));
} catch (e) {
  const log = dataPlane ? `\ndata plane log (tail):\n${dataPlane.log.slice(-3000)}` : "";
  failure = `${e.stack || e}${log}`;
} finally {
  dataPlane?.kill("SIGKILL");
  vendorServer.close();
  await browser.close();
  rmSync(state, { recursive: true, force: true });
}
if (failure) fail(failure);
