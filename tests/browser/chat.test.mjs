// Browser test of examples/web-chat: headless Debian Chromium, driven by
// playwright-core. Two pages chat both ways (direct and in #lobby); a third
// logs in late, sees the unread count, and scrolls back through the history.
// Then a page whose WebSocket is cut reconnects by itself and misses nothing.
// Then typing, read receipts ("seen"), edit and recall between two pages.
// Then presence (online, then "last seen" once the peer's page closes) and
// "seen" surviving a reload; and a group membership change as a notice.
//
// Run by .ci/browser-and-conformance.sh. By hand:
//   cargo build --example web-chat && (cd tests/browser && npm ci && npm test)

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startWebChat } from "../support/web-chat.mjs";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = process.env.SCREENSHOT_DIR || join(repo, "target/browser");
const TIMEOUT = 15_000;

let server;
let url;
let browser;
let profile;

before(async () => {
  ({ process: server, url } = await startWebChat());
  profile = mkdtempSync(join(tmpdir(), "im-chromium-"));
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGINT");
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/**
 * A page logged in as `user`, in its own browser context. `prepare(page)`
 * runs before the page loads (e.g. to route its WebSocket).
 */
async function login(user, prepare = async () => {}) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  page.problems = problems;
  await prepare(page);
  await page.goto(url);
  await page.fill("#login-user", user);
  await page.click("#login-button");
  await page.waitForSelector("#chat:not([hidden])");
  assert.equal(await page.textContent("#me"), `logged in as ${user}`);
  return page;
}

const conv = (page, key) => page.locator(`#conversations li[data-conv="${key}"]`);
const badge = (page, key) => conv(page, key).locator(".badge");
const messages = (page) => page.locator("#message-list li .text");

async function say(page, text) {
  await page.fill("#compose-text", text);
  await page.press("#compose-text", "Enter");
  await page.locator("#message-list li.mine .text", { hasText: text }).last().waitFor();
}

async function waitForMessage(page, text) {
  await page.locator("#message-list li .text", { hasText: text }).first().waitFor();
}

/**
 * `from` (a page) opens a direct chat with the user of page `to` and says
 * `text`; `to` opens the chat and sees it.
 */
async function startDirect(from, fromUser, to, toUser, text) {
  await from.fill("#new-chat-user", toUser);
  await from.press("#new-chat-user", "Enter");
  await say(from, text);
  await conv(to, `1:${fromUser}`).click();
  await waitForMessage(to, text);
}

/** The rendered message (an `li`) whose text is `text`. */
const item = (page, text) => page.locator("#message-list li", { has: page.locator(".text", { hasText: text }) });

/** Waits until `#presence` of `page` reads `text` (a RegExp). */
async function presenceShows(page, text) {
  await page.waitForFunction(
    (source) => {
      const el = document.getElementById("presence");
      return !el.hidden && new RegExp(source).test(el.textContent);
    },
    text.source,
    { timeout: TIMEOUT },
  );
}

/** Waits until the typing line of `page` reads `text` ("" for nobody typing). */
async function typingShows(page, text) {
  await page.waitForFunction((want) => document.getElementById("typing").textContent === want, text, { timeout: TIMEOUT });
}

test("two people chat both ways; a late member sees the history", async () => {
  const alice = await login("alice");
  const bob = await login("bob");

  // The demo group greets everyone: one unread message.
  await badge(alice, "2:lobby").filter({ hasText: "1" }).waitFor();

  // alice opens a direct chat with bob and writes.
  await alice.fill("#new-chat-user", "bob");
  await alice.press("#new-chat-user", "Enter");
  await say(alice, "hi bob, it's alice");

  // bob sees the conversation appear live with an unread badge, opens it.
  await badge(bob, "1:alice").filter({ hasText: "1" }).waitFor();
  await conv(bob, "1:alice").click();
  await waitForMessage(bob, "hi bob, it's alice");
  await badge(bob, "1:alice").waitFor({ state: "hidden" });

  // bob answers; alice (conversation open) sees it arrive live.
  await say(bob, "hello alice!");
  await waitForMessage(alice, "hello alice!");

  // The group: alice writes more than one page of history.
  await conv(alice, "2:lobby").click();
  await waitForMessage(alice, "Welcome to #lobby");
  for (let i = 1; i <= 35; i++) await say(alice, `lobby message ${i}`);

  // bob, in the lobby, gets them live and answers.
  await conv(bob, "2:lobby").click();
  await waitForMessage(bob, "lobby message 35");
  await say(bob, "bob in the lobby");
  await waitForMessage(alice, "bob in the lobby");

  // carol logs in late: 37 unread (welcome + 35 from alice + 1 from bob).
  const carol = await login("carol");
  await badge(carol, "2:lobby").filter({ hasText: "37" }).waitFor();
  await conv(carol, "2:lobby").click();
  await waitForMessage(carol, "bob in the lobby");
  // The newest page only: 30 messages.
  assert.equal(await messages(carol).count(), 30);
  assert.equal(await carol.locator("#load-older").isVisible(), true);

  // Scroll back through the history to the first message.
  await carol.locator("#messages").evaluate((el) => {
    el.scrollTop = 0;
  });
  await waitForMessage(carol, "lobby message 1");
  await waitForMessage(carol, "Welcome to #lobby");
  assert.equal(await messages(carol).count(), 37);
  await carol.locator("#history-start").waitFor();
  const order = await messages(carol).allTextContents();
  assert.equal(order[0], "Welcome to #lobby! Members: alice, bob, carol.");
  assert.equal(order[1], "lobby message 1");
  assert.equal(order[36], "bob in the lobby");
  await badge(carol, "2:lobby").waitFor({ state: "hidden" });

  // carol writes; both others see it live.
  await say(carol, "carol here, caught up");
  await waitForMessage(alice, "carol here, caught up");
  await waitForMessage(bob, "carol here, caught up");

  // alice read bob's reply while the chat was open: nothing unread there.
  await badge(alice, "1:bob").waitFor({ state: "hidden" });
  await conv(carol, "2:lobby").locator(".last", { hasText: "carol: carol here, caught up" }).waitFor();

  mkdirSync(shots, { recursive: true });
  await carol.locator("#messages").evaluate((el) => {
    el.scrollTop = el.scrollHeight;
  });
  await carol.screenshot({ path: join(shots, "web-chat-carol.png") });
  await alice.screenshot({ path: join(shots, "web-chat-alice.png") });

  for (const page of [alice, bob, carol]) {
    assert.deepEqual(page.problems, [], "no page errors");
  }
});

test("the page reconnects by itself after its connection is cut, and misses nothing", async () => {
  // erin's WebSocket goes through Playwright, which can cut it.
  const sockets = [];
  const erin = await login("erin", (page) =>
    page.routeWebSocket(/\/ws$/, (ws) => {
      ws.connectToServer();
      sockets.push(ws);
    }),
  );
  const frank = await login("frank");
  await startDirect(frank, "frank", erin, "erin", "erin, are you there?");

  // Cut erin's connection; frank writes while she is away (or just back).
  await sockets[0].close({ code: 1001, reason: "test cut" });
  await erin.locator("#status[data-state=offline]").waitFor();
  await erin.locator("#presence[hidden]").waitFor({ state: "attached" }); // unknown while offline
  await say(frank, "while you were cut off");
  await erin.locator("#status[data-state=online]").waitFor();
  // The client renewed its watch of frank on the new connection.
  await presenceShows(erin, /^online$/);
  await waitForMessage(erin, "while you were cut off");
  assert.ok(sockets.length >= 2, "the page opened a new WebSocket by itself");

  // And erin's own sends still work, once each.
  await say(erin, "back again");
  await waitForMessage(frank, "back again");
  const seen = await messages(erin).allTextContents();
  assert.deepEqual(seen, ["erin, are you there?", "while you were cut off", "back again"]);
  for (const page of [erin, frank]) {
    assert.deepEqual(page.problems, [], "no page errors");
  }
});

test("typing, seen, edit and recall between two pages", async () => {
  const ann = await login("ann");
  const ben = await login("ben");
  await startDirect(ann, "ann", ben, "ben", "hi ben");

  // ann types: ben sees it; she sends: it ends, and the message arrives.
  await ann.fill("#compose-text", "a typo mesage");
  await typingShows(ben, "ann is typing…");
  await ann.press("#compose-text", "Enter");
  await waitForMessage(ben, "a typo mesage");
  await typingShows(ben, "");

  // ben has the chat open, so he read it: ann's newest message shows "seen".
  await item(ann, "a typo mesage").locator(".seen").waitFor();
  assert.equal(await ann.locator("#message-list .seen").count(), 1, "one seen mark, on the newest read message");

  // ann edits her message: both pages show the new text, marked edited.
  await item(ann, "a typo mesage").locator("button.edit").click();
  assert.equal(await ann.inputValue("#compose-text"), "a typo mesage");
  await ann.fill("#compose-text", "a typo message, fixed");
  await ann.press("#compose-text", "Enter");
  for (const page of [ann, ben]) {
    await item(page, "a typo message, fixed").locator(".edited").waitFor();
    assert.equal(await item(page, "a typo mesage").count(), 0, "the old text is gone");
  }

  // ann recalls it: both pages show it recalled, in place.
  const seq = await item(ann, "a typo message, fixed").getAttribute("data-seq");
  await item(ann, "a typo message, fixed").locator("button.recall").click();
  for (const page of [ann, ben]) {
    const recalled = page.locator(`#message-list li.recalled[data-seq="${seq}"]`);
    await recalled.waitFor();
    assert.equal(await recalled.locator(".text").textContent(), "message recalled");
    assert.equal(await item(page, "a typo message, fixed").count(), 0);
  }
  // Only the two messages are listed (the edit and the recall change them, they are not shown).
  assert.deepEqual(await messages(ben).allTextContents(), ["hi ben", "message recalled"]);
  assert.equal(await item(ben, "hi ben").locator("button").count(), 0, "no edit or recall on others' messages");

  // A draft left alone stops showing after a few seconds; a cleared one at once.
  await ann.fill("#compose-text", "never sent");
  await typingShows(ben, "ann is typing…");
  await typingShows(ben, "");
  await ann.fill("#compose-text", "again");
  await typingShows(ben, "ann is typing…");
  await ann.fill("#compose-text", "");
  await typingShows(ben, "");

  mkdirSync(shots, { recursive: true });
  await ann.screenshot({ path: join(shots, "web-chat-ann-recall.png") });
  for (const page of [ann, ben]) {
    assert.deepEqual(page.problems, [], "no page errors");
  }
});

test("presence of a direct chat's peer, and seen after the sender's page reloads", async () => {
  const ivy = await login("ivy");
  const jon = await login("jon");
  await startDirect(ivy, "ivy", jon, "jon", "hi jon");
  // Both have the chat open: each sees the other online (ivy's watch was
  // refused before the first message and is made again after it).
  await presenceShows(jon, /^online$/);
  await presenceShows(ivy, /^online$/);
  assert.equal(await jon.getAttribute("#presence", "data-state"), "online");

  // jon read it: "seen", live first.
  await item(ivy, "hi jon").locator(".seen").waitFor();
  // ivy reloads her page: no live receipt this time, the list's peer_read_seq.
  await ivy.reload();
  await ivy.fill("#login-user", "ivy");
  await ivy.click("#login-button");
  await ivy.waitForSelector("#chat:not([hidden])");
  await conv(ivy, "1:jon").click();
  await item(ivy, "hi jon").locator(".seen").waitFor();
  await presenceShows(ivy, /^online$/);

  // ivy is back online for jon; then she closes her page: last seen.
  await presenceShows(jon, /^online$/);
  await ivy.context().close();
  await presenceShows(jon, /^last seen /);
  assert.equal(await jon.getAttribute("#presence", "data-state"), "offline");
  assert.deepEqual(jon.problems, [], "no page errors");
});

test("a group membership change is a notice, not a chat bubble", async () => {
  const bob = await login("bob");
  await conv(bob, "2:lobby").click();
  await waitForMessage(bob, "carol here, caught up");
  assert.equal(await bob.isHidden("#presence"), true, "no presence line for a group");
  // carol leaves the demo group (no page control for it: a client in the page does it).
  await bob.evaluate(async () => {
    const { ImClient, loadSchema } = await import("/im-client.mjs");
    const schema = loadSchema(globalThis.protobuf, await (await fetch("/im.proto")).text());
    const carol = new ImClient({ urls: [`ws://${location.host}/ws`], token: "carol", schema, fromStart: false });
    await carol.start();
    await carol.request(carol.live(), "leave_group", { group_id: "lobby" });
    carol.close();
  });
  const notice = bob.locator("#message-list li.system");
  await notice.waitFor();
  assert.equal(await notice.textContent(), "carol left");
  assert.equal(await notice.locator("button").count(), 0, "no recall or edit on a notice");
  assert.equal(await notice.locator(".who").count(), 0, "no sender, as a bubble has");
  await conv(bob, "2:lobby").locator(".last", { hasText: /^carol left$/ }).waitFor();
  mkdirSync(shots, { recursive: true });
  await bob.screenshot({ path: join(shots, "web-chat-bob-notice.png") });
  assert.deepEqual(bob.problems, [], "no page errors");
});
