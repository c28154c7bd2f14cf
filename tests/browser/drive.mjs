// Drives the real ComfyUI frontend (served by the test's ComfyUI backend) in Debian's Chromium the way a
// user does, and writes what it saw to <out>/results.json (+ screenshots). tests/test_browser.py asserts.
//   node drive.mjs <base_url> <out_dir> <config.json>
// config: {pack, templates: [{name, file}], upload: <portrait clip>, fal_key, run_frames}
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [baseUrl, outDir, configFile] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configFile, "utf8"));
const results = { console_errors: [], http_errors: [], templates: {}, cards: {}, errors: [] };
const save = () => fs.writeFileSync(path.join(outDir, "results.json"), JSON.stringify(results, null, 2));
const shot = (page, name) => page.screenshot({ path: path.join(outDir, name), type: "jpeg", quality: 55 });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

// ---- in-page helpers (run with page.evaluate) -------------------------------------------------------------
const inPage = {
  // Every node's outline in graph units (title bar included), on screen, and what covers it there.
  measure: () => {
    const app = window.app, LG = window.LiteGraph, c = app.canvas, el = c.canvas;
    const nodes = app.graph._nodes ?? app.graph.nodes;
    const TH = LG.NODE_TITLE_HEIGHT, ds = c.ds, cr = el.getBoundingClientRect();
    const reg = LG.registered_node_types ?? {};
    const onScreen = (x, y) => [cr.left + (x + ds.offset[0]) * ds.scale, cr.top + (y + ds.offset[1]) * ds.scale];
    const what = (x, y) => {
      if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) return "off-screen";
      const e = document.elementFromPoint(x, y);
      if (!e) return "nothing";
      if (e === el || e.closest(".dom-widget")) return null; // the graph canvas or a node's own DOM widget
      return `${e.tagName.toLowerCase()}.${String(e.className?.baseVal ?? e.className ?? "").split(" ").slice(0, 3).join(".")}`;
    };
    const info = nodes.map((n) => {
      const rect = [n.pos[0], n.pos[1] - TH, n.size[0], n.size[1] + TH];
      const [sx, sy] = onScreen(rect[0], rect[1]);
      const sw = rect[2] * ds.scale, sh = rect[3] * ds.scale, th = TH * ds.scale;
      const probes = { title_left: [sx + 3, sy + th / 2], title_mid: [sx + sw / 2, sy + th / 2],
                       title_right: [sx + sw - 3, sy + th / 2], bottom_left: [sx + 3, sy + sh - 3],
                       bottom_right: [sx + sw - 3, sy + sh - 3] };
      const covered = Object.fromEntries(Object.entries(probes).map(([k, [x, y]]) => [k, what(x, y)]).filter(([, v]) => v));
      return { id: n.id, type: n.type, title: n.title, rect, screen: [sx, sy, sw, sh], covered,
               red: Boolean(n.has_errors), registered: Boolean(reg[n.type]) };
    });
    const overlaps = [];
    for (let i = 0; i < info.length; i++) {
      for (let j = i + 1; j < info.length; j++) {
        const [ax, ay, aw, ah] = info[i].rect, [bx, by, bw, bh] = info[j].rect;
        if (ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah) overlaps.push([info[i].type, info[j].type]);
      }
    }
    const canvasNode = nodes.find((n) => n.comfyClass === "LTXOutpaintCanvas");
    const shown = (name) => {
      const w = canvasNode?.widgets?.find((x) => x.name === name);
      if (!w) return null;
      return typeof canvasNode.isWidgetVisible === "function" ? canvasNode.isWidgetVisible(w) : !w.hidden && !w.disabled;
    };
    return { nodes: info, overlaps, ds: { offset: [...ds.offset], scale: ds.scale }, window: [innerWidth, innerHeight],
             canvas_widgets_shown: canvasNode ? { width: shown("width"), height: shown("height"),
                                                  resolution: canvasNode.widgets.find((w) => w.name === "resolution").value } : null };
  },
  setWidget: ([type, name, value]) => {
    for (const node of window.app.graph._nodes.filter((x) => x.comfyClass === type)) {
      const w = node.widgets.find((x) => x.name === name);
      w.value = value;
      w.callback?.(value, window.app.canvas, node);
    }
    window.app.graph.setDirtyCanvas(true, true);
  },
};

async function openTemplatesDialog(page) {
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  const nav = page.getByText(config.pack, { exact: true }).first();
  await nav.waitFor({ timeout: 20000 });
  await nav.click();
  await page.waitForTimeout(800);
}

// The card of a template in the open dialog: the smallest element holding its title and one thumbnail.
async function findCard(page, title) {
  const handle = await page.evaluateHandle((t) => {
    const dialog = [...document.querySelectorAll("[role=dialog], .p-dialog")].pop() ?? document.body;
    for (const leaf of dialog.querySelectorAll("h1,h2,h3,h4,span,div,p")) {
      if (leaf.textContent.trim() !== t || [...leaf.children].some((c) => c.textContent.trim() === t)) continue;
      let card = leaf;
      while (card && card !== dialog && card.querySelectorAll("img").length === 0) card = card.parentElement;
      if (card && card !== dialog && card.querySelectorAll("img").length === 1) return card;
    }
    return null;
  }, title);
  return handle.asElement();
}

async function waitForGraph(page, expectedNodes) {
  await page.waitForFunction((n) => {
    const nodes = window.app.graph._nodes ?? [];
    return nodes.length === n && nodes.some((x) => x.type === "LTXOutpaintLoadVideo");
  }, expectedNodes, { timeout: 30000 });
}

// Wait until Load Video's preview has loaded its clip (the node grows to show it) or 8 s passed.
async function waitForLoadVideoPreview(page) {
  await page.waitForFunction(() => {
    const vids = [...document.querySelectorAll("video")];
    return vids.some((v) => v.readyState >= 1 && v.videoHeight > 0);
  }, null, { timeout: 8000 }).catch(() => {});
  await page.waitForTimeout(1200);
}

async function queueAndWait(page, seconds) {
  return page.evaluate(async (limit) => {
    const api = window.app.api;
    const before = new Set(Object.keys(await (await api.fetchApi("/history")).json()));
    await window.app.queuePrompt(0, 1);
    for (let i = 0; i < limit * 2; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const hist = await (await api.fetchApi("/history")).json();
      const fresh = Object.entries(hist).filter(([k]) => !before.has(k));
      if (fresh.length && fresh[0][1].status?.completed !== undefined) {
        const [, entry] = fresh[0];
        const files = Object.values(entry.outputs ?? {}).flatMap((o) => o.images ?? o.videos ?? o.gifs ?? []);
        const errors = (entry.status?.messages ?? []).filter(([k]) => k === "execution_error").map(([, d]) => d.exception_message);
        return { status: entry.status?.status_str, files, errors };
      }
    }
    return { status: "timeout", files: [], errors: [] };
  }, seconds);
}

try {
  const page = await browser.newPage({ viewport: { width: config.viewport?.[0] ?? 1600, height: config.viewport?.[1] ?? 1000 } });
  page.on("console", (m) => { if (m.type() === "error") results.console_errors.push(m.text()); });
  page.on("pageerror", (e) => results.console_errors.push(`pageerror: ${e.message}\n${e.stack ?? ""}`));
  page.on("response", (r) => { if (r.status() >= 400) results.http_errors.push({ status: r.status(), url: r.url() }); });
  // A returning user: no first-run templates dialog over the graph.
  await fetch(`${baseUrl}/settings/Comfy.TutorialCompleted`, { method: "POST", body: "true" });
  await page.goto(baseUrl, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.app?.extensionManager, null, { timeout: 90000 });
  await page.waitForFunction(() => (window.app.extensions ?? []).some((e) => e.name === "ltx_outpaint.canvas_preview"),
                             null, { timeout: 30000 });
  await page.waitForTimeout(1500);
  results.frontend_version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  results.extensions = await page.evaluate(() => window.app.extensions.map((e) => e.name).filter((n) => n.startsWith("ltx_outpaint")));

  // The fal key through the settings element, as a user sets it: stored server-side, never in the graph.
  if (config.fal_key) {
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
      const settings = JSON.stringify(await (await window.app.api.fetchApi("/settings")).json());
      const stored = Object.keys(localStorage).map((k) => localStorage.getItem(k)).join("\n");
      return { status, in_settings: settings.includes(key), in_local_storage: stored.includes(key) };
    }, config.fal_key);
  }

  // Every template as a user opens it: the templates dialog, our pack's section, the card.
  const openTemplate = async (t) => {
    await openTemplatesDialog(page);
    const card = await findCard(page, t.name);
    if (!card) throw new Error(`no template card titled ${JSON.stringify(t.name)}`);
    const info = await card.evaluate((c) => {
      const img = c.querySelector("img");
      return { thumbnail: img?.currentSrc || img?.src || null, loaded: Boolean(img?.complete && img.naturalWidth > 0),
               text: c.textContent.replace(/\s+/g, " ").trim() };
    });
    await page.evaluate(() => window.app.graph.clear());
    await card.click();
    await waitForGraph(page, t.nodes);
    await waitForLoadVideoPreview(page);
    return info;
  };
  const failed = async (t, rec, e) => {
    rec.error = String(e?.stack ?? e);
    results.errors.push(`${t.name}: ${rec.error}`);
    await shot(page, `${t.name}-error.jpg`).catch(() => {});
    await page.keyboard.press("Escape").catch(() => {});
  };
  for (const [index, t] of config.templates.entries()) {
    const rec = { name: t.name };
    results.templates[t.name] = rec;
    try {
      if (index === 0) {
        await openTemplatesDialog(page);
        await shot(page, "templates-dialog.jpg");
      }
      results.cards[t.name] = await openTemplate(t);
      rec.opened = await page.evaluate(inPage.measure);
      await shot(page, `${t.name}-open.jpg`);

      if (index === 0 && config.upload) { // a portrait upload through Load Video's button
        const chooser = page.waitForEvent("filechooser", { timeout: 10000 });
        const button = await page.evaluate(() => {
          const c = window.app.canvas, node = window.app.graph._nodes.find((n) => n.comfyClass === "LTXOutpaintLoadVideo");
          const w = node.widgets.find((x) => x.type === "button" || /upload/i.test(x.name));
          const cr = c.canvas.getBoundingClientRect(), ds = c.ds;
          const y = node.pos[1] + (w.last_y ?? w.y) + 10, x = node.pos[0] + node.size[0] / 2;
          return [cr.left + (x + ds.offset[0]) * ds.scale, cr.top + (y + ds.offset[1]) * ds.scale];
        });
        await page.mouse.click(button[0], button[1]);
        await (await chooser).setFiles(config.upload);
        const uploaded = path.basename(config.upload);
        await page.waitForFunction((n) => window.app.graph._nodes.some((x) => x.comfyClass === "LTXOutpaintLoadVideo"
          && String(x.widgets.find((w) => w.name === "video").value).includes(n)), uploaded, { timeout: 20000 });
        await waitForLoadVideoPreview(page);
        await page.waitForTimeout(1500);
        rec.after_upload = await page.evaluate(inPage.measure);
        rec.after_upload.video = await page.evaluate(() => window.app.graph._nodes.find(
          (x) => x.comfyClass === "LTXOutpaintLoadVideo").widgets.find((w) => w.name === "video").value);
        await shot(page, `${t.name}-after-upload.jpg`);
      }
    } catch (e) {
      await failed(t, rec, e);
    }
  }

  // Then each template runs from the UI as opened (fewer frames keep CI short).
  for (const t of config.run_frames ? config.templates : []) {
    const rec = results.templates[t.name];
    if (rec.error) continue;
    try {
      await openTemplate(t);
      await page.evaluate(inPage.setWidget, ["LTXOutpaint", "num_frames", config.run_frames]);
      rec.run = await queueAndWait(page, config.run_seconds ?? 300);
      await page.waitForTimeout(1500);
      rec.after_run = await page.evaluate(inPage.measure);
      rec.prompt = await page.evaluate(async () => JSON.stringify(await window.app.graphToPrompt()));
      await shot(page, `${t.name}-run.jpg`);
    } catch (e) {
      await failed(t, rec, e);
    }
  }

  // Control: a workflow naming a clip that is not in the input folder. Frontends that check media on open
  // (1.5x) mark Load Video red: the red-node probe above can see red.
  results.control_phase_from = results.http_errors.length;
  {
    const wf = JSON.parse(fs.readFileSync(config.templates[0].file, "utf8"));
    wf.nodes.find((n) => n.type === "LTXOutpaintLoadVideo").widgets_values[0] = "not-in-the-input-folder.mp4";
    await page.evaluate(async (w) => { await window.app.loadGraphData(w); }, wf);
    await page.waitForTimeout(3000);
    results.control_missing = await page.evaluate(inPage.measure);
    await shot(page, "control-missing-file.jpg");
  }
  results.control_phase_to = results.http_errors.length;

  // The canvas preview of the free preview template: pixels at the source rectangle vs the generated area.
  const preview = config.templates[0];
  await page.evaluate(async (w) => { await window.app.loadGraphData(w); }, JSON.parse(fs.readFileSync(preview.file, "utf8")));
  await page.waitForTimeout(800);
  const probe = (extra) => page.evaluate((extra) => {
    const node = window.app.graph._nodes.find((n) => n.comfyClass === "LTXOutpaintCanvas");
    node.onDrawForeground?.(window.app.canvas.ctx);
    const c = document.querySelector(".ltx-outpaint-canvas-preview canvas");
    const lay = JSON.parse(c.dataset.layout);
    const px = (x, y) => Array.from(c.getContext("2d").getImageData(Math.floor(x), Math.floor(y), 1, 1).data);
    const k = lay.scale;
    return { layout: lay, source_centre: px((lay.x + lay.w / 2) * k, (lay.y + lay.h / 2) * k),
             left_edge_mid: px(2, c.height / 2), width: c.width, height: c.height,
             at_extra: extra ? px(extra[0], extra[1]) : null };
  }, extra ?? null);
  await page.evaluate(inPage.setWidget, ["LTXOutpaintCanvas", "source_scale", 1.0]);
  await page.evaluate(inPage.setWidget, ["LTXOutpaintCanvas", "placement", "right"]);
  await page.waitForTimeout(300);
  results.preview_before = await probe();
  await page.locator(".ltx-outpaint-canvas-preview").first().screenshot({ path: path.join(outDir, "canvas_preview.png") });
  await page.evaluate(inPage.setWidget, ["LTXOutpaintCanvas", "source_scale", 0.25]);
  await page.waitForTimeout(300);
  const b = results.preview_before.layout;
  results.preview_after = await probe([(b.x + b.w / 2) * b.scale, (b.y + b.h / 2) * b.scale]);

  // A preset hides width / height; "custom" shows them; the values still reach the prompt.
  const presetState = () => page.evaluate(async () => {
    const node = window.app.graph._nodes.find((n) => n.comfyClass === "LTXOutpaintCanvas");
    const shown = (name) => node.isWidgetVisible(node.widgets.find((w) => w.name === name));
    const inputs = (await window.app.graphToPrompt()).output[String(node.id)].inputs;
    return { width: shown("width"), height: shown("height"), inputs, size: [...node.size] };
  });
  results.preset_widgets = { preset: await presetState() };
  await page.evaluate(inPage.setWidget, ["LTXOutpaintCanvas", "resolution", "custom"]);
  await page.evaluate(inPage.setWidget, ["LTXOutpaintCanvas", "width", 1280]);
  await page.evaluate(inPage.setWidget, ["LTXOutpaintCanvas", "height", 720]);
  await page.waitForTimeout(300);
  results.preset_widgets.custom = await presetState();

  // Cost badge: the seed's example, 1280x720x121.
  await page.evaluate(inPage.setWidget, ["LTXOutpaint", "num_frames", 121]);
  await page.waitForTimeout(300);
  results.cost_1280x720x121 = await page.evaluate(() => {
    for (const n of window.app.graph._nodes) n.onDrawForeground?.(window.app.canvas.ctx);
    return [...document.querySelectorAll(".ltx-outpaint-cost")].map((e) => e.textContent);
  });
  await shot(page, "nodes.jpg");
  if (config.fal_key) {
    const graph = await page.evaluate(() => JSON.stringify(window.app.graph.serialize()));
    const prompt = await page.evaluate(async () => JSON.stringify(await window.app.graphToPrompt()));
    Object.assign(results.fal_key, { in_graph: graph.includes(config.fal_key), in_prompt: prompt.includes(config.fal_key),
                                     graph, prompt });
  }
} catch (e) {
  results.errors.push(String(e?.stack ?? e));
} finally {
  save();
  await browser.close();
}
