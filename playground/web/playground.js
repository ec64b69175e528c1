// The page: forms in, peerguard's engine (wasm, ./pkg) decides, results out. No rule of
// Istio's is implemented here: every decision, reason and error text comes from the engine.
import init, { evaluate, import_scenario, export_scenario, engine_version } from './pkg/peerguard_playground.js';

const $ = (id) => document.getElementById(id);
const SANDBOX_WORKLOAD = {
  namespace: 'full', name: 'httpbin', service_account: 'httpbin',
  labels: { app: 'httpbin', version: 'v1' }, services: ['httpbin'],
  service_ports: [{ service: 'httpbin', name: 'http', port: 8000, target_port: 80 }],
};
const SANDBOX_REQUESTS = [
  { about: 'sleep.full (sidecar, mTLS)', peer: { principal: 'cluster.local/ns/full/sa/sleep' }, source_ip: '127.0.1.10', port: 80, protocol: 'http', http: { method: 'GET', path: '/headers', host: 'httpbin.full:8000' } },
  { about: 'sleep.legacy (no sidecar, plaintext)', peer: null, source_ip: '127.0.3.10', port: 80, protocol: 'http', http: { method: 'GET', path: '/headers', host: 'httpbin.full:8000' } },
];
const DEFAULT_STATE = {
  name: 'viewer-only', about: 'Only sleep may GET; everything else is denied',
  resources: `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: viewer
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/foo/sa/sleep"]
    to:
    - operation:
        methods: ["GET"]
`,
  mesh: {},
  workload: { namespace: 'foo', name: 'httpbin', service_account: 'httpbin', labels: { app: 'httpbin' }, services: ['httpbin'], service_ports: [] },
  requests: [
    { about: 'sleep reads', peer: { principal: 'cluster.local/ns/foo/sa/sleep' }, port: 80, protocol: 'http', http: { method: 'GET', path: '/headers', host: 'httpbin.foo' } },
    { about: 'sleep writes', peer: { principal: 'cluster.local/ns/foo/sa/sleep' }, port: 80, protocol: 'http', http: { method: 'POST', path: '/post', host: 'httpbin.foo' } },
    { about: 'plaintext client', peer: null, source_ip: '10.0.0.9', port: 80, protocol: 'http', http: { method: 'GET', path: '/headers', host: 'httpbin.foo' } },
  ],
};

let state = structuredClone(DEFAULT_STATE);
let selected = 0;
let evaluations = 0;
let engineReady = false;

// ---- forms ⇄ state ------------------------------------------------------------------------
function splitList(s) { return s.split(',').map((x) => x.trim()).filter(Boolean); }

function parseLabels(s) {
  const out = {};
  for (const part of splitList(s)) {
    const i = part.indexOf('=');
    if (i < 0) out[part] = ''; else out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

// `svc[:name] port->target`, comma-separated.
function parsePorts(s) {
  return splitList(s).map((p) => {
    const m = p.match(/^([^\s:]+)(?::(\S+))?\s+(\d+)\s*->\s*(\d+)$/);
    if (!m) return { service: p, port: 0, target_port: 0 };
    const out = { service: m[1], port: Number(m[3]), target_port: Number(m[4]) };
    if (m[2]) out.name = m[2];
    return out;
  });
}
function showPorts(ports) {
  return (ports || []).map((p) => `${p.service}${p.name ? ':' + p.name : ''} ${p.port}->${p.target_port}`).join(', ');
}

function readForms() {
  const mesh = {};
  if ($('trust-domain').value.trim()) mesh.trust_domain = $('trust-domain').value.trim();
  if ($('root-namespace').value.trim()) mesh.root_namespace = $('root-namespace').value.trim();
  mesh.trust_domain_aliases = splitList($('aliases').value);
  mesh.path_normalization = $('path-normalization').value;
  mesh.num_trusted_proxies = Number($('trusted-proxies').value || 0);
  state.mesh = mesh;
  state.resources = $('resources').value;
  state.workload = {
    namespace: $('wl-namespace').value.trim(), name: $('wl-name').value.trim(),
    service_account: $('wl-sa').value.trim(), labels: parseLabels($('wl-labels').value),
    services: splitList($('wl-services').value), service_ports: parsePorts($('wl-ports').value),
  };
}

function writeForms() {
  const m = state.mesh || {};
  $('trust-domain').value = m.trust_domain || '';
  $('root-namespace').value = m.root_namespace || '';
  $('aliases').value = (m.trust_domain_aliases || []).join(', ');
  $('path-normalization').value = m.path_normalization || 'BASE';
  $('trusted-proxies').value = m.num_trusted_proxies || 0;
  $('resources').value = state.resources || '';
  const w = state.workload || {};
  $('wl-namespace').value = w.namespace || '';
  $('wl-name').value = w.name || '';
  $('wl-sa').value = w.service_account || '';
  $('wl-labels').value = Object.entries(w.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ');
  $('wl-services').value = (w.services || []).join(', ');
  $('wl-ports').value = showPorts(w.service_ports);
  selected = Math.min(selected, Math.max(0, state.requests.length - 1));
  if (state.requests[selected]) writeRequestForm(state.requests[selected]);
}

function parseHeaders(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const i = line.indexOf(':', line.startsWith(':') ? 1 : 0);
    const name = (i < 0 ? line : line.slice(0, i)).trim();
    const value = i < 0 ? '' : line.slice(i + 1).trim();
    if (name in out) out[name] = [].concat(out[name], value); else out[name] = value;
  }
  return out;
}

function readRequestForm(old) {
  const r = {};
  const about = $('rq-about').value.trim();
  if (about) r.about = about;
  const principal = $('rq-principal').value.trim().replace(/^spiffe:\/\//, '');
  if ($('rq-client').value === 'plaintext') r.peer = null;
  else if (old && old.peer && (old.peer.principal || '') === principal) r.peer = old.peer; // keeps uri_san/ca/expired
  else r.peer = { principal };
  if ($('rq-source-ip').value.trim()) r.source_ip = $('rq-source-ip').value.trim();
  r.port = Number($('rq-port').value);
  r.protocol = $('rq-protocol').value;
  if (r.protocol === 'http') {
    r.http = { method: $('rq-method').value, path: $('rq-path').value, host: $('rq-host').value, headers: parseHeaders($('rq-headers').value) };
    if ($('rq-version').value === '2') r.http.version = '2';
  }
  if (old) for (const k of ['expect', 'expect_audit', 'expect_dry_run', 'e2e_only']) if (k in old) r[k] = old[k];
  return r;
}

function writeRequestForm(r) {
  $('rq-about').value = r.about || '';
  $('rq-client').value = r.peer ? 'mtls' : 'plaintext';
  const sans = r.peer && r.peer.uri_san;
  $('rq-principal').value = r.peer ? (r.peer.principal || [].concat(sans || [])[0] || '') : '';
  $('rq-source-ip').value = r.source_ip || '';
  $('rq-port').value = r.port;
  $('rq-protocol').value = r.protocol;
  const h = r.http || { method: 'GET', path: '/', host: '', headers: {} };
  $('rq-method').value = h.method;
  $('rq-path').value = h.path;
  $('rq-host').value = h.host;
  $('rq-version').value = h.version === '2' ? '2' : '1.1';
  $('rq-headers').value = Object.entries(h.headers || {}).flatMap(([k, v]) => [].concat(v).map((x) => `${k}: ${x}`)).join('\n');
  syncProtocol();
}

function syncProtocol() {
  const tcp = $('rq-protocol').value === 'tcp';
  for (const el of document.querySelectorAll('#request-form .http')) el.hidden = tcp;
  $('rq-principal').disabled = $('rq-client').value === 'plaintext';
}

// ---- rendering ----------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k.startsWith('data-')) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function clientWords(r) {
  if (!r.peer) return 'plaintext' + (r.source_ip ? ` @ ${r.source_ip}` : '');
  const who = r.peer.principal || [].concat(r.peer.uri_san || []).join(' + ');
  return who + (r.source_ip ? ` @ ${r.source_ip}` : '');
}
function requestWords(r) {
  if (r.protocol === 'tcp' || !r.http) return `TCP port ${r.port}`;
  const hs = Object.entries(r.http.headers || {}).flatMap(([k, v]) => [].concat(v).map((x) => `${k}: ${x}`));
  return `${r.http.method} ${r.http.host}${r.http.path} port ${r.port}${r.http.version === '2' ? ' (HTTP/2)' : ''}` + (hs.length ? ` [${hs.join('; ')}]` : '');
}
function decisionWord(res) {
  if (res.error) return ['error', 'deny'];
  if (res.e2e_only) return ['e2e only', 'skip'];
  return res.decision.allowed ? ['ALLOW', 'allow'] : ['DENY', 'deny'];
}
function mtlsWords(m) {
  return `port ${m.port} is ${m.mode} (${m.from ? 'set by ' + m.from : "nothing configured: Istio's default"})`;
}

function renderDiagnostics(ev) {
  const box = $('diagnostics');
  box.replaceChildren();
  const bad = new Set();
  if (ev.input_error) box.append(el('div', { class: 'banner' }, ev.input_error));
  if (ev.config_invalid) box.append(el('div', { class: 'banner', id: 'config-invalid' }, 'Every request is denied: ' + ev.config_invalid));
  const list = el('ul');
  for (const e of ev.errors || []) {
    const where = e.location ? `line ${e.location.line}${e.location.column ? ', column ' + e.location.column : ''}` : 'no line';
    if (e.location) bad.add(e.location.line);
    const li = el('li', { class: 'error', 'data-line': e.location ? e.location.line : '', title: 'show in the editor' }, `${where}: ${e.text}`);
    li.addEventListener('click', () => e.location && selectLine(e.location.line));
    list.append(li);
  }
  for (const s of ev.skipped || []) list.append(el('li', { class: 'skipped' }, s));
  for (const d of ev.diagnostics || []) list.append(el('li', { class: 'diagnostic' }, d));
  if (list.children.length) box.append(list);
  renderGutter(bad);
}

function renderGutter(bad) {
  const n = $('resources').value.split('\n').length;
  const g = $('gutter');
  g.replaceChildren();
  for (let i = 1; i <= n; i++) g.append(bad.has(i) ? el('span', { class: 'bad' }, `${i}`) : `${i}\n`);
  if (bad.size) g.normalize();
  g.scrollTop = $('resources').scrollTop;
}

function selectLine(line) {
  const ta = $('resources');
  const lines = ta.value.split('\n');
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  ta.focus();
  ta.setSelectionRange(start, start + (lines[line - 1] || '').length);
  ta.scrollTop = Math.max(0, (line - 5) * 18);
}

function renderRequests(ev) {
  const body = $('requests').tBodies[0];
  body.replaceChildren();
  state.requests.forEach((r, i) => {
    const res = ev.results[i];
    const [word, cls] = decisionWord(res);
    const expect = res.mismatches == null ? (r.expect ? `${r.expect} (e2e)` : '')
      : res.mismatches.length ? res.mismatches.join('; ') : `${r.expect} ✓`;
    const tr = el('tr', { 'data-index': i, class: i === selected ? 'selected' : '' },
      el('td', {}, `${i}`), el('td', { class: 'client' }, clientWords(r)), el('td', { class: 'request' }, (r.about ? r.about + ' — ' : '') + requestWords(r)),
      el('td', { class: 'decision ' + cls }, word), el('td', { class: 'reason' }, res.error || res.reason || 'decided by the TLS handshake with real certificates (run end to end)'),
      el('td', { class: res.mismatches && res.mismatches.length ? 'expected mismatch' : 'expected' }, expect));
    tr.addEventListener('click', () => { selected = i; writeRequestForm(state.requests[i]); run(); });
    body.append(tr);
  });
}

function renderResult(ev) {
  const res = ev.results[selected];
  const box = $('result');
  box.hidden = !res;
  if (!res) return;
  const [word, cls] = decisionWord(res);
  $('res-decision').textContent = word;
  $('res-decision').className = cls;
  $('res-which').textContent = `request ${selected}`;
  $('res-reason').textContent = res.error || res.reason || 'not decided here: the TLS handshake decides (peer certificate checks)';
  $('res-mtls').textContent = mtlsWords(res.mtls);
  const d = res.decision;
  $('res-rule').textContent = res.decided_by || (d ? 'no policy rule (see reason)' : '—');
  $('res-audit').textContent = !d ? '—' : d.audit ? `yes, AUDIT policy ${ruleWords(d.audit)} matched` : 'no AUDIT policy matched';
  $('res-dryrun').textContent = !d ? '—' : dryRunWords(d.dry_run);
  $('res-expect').textContent = res.mismatches == null ? 'none given' : res.mismatches.length ? res.mismatches.join('; ') : 'as expected';
}

function ruleWords(r) { return `${r.policy.namespace}/${r.policy.name}` + (r.rule == null ? '' : `[rule ${r.rule}]`); }
function dryRunWords(dr) {
  const part = (action, res, by) => res ? `${action}: ${res}${by ? ' (' + ruleWords(by) + ')' : ''}` : null;
  const parts = [part('DENY policies would have', dr.deny, dr.deny_matched), part('ALLOW policies would have', dr.allow, dr.allow_matched)].filter(Boolean);
  return parts.length ? parts.join('; ') : 'no dry-run policy applies';
}

function renderPolicies(ev) {
  const box = $('policies');
  box.replaceChildren();
  if (!ev.policies || !ev.policies.length) return;
  const t = el('table', { id: 'policy-table' }, el('thead', {}, el('tr', {}, ...['policy', 'action', 'dry-run', 'rules', 'invalid'].map((h) => el('th', {}, h)))));
  const b = el('tbody');
  for (const p of ev.policies) b.append(el('tr', {}, el('td', {}, p.policy), el('td', {}, p.action), el('td', {}, p.dry_run ? 'yes' : ''), el('td', {}, `${p.rules}`), el('td', { class: p.invalid ? 'deny' : '' }, p.invalid || '')));
  t.append(b);
  box.append(el('h2', {}, 'Policies that apply to this workload'), t);
}

// ---- matrix -------------------------------------------------------------------------------
function matrixSources() {
  return $('matrix-sources').value.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const [who, ip] = l.split('@').map((x) => x.trim());
    return { label: l, peer: who === 'plaintext' ? null : { principal: who.replace(/^spiffe:\/\//, '') }, source_ip: ip || null };
  });
}

function renderMatrix() {
  const t = $('matrix');
  t.replaceChildren();
  const sources = matrixSources();
  if (!sources.length || !state.requests.length) return;
  const reqs = [];
  for (const s of sources) for (const r of state.requests) {
    const c = structuredClone(r);
    for (const k of ['expect', 'expect_audit', 'expect_dry_run', 'e2e_only']) delete c[k];
    c.peer = s.peer;
    if (s.source_ip) c.source_ip = s.source_ip; else delete c.source_ip;
    reqs.push(c);
  }
  const ev = JSON.parse(evaluate(JSON.stringify({ ...state, requests: reqs })));
  if (ev.input_error) { t.append(el('caption', { class: 'error-text' }, ev.input_error)); return; }
  t.append(el('thead', {}, el('tr', {}, el('th', {}, 'client \\ request'), ...state.requests.map((r, i) => el('th', { title: requestWords(r) }, `${i}: ${r.about || requestWords(r)}`)))));
  const b = el('tbody');
  sources.forEach((s, si) => {
    const tr = el('tr', {}, el('th', {}, s.label));
    state.requests.forEach((_, ri) => {
      const res = ev.results[si * state.requests.length + ri];
      const [word, cls] = decisionWord(res);
      tr.append(el('td', { class: cls, title: res.error || res.reason || '' }, word));
    });
    b.append(tr);
  });
  t.append(b);
}

// ---- the loop -----------------------------------------------------------------------------
function run() {
  // An explicit run supersedes a pending one from typing (which would re-render under a reader).
  clearTimeout(timer);
  if (!engineReady) return;
  readForms();
  const ev = JSON.parse(evaluate(JSON.stringify(state)));
  renderDiagnostics(ev);
  if (ev.input_error) { $('status').textContent = ev.input_error; return; }
  renderRequests(ev);
  renderResult(ev);
  renderPolicies(ev);
  renderMatrix();
  evaluations += 1;
  document.body.dataset.evaluations = `${evaluations}`;
  if (evaluations === 1) {
    const t = performance.now();
    window.playgroundTiming = { ...window.playgroundTiming, firstDecisionMs: t };
    $('timing').textContent = `first decision ${t.toFixed(0)} ms after navigation start (engine ready at ${window.playgroundTiming.engineReadyMs.toFixed(0)} ms)`;
  }
  saveFragment();
}

let timer = null;
function soon() { clearTimeout(timer); timer = setTimeout(run, 120); }

// ---- sharing: the state lives in the URL fragment ----------------------------------------
function b64urlEncode(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}
function b64urlDecode(s) {
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/'));
  return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}
function saveFragment() {
  const frag = '#s=' + b64urlEncode(JSON.stringify({ state, selected, matrix: $('matrix-sources').value }));
  history.replaceState(null, '', frag);
}
function loadFragment() {
  const m = location.hash.match(/^#s=(.+)$/);
  if (!m) return false;
  try {
    const saved = JSON.parse(b64urlDecode(m[1]));
    state = saved.state;
    selected = saved.selected || 0;
    $('matrix-sources').value = saved.matrix || '';
    return true;
  } catch (e) {
    $('status').textContent = `the link's state could not be read (${e.message}); showing the default example`;
    return false;
  }
}

// ---- scenarios and examples ---------------------------------------------------------------
function importText(text, file) {
  const out = JSON.parse(import_scenario(text, file));
  if (out.error) { $('scenario-error').textContent = out.error; return false; }
  $('scenario-error').textContent = '';
  state = out.state;
  selected = 0;
  writeForms();
  run();
  return true;
}

async function loadExamples() {
  try {
    const list = await (await fetch('examples/index.json')).json();
    for (const x of list) $('examples').append(el('option', { value: JSON.stringify(x) }, x.title));
  } catch (e) {
    $('examples').append(el('option', { value: '' }, `(no examples: ${e.message})`));
  }
}

async function loadExample() {
  if (!$('examples').value) return;
  const x = JSON.parse($('examples').value);
  const text = await (await fetch('examples/' + x.file)).text();
  if (x.kind === 'scenario') { $('scenario-text').value = text; importText(text, x.file); return; }
  state = { name: x.title, resources: text, mesh: {}, workload: structuredClone(SANDBOX_WORKLOAD), requests: structuredClone(SANDBOX_REQUESTS) };
  $('matrix-sources').value = 'cluster.local/ns/full/sa/sleep @ 127.0.1.10\nplaintext @ 127.0.3.10';
  selected = 0;
  writeForms();
  run();
}

function wire() {
  for (const id of ['resources', 'trust-domain', 'root-namespace', 'aliases', 'path-normalization', 'trusted-proxies', 'wl-namespace', 'wl-name', 'wl-sa', 'wl-labels', 'wl-services', 'wl-ports', 'matrix-sources']) {
    $(id).addEventListener('input', soon);
  }
  $('resources').addEventListener('scroll', () => { $('gutter').scrollTop = $('resources').scrollTop; });
  $('rq-protocol').addEventListener('change', syncProtocol);
  $('rq-client').addEventListener('change', syncProtocol);
  $('decide').addEventListener('click', run);
  $('rq-add').addEventListener('click', () => { state.requests.push(readRequestForm(null)); selected = state.requests.length - 1; run(); });
  $('rq-update').addEventListener('click', () => {
    if (!state.requests.length) { state.requests.push(readRequestForm(null)); selected = 0; } else state.requests[selected] = readRequestForm(state.requests[selected]);
    run();
  });
  $('rq-remove').addEventListener('click', () => {
    state.requests.splice(selected, 1);
    selected = Math.max(0, Math.min(selected, state.requests.length - 1));
    if (state.requests[selected]) writeRequestForm(state.requests[selected]);
    run();
  });
  $('import').addEventListener('click', () => importText($('scenario-text').value, 'scenario.yaml'));
  $('export').addEventListener('click', () => {
    readForms();
    const out = JSON.parse(export_scenario(JSON.stringify(state)));
    $('scenario-error').textContent = out.error || '';
    if (out.yaml) $('scenario-text').value = out.yaml;
  });
  $('load-example').addEventListener('click', loadExample);
  $('share').addEventListener('click', async () => {
    saveFragment();
    try { await navigator.clipboard.writeText(location.href); $('status').textContent = 'link copied'; } catch { $('status').textContent = 'copy the address bar: it holds the state'; }
  });
}

async function main() {
  wire();
  const examples = loadExamples();
  await init();
  engineReady = true;
  window.playgroundTiming = { engineReadyMs: performance.now() };
  $('engine-version').textContent = engine_version();
  if (!loadFragment()) {
    state = structuredClone(DEFAULT_STATE);
    $('matrix-sources').value = 'cluster.local/ns/foo/sa/sleep\ncluster.local/ns/bar/sa/other\nplaintext @ 10.0.0.9';
  }
  writeForms();
  run();
  $('status').textContent = 'ready';
  document.body.dataset.ready = '1';
  await examples;
}

main().catch((e) => {
  $('status').textContent = `the engine did not load: ${e.message}`;
  document.body.dataset.ready = 'failed';
});
