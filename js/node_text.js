// Shows the text our nodes report after a run (what was loaded, canvas sizes per backend, outpaint summary with the
// fal cost estimate) in a read-only box on the node.
import { app } from "../../scripts/app.js";

const NODES = new Set(["LTXOutpaintLoadVideo", "LTXOutpaintCanvas", "LTXOutpaint"]);
const WIDGET = "ltx_outpaint_info";

app.registerExtension({
  name: "ltx_outpaint.node_text",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = (message?.text ?? []).join("\n");
      if (!text) return;
      let box = this.widgets?.find((w) => w.name === WIDGET);
      if (!box) {
        const el = document.createElement("textarea");
        el.readOnly = true;
        el.style.cssText = "width:100%;font:11px monospace;opacity:0.85;resize:none";
        box = this.addDOMWidget(WIDGET, "text", el, { serialize: false, getValue: () => el.value });
      }
      box.element.value = text;
      box.element.rows = Math.min(6, text.split("\n").length);
      // make room for the box instead of letting it spill over the node's edge
      const min = this.computeSize?.([this.size[0], this.size[1]]);
      if (min && min[1] > this.size[1]) this.setSize([this.size[0], min[1]]);
    };
  },
});
