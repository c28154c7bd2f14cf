// Drives the real ComfyUI frontend (served by the test's ComfyUI backend) in Debian's Chromium and
// writes what it saw to <out>/results.json (+ screenshots). tests/test_browser.py asserts on it.
//   node drive.mjs <base_url> <out_dir> <workflow.json>...
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [baseUrl, outDir, ...workflowFiles] = process.argv.slice(2);
const FAL_KEY = process.env.LTX_TEST_FAL_KEY ?? "";
const results = { console_errors: [], workflows: {}, errors: [] };
const save = () => fs.writeFileSync(path.join(outDir, "results.json"), JSON.stringify(results, null, 2));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.on("console", (m) => { if (m.type() === "error") results.console_errors.push(m.text()); });
  page.on("pageerror", (e) => results.console_errors.push(`pageerror: ${e.message}\n${e.stack ?? ""}`));
  // A returning user: no first-run templates dialog over the graph.
  await fetch(`${baseUrl}/settings/Comfy.TutorialCompleted`, { method: "POST", body: "true" });
  await page.goto(baseUrl, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.app?.extensionManager, null, { timeout: 90000 });
  await page.waitForFunction(() => (window.app.extensions ?? []).some((e) => e.name === "ltx_outpaint.canvas_preview"),
                             null, { timeout: 30000 });
  results.extensions = await page.evaluate(() => window.app.extensions.map((e) => e.name).filter((n) => n.startsWith("ltx_outpaint")));

  for (const file of workflowFiles) {
    const name = path.basename(file, ".json");
    const wf = JSON.parse(fs.readFileSync(file, "utf8"));
    await page.evaluate(async (w) => {
      await window.app.loadGraphData(w);
      const ds = window.app.canvas.ds;
      ds.scale = 0.75;
      ds.offset = [10, 10];
      window.app.graph.setDirtyCanvas(true, true);
    }, wf);
    await page.keyboard.press("Escape");
    await page.waitForTimeout(600);
    const info = await page.evaluate(() => {
      const reg = window.LiteGraph?.registered_node_types ?? {};
      const nodes = window.app.graph._nodes ?? window.app.graph.nodes;
      return {
        types: nodes.map((n) => n.type),
        missing: nodes.filter((n) => !reg[n.type] || n.has_errors).map((n) => n.type),
        cost: [...document.querySelectorAll(".ltx-outpaint-cost")].map((e) => e.textContent),
        preview: [...document.querySelectorAll(".ltx-outpaint-canvas-preview canvas")].map((c) => c.dataset.layout ?? null),
      };
    });
    results.workflows[name] = info;
    await page.screenshot({ path: path.join(outDir, `${name}.jpg`), type: "jpeg", quality: 50 });
  }

  // Canvas preview: pixel at the source rectangle's centre vs in the generated area; then source_scale.
  const probe = (extra) => page.evaluate((extra) => {
    const node = window.app.graph._nodes.find((n) => n.comfyClass === "LTXOutpaintCanvas");
    node.onDrawForeground?.(window.app.canvas.ctx);
    const c = document.querySelector(".ltx-outpaint-canvas-preview canvas");
    const lay = JSON.parse(c.dataset.layout);
    const px = (x, y) => Array.from(c.getContext("2d").getImageData(Math.floor(x), Math.floor(y), 1, 1).data);
    const k = lay.scale;
    return { layout: lay, source_centre: px((lay.x + lay.w / 2) * k, (lay.y + lay.h / 2) * k),
             left_edge_mid: px(2, c.height / 2), right_of_centre: px((lay.x + lay.w * 0.45) * k, (lay.y + lay.h / 2) * k),
             width: c.width, height: c.height, at_extra: extra ? px(extra[0], extra[1]) : null };
  }, extra ?? null);
  const setWidget = (type, name, value) => page.evaluate(([t, n, v]) => {
    const node = window.app.graph._nodes.find((x) => x.comfyClass === t);
    const w = node.widgets.find((x) => x.name === n);
    w.value = v;
    w.callback?.(v, window.app.canvas, node);
    window.app.graph.setDirtyCanvas(true, true);
  }, [type, name, value]);
  const previewFile = workflowFiles.find((f) => f.includes("preview-free"));
  await page.evaluate(async (w) => { await window.app.loadGraphData(w); }, JSON.parse(fs.readFileSync(previewFile, "utf8")));
  await page.waitForTimeout(500);
  await setWidget("LTXOutpaintCanvas", "source_scale", 1.0);
  await setWidget("LTXOutpaintCanvas", "placement", "right");
  await page.waitForTimeout(300);
  results.preview_before = await probe();
  const canvasEl = page.locator(".ltx-outpaint-canvas-preview").first();
  await canvasEl.screenshot({ path: path.join(outDir, "canvas_preview.png") });
  await setWidget("LTXOutpaintCanvas", "source_scale", 0.25);
  await page.waitForTimeout(300);
  const b = results.preview_before.layout;
  results.preview_after = await probe([(b.x + b.w / 2) * b.scale, (b.y + b.h / 2) * b.scale]);

  // Cost badge: the seed's example, 1280x720x121.
  await setWidget("LTXOutpaintCanvas", "resolution", "custom");
  await setWidget("LTXOutpaintCanvas", "width", 1280);
  await setWidget("LTXOutpaintCanvas", "height", 720);
  await setWidget("LTXOutpaint", "num_frames", 121);
  await page.waitForTimeout(300);
  results.cost_1280x720x121 = await page.evaluate(() => {
    for (const n of window.app.graph._nodes) n.onDrawForeground?.(window.app.canvas.ctx);
    return [...document.querySelectorAll(".ltx-outpaint-cost")].map((e) => e.textContent);
  });
  await page.screenshot({ path: path.join(outDir, "nodes.jpg"), type: "jpeg", quality: 60 });

  // The fal key through the settings element: stored server-side, never in the graph or the workflow.
  if (FAL_KEY) {
    results.fal_key = await page.evaluate(async (key) => {
      const ext = window.app.extensions.find((e) => e.name === "ltx_outpaint.settings");
      const setting = ext.settings.find((s) => s.id === "LTXOutpaint.FalKey");
      const el = setting.type("LTXOutpaint.FalKey", () => {}, "");
      document.body.append(el);
      el.querySelector("input").value = key;
      el.querySelector("button").click();
      for (let i = 0; i < 50 && !el.querySelector("span").textContent.startsWith("set"); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const status = el.querySelector("span").textContent;
      el.remove();
      const graph = JSON.stringify(window.app.graph.serialize());
      const prompt = JSON.stringify(await window.app.graphToPrompt());
      const settings = JSON.stringify(await (await window.app.api.fetchApi("/settings")).json());
      const stored = Object.keys(localStorage).map((k) => localStorage.getItem(k)).join("\n");
      return { status, in_graph: graph.includes(key), in_prompt: prompt.includes(key),
               in_settings: settings.includes(key), in_local_storage: stored.includes(key), graph, prompt };
    }, FAL_KEY);
  }

  // Queue the free preview workflow from the UI and wait for its output video.
  await page.evaluate(async (w) => { await window.app.loadGraphData(w); }, JSON.parse(fs.readFileSync(previewFile, "utf8")));
  await setWidget("LTXOutpaint", "num_frames", 9);
  results.queued = await page.evaluate(async () => {
    const before = Object.keys(await (await window.app.api.fetchApi("/history")).json());
    await window.app.queuePrompt(0, 1);
    for (let i = 0; i < 240; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const hist = await (await window.app.api.fetchApi("/history")).json();
      const fresh = Object.entries(hist).filter(([k]) => !before.includes(k));
      if (fresh.length && fresh[0][1].status?.completed !== undefined) {
        const [, entry] = fresh[0];
        const files = Object.values(entry.outputs ?? {}).flatMap((o) => o.images ?? o.videos ?? o.gifs ?? []);
        return { status: entry.status?.status_str, files };
      }
    }
    return { status: "timeout", files: [] };
  });
  await page.waitForTimeout(1000);
  results.video_elements = await page.evaluate(() => document.querySelectorAll("video").length);
} catch (e) {
  results.errors.push(String(e?.stack ?? e));
} finally {
  save();
  await browser.close();
}
