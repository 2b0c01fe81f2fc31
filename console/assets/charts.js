// The status charts, drawn with uPlot (vendored, see vendor/uplot/README.md)
// from the console's metrics endpoint: the last hour, a point every few
// seconds, sampled on the server from the same registry as /metrics.
import uPlot from "./vendor/uplot/uPlot.esm.js";
import { bits, rate } from "./format.js";

const palette = ["#2dd4bf", "#818cf8", "#f472b6", "#fbbf24", "#60a5fa", "#f87171", "#a3e635", "#fb923c", "#c084fc", "#94a3b8"];
const grid = { stroke: "rgba(139,152,180,.12)", width: 1 };
const axisFont = "11px system-ui, sans-serif";

// clock labels the time axis HH:MM, with seconds when the span is short.
function clock(u, vals) {
  const span = vals.length > 1 ? vals[vals.length - 1] - vals[0] : 0;
  const opts = span < 600 ? { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }
    : { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  return vals.map((v) => new Date(v * 1000).toLocaleTimeString([], opts));
}

function axes(fmt) {
  return [
    { stroke: "#8b98b4", grid, ticks: { show: false }, font: axisFont, values: clock, space: 70 },
    {
      stroke: "#8b98b4", grid, ticks: { show: false }, font: axisFont, size: 64,
      values: (u, vals) => vals.map(fmt),
    },
  ];
}

function fill(color) {
  return (u) => {
    const top = u.bbox?.top, height = u.bbox?.height;
    if (!Number.isFinite(top) || !Number.isFinite(height) || height <= 0) return color + "33";
    const g = u.ctx.createLinearGradient(0, top, 0, top + height);
    g.addColorStop(0, color + "55");
    g.addColorStop(1, color + "00");
    return g;
  };
}

class Chart {
  // names: series labels; fmt: y-axis and legend formatter; area: filled.
  constructor(el, fmt, area) {
    this.el = el; this.fmt = fmt; this.area = area; this.plot = null; this.names = "";
  }

  update(t, series) {
    const names = series.map((s) => s.name);
    if (this.plot && names.join("\n") !== this.names) { this.plot.destroy(); this.plot = null; }
    const data = [t, ...series.map((s) => s.values)];
    if (!this.plot) {
      this.names = names.join("\n");
      const opts = {
        width: this.el.clientWidth || 400, height: 190,
        padding: [8, 8, 0, 0],
        cursor: { points: { size: 6 } },
        legend: { live: true },
        scales: { y: { range: (u, min, max) => [0, Math.max(max * 1.15, this.minTop(series))] } },
        axes: axes(this.fmt),
        series: [
          { value: (u, v) => v === null ? "–" : new Date(v * 1000).toLocaleTimeString() },
          ...series.map((s, i) => ({
            label: s.name, stroke: palette[i % palette.length], width: 2,
            fill: this.area ? fill(palette[i % palette.length]) : undefined,
            points: { show: false }, spanGaps: false, dash: s.dash,
            value: (u, v) => v === null || v === undefined ? "–" : this.fmt(v),
          })),
        ],
      };
      this.plot = new uPlot(opts, data, this.el);
    } else {
      this.plot.setData(data);
    }
  }

  minTop(series) { return series.length && this.fmt === count ? 4 : 1; }

  resize() { if (this.plot) this.plot.setSize({ width: this.el.clientWidth, height: 190 }); }
}

const count = (v) => Number.isInteger(v) ? String(v) : v.toFixed(1);
const perSecond = (v) => rate(v);

export class Charts {
  constructor() {
    this.allocations = new Chart(document.getElementById("chart-allocations"), count, true);
    this.bits = new Chart(document.getElementById("chart-bits"), bits, true);
    this.rate = new Chart(document.getElementById("chart-rate"), perSecond, true);
    this.auth = new Chart(document.getElementById("chart-auth"), perSecond, false);
    this.peers = new Chart(document.getElementById("chart-peers"), perSecond, false);
    let pending = 0;
    window.addEventListener("resize", () => {
      cancelAnimationFrame(pending);
      pending = requestAnimationFrame(() => this.all().forEach((c) => c.resize()));
    });
  }

  all() { return [this.allocations, this.bits, this.rate, this.auth, this.peers]; }

  update(m) {
    // Only the reasons seen in the last hour get a line, so the legend stays
    // readable; a flat "none" line says there were none.
    const byName = (o, none) => {
      const seen = Object.keys(o).sort().filter((k) => o[k].some((v) => v > 0))
        .map((k) => ({ name: k.replaceAll("_", " "), values: o[k] }));
      return seen.length ? seen : [{ name: none, values: m.t.map((_, i) => (i === 0 ? null : 0)) }];
    };
    this.allocations.update(m.t, [{ name: "allocations", values: m.allocations }]);
    this.bits.update(m.t, [
      { name: "to peers", values: m.to_peer_bps },
      { name: "from peers", values: m.from_peer_bps, dash: [6, 4] },
    ]);
    this.rate.update(m.t, [{ name: "created", values: m.allocations_per_s }]);
    this.auth.update(m.t, byName(m.auth_refusals_per_s, "no refusals"));
    this.peers.update(m.t, byName(m.peer_denials_per_s, "no denials"));
  }
}
