// Copyright 2026 spatial_vlm_ros contributors
// SPDX-License-Identifier: Apache-2.0
//
// The report's painter. replay/report.py writes the numbers (replay/report_views.py computes
// every position, ellipse, box corner and frustum); this script only draws them: the timeline,
// the memory map, and each frame card when it scrolls into view. Data goes into the page through
// textContent and canvas calls only, never as HTML.
'use strict';

(function () {
  const STAGES = {
    receive: '#8c564b', pair: '#bcbd22', queue: '#7f7f7f', decode: '#17becf',
    engine: '#1f77b4', lift: '#2ca02c', relations: '#ff7f0e', memory: '#9467bd',
    other: '#c7c7c7',
  };
  // Row subject, column object: what the subject is relative to the object.
  const GLYPHS = {
    left_of: '←', right_of: '→', above: '↑', below: '↓',
    in_front_of: '⊙', behind: '⊗', near: '≈',
  };
  const GLYPH_HELP = 'left of ←, right of →, above ↑, below ↓, in front of (nearer the camera) ⊙, '
    + 'behind ⊗, near ≈';
  const MAX_MATRIX_OBJECTS = 24;
  const DPR = Math.min(window.devicePixelRatio || 1, 2);

  const run = readJson('report-data');

  function readJson(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(typeof child === 'string' ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  function fmt(value, digits) {
    return value === null || value === undefined || !isFinite(value) ? '–' : value.toFixed(digits);
  }

  // A canvas sized for the screen's pixel ratio; drawing uses CSS pixels.
  function prepare(canvas, width, height) {
    canvas.width = Math.round(width * DPR);
    canvas.height = Math.round(height * DPR);
    canvas.style.width = width + 'px';
    canvas.style.height = height + 'px';
    const ctx = canvas.getContext('2d');
    ctx.setTransform(DPR, 0, 0, DPR, 0, 0);
    return ctx;
  }

  function niceStep(span, lines) {
    const raw = span / lines;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const factor of [1, 2, 2.5, 5, 10]) {
      if (factor * power >= raw) return factor * power;
    }
    return 10 * power;
  }

  function haloText(ctx, text, x, y, color) {
    ctx.lineWidth = 3;
    ctx.strokeStyle = 'rgba(255,255,255,0.9)';
    ctx.strokeText(text, x, y);
    ctx.fillStyle = color;
    ctx.fillText(text, x, y);
  }

  // ----------------------------------------------------------------------------- timeline

  function drawTimeline() {
    const canvas = document.getElementById('timeline-canvas');
    if (!canvas || !run) return;
    const frames = run.frames;
    const labels = run.labels.slice(0, 16);
    const width = Math.max(canvas.parentElement.clientWidth - 4, 320);
    const latencyH = 130;
    const countH = 40;
    const rowH = 8;
    const left = 68;
    const right = 12;
    const top = 10;
    const height = top + latencyH + 22 + countH + 14 + labels.length * rowH + 24;
    const ctx = prepare(canvas, width, height);
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, width, height);
    const plotW = width - left - right;
    const n = Math.max(frames.length, 1);
    const barW = plotW / n;
    const stageNames = Object.keys(STAGES).filter((s) => frames.some((f) => s in f.st));
    const totals = frames.map((f) => Object.values(f.st).reduce((a, b) => a + b, 0));
    const peak = totals.reduce((a, b) => Math.max(a, b), 1);  // no spread: runs can be long
    const scaleMs = niceStep(peak, 4);
    const topMs = Math.ceil(peak / scaleMs) * scaleMs;
    // Latency axis and grid.
    ctx.strokeStyle = '#e4e4e4';
    ctx.fillStyle = '#444';
    ctx.textAlign = 'right';
    for (let ms = 0; ms <= topMs + 1e-9; ms += scaleMs) {
      const y = top + latencyH - (ms / topMs) * latencyH;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
      ctx.fillText(ms.toFixed(0) + ' ms', left - 4, y + 4);
    }
    frames.forEach((frame, i) => {
      let y = top + latencyH;
      for (const stage of stageNames) {
        const ms = frame.st[stage] || 0;
        const h = (ms / topMs) * latencyH;
        ctx.fillStyle = STAGES[stage];
        ctx.fillRect(left + i * barW, y - h, Math.max(barW - (barW > 3 ? 1 : 0), 0.6), h);
        y -= h;
      }
      if (frame.err) {
        ctx.fillStyle = '#c00';
        ctx.fillRect(left + i * barW, top, Math.max(barW - 1, 1), 4);
      }
    });
    // Objects per frame.
    const countTop = top + latencyH + 22;
    const maxCount = frames.reduce((a, f) => Math.max(a, f.n), 1);
    ctx.textAlign = 'right';
    ctx.fillStyle = '#444';
    ctx.fillText(maxCount + ' obj', left - 4, countTop + 8);
    ctx.fillText('0', left - 4, countTop + countH);
    frames.forEach((frame, i) => {
      const h = (frame.n / maxCount) * countH;
      ctx.fillStyle = '#6a7f99';
      ctx.fillRect(left + i * barW, countTop + countH - h, Math.max(barW - (barW > 3 ? 1 : 0), 0.6), h);
    });
    // Which labels each frame saw.
    const stripTop = countTop + countH + 14;
    labels.forEach((label, row) => {
      const y = stripTop + row * rowH;
      ctx.fillStyle = '#444';
      ctx.textAlign = 'right';
      ctx.font = '9px system-ui, sans-serif';
      ctx.fillText(label.slice(0, 13), left - 4, y + rowH - 1);
      ctx.fillStyle = run.label_colors[row];
      frames.forEach((frame, i) => {
        if (frame.lc.some(([index]) => index === row)) {
          ctx.fillRect(left + i * barW, y + 1, Math.max(barW - (barW > 3 ? 1 : 0), 0.6), rowH - 2);
        }
      });
    });
    // Time axis: frame index and bag time.
    const axisY = height - 8;
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#444';
    ctx.textAlign = 'center';
    const tickEvery = Math.max(1, Math.round(niceStep(n, 8)));
    for (let i = 0; i < n; i += tickEvery) {
      const f = frames[i];
      ctx.fillText('#' + i + (f ? ' +' + f.t.toFixed(1) + 's' : ''), left + (i + 0.5) * barW, axisY);
    }
    const legend = document.getElementById('timeline-legend');
    legend.textContent = '';
    for (const stage of stageNames) {
      legend.append(el('span', { class: 'key' }, el('i', { style: 'background:' + STAGES[stage] }), stage));
    }
    legend.append(el('span', { class: 'key' }, el('i', { style: 'background:#6a7f99' }), 'objects'));
    if (stageNames.includes('other')) {
      legend.append(el('span', { class: 'hint', text: ' (this run recorded only the engine time; '
        + '"other" is the rest of the latency)' }));
    }
    const tip = document.getElementById('timeline-tip');
    const frameAt = (event) => {
      const box = canvas.getBoundingClientRect();
      const i = Math.floor((event.clientX - box.left - left) / barW);
      return i >= 0 && i < frames.length ? i : -1;
    };
    canvas.onmousemove = (event) => {
      const i = frameAt(event);
      if (i < 0) { tip.hidden = true; return; }
      const f = frames[i];
      const stages = Object.entries(f.st).map(([k, v]) => k + ' ' + v.toFixed(1)).join(', ');
      tip.textContent = '#' + i + ' · +' + f.t.toFixed(3) + ' s · ' + f.n + ' objects · '
        + f.lat.toFixed(1) + ' ms (' + stages + ')' + (f.err ? ' · error' : '');
      tip.hidden = false;
      tip.style.left = (event.pageX + 12) + 'px';
      tip.style.top = (event.pageY + 12) + 'px';
    };
    canvas.onmouseleave = () => { tip.hidden = true; };
    canvas.onclick = (event) => {
      const i = frameAt(event);
      const anchor = i >= 0 ? document.getElementById('frame-' + i) : null;
      if (anchor) anchor.scrollIntoView({ block: 'start' });
    };
  }

  // ----------------------------------------------------------------------------- top-down map

  function drawMap(canvas, view, size, withPath) {
    const ctx = prepare(canvas, size, size);
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, size, size);
    const points = [];
    for (const obj of view.objects) {
      const reach = obj.ell ? obj.ell[0] : 0;
      points.push([obj.c[0] - reach, obj.c[1] - reach], [obj.c[0] + reach, obj.c[1] + reach]);
      if (obj.fp) points.push(...obj.fp);
    }
    if (view.frustum) points.push(view.frustum[0]);
    if (withPath && view.path) points.push(...view.path);
    if (view.frustum && view.objects.length === 0) points.push(view.frustum[1], view.frustum[2]);
    if (points.length === 0) points.push([0, 0]);
    let [minU, minV, maxU, maxV] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const [u, v] of points) {
      minU = Math.min(minU, u); maxU = Math.max(maxU, u);
      minV = Math.min(minV, v); maxV = Math.max(maxV, v);
    }
    const span = Math.max(maxU - minU, maxV - minV, 1.0) * 1.25;
    const centerU = (minU + maxU) / 2;
    const centerV = (minV + maxV) / 2;
    const margin = 26;
    const scale = (size - 2 * margin) / span;
    const px = (u, v) => [size / 2 + (u - centerU) * scale, size / 2 - (v - centerV) * scale];
    // Metric grid with labels along the left and bottom edges.
    const step = niceStep(span, 6);
    ctx.font = '10px system-ui, sans-serif';
    ctx.strokeStyle = '#e8e8e8';
    ctx.fillStyle = '#888';
    ctx.lineWidth = 1;
    const firstU = Math.ceil((centerU - span / 2) / step) * step;
    const firstV = Math.ceil((centerV - span / 2) / step) * step;
    ctx.textAlign = 'center';
    for (let u = firstU; u <= centerU + span / 2; u += step) {
      const [x] = px(u, 0);
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, size); ctx.stroke();
      ctx.fillText(u.toFixed(step < 1 ? 1 : 0), x, size - 4);
    }
    ctx.textAlign = 'left';
    for (let v = firstV; v <= centerV + span / 2; v += step) {
      const [, y] = px(0, v);
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(size, y); ctx.stroke();
      ctx.fillText(v.toFixed(step < 1 ? 1 : 0), 3, y - 2);
    }
    // Camera field of view.
    if (view.frustum) {
      const [apex, leftEnd, rightEnd] = view.frustum.map(([u, v]) => px(u, v));
      ctx.fillStyle = 'rgba(60,60,60,0.07)';
      ctx.strokeStyle = '#999';
      ctx.beginPath(); ctx.moveTo(...leftEnd); ctx.lineTo(...apex); ctx.lineTo(...rightEnd);
      ctx.fill(); ctx.stroke();
      ctx.fillStyle = '#333';
      ctx.beginPath(); ctx.arc(apex[0], apex[1], 4, 0, 2 * Math.PI); ctx.fill();
      haloText(ctx, 'camera', apex[0] + 6, apex[1] + 12, '#333');
    }
    if (withPath && view.path && view.path.length > 1) {
      ctx.strokeStyle = '#555';
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      view.path.forEach(([u, v], i) => (i ? ctx.lineTo(...px(u, v)) : ctx.moveTo(...px(u, v))));
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.font = '11px system-ui, sans-serif';
    for (const obj of view.objects) {
      ctx.strokeStyle = obj.color;
      ctx.fillStyle = obj.color + '30';
      if (obj.fp) {
        ctx.beginPath();
        obj.fp.forEach(([u, v], i) => (i ? ctx.lineTo(...px(u, v)) : ctx.moveTo(...px(u, v))));
        ctx.closePath(); ctx.fill(); ctx.lineWidth = 1; ctx.stroke();
      }
      const [x, y] = px(obj.c[0], obj.c[1]);
      if (obj.ell) {
        const [a, b, angle] = obj.ell;
        ctx.setLineDash([3, 2]);
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        // Map v points up, canvas y down: the angle flips sign.
        ctx.ellipse(x, y, Math.max(a * scale, 1), Math.max(b * scale, 1), -angle, 0, 2 * Math.PI);
        ctx.stroke();
        ctx.setLineDash([]);
      }
      const hollow = obj.state && obj.state !== 'visible';
      ctx.fillStyle = obj.color;
      ctx.beginPath(); ctx.arc(x, y, 3.5, 0, 2 * Math.PI);
      if (hollow) { ctx.lineWidth = 1.5; ctx.stroke(); } else { ctx.fill(); }
      ctx.textAlign = 'left';
      haloText(ctx, obj.id + (hollow ? ' (' + obj.state + ')' : ''), x + 5, y - 5, '#111');
    }
    // Axis names, scale bar, frame.
    ctx.fillStyle = '#333';
    ctx.textAlign = 'right';
    haloText(ctx, '→ ' + view.right + ' (m)', size - 4, size - 16, '#333');
    ctx.textAlign = 'left';
    haloText(ctx, '↑ ' + view.up + ' (m)', 4, 12, '#333');
    ctx.textAlign = 'right';
    haloText(ctx, view.frame || '', size - 4, 12, '#666');
    if (view.unplaced && view.unplaced.length) {
      ctx.textAlign = 'left';
      haloText(ctx, 'no depth: ' + view.unplaced.join(', '), 4, size - 18, '#a00');
    }
  }

  // ----------------------------------------------------------------------------- depth

  const COLORMAP = [
    [0.0, [48, 18, 59]], [0.2, [70, 134, 251]], [0.4, [26, 228, 182]],
    [0.6, [162, 252, 60]], [0.8, [250, 187, 33]], [1.0, [122, 4, 3]],
  ];

  function colormap(t) {
    const x = Math.min(Math.max(t, 0), 1);
    for (let i = 1; i < COLORMAP.length; i++) {
      const [t1, c1] = COLORMAP[i];
      if (x <= t1) {
        const [t0, c0] = COLORMAP[i - 1];
        const f = (x - t0) / (t1 - t0);
        return c0.map((c, k) => Math.round(c + f * (c1[k] - c)));
      }
    }
    return COLORMAP[COLORMAP.length - 1][1];
  }

  async function inflateDepth(grid) {
    if (grid.values) return grid.values;
    const bytes = Uint8Array.from(atob(grid.mm), (c) => c.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
    const view = new DataView(await new Response(stream).arrayBuffer());
    const values = new Float32Array(grid.w * grid.h);
    for (let i = 0; i < values.length; i++) values[i] = view.getUint16(2 * i, true) / 1000;
    grid.values = values;
    return values;
  }

  async function drawDepth(container, card) {
    const grid = card.depth;
    const values = await inflateDepth(grid);
    const zoom = Math.max(1, Math.floor(360 / grid.w));
    const canvas = el('canvas', { class: 'depth' });
    const ctx = prepare(canvas, grid.w * zoom, grid.h * zoom);
    const small = document.createElement('canvas');
    small.width = grid.w;
    small.height = grid.h;
    const smallCtx = small.getContext('2d');
    const image = smallCtx.createImageData(grid.w, grid.h);
    for (let i = 0; i < values.length; i++) {
      const [r, g, b] = values[i] > 0 ? colormap((values[i] - grid.lo) / (grid.hi - grid.lo)) : [0, 0, 0];
      image.data.set([r, g, b, 255], 4 * i);
    }
    smallCtx.putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(small, 0, 0, grid.w * zoom, grid.h * zoom);
    // The boxes, to see which depth pixels each object was lifted from.
    if (card.size) {
      const sx = (grid.w * zoom) / card.size[0];
      const sy = (grid.h * zoom) / card.size[1];
      ctx.font = '11px system-ui, sans-serif';
      for (const row of card.objects) {
        const [id, , , box] = row;
        const color = colorOf(card, id);
        ctx.strokeStyle = color;
        ctx.lineWidth = 2;
        ctx.strokeRect(box[0] * sx, box[1] * sy, (box[2] - box[0]) * sx, (box[3] - box[1]) * sy);
        haloText(ctx, id, box[0] * sx + 2, box[1] * sy + 12, '#111');
      }
    }
    const legend = el('div', { class: 'depth-legend' },
      el('span', { text: grid.lo.toFixed(2) + ' m' }),
      el('i', { class: 'ramp' }),
      el('span', { text: grid.hi.toFixed(2) + ' m' }),
      el('span', { class: 'hint', text: ' · black: no depth · ' + (100 * grid.valid).toFixed(0)
        + ' % of pixels valid · ' + grid.w + '×' + grid.h + ' samples' }));
    container.append(canvas, legend);
  }

  function colorOf(card, id) {
    for (const obj of card.map.objects) if (obj.id === id) return obj.color;
    for (const box of card.v3d.boxes) if (box.id === id) return box.color;
    return '#d00';
  }

  // ----------------------------------------------------------------------------- 3D view

  const EDGES = [];
  for (let k = 0; k < 8; k++) for (let axis = 0; axis < 3; axis++) {
    if (!(k & (1 << axis))) EDGES.push([k, k | (1 << axis)]);
  }
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const norm = (a) => { const l = Math.hypot(...a) || 1; return [a[0] / l, a[1] / l, a[2] / l]; };

  class View3D {
    constructor(canvas, card, size) {
      this.canvas = canvas;
      this.card = card;
      this.size = size;
      this.ctx = prepare(canvas, size, size);
      this.points = null;
      this.colors = null;
      const v3d = card.v3d;
      const centres = v3d.boxes.map((b) => b.c);
      const M = v3d.display_from_camera;
      this.forward = M ? norm([M[0][2], M[1][2], M[2][2]]) : [0, 1, 0];
      if (centres.length) {
        this.target = [0, 1, 2].map((k) => centres.reduce((s, c) => s + c[k], 0) / centres.length);
      } else if (M) {
        this.target = [0, 1, 2].map((k) => M[k][3] + 2 * this.forward[k]);
      } else {
        this.target = [0, 0, 0];
      }
      let radius = 1;
      for (const box of v3d.boxes) for (const c of box.corners) radius = Math.max(radius, Math.hypot(...sub(c, this.target)));
      if (v3d.camera) radius = Math.max(radius, Math.hypot(...sub(v3d.camera.apex, this.target)));
      this.radius = radius;
      this.reset();
      this.bind();
    }

    reset() {
      // Start behind and above the camera, looking where it looks.
      this.yaw = Math.atan2(this.forward[1], this.forward[0]);
      this.pitch = 0.45;
      this.distance = 2.6 * this.radius;
    }

    bind() {
      const canvas = this.canvas;
      let last = null;
      canvas.addEventListener('pointerdown', (event) => {
        last = [event.clientX, event.clientY];
        if (canvas.setPointerCapture) canvas.setPointerCapture(event.pointerId);
      });
      canvas.addEventListener('pointermove', (event) => {
        if (!last) return;
        this.yaw -= (event.clientX - last[0]) * 0.01;
        this.pitch = Math.min(1.5, Math.max(-1.5, this.pitch + (event.clientY - last[1]) * 0.01));
        last = [event.clientX, event.clientY];
        this.draw();
      });
      const stop = () => { last = null; };
      canvas.addEventListener('pointerup', stop);
      canvas.addEventListener('pointercancel', stop);
      canvas.addEventListener('wheel', (event) => {
        event.preventDefault();
        this.distance = Math.min(50 * this.radius, Math.max(0.2, this.distance * Math.exp(event.deltaY * 0.0015)));
        this.draw();
      }, { passive: false });
      canvas.addEventListener('dblclick', () => { this.reset(); this.draw(); });
    }

    async loadPoints(image) {
      const grid = this.card.depth;
      const M = this.card.v3d.display_from_camera;
      if (!grid || !M) return;
      const values = await inflateDepth(grid);
      let pixels = null;
      if (image) {
        try {
          await image.decode();
          const small = document.createElement('canvas');
          small.width = grid.w;
          small.height = grid.h;
          const smallCtx = small.getContext('2d', { willReadFrequently: true });
          smallCtx.drawImage(image, 0, 0, grid.w, grid.h);
          pixels = smallCtx.getImageData(0, 0, grid.w, grid.h).data;
        } catch (error) {
          pixels = null;  // colour by depth instead
        }
      }
      const points = [];
      const colors = [];
      for (let v = 0; v < grid.h; v++) {
        for (let u = 0; u < grid.w; u++) {
          const i = v * grid.w + u;
          const z = values[i];
          if (!(z > 0)) continue;
          const p = [(u - grid.cx) / grid.fx * z, (v - grid.cy) / grid.fy * z, z];
          points.push(
            M[0][0] * p[0] + M[0][1] * p[1] + M[0][2] * p[2] + M[0][3],
            M[1][0] * p[0] + M[1][1] * p[1] + M[1][2] * p[2] + M[1][3],
            M[2][0] * p[0] + M[2][1] * p[1] + M[2][2] * p[2] + M[2][3]);
          const [r, g, b] = pixels ? [pixels[4 * i], pixels[4 * i + 1], pixels[4 * i + 2]]
            : colormap((z - grid.lo) / (grid.hi - grid.lo));
          colors.push((255 << 24 | b << 16 | g << 8 | r) >>> 0);  // RGBA bytes, little-endian
        }
      }
      this.points = Float32Array.from(points);
      this.colors = Uint32Array.from(colors);
    }

    // Thousands of points as pixels of one image layer: far faster than a fillRect each.
    drawPoints(eye, right, up, forward, focal) {
      const { canvas, ctx, size } = this;
      const width = canvas.width;
      const height = canvas.height;
      if (!this.layer) {
        this.layer = document.createElement('canvas');
        this.layer.width = width;
        this.layer.height = height;
        this.layerCtx = this.layer.getContext('2d');
        this.layerData = this.layerCtx.createImageData(width, height);
      }
      const pixels = new Uint32Array(this.layerData.data.buffer);
      pixels.fill(0);
      const pts = this.points;
      const dot = Math.max(1, Math.round(2 * DPR));
      for (let i = 0, k = 0; i < pts.length; i += 3, k++) {
        const dx = pts[i] - eye[0];
        const dy = pts[i + 1] - eye[1];
        const dz = pts[i + 2] - eye[2];
        const z = dx * forward[0] + dy * forward[1] + dz * forward[2];
        if (z < 0.05) continue;
        const x = Math.round((size / 2 + focal * (dx * right[0] + dy * right[1] + dz * right[2]) / z) * DPR);
        const y = Math.round((size / 2 - focal * (dx * up[0] + dy * up[1] + dz * up[2]) / z) * DPR);
        if (x < 0 || y < 0 || x + dot > width || y + dot > height) continue;
        for (let row = 0; row < dot; row++) pixels.fill(this.colors[k], (y + row) * width + x, (y + row) * width + x + dot);
      }
      this.layerCtx.putImageData(this.layerData, 0, 0);
      ctx.save();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(this.layer, 0, 0);
      ctx.restore();
    }

    draw() {
      const { ctx, size } = this;
      ctx.fillStyle = '#f4f5f7';
      ctx.fillRect(0, 0, size, size);
      const cp = Math.cos(this.pitch);
      const eye = [
        this.target[0] - this.distance * cp * Math.cos(this.yaw),
        this.target[1] - this.distance * cp * Math.sin(this.yaw),
        this.target[2] + this.distance * Math.sin(this.pitch),
      ];
      const forward = norm(sub(this.target, eye));
      const right = norm(cross(forward, [0, 0, 1]));
      const up = cross(right, forward);
      const focal = size / (2 * Math.tan(0.5 * 0.9));
      const project = (p) => {
        const d = sub(p, eye);
        const z = dot(d, forward);
        if (z < 0.05) return null;
        return [size / 2 + focal * dot(d, right) / z, size / 2 - focal * dot(d, up) / z];
      };
      const line = (a, b) => {
        const pa = project(a);
        const pb = project(b);
        if (!pa || !pb) return;
        ctx.beginPath(); ctx.moveTo(...pa); ctx.lineTo(...pb); ctx.stroke();
      };
      // Ground grid under everything, 1 m or finer.
      const v3d = this.card.v3d;
      let floor = Infinity;
      for (const box of v3d.boxes) for (const c of box.corners) floor = Math.min(floor, c[2]);
      if (!isFinite(floor)) floor = this.target[2] - 1;
      const step = niceStep(2 * this.radius, 6);
      const reach = Math.ceil(1.5 * this.radius / step) * step;
      ctx.strokeStyle = '#dadde2';
      ctx.lineWidth = 1;
      const gx = Math.round(this.target[0] / step) * step;
      const gy = Math.round(this.target[1] / step) * step;
      for (let d = -reach; d <= reach + 1e-9; d += step) {
        line([gx + d, gy - reach, floor], [gx + d, gy + reach, floor]);
        line([gx - reach, gy + d, floor], [gx + reach, gy + d, floor]);
      }
      if (this.points) this.drawPoints(eye, right, up, forward, focal);
      // Frame axes at the origin of the positions' frame (x red, y green, z blue).
      const axisLength = Math.max(0.2, niceStep(this.radius, 4));
      ctx.font = '10px system-ui, sans-serif';
      ['#d62728', '#2ca02c', '#1f77b4'].forEach((color, k) => {
        const tip = v3d.axes.map((row) => row[k] * axisLength);
        ctx.strokeStyle = color;
        ctx.lineWidth = 2;
        line([0, 0, 0], tip);
        const q = project(tip);
        if (q) haloText(ctx, 'xyz'[k], q[0] + 2, q[1] - 2, color);
      });
      // Camera frustum.
      if (v3d.camera) {
        ctx.strokeStyle = '#777';
        ctx.lineWidth = 1;
        const far = v3d.camera.far;
        for (let k = 0; k < 4; k++) {
          line(v3d.camera.apex, far[k]);
          line(far[k], far[(k + 1) % 4]);
        }
      }
      // Oriented boxes and ids.
      ctx.font = '11px system-ui, sans-serif';
      ctx.textAlign = 'left';
      for (const box of v3d.boxes) {
        ctx.strokeStyle = box.color;
        ctx.lineWidth = 2;
        for (const [a, b] of EDGES) line(box.corners[a], box.corners[b]);
        const q = project(box.c);
        if (q) {
          ctx.fillStyle = box.color;
          ctx.beginPath(); ctx.arc(q[0], q[1], 3, 0, 2 * Math.PI); ctx.fill();
          haloText(ctx, box.id, q[0] + 4, q[1] - 4, '#111');
        }
      }
    }
  }

  // ----------------------------------------------------------------------------- frame cards

  function stageBar(frame) {
    const total = Object.values(frame.st).reduce((a, b) => a + b, 0) || 1;
    const bar = el('div', { class: 'stagebar', title: 'where the time of this frame went' });
    for (const [stage, ms] of Object.entries(frame.st)) {
      if (ms <= 0) continue;
      bar.append(el('span', {
        style: 'flex-grow:' + ms / total + ';background:' + (STAGES[stage] || '#999'),
        title: stage + ' ' + ms.toFixed(1) + ' ms',
        text: ms / total > 0.12 ? stage + ' ' + ms.toFixed(0) + ' ms' : '',
      }));
    }
    return el('div', { class: 'stages' }, el('span', { class: 'label', text: 'latency ' + frame.lat.toFixed(0) + ' ms' }), bar);
  }

  function relationSummary(card) {
    const box = el('div', { class: 'relation-summary' });
    const counts = {};
    for (const [, predicate] of card.relations) counts[predicate] = (counts[predicate] || 0) + 1;
    const parts = Object.entries(counts).map(([p, c]) => p + ' ' + c);
    box.append(el('p', {
      class: 'hint',
      text: card.relations.length + ' relations (' + (parts.join(', ') || 'none') + ') in '
        + (card.relation_frame || 'the camera view') + '. Row is the subject: ' + GLYPH_HELP + '.',
    }));
    const ids = card.objects.filter((row) => row[4] !== null).map((row) => row[0]);
    if (!card.relations.length || ids.length < 2) return box;
    if (ids.length > MAX_MATRIX_OBJECTS) {
      box.append(el('p', { class: 'hint', text: 'Too many objects for a matrix; see the full table.' }));
      return box;
    }
    const cells = {};
    for (const [subject, predicate, object, distance, confidence] of card.relations) {
      const key = subject + '\u0000' + object;
      const cell = cells[key] || (cells[key] = { glyphs: '', lines: [] });
      cell.glyphs += GLYPHS[predicate] || '?';
      cell.lines.push(subject + ' ' + predicate + ' ' + object + ' · ' + fmt(distance, 2) + ' m · p ' + fmt(confidence, 2));
    }
    const table = el('table', { class: 'matrix' });
    table.append(el('tr', {}, el('th', {}), ...ids.map((id) => el('th', { class: 'col' }, el('span', { text: id })))));
    for (const subject of ids) {
      const row = el('tr', {}, el('th', { text: subject, style: 'color:' + colorOf(card, subject) }));
      for (const object of ids) {
        const cell = cells[subject + '\u0000' + object];
        row.append(subject === object ? el('td', { class: 'self' })
          : el('td', cell ? { text: cell.glyphs, title: cell.lines.join('\n') } : {}));
      }
      table.append(row);
    }
    box.append(table);
    return box;
  }

  function lazyDetails(summary, build, className) {
    const details = el('details', { class: className || '' }, el('summary', { text: summary }));
    let built = false;
    details.addEventListener('toggle', () => {
      if (details.open && !built) {
        built = true;
        Promise.resolve(build(details)).catch((error) => {
          console.error('report: ' + summary + ': ' + error);
          details.append(el('p', { class: 'warn', text: String(error) }));
        });
      }
    });
    return details;
  }

  function objectsTable(card) {
    const table = el('table', {});
    table.append(el('tr', {}, ...['id', 'label', 'conf', 'bbox px', 'x', 'y', 'z', 'range m', 'σ m', 'valid depth']
      .map((h) => el('th', { text: h }))));
    for (const [id, label, confidence, box, position, range, sigma, valid] of card.objects) {
      const xyz = position ? position.map((v) => fmt(v, 3)) : ['–', '–', '–'];
      table.append(el('tr', {}, ...[id, label, fmt(confidence, 2), '[' + box.map((v) => v.toFixed(0)).join(', ') + ']',
        ...xyz, fmt(range, 2), fmt(sigma, 3), fmt(valid, 2)].map((c) => el('td', { text: c }))));
    }
    return el('div', {}, el('p', { class: 'hint', text: 'positions in ' + card.frame + ', metres' }), table);
  }

  function relationsTable(card) {
    const table = el('table', {});
    table.append(el('tr', {}, ...['subject', 'predicate', 'object', 'distance m', 'conf']
      .map((h) => el('th', { text: h }))));
    for (const [subject, predicate, object, distance, confidence] of card.relations) {
      table.append(el('tr', {}, ...[subject, predicate, object, fmt(distance, 2), fmt(confidence, 2)]
        .map((c) => el('td', { text: c }))));
    }
    return table;
  }

  async function renderCard(section) {
    const index = Number(section.dataset.card);
    const card = readJson('card-data-' + index);
    const [first, last] = run.cards[index];
    const frame = run.frames[first];
    const body = section.querySelector('.card-body');
    body.textContent = '';
    if (card.error) body.append(el('p', { class: 'warn', text: card.error }));
    for (const warning of card.warnings) body.append(el('p', { class: 'note', text: warning }));
    if (last > first) {
      body.append(el('p', { class: 'hint', text: 'Frames #' + first + '–#' + last
        + ' showed the same image, objects and relations; the card shows #' + first + '.' }));
    }
    const views = el('div', { class: 'views' });
    let image = null;
    if (card.img) {
      image = el('img', { src: card.img, alt: 'annotated frame ' + first, title: 'click to enlarge' });
      image.addEventListener('click', () => image.classList.toggle('big'));
      views.append(el('figure', { class: 'view image' }, image, el('figcaption', { text: 'annotated image (click to enlarge)' })));
    } else {
      views.append(el('figure', { class: 'view image' }, el('p', { class: 'hint', text: 'no image kept for this frame' })));
    }
    const mapCanvas = el('canvas', { class: 'map' });
    views.append(el('figure', { class: 'view' }, mapCanvas,
      el('figcaption', { text: 'from above, 95 % ellipses, footprints, camera field of view' })));
    const canvas3d = el('canvas', { class: 'v3d', title: 'drag to orbit, wheel to zoom, double-click to reset' });
    views.append(el('figure', { class: 'view' }, canvas3d,
      el('figcaption', { text: '3D: boxes' + (card.depth ? ', depth points' : '') + ', camera · drag to orbit, wheel to zoom' })));
    body.append(views, stageBar(frame), relationSummary(card));
    if (card.depth) body.append(lazyDetails('depth (colour-mapped, with the boxes)', (d) => drawDepth(d, card), 'depth'));
    body.append(lazyDetails('model output' + (card.raw === null ? ' (not kept)' : ' (' + card.raw.length + ' characters)'),
      (d) => d.append(el('pre', { class: 'raw', text: card.raw === null ? 'The replay did not keep the engine output for this frame.' : card.raw }))));
    body.append(lazyDetails('objects table (' + card.objects.length + ')', (d) => d.append(objectsTable(card))));
    body.append(lazyDetails('relations table (' + card.relations.length + ')', (d) => d.append(relationsTable(card))));
    drawMap(mapCanvas, card.map, 360, false);
    const view = new View3D(canvas3d, card, 360);
    view.draw();
    await view.loadPoints(image);
    view.draw();
    section.dataset.rendered = 'true';
    if (!performance.getEntriesByName('report-first-card').length) performance.mark('report-first-card');
  }

  function observeCards() {
    const cards = Array.from(document.querySelectorAll('section.card'));
    const render = (section) => {
      if (section.dataset.state) return;
      section.dataset.state = 'rendering';
      renderCard(section).catch((error) => {
        section.dataset.rendered = 'failed';
        console.error('report: card ' + section.dataset.card + ': ' + (error && error.stack || error));
        section.querySelector('.card-body').append(el('p', { class: 'warn', text: 'could not draw this card: ' + error }));
      });
    };
    if (!('IntersectionObserver' in window)) { cards.forEach(render); return; }
    const observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (entry.isIntersecting) { observer.unobserve(entry.target); render(entry.target); }
      }
    }, { rootMargin: '800px 0px' });
    cards.forEach((card) => observer.observe(card));
  }

  function main() {
    drawTimeline();
    window.addEventListener('resize', () => drawTimeline());
    if (run && run.memory) drawMap(document.getElementById('memory-map'), run.memory, 560, true);
    observeCards();
    document.body.dataset.ready = 'true';
    performance.mark('report-ready');  // read by bench/bench_report.py
  }

  main();
}());
