// Chart: one plotly chart, drawn from the `spec` trait ({data, layout}) with Plotly.react on every
// change, clicks sent back to the kernel as {type: "click", points: [...]}.
// plotly.js itself is asked from the kernel once per page (a 4.8 MB custom message), never from
// the network; every chart on the page shares it.
const SHARED = (globalThis.__workbenchChart ??= { plotly: null });

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

function plotly(model) {
  if (globalThis.Plotly?.react) return Promise.resolve(globalThis.Plotly);
  if (!SHARED.plotly) {
    SHARED.plotly = new Promise((resolve) => {
      const ask = () => model.send({ type: "need-plotly" });
      const onMessage = async (msg) => {
        if (msg?.type !== "plotly") return;
        model.off("msg:custom", onMessage);
        clearInterval(retry);
        resolve(await importPlotly(msg.source));
      };
      model.on("msg:custom", onMessage);
      const retry = setInterval(ask, 5000); // a kernel busy with a long cell answers later
      ask();
    });
  }
  return SHARED.plotly;
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

export default { render };
