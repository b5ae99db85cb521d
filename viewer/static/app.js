// The browser viewer: a client of the twin.v1 protocol (docs/protocol.md) like any other.
// The network side runs in worker.js; this page applies the decoded frames once per animation
// frame, interpolates poses between ticks, and draws the line with three.js (Z up, metres).
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { PointerLockControls } from "three/addons/controls/PointerLockControls.js";
import { CSS2DObject, CSS2DRenderer } from "three/addons/renderers/CSS2DRenderer.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

const STATE_COLORS = {
  busy: "#2ca02c", blocked: "#ff7f0e", starved: "#f2c318", down: "#d62728", stale: "#9e9e9e",
};
const $ = (id) => document.getElementById(id);

// -- the replica ---------------------------------------------------------------------------------
const ents = new Map(); // handle -> {id, kind, props, comps, obj, label, pose}
const byId = new Map(); // id -> handle
let hello = null;
let capabilities = new Set();
let tickHz = 30;
let sceneT = 0;
let seq = null;
let status = "connecting";
const pending = []; // frames from the worker, applied on the next animation frame
const produced = new Map(); // station id -> [[t, produced], ...] samples for the chart
const stats = { frames: 0, snapshots: 0, deltas: 0, applyMs: 0, renderMs: 0, lastFrameMs: 0 };

// -- three.js ------------------------------------------------------------------------------------
const view = $("view");
const renderer = new THREE.WebGLRenderer({ antialias: true });
renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
view.appendChild(renderer.domElement);
const labels = new CSS2DRenderer();
labels.domElement.style.position = "absolute";
labels.domElement.style.top = "0";
labels.domElement.style.pointerEvents = "none";
view.appendChild(labels.domElement);

const scene = new THREE.Scene();
scene.background = new THREE.Color("#1b1f24");
const camera = new THREE.PerspectiveCamera(50, 1, 0.1, 2000);
camera.up.set(0, 0, 1);
camera.position.set(-10, -25, 20);
scene.add(new THREE.HemisphereLight(0xffffff, 0x334455, 2.2));
const sun = new THREE.DirectionalLight(0xffffff, 1.6);
sun.position.set(20, -30, 40);
scene.add(sun);
const grid = new THREE.GridHelper(400, 400, 0x39414a, 0x2a3038);
grid.rotation.x = Math.PI / 2;
scene.add(grid);

const orbit = new OrbitControls(camera, renderer.domElement);
orbit.enableDamping = true;
const walk = new PointerLockControls(camera, document.body);
const keys = new Set();
const EYE = 1.7;

// Many identical parts: one instanced mesh.
const partGeometry = new THREE.BoxGeometry(0.3, 0.3, 0.3);
partGeometry.translate(0, 0, 0.15);
const partMaterial = new THREE.MeshStandardMaterial({ color: "#7fb3ff" });
let parts = new THREE.InstancedMesh(partGeometry, partMaterial, 1024);
parts.count = 0;
parts.instanceMatrix.setUsage(THREE.DynamicDrawUsage);
parts.frustumCulled = false;
scene.add(parts);
const partIndex = new Map(); // handle -> instance index
const partHandles = []; // instance index -> handle

const gltf = new GLTFLoader();
const pickable = [];

// -- frames --------------------------------------------------------------------------------------
function applyFrame(f) {
  if (f.kind === "snapshot") {
    clearScene();
    addRows(f.entities);
    setComps(f.set);
    for (const xf of f.xf) applyTransforms(xf, true);
    stats.snapshots += 1;
    if (capabilities.has("twin.fork")) setupWhatIf();
  } else {
    for (const h of f.rm) removeEntity(h);
    addRows(f.add);
    setComps(f.set);
    if (f.xf) applyTransforms(f.xf, false);
    stats.deltas += 1;
  }
  seq = f.seq;
  sceneT = f.t;
  stats.frames += 1;
}

function clearScene() {
  for (const h of [...ents.keys()]) removeEntity(h);
}

function addRows(rows) {
  for (const [h, id, kind, props] of rows) {
    if (ents.has(h)) removeEntity(h);
    const e = { handle: h, id, kind, props, comps: {}, obj: null, label: null, pose: null };
    ents.set(h, e);
    byId.set(id, h);
    build(e);
  }
}

function setComps(set) {
  for (const [h, comps] of set) {
    const e = ents.get(h);
    if (!e) continue;
    Object.assign(e.comps, comps);
    refresh(e);
  }
}

function removeEntity(h) {
  const e = ents.get(h);
  if (!e) return;
  ents.delete(h);
  if (byId.get(e.id) === h) byId.delete(e.id);
  if (e.kind === "part") {
    const i = partIndex.get(h);
    const last = partHandles.length - 1;
    if (i !== undefined) {
      const lastH = partHandles[last];
      partHandles[i] = lastH;
      partIndex.set(lastH, i);
      partHandles.pop();
      partIndex.delete(h);
      parts.count = partHandles.length;
    }
  }
  if (e.obj) {
    scene.remove(e.obj);
    const k = pickable.indexOf(e.pick);
    if (k >= 0) pickable.splice(k, 1);
  }
}

function build(e) {
  const g = e.props.geometry;
  if (e.kind === "part") {
    if (partHandles.length >= parts.instanceMatrix.count) growParts();
    partIndex.set(e.handle, partHandles.length);
    partHandles.push(e.handle);
    parts.count = partHandles.length;
    return;
  }
  if (e.kind === "variants") { variantsDirty = true; return; }
  if (e.kind === "alarm" || e.kind === "line") return;
  const group = new THREE.Group();
  if (e.kind === "robot_link") {
    // a robot link: its GLB is in the link's own frame, placed at the pose pybullet reports
    if (g && g.asset) loadAsset(e, g.asset, new THREE.MeshStandardMaterial({ color: e.props.color || "#ff9f1c" }));
    e.obj = group;
    scene.add(group);
    return;
  }
  if (g && g.type === "conveyor") {
    buildConveyor(g); // path in world coordinates: not under the entity pose
    return;
  }
  if (g && (g.type === "box" || g.type === "mesh")) {
    const size = g.size || [1.2, 1.2, 1.2];
    const mat = new THREE.MeshStandardMaterial({ color: e.props.color || "#888888" });
    const geom = new THREE.BoxGeometry(size[0], size[1], size[2]);
    geom.translate(0, 0, size[2] / 2);
    const mesh = new THREE.Mesh(geom, mat);
    mesh.userData.handle = e.handle;
    group.add(mesh);
    e.mesh = mesh;
    e.pick = mesh;
    if (g.type === "mesh" && g.asset) loadAsset(e, g.asset, mat);
    if (e.kind === "station") {
      pickable.push(mesh);
      const div = document.createElement("div");
      div.className = "label";
      div.textContent = e.props.label || e.id;
      e.label = new CSS2DObject(div);
      e.label.position.set(0, 0, size[2] + 0.6);
      group.add(e.label);
    }
    if (e.kind === "buffer") {
      const fill = new THREE.Mesh(
        new THREE.BoxGeometry(size[0] * 0.8, size[1] * 0.8, 1),
        new THREE.MeshStandardMaterial({ color: "#7fb3ff" }),
      );
      fill.geometry.translate(0, 0, 0.5);
      fill.position.z = size[2];
      fill.scale.z = 0.001;
      group.add(fill);
      e.fill = fill;
      e.fillHeight = 1.0;
    }
  } else if (g && g.type === "robot") {
    const mat = new THREE.MeshStandardMaterial({ color: "#ff9f1c" });
    const arm = new THREE.Mesh(new THREE.CylinderGeometry(0.15, 0.25, 1.6, 12), mat);
    arm.rotation.x = Math.PI / 2;
    arm.position.z = 0.8;
    group.add(arm);
  } else {
    return;
  }
  e.obj = group;
  scene.add(group);
  refresh(e);
}

function loadAsset(e, sha, mat) {
  gltf.load(`/assets/${sha}.glb`, (res) => {
    if (!ents.has(e.handle) || !e.obj) return;
    res.scene.traverse((o) => {
      if (o.isMesh) {
        if (!o.geometry.getAttribute("normal")) o.geometry.computeVertexNormals();
        o.material = mat;
        o.userData.handle = e.handle;
      }
    });
    e.obj.remove(e.mesh);
    const k = pickable.indexOf(e.mesh);
    e.obj.add(res.scene);
    e.mesh = res.scene;
    if (k >= 0) {
      pickable.splice(k, 1);
      res.scene.traverse((o) => { if (o.isMesh) pickable.push(o); });
    }
  }, undefined, () => {});
}

function buildConveyor(g) {
  const mat = new THREE.MeshStandardMaterial({ color: "#3b4450" });
  for (let i = 0; i + 1 < g.path.length; i++) {
    const a = new THREE.Vector3(...g.path[i]);
    const b = new THREE.Vector3(...g.path[i + 1]);
    const len = a.distanceTo(b);
    if (len <= 0) continue;
    const belt = new THREE.Mesh(new THREE.BoxGeometry(len, g.width, 0.05), mat);
    belt.position.copy(a.clone().add(b).multiplyScalar(0.5));
    belt.position.z -= 0.03;
    belt.rotation.z = Math.atan2(b.y - a.y, b.x - a.x);
    scene.add(belt);
  }
}

function growParts() {
  const bigger = new THREE.InstancedMesh(partGeometry, partMaterial, parts.instanceMatrix.count * 2);
  bigger.instanceMatrix.setUsage(THREE.DynamicDrawUsage);
  bigger.frustumCulled = false;
  for (let i = 0; i < partHandles.length; i++) {
    const m = new THREE.Matrix4();
    parts.getMatrixAt(i, m);
    bigger.setMatrixAt(i, m);
  }
  scene.remove(parts);
  parts.dispose();
  parts = bigger;
  parts.count = partHandles.length;
  scene.add(parts);
}

// Poses: each entity keeps where it was drawn and where it is going; the frame loop
// interpolates over one tick, so motion is smooth at any tick rate.
function applyTransforms(xf, snap) {
  const now = performance.now();
  const dur = 1000 / tickHz;
  const { ids, pos, rot } = xf;
  for (let i = 0; i < xf.n; i++) {
    const e = ents.get(ids[i]);
    if (!e) continue;
    // poses are updated in place: no allocation per entity per frame (5,000 parts at 30 Hz)
    let p = e.pose;
    const fresh = !p;
    if (fresh) {
      p = e.pose = {
        from: { x: 0, y: 0, z: 0, q: new THREE.Quaternion() },
        to: { x: 0, y: 0, z: 0, q: new THREE.Quaternion() },
        t0: now, dur, cur: { x: 0, y: 0, z: 0, q: new THREE.Quaternion() },
      };
    }
    const to = p.to;
    to.x = pos[3 * i]; to.y = pos[3 * i + 1]; to.z = pos[3 * i + 2];
    to.q.set(rot[4 * i], rot[4 * i + 1], rot[4 * i + 2], rot[4 * i + 3]).normalize();
    const from = p.from, c = p.cur;
    if (snap || fresh) {
      from.x = c.x = to.x; from.y = c.y = to.y; from.z = c.z = to.z;
      from.q.copy(to.q);
      c.q.copy(to.q);
    } else {
      from.x = c.x; from.y = c.y; from.z = c.z;
      from.q.copy(c.q);
    }
    p.t0 = now;
    p.dur = dur;
    e.moving = true;
  }
}

const tmpM = new THREE.Matrix4();
const tmpP = new THREE.Vector3();
const ONE = new THREE.Vector3(1, 1, 1);

function interpolate(now) {
  let partsMoved = false;
  for (const e of ents.values()) {
    if (!e.moving || !e.pose) continue;
    const p = e.pose;
    const a = Math.min(1, (now - p.t0) / p.dur);
    p.cur.x = p.from.x + (p.to.x - p.from.x) * a;
    p.cur.y = p.from.y + (p.to.y - p.from.y) * a;
    p.cur.z = p.from.z + (p.to.z - p.from.z) * a;
    p.cur.q.slerpQuaternions(p.from.q, p.to.q, a);
    if (a >= 1) e.moving = false;
    if (e.kind === "part") {
      const i = partIndex.get(e.handle);
      if (i === undefined) continue;
      tmpP.set(p.cur.x, p.cur.y, p.cur.z);
      tmpM.compose(tmpP, p.cur.q, ONE);
      parts.setMatrixAt(i, tmpM);
      partsMoved = true;
    } else if (e.obj) {
      e.obj.position.set(p.cur.x, p.cur.y, p.cur.z);
      e.obj.quaternion.copy(p.cur.q);
    }
  }
  if (partsMoved) parts.instanceMatrix.needsUpdate = true; // one upload, however many moved
}

// -- state to pixels -----------------------------------------------------------------------------
function refresh(e) {
  if (e.kind === "station" && e.mesh) {
    const state = e.comps.state || "stale";
    const color = STATE_COLORS[state] || STATE_COLORS.stale;
    e.color = color;
    e.mesh.traverse((o) => { if (o.isMesh) o.material.color.set(color); });
    if (e.label) {
      e.label.element.textContent = `${e.props.label || e.id} · ${state}`;
      e.label.element.style.borderLeftColor = color;
    }
    if (panelHandle === e.handle) showPanel(e);
  } else if (e.kind === "buffer" && e.fill) {
    const cap = Math.max(1, e.comps.capacity || 1);
    e.fill.scale.z = Math.max(0.001, Math.min(1, (e.comps.level || 0) / cap)) * e.fillHeight;
  } else if (e.kind === "alarm") {
    alarmsDirty = true;
  } else if (e.kind === "line") {
    kpisDirty = true;
  } else if (e.kind === "variants") {
    variantsDirty = true;
  }
}

let alarmsDirty = true;
let variantsDirty = false;
let timeSuffix = "";
let kpisDirty = true;

function fmt(v, digits = 0) {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "–";
}

function renderKpis() {
  const line = ents.get(byId.get("line"));
  if (!line) return;
  const c = line.comps;
  $("line-name").textContent = line.props.label || "";
  $("kpi-throughput").textContent = fmt(c.throughput_per_hour);
  $("kpi-oee").textContent = typeof c.oee === "number" ? `${(100 * c.oee).toFixed(1)}%` : "–";
  $("kpi-wip").textContent = fmt(c.wip);
  $("kpi-bottleneck").textContent = c.bottleneck || "–";
  $("kpi-stale").textContent = fmt(c.stale_tags || 0);
  $("kpi-rejected").textContent = fmt(c.rejected || 0);
  const reasons = Object.entries(c.rejected_by_reason || {}).map(([k, n]) => `${k}: ${n}`);
  const links = Object.entries(c.links || {}).map(([k, up]) => `${k} ${up ? "up" : "DOWN"}`);
  $("kpi-rejected").parentElement.title =
    (reasons.length ? `rejected by reason: ${reasons.join(", ")}` : "nothing rejected") +
    (links.length ? `; links: ${links.join(", ")}` : "") +
    (c.divergence && c.divergence.state_mismatch != null
      ? `; prediction vs measurement: ${(100 * c.divergence.state_mismatch).toFixed(1)}% of states differed`
      : "");
  if (typeof c.speed === "number" && document.activeElement !== $("speed")) {
    $("speed").value = String(Math.log10(c.speed));
    $("speed-out").textContent = `${c.speed}x`;
  }
  timeSuffix = c.paused ? " (paused)" : c.speed && c.speed !== 1 ? ` (${c.speed}x)` : "";
  $("kpi-time").textContent = formatTime(sceneT) + timeSuffix;
}

function formatTime(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
}

function alarms() {
  return [...ents.values()].filter((e) => e.kind === "alarm")
    .sort((a, b) => (b.comps.raised_t || 0) - (a.comps.raised_t || 0));
}

function renderAlarms() {
  const list = $("alarm-list");
  const all = alarms();
  $("alarm-count").textContent = `(${all.filter((a) => a.comps.state === "active").length} new)`;
  list.replaceChildren(...all.slice(0, 100).map((a) => {
    const li = document.createElement("li");
    li.dataset.state = a.comps.state;
    li.dataset.id = a.id;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = `${formatTime(a.comps.raised_t || 0)} ${a.comps.text || a.id} · ${a.comps.state}` +
      (a.comps.acked_by ? ` by ${a.comps.acked_by}` : "");
    li.appendChild(text);
    if (capabilities.has("alarm.ack") && !a.comps.acked_by) {
      const b = document.createElement("button");
      b.textContent = "Acknowledge";
      b.className = "ack";
      b.onclick = () => command(a.id, "alarm.ack");
      li.appendChild(b);
    }
    return li;
  }));
}

// -- design variants: switch the running line, compare two side by side ---------------------------
function renderVariants() {
  const v = [...ents.values()].find((e) => e.kind === "variants");
  const section = $("variants");
  section.hidden = !v || !capabilities.has("variant.select");
  if (section.hidden) return;
  const front = v.props.front || [];
  const label = (f) => `#${f.variant} ` + Object.entries(f.objectives)
    .map(([k, o]) => `${k} ${o.mean == null ? "–" : Number(o.mean.toPrecision(4))}`).join(", ");
  for (const [id, pick] of [["variant-a", 0], ["variant-b", 1]]) {
    const sel = $(id);
    if (sel.options.length !== front.length + 1) {
      sel.replaceChildren(new Option("base line", "-1"), ...front.map((f) => new Option(label(f), String(f.variant))));
      if (front[pick]) sel.value = String(front[pick].variant);
      sel.onchange = () => { variantsDirty = true; };
    }
  }
  $("variant-design").textContent = v.props.design ? `(${v.props.design})` : "";
  const byId = (x) => front.find((f) => String(f.variant) === x);
  const a = byId($("variant-a").value), b = byId($("variant-b").value);
  const keys = [...new Set([...(v.props.objectives || []), "cost"])];
  const cell = (f, k) => {
    if (!f) return "base";
    if (k === "cost") return f.cost == null ? "–" : Number(f.cost.toPrecision(4));
    const o = f.objectives[k];
    return o && o.mean != null ? Number(o.mean.toPrecision(4)) : "–";
  };
  const rows = [["", "A", "B"], ...keys.map((k) => [k, cell(a, k), cell(b, k)])];
  $("variant-compare").replaceChildren(...rows.map((r, i) => {
    const tr = document.createElement("tr");
    for (const c of r) {
      const td = document.createElement(i === 0 ? "th" : "td");
      td.textContent = String(c);
      tr.appendChild(td);
    }
    return tr;
  }));
  drawFront(front, v.props.objectives || [], a, b);
  const selected = v.comps.selected;
  $("variant-running").textContent = `running: ${selected == null ? "the base line" : "variant #" + selected}`;
  $("run-a").onclick = () => command("variants", "variant.select", { variant: Number($("variant-a").value) });
  $("run-b").onclick = () => command("variants", "variant.select", { variant: Number($("variant-b").value) });
}

// The Pareto front as a scatter of its first two objectives (cost when only one), A and B circled.
function drawFront(front, objectives, a, b) {
  const cv = $("variant-front");
  const ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  const [kx, ky] = objectives.length >= 2 ? objectives : [objectives[0], "cost"];
  const val = (f, k) => (k === "cost" ? f.cost : f.objectives[k] && f.objectives[k].mean);
  const pts = front.map((f) => [val(f, kx), val(f, ky), f]).filter(([x, y]) => x != null && y != null);
  if (!pts.length) return;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const X = (x) => 28 + ((x - x0) / (x1 - x0 || 1)) * (cv.width - 40);
  const Y = (y) => cv.height - 18 - ((y - y0) / (y1 - y0 || 1)) * (cv.height - 30);
  ctx.fillStyle = "#9aa4ae";
  ctx.font = "10px sans-serif";
  ctx.fillText(kx, cv.width - 60, cv.height - 4);
  ctx.fillText(ky, 2, 10);
  for (const [x, y, f] of pts) {
    ctx.fillStyle = "#7fb3ff";
    ctx.fillRect(X(x) - 2, Y(y) - 2, 4, 4);
    for (const [g, color, name] of [[a, "#2ca02c", "A"], [b, "#ff7f0e", "B"]]) {
      if (g && g.variant === f.variant) {
        ctx.strokeStyle = color;
        ctx.beginPath();
        ctx.arc(X(x), Y(y), 6, 0, 2 * Math.PI);
        ctx.stroke();
        ctx.fillStyle = color;
        ctx.fillText(name, X(x) + 7, Y(y) - 4);
      }
    }
  }
}

// -- the machine panel ---------------------------------------------------------------------------
let panelHandle = null;

function showPanel(e) {
  panelHandle = e.handle;
  const c = e.comps;
  $("panel").hidden = false;
  $("panel").dataset.id = e.id;
  $("panel-title").textContent = e.props.label || e.id;
  $("panel-id").textContent = e.id;
  $("panel-state").textContent = c.state || "stale";
  $("panel-state").style.color = STATE_COLORS[c.state] || STATE_COLORS.stale;
  $("panel-produced").textContent = fmt(c.produced);
  $("panel-scrapped").textContent = fmt(c.scrapped);
  $("panel-busy").textContent = `${fmt(c.busy)} / ${fmt(c.servers)}`;
  $("panel-oee").textContent = typeof c.oee === "number" ? `${(100 * c.oee).toFixed(1)}%` : "–";
  const f = c.fractions;
  $("panel-fractions").textContent = f ? f.map((x) => `${(100 * x).toFixed(0)}%`).join(" / ") : "–";
  const tags = Object.entries(c.tags || {});
  $("panel-tags-title").hidden = tags.length === 0;
  $("panel-tags").replaceChildren(...tags.map(([name, t]) => {
    const li = document.createElement("li");
    const v = typeof t.value === "number" ? Number(t.value.toFixed(2)) : t.value;
    li.textContent = `${name}: ${v ?? "–"}${t.unit ? " " + t.unit : ""}` + (t.stale ? " (stale)" : "") +
      (t.quality && t.quality !== "good" ? ` [${t.quality}]` : "");
    li.className = t.stale ? "stale" : "";
    return li;
  }));
  const mine = alarms().filter((a) => a.props.entity === e.id).slice(0, 5);
  $("panel-alarms").replaceChildren(...mine.map((a) => {
    const li = document.createElement("li");
    li.textContent = `${formatTime(a.comps.raised_t || 0)} ${a.comps.text} · ${a.comps.state}`;
    return li;
  }));
  drawChart(e);
}

function sampleHistory() {
  for (const e of ents.values()) {
    if (e.kind !== "station" || typeof e.comps.produced !== "number") continue;
    let h = produced.get(e.id);
    if (!h) produced.set(e.id, (h = []));
    const last = h[h.length - 1];
    if (!last || sceneT > last[0]) h.push([sceneT, e.comps.produced]);
    if (h.length > 120) h.shift();
  }
}

function drawChart(e) {
  const cv = $("panel-chart");
  const ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  const h = produced.get(e.id) || [];
  const rates = [];
  for (let i = 5; i < h.length; i++) {
    const dt = h[i][0] - h[i - 5][0];
    if (dt > 0) rates.push((3600 * (h[i][1] - h[i - 5][1])) / dt);
  }
  if (rates.length < 2) return;
  const max = Math.max(...rates, 1);
  ctx.strokeStyle = "#7fb3ff";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  rates.forEach((r, i) => {
    const x = (i / (rates.length - 1)) * (cv.width - 4) + 2;
    const y = cv.height - 4 - (r / max) * (cv.height - 16);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#9aa4ae";
  ctx.fillText(`${rates[rates.length - 1].toFixed(0)} /h (max ${max.toFixed(0)})`, 4, 10);
}

$("panel-close").onclick = () => { panelHandle = null; $("panel").hidden = true; };

// picking: a click (not a drag) on a machine opens its panel
const ray = new THREE.Raycaster();
let down = null;
renderer.domElement.addEventListener("pointerdown", (ev) => { down = [ev.clientX, ev.clientY]; });
renderer.domElement.addEventListener("pointerup", (ev) => {
  if (!down || Math.hypot(ev.clientX - down[0], ev.clientY - down[1]) > 4 || walk.isLocked) return;
  const r = renderer.domElement.getBoundingClientRect();
  const p = new THREE.Vector2(((ev.clientX - r.left) / r.width) * 2 - 1, -((ev.clientY - r.top) / r.height) * 2 + 1);
  ray.setFromCamera(p, camera);
  const hit = ray.intersectObjects(pickable, false)[0];
  if (hit) {
    let o = hit.object;
    while (o && o.userData.handle === undefined) o = o.parent;
    const e = o && ents.get(o.userData.handle);
    if (e) showPanel(e);
  }
});

// -- mini-map ------------------------------------------------------------------------------------
function drawMinimap() {
  const cv = $("minimap");
  const ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  const pts = [...ents.values()].filter((e) => e.kind === "station" && e.pose);
  if (!pts.length) return;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const e of pts) {
    x0 = Math.min(x0, e.pose.cur.x); x1 = Math.max(x1, e.pose.cur.x);
    y0 = Math.min(y0, e.pose.cur.y); y1 = Math.max(y1, e.pose.cur.y);
  }
  const pad = 3, w = cv.width - 20, h = cv.height - 20;
  const s = Math.min(w / Math.max(x1 - x0 + 2 * pad, 1), h / Math.max(y1 - y0 + 2 * pad, 1));
  const X = (x) => 10 + (x - x0 + pad) * s, Y = (y) => cv.height - 10 - (y - y0 + pad) * s;
  ctx.fillStyle = "#7fb3ff";
  for (const i of partHandles) {
    const e = ents.get(i);
    if (e && e.pose) ctx.fillRect(X(e.pose.cur.x) - 1, Y(e.pose.cur.y) - 1, 2, 2);
  }
  for (const e of pts) {
    ctx.fillStyle = e.color || STATE_COLORS.stale;
    ctx.fillRect(X(e.pose.cur.x) - 4, Y(e.pose.cur.y) - 4, 8, 8);
  }
  ctx.fillStyle = "#ffffff";
  ctx.beginPath();
  ctx.arc(X(camera.position.x), Y(camera.position.y), 4, 0, 2 * Math.PI);
  ctx.fill();
  const d = new THREE.Vector3();
  camera.getWorldDirection(d);
  ctx.strokeStyle = "#ffffff";
  ctx.beginPath();
  ctx.moveTo(X(camera.position.x), Y(camera.position.y));
  ctx.lineTo(X(camera.position.x) + 12 * d.x, Y(camera.position.y) - 12 * d.y);
  ctx.stroke();
}

// -- walking -------------------------------------------------------------------------------------
document.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement) return;
  if (ev.code === "KeyF" && !walk.isLocked) {
    camera.position.z = EYE;
    walk.lock();
  }
  keys.add(ev.code);
});
document.addEventListener("keyup", (ev) => keys.delete(ev.code));
walk.addEventListener("lock", () => { orbit.enabled = false; });
walk.addEventListener("unlock", () => {
  orbit.enabled = true;
  const d = new THREE.Vector3();
  camera.getWorldDirection(d);
  orbit.target.copy(camera.position).addScaledVector(d, 10);
});

function walkStep(dt) {
  if (!walk.isLocked) return;
  const speed = (keys.has("ShiftLeft") ? 6 : 2.5) * dt;
  const fwd = new THREE.Vector3();
  camera.getWorldDirection(fwd);
  fwd.z = 0;
  fwd.normalize();
  const right = new THREE.Vector3().crossVectors(fwd, camera.up).normalize();
  if (keys.has("KeyW")) camera.position.addScaledVector(fwd, speed);
  if (keys.has("KeyS")) camera.position.addScaledVector(fwd, -speed);
  if (keys.has("KeyD")) camera.position.addScaledVector(right, speed);
  if (keys.has("KeyA")) camera.position.addScaledVector(right, -speed);
  camera.position.z = EYE;
}

// -- the frame loop ------------------------------------------------------------------------------
let framed = false;
let lastNow = performance.now();
let lastSample = 0;

function frameCamera() {
  scene.updateMatrixWorld();
  const box = new THREE.Box3();
  for (const e of ents.values()) if (e.obj) box.expandByObject(e.obj);
  if (box.isEmpty()) return;
  const c = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3()).length();
  orbit.target.copy(c);
  camera.position.set(c.x - size * 0.15, c.y - size * 0.75, c.z + size * 0.55);
  framed = true;
}

function resize() {
  const w = view.clientWidth, h = view.clientHeight;
  renderer.setSize(w, h, false);
  renderer.domElement.style.width = `${w}px`;
  renderer.domElement.style.height = `${h}px`;
  labels.setSize(w, h);
  camera.aspect = w / Math.max(h, 1);
  camera.updateProjectionMatrix();
}
window.addEventListener("resize", resize);

function loop(now) {
  const t0 = performance.now();
  if (pending.length) {
    for (const f of pending.splice(0)) applyFrame(f);
  }
  const t1 = performance.now();
  interpolate(now);
  if (!framed && seq !== null) frameCamera();
  walkStep(Math.min(0.1, (now - lastNow) / 1000));
  lastNow = now;
  if (!walk.isLocked) orbit.update();
  if (now - lastSample > 1000) {
    sampleHistory();
    lastSample = now;
    if (panelHandle !== null && ents.has(panelHandle)) drawChart(ents.get(panelHandle));
  }
  if (kpisDirty) { renderKpis(); kpisDirty = false; } else { $("kpi-time").textContent = formatTime(sceneT) + timeSuffix; }
  if (alarmsDirty) { renderAlarms(); alarmsDirty = false; }
  if (variantsDirty) { renderVariants(); variantsDirty = false; }
  renderer.render(scene, camera);
  labels.render(scene, camera);
  drawMinimap();
  const t2 = performance.now();
  stats.applyMs += t1 - t0;
  stats.renderMs += t2 - t1;
  stats.lastFrameMs = t2 - t0;
  stats.rafs = (stats.rafs || 0) + 1;
  requestAnimationFrame(loop);
}

// -- commands and controls -----------------------------------------------------------------------
let commandSeq = 0;
const waiting = new Map();

function command(target, action, args = {}) {
  const id = `${Date.now().toString(36)}-${(commandSeq += 1)}`;
  worker.postMessage({ kind: "command", id, target, action, args });
  return new Promise((resolve) => waiting.set(id, resolve));
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 3000);
}

function setupControls() {
  const time = ["sim.pause", "sim.resume", "sim.step", "sim.speed"].some((a) => capabilities.has(a));
  $("controls").hidden = !time;
  for (const b of $("controls").querySelectorAll("button[data-action]")) {
    b.hidden = !capabilities.has(b.dataset.action);
  }
  $("btn-pause").onclick = () => command("line", "sim.pause");
  $("btn-resume").onclick = () => command("line", "sim.resume");
  $("btn-step").onclick = () => command("line", "sim.step", { seconds: 60 });
  $("speed").closest("label").hidden = !capabilities.has("sim.speed");
  $("speed").oninput = (ev) => {
    const v = Math.round(10 ** Number(ev.target.value) * 10) / 10;
    $("speed-out").textContent = `${v}x`;
  };
  $("speed").onchange = (ev) => command("line", "sim.speed", { speed: Math.round(10 ** Number(ev.target.value) * 10) / 10 });
  variantsDirty = true;
  setupWhatIf();
}

// -- what-if forks: a forecast band from the twin's current state (twin.fork) --------------------
function setupWhatIf() {
  $("whatif").hidden = !capabilities.has("twin.fork");
  if ($("whatif").hidden) return;
  const sel = $("whatif-station");
  const stations = [...ents.values()].filter((e) => e.kind === "station");
  if (sel.options.length !== stations.length + 1) {
    sel.replaceChildren(new Option("nothing changes", ""),
      ...stations.map((e) => new Option(e.props.label || e.id, e.id.split("/")[1])));
  }
  $("whatif-run").onclick = async () => {
    const hours = Number($("whatif-hours").value);
    const args = { horizon_s: hours * 3600, replications: 32 };
    if (sel.value) args.edits = [{ station: sel.value, down_s: 60 * Number($("whatif-minutes").value) }];
    $("whatif-note").textContent = "running 32 replications...";
    const r = await command("line", "twin.fork", args);
    if (!r.ok) { $("whatif-note").textContent = r.reason; return; }
    const f = r.result;
    const total = f.delivered.mean[f.delivered.mean.length - 1];
    $("whatif-note").textContent = `${Math.round(total)} parts in ${hours} h (mean of ${f.replications})`;
    drawBand($("whatif-chart"), f.times, f.throughput_per_hour);
  };
}

function drawBand(cv, times, band) {
  const ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  const max = Math.max(...band.p95, 1);
  const X = (i) => 4 + (i / Math.max(times.length - 1, 1)) * (cv.width - 8);
  const Y = (v) => cv.height - 14 - (v / max) * (cv.height - 26);
  ctx.fillStyle = "rgba(127, 179, 255, 0.25)";
  ctx.beginPath();
  band.p95.forEach((v, i) => (i ? ctx.lineTo(X(i), Y(v)) : ctx.moveTo(X(i), Y(v))));
  for (let i = band.p5.length - 1; i >= 0; i--) ctx.lineTo(X(i), Y(band.p5[i]));
  ctx.closePath();
  ctx.fill();
  ctx.strokeStyle = "#7fb3ff";
  ctx.beginPath();
  band.mean.forEach((v, i) => (i ? ctx.lineTo(X(i), Y(v)) : ctx.moveTo(X(i), Y(v))));
  ctx.stroke();
  ctx.fillStyle = "#9aa4ae";
  ctx.font = "10px sans-serif";
  ctx.fillText(`throughput /h (max ${Math.round(max)})`, 4, 10);
  ctx.fillText(`${Math.round(times[times.length - 1] / 60)} min`, cv.width - 40, cv.height - 2);
}

// -- the worker ----------------------------------------------------------------------------------
const worker = new Worker("/worker.js", { type: "module" });
worker.onmessage = (ev) => {
  const m = ev.data;
  switch (m.kind) {
    case "hello":
      hello = m.hello;
      tickHz = hello.tick_hz;
      capabilities = new Set(hello.capabilities);
      $("who").textContent = `${hello.name} (${hello.role})`;
      setupControls();
      alarmsDirty = true;
      break;
    case "status":
      status = m.state;
      $("conn").dataset.state = m.state;
      $("conn").textContent = m.state;
      $("conn").title = m.detail || "";
      if (m.state === "closed" && m.detail) toast(m.detail);
      break;
    case "snapshot":
    case "delta":
      pending.push(m);
      break;
    case "event": {
      const e = m.event;
      if (e.type === "command_result") {
        const r = waiting.get(e.id);
        waiting.delete(e.id);
        if (!e.ok) toast(`refused: ${e.reason}`);
        if (r) r(e);
      } else if (e.type === "alarm") {
        alarmsDirty = true;
      }
      break;
    }
    case "server_error":
      console.warn("server error", m.error.code, m.error.reason);
      break;
    default:
      break;
  }
};

function start(token) {
  worker.postMessage({
    kind: "connect",
    url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
    token,
  });
}

// Sign-in: a token from the URL fragment (never sent to the server, removed at once), from
// this tab's session storage, or typed into the dialog.
function signIn() {
  const frag = new URLSearchParams(location.hash.slice(1));
  let token = frag.get("token");
  if (token) {
    sessionStorage.setItem("twin.token", token);
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    token = sessionStorage.getItem("twin.token");
  }
  if (token) {
    start(token);
    return;
  }
  const dlg = $("signin");
  $("signin-form").onsubmit = () => {
    const t = $("token").value.trim();
    sessionStorage.setItem("twin.token", t);
    start(t);
  };
  dlg.showModal();
}

// For tests and tools: a read-only view of what the page shows.
window.twinViewer = {
  get status() { return status; },
  get seq() { return seq; },
  get role() { return hello && hello.role; },
  get capabilities() { return [...capabilities]; },
  machines: () => [...ents.values()].filter((e) => e.kind === "station" && e.mesh).length,
  parts: () => parts.count,
  colorOf: (id) => { const e = ents.get(byId.get(id)); return e ? e.color : null; },
  stateOf: (id) => { const e = ents.get(byId.get(id)); return e ? e.comps.state : null; },
  screenPosition: (id) => {
    const e = ents.get(byId.get(id));
    if (!e || !e.obj) return null;
    const box = new THREE.Box3().setFromObject(e.obj);
    const p = box.getCenter(new THREE.Vector3()).project(camera);
    const r = renderer.domElement.getBoundingClientRect();
    return { x: r.left + ((p.x + 1) / 2) * r.width, y: r.top + ((1 - p.y) / 2) * r.height };
  },
  command,
  stats,
};

resize();
requestAnimationFrame(loop);
signIn();
