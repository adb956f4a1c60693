// Small canvas charts for the dashboard: no library, nothing loaded from elsewhere.

export const CLASS_COLORS = {
  angry: "#d64541",
  disgust: "#6f9a37",
  fear: "#8e5cc2",
  happy: "#f0b429",
  sad: "#3f7fd1",
  surprise: "#f07c2c",
  neutral: "#8c939d",
};

export function colorFor(name) {
  return CLASS_COLORS[name] || "#444";
}

// Size the canvas's backing store to its CSS size times the screen's pixel ratio, so lines stay sharp.
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  context.font = "13px system-ui, sans-serif";
  context.textBaseline = "middle";
  return { context, width, height };
}

// Horizontal bars, one per class: values[name] (a count or a share), labelled with format(value).
export function barChart(canvas, classes, values, format = (v) => String(v)) {
  const { context, width, height } = prepare(canvas);
  const labelWidth = 72;
  const valueWidth = 52;
  const rowHeight = height / classes.length;
  const largest = Math.max(1e-9, ...classes.map((name) => values[name] || 0));
  classes.forEach((name, row) => {
    const value = values[name] || 0;
    const y = row * rowHeight;
    context.fillStyle = "#333";
    context.textAlign = "left";
    context.fillText(name, 0, y + rowHeight / 2);
    const barWidth = ((width - labelWidth - valueWidth) * value) / largest;
    context.fillStyle = colorFor(name);
    context.fillRect(labelWidth, y + rowHeight * 0.18, barWidth, rowHeight * 0.64);
    context.fillStyle = "#333";
    context.fillText(format(value), labelWidth + barWidth + 6, y + rowHeight / 2);
  });
}

export function formatSeconds(seconds) {
  const whole = Math.max(0, Math.round(seconds));
  const minutes = Math.floor(whole / 60);
  return `${minutes}:${String(whole % 60).padStart(2, "0")}`;
}

// Legend entries laid out in rows that fit the width; returns the rows' total height.
function legendLayout(context, classes, left, width) {
  const entries = [];
  let x = left;
  let row = 0;
  for (const name of classes) {
    const entryWidth = context.measureText(name).width + 26;
    if (x + entryWidth > width && x > left) {
      x = left;
      row += 1;
    }
    entries.push({ name, x, y: 10 + row * 18 });
    x += entryWidth;
  }
  return { entries, height: (row + 1) * 18 + 4 };
}

function tickLabel(t, span) {
  return span < 20 ? `${t.toFixed(1)} s` : formatSeconds(t);
}

// Stacked areas of class shares over time. points: [{t: seconds, shares: {class: 0..1}}], sorted by t.
export function stackedAreaChart(canvas, classes, points, { tMin, tMax } = {}) {
  const { context, width, height } = prepare(canvas);
  const left = 42;
  const legend = legendLayout(context, classes, left, width);
  const axisHeight = 20;
  const top = legend.height + 6;
  const plotHeight = height - top - axisHeight;
  const plotWidth = width - left - 8;
  const start = tMin ?? (points.length ? points[0].t : 0);
  const end = Math.max(tMax ?? (points.length ? points[points.length - 1].t : 1), start + 1e-6);
  const x = (t) => left + ((t - start) / (end - start)) * plotWidth;
  const y = (share) => top + plotHeight * (1 - share);

  context.strokeStyle = "#ccc";
  context.fillStyle = "#666";
  context.textAlign = "right";
  for (const share of [0, 0.5, 1]) {
    context.beginPath();
    context.moveTo(left, y(share));
    context.lineTo(left + plotWidth, y(share));
    context.stroke();
    context.fillText(`${share * 100}%`, left - 4, y(share));
  }
  context.textAlign = "center";
  const ticks = 5;
  for (let i = 0; i <= ticks; i += 1) {
    const t = start + ((end - start) * i) / ticks;
    context.fillText(tickLabel(t, end - start), Math.min(Math.max(x(t), left + 14), width - 24), height - axisHeight / 2);
  }

  if (points.length) {
    const below = points.map(() => 0);
    for (const name of classes) {
      const above = points.map((point, i) => below[i] + (point.shares[name] || 0));
      context.beginPath();
      points.forEach((point, i) => (i ? context.lineTo : context.moveTo).call(context, x(point.t), y(above[i])));
      for (let i = points.length - 1; i >= 0; i -= 1) context.lineTo(x(points[i].t), y(below[i]));
      context.closePath();
      context.fillStyle = colorFor(name);
      context.fill();
      above.forEach((value, i) => (below[i] = value));
    }
  }

  context.textAlign = "left";
  for (const entry of legend.entries) {
    context.fillStyle = colorFor(entry.name);
    context.fillRect(entry.x, entry.y - 5, 10, 10);
    context.fillStyle = "#333";
    context.fillText(entry.name, entry.x + 14, entry.y);
  }
}
