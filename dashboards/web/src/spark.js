// Sparklines: a few dozen points on a small canvas. uPlot would be one instance per vital per
// tile (thousands on a big panel); a polyline on a 2D canvas is all a sparkline needs. Canvases
// are drawn only while on screen (IntersectionObserver) and redrawn when they come back.

const pending = new WeakMap(); // canvas -> points to draw when visible
const visible = new WeakSet();

const observer = typeof IntersectionObserver === 'function'
  ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) {
        visible.add(e.target);
        const pts = pending.get(e.target);
        if (pts) {
          pending.delete(e.target);
          paint(e.target, pts);
        }
      } else {
        visible.delete(e.target);
      }
    }
  }, { rootMargin: '200px' })
  : null;

/** Makes a sparkline canvas (observed for visibility). */
export function sparkCanvas(label) {
  const c = document.createElement('canvas');
  c.className = 'spark';
  c.width = 80;
  c.height = 24;
  c.setAttribute('role', 'img');
  c.setAttribute('aria-label', label);
  if (observer) observer.observe(c);
  return c;
}

const queued = new Map(); // canvas -> points, painted together at most once a second
let flushTimer = null;

/**
 * Draws `points` ([[t, v], ...]) when the canvas is visible (now, or when it scrolls into
 * view). `soon`: a live update — coalesced, so a busy patient costs one repaint a second.
 */
export function drawSpark(canvas, points, soon = false) {
  if (observer && !visible.has(canvas)) {
    pending.set(canvas, points);
    return;
  }
  if (!soon) {
    paint(canvas, points);
    return;
  }
  queued.set(canvas, points);
  if (!flushTimer) {
    flushTimer = setTimeout(() => {
      flushTimer = null;
      const batch = [...queued];
      queued.clear();
      for (const [c, pts] of batch) {
        if (!observer || visible.has(c)) paint(c, pts);
        else pending.set(c, pts);
      }
    }, 1000);
  }
}

export function forget(canvas) {
  if (observer) observer.unobserve(canvas);
  queued.delete(canvas);
}

function paint(canvas, points) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = 80, cssH = 24;
  if (canvas.width !== cssW * dpr) {
    canvas.width = cssW * dpr;
    canvas.height = cssH * dpr;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const pts = (points || []).filter((p) => Number.isFinite(p[1]));
  canvas.dataset.points = String(pts.length);
  if (pts.length === 0) return;
  const now = Date.now();
  const t0 = now - 6 * 3600 * 1000;
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of pts) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (hi - lo < 1e-9) {
    hi += 1;
    lo -= 1;
  }
  const pad = 2;
  const x = (t) => pad + ((Math.max(t, t0) - t0) / (now - t0)) * (cssW - 2 * pad);
  const y = (v) => cssH - pad - ((v - lo) / (hi - lo)) * (cssH - 2 * pad);
  ctx.lineWidth = 1.5;
  ctx.lineJoin = 'round';
  ctx.strokeStyle = '#1d4e89';
  ctx.beginPath();
  pts.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
  const [lt, lv] = pts[pts.length - 1];
  ctx.fillStyle = '#1d4e89';
  ctx.beginPath();
  ctx.arc(x(lt), y(lv), 2, 0, Math.PI * 2);
  ctx.fill();
}
