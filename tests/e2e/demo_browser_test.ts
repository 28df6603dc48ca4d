/**
 * `main.ts demo` in a real browser: the printed `browser N:` URL, opened
 * in headless Chromium, is Debian's noVNC served by the demo's gateway; it
 * connects with no prompt (the token is the credential) and its canvas
 * shows the test card's colour bars. The used URL is then followed by a
 * new one.
 *
 * @module
 */

import assert from "node:assert/strict";
import { chromium } from "npm:playwright-core@1.65.1";
import type { Page } from "npm:playwright-core@1.65.1";
import { BAR_COLOURS, TEST_CARD_WIDTH } from "../../src/testcard/test_card_picture.ts";
import { CHROMIUM_ARGS, CHROMIUM_PATH, hasChromium, NOVNC_DIR } from "../_util/browser.ts";
import { startDemo } from "../_util/demo_process.ts";

const STEP_TIMEOUT_MS = 15_000;

const MISSING = [
  ...(hasChromium() ? [] : ["chromium"]),
  ...(NOVNC_DIR === undefined ? ["novnc"] : []),
];
const ignore = MISSING.length > 0;
if (ignore) {
  // deno-lint-ignore no-console
  console.warn(`!!! SKIPPED: demo browser test needs ${MISSING.join(", ")}`);
}

/** Runs in `vnc.html`: whether noVNC shows it is connected. */
function isConnected(): boolean {
  return Reflect.get(globalThis, "document").documentElement.classList.contains(
    "noVNC_connected",
  );
}

/** Runs in `vnc.html`: the canvas pixel at (x, y), or null before the canvas is that big. */
function pixelAt([x, y]: readonly [number, number]): number[] | null {
  const canvas = Reflect.get(globalThis, "document").querySelector("#noVNC_container canvas");
  if (canvas === null || canvas.width <= x || canvas.height <= y) return null;
  return [...canvas.getContext("2d").getImageData(x, y, 1, 1).data].slice(0, 3);
}

/** Whether the canvas shows `rgb` at (x, y). */
function pixelIs([x, y, rgb]: readonly [number, number, readonly number[]]): boolean {
  const canvas = Reflect.get(globalThis, "document").querySelector("#noVNC_container canvas");
  if (canvas === null || canvas.width <= x || canvas.height <= y) return false;
  const data = canvas.getContext("2d").getImageData(x, y, 1, 1).data;
  return rgb.every((value, i) => data[i] === value);
}

async function assertShowsBars(page: Page, log: string[]): Promise<void> {
  for (const [i, colour] of BAR_COLOURS.entries()) {
    const x = i * (TEST_CARD_WIDTH / 8) + 20;
    try {
      await page.waitForFunction(pixelIs, [x, 30, colour] as const, { timeout: STEP_TIMEOUT_MS });
    } catch (error) {
      const seen = await page.evaluate(pixelAt, [x, 30] as const);
      throw new Error(
        `Bar ${i} at (${x}, 30) is ${JSON.stringify(seen)}, expected ${
          JSON.stringify(colour)
        }; console:\n${log.join("\n")}`,
        { cause: error },
      );
    }
  }
}

Deno.test({
  name: "demo: the printed browser URL opens noVNC in Chromium, which shows the test card",
  ignore,
  async fn() {
    await using demo = startDemo([`--web=${NOVNC_DIR}`]);
    const first = await demo.waitFor("browser");
    const url = new URL(first.value);
    assert.equal(url.hostname, "127.0.0.1");
    assert.match(url.searchParams.get("path") ?? "", /^websockify\?token=/);

    const profile = await Deno.makeTempDir({ prefix: "vncauthproxy-chromium-" });
    try {
      const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM_PATH,
        headless: true,
        args: [...CHROMIUM_ARGS],
        timeout: STEP_TIMEOUT_MS,
      });
      try {
        const page = context.pages()[0] ?? await context.newPage();
        const log: string[] = [];
        page.on("console", (message) => log.push(`${message.type()}: ${message.text()}`));
        page.on("pageerror", (error) => log.push(`pageerror: ${error}`));
        await page.goto(first.value, { timeout: STEP_TIMEOUT_MS });
        await page.waitForFunction(isConnected, undefined, { timeout: STEP_TIMEOUT_MS })
          .catch((error) => {
            throw new Error(`noVNC did not connect; console:\n${log.join("\n")}`, { cause: error });
          });
        await assertShowsBars(page, log);

        const used = await demo.waitFor("used");
        assert.deepEqual([used.n, used.value], [first.n, "browser"]);
        const next = await demo.waitFor("browser", { after: first.n });
        assert.notEqual(next.value, first.value);
      } finally {
        await context.close();
      }
    } finally {
      await Deno.remove(profile, { recursive: true });
    }
  },
});
