// Drives the board of a running `wfhost serve` in headless Chromium:
//   node e2e.mjs BASE_URL WORKFLOW_DIR SCREENSHOT_DIR
// Starts `hello` from the form, sees its cards reach `completed`, opens a
// step's log, starts `agent-review`, approves its held call, sees it finish.
import { chromium } from "playwright-core";

const [base, dir, shots] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let step = "start";
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
const problems = [];
page.on("pageerror", (error) => problems.push(String(error)));
page.on("console", (message) => { if (message.type() === "error") problems.push(message.text()); });
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
try {
  step = "open the board";
  await page.goto(base + "/", { waitUntil: "load" });
  await page.waitForSelector("#conn.completed", { timeout: 15000 });
  await shot("1-board");

  step = "start hello from the form";
  await page.fill("#wf", `${dir}/hello.yaml`);
  await page.click("#load");
  await page.waitForSelector("#arg-who", { timeout: 15000 });
  if ((await page.inputValue("#arg-who")) !== "world") throw new Error("the form did not take the schema's default");
  await page.fill("#arg-who", "board");
  await page.click("#startbtn");

  step = "see hello's cards reach completed";
  await page.waitForFunction(() => document.querySelector("#run-status")?.textContent === "completed", null, { timeout: 60000 });
  await page.waitForFunction(() => {
    const cards = [...document.querySelectorAll(".card [data-status]")];
    return cards.length === 3 && cards.every((c) => c.dataset.status === "completed");
  }, null, { timeout: 15000 });
  await shot("2-hello-completed");

  step = "open a step's log";
  await page.click('.card[data-step="greet"]');
  await page.waitForFunction(() => (document.querySelector("#log")?.textContent || "").includes("Hello, board!"), null, { timeout: 15000 });
  await shot("3-step-log");
  await page.keyboard.press("Escape");

  step = "start agent-review and approve its held call";
  await page.fill("#wf", `${dir}/agent-review.yaml`);
  await page.click("#load");
  await page.waitForTimeout(300);
  await page.click("#startbtn");
  await page.waitForSelector("[data-approve]", { timeout: 60000 });
  await shot("4-approval");
  await page.click("[data-approve]");
  await page.waitForFunction(() => document.querySelector("#run-status")?.textContent === "completed", null, { timeout: 60000 });
  await shot("5-agent-review-completed");
  if (problems.length) throw new Error("the page reported errors: " + problems.join(" | "));
  console.log("board e2e: ok");
} catch (error) {
  await shot("failure").catch(() => {});
  console.error(`board e2e failed at "${step}": ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
