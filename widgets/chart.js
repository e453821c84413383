// Chart: one plotly chart, drawn from the `spec` trait ({data, layout}) with Plotly.react on every
// change, clicks sent back to the kernel as {type: "click", points: [...]}.
// plotly.js itself is asked from the kernel once per page (a 4.8 MB custom message), never from
// the network; every chart on the page shares it.
const SHARED = (globalThis.__workbenchChart ??= {});
if (!SHARED.ready) {
  let resolve;
  SHARED.ready = new Promise((r) => (resolve = r));
  SHARED.resolve = resolve;
  SHARED.loading = false;
  SHARED.asked = false;
}

async function importPlotly(source) {
  // plotly.min.js is a UMD bundle: given a `module` it fills module.exports.
  const code = "const module = { exports: {} };\n" + source + "\nexport default module.exports;";
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  try {
    return (await import(url)).default;
  } finally {
    URL.revokeObjectURL(url);
  }
}

function loadFrom(source) {
  if (SHARED.loading || !source) return;
  SHARED.loading = true;
  importPlotly(source).then((P) => SHARED.resolve(P));
}

// plotly.js comes with the first chart's state (`_plotly_js`, loaded when that model is created,
// shown or not), so a chart displayed before a long cell draws at once; a page that has no such
// chart (all closed) asks the kernel for it, which answers when it is idle.
function plotly(model) {
  if (globalThis.Plotly?.react) return Promise.resolve(globalThis.Plotly);
  loadFrom(model.get("_plotly_js"));
  if (!SHARED.loading && !SHARED.asked) {
    SHARED.asked = true;
    const ask = () => model.send({ type: "need-plotly" });
    const onMessage = (msg) => {
      if (msg?.type === "plotly") loadFrom(msg.source);
    };
    model.on("msg:custom", onMessage);
    const retry = setInterval(ask, 5000);
    SHARED.ready.then(() => {
      clearInterval(retry);
      model.off("msg:custom", onMessage);
    });
    ask();
  }
  return SHARED.ready;
}

function plain(v) {
  return v === undefined ? null : v;
}

async function render({ model, el }) {
  el.classList.add("workbench-chart");
  // never wider than the space given: a chart first drawn while hidden (a detail panel) would
  // otherwise keep plotly's default 700 px and push its box wider than the page
  el.style.minWidth = "0";
  el.style.width = "100%"; // the place it is given, also as an item of a row box (flex basis: its width)
  el.style.overflow = "hidden";
  const div = document.createElement("div");
  div.style.width = "100%";
  el.appendChild(div);
  const Plotly = await plotly(model);
  const config = { responsive: true, displaylogo: false };
  let drawn = false;
  const draw = () => {
    if (el.offsetWidth === 0) return; // hidden: drawn when shown, at the width it gets
    const spec = model.get("spec") || {};
    Plotly.react(div, spec.data || [], { ...(spec.layout || {}), autosize: true }, config);
    if (!drawn) {
      drawn = true;
      div.on("plotly_click", (event) => {
        const points = (event.points || []).map((p) => ({
          curve: p.curveNumber,
          index: plain(p.pointNumber ?? p.pointIndex),
          x: plain(p.x),
          y: plain(p.y),
          z: plain(p.z),
          customdata: plain(p.customdata),
        }));
        model.send({ type: "click", points });
      });
    }
  };
  draw();
  model.on("change:spec", draw);
  const resize = new ResizeObserver(() => {
    if (el.offsetWidth === 0) return;
    if (drawn) Plotly.Plots.resize(div);
    else draw();
  });
  resize.observe(el);
  return () => {
    resize.disconnect();
    Plotly.purge(div);
  };
}

function initialize({ model }) {
  if (!globalThis.Plotly?.react) loadFrom(model.get("_plotly_js"));
}

export default { initialize, render };
