// Settings: the fal key (sent once to the pack's route, stored server-side with mode 0600; only a masked
// form ever comes back; never a setting value, never in a workflow), base-URL overrides, default backend.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

async function postSettings(values) {
  const r = await api.fetchApi("/ltx_outpaint/settings", { method: "POST", body: JSON.stringify(values) });
  if (!r.ok) console.warn("ltx_outpaint: settings refused:", (await r.json()).error);
}

function falKeyElement() {
  const root = document.createElement("div");
  root.className = "ltx-outpaint-fal-key";
  root.style.cssText = "display:flex;gap:6px;align-items:center";
  const input = document.createElement("input");
  input.type = "password";
  input.autocomplete = "off";
  input.placeholder = "paste a fal key";
  const save = document.createElement("button");
  save.textContent = "Save";
  const status = document.createElement("span");
  status.style.cssText = "font:11px monospace;opacity:0.8";
  const show = (s) => { status.textContent = s.configured ? `set (${s.masked})` : "not set"; };
  api.fetchApi("/ltx_outpaint/fal_key").then((r) => r.json()).then(show);
  save.addEventListener("click", async () => {
    const key = input.value.trim();
    input.value = ""; // the key leaves the page now and is never kept in it
    if (!key) return;
    const r = await api.fetchApi("/ltx_outpaint/fal_key", { method: "POST", body: JSON.stringify({ key }) });
    show(await r.json());
  });
  root.append(input, save, status);
  return root;
}

const urlSetting = (name, field, label) => ({
  id: `LTXOutpaint.${name}`, category: ["LTX Outpaint", "fal", name], name: label, type: "text", defaultValue: "",
  tooltip: "Leave empty for fal's own address. Environment variables override this.",
  onChange: (value, old) => { if (old !== undefined && value !== old) postSettings({ [field]: value ?? "" }); },
});

app.registerExtension({
  name: "ltx_outpaint.settings",
  settings: [
    { id: "LTXOutpaint.FalKey", category: ["LTX Outpaint", "fal", "key"], name: "fal API key (stored on the server)",
      type: () => falKeyElement(), defaultValue: "" },
    urlSetting("FalQueueURL", "fal_queue_url", "fal queue base URL"),
    urlSetting("FalRestURL", "fal_rest_url", "fal REST (storage) base URL"),
    urlSetting("FalCdnURL", "fal_cdn_url", "fal CDN upload base URL"),
    { id: "LTXOutpaint.DefaultBackend", category: ["LTX Outpaint", "general", "backend"],
      name: "Backend of an outpaint node with none connected", type: "combo", options: ["preview", "fal", "local"],
      defaultValue: "preview",
      onChange: (value, old) => { if (old !== undefined && value !== old) postSettings({ default_backend: value }); } },
  ],
});
