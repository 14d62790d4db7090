/**
 * A self-contained HTML page that renders the OpenAPI document: no CDN, no
 * external script or style, so it works offline and under a strict CSP.
 */

const SCRIPT = `
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const deref = (spec, s, depth = 0) => {
  if (!s || typeof s !== 'object' || depth > 8) return s;
  if (s.$ref) return deref(spec, s.$ref.split('/').slice(1).reduce((o, k) => o?.[k], spec), depth + 1);
  if (Array.isArray(s)) return s.map((x) => deref(spec, x, depth + 1));
  return Object.fromEntries(Object.entries(s).map(([k, v]) => [k, deref(spec, v, depth + 1)]));
};
const schemaBlock = (spec, s) => '<pre>' + esc(JSON.stringify(deref(spec, s), null, 2)) + '</pre>';
fetch(document.body.dataset.spec).then((r) => r.json()).then((spec) => {
  const out = [];
  out.push('<h1>' + esc(spec.info.title) + ' <small>' + esc(spec.info.version) + '</small></h1>');
  out.push('<p>' + esc(spec.info.description) + '</p><p><a href="' + esc(document.body.dataset.spec) + '">openapi.json</a></p>');
  const nav = [];
  const body = [];
  for (const [path, ops] of Object.entries(spec.paths ?? {})) {
    for (const [method, op] of Object.entries(ops)) {
      const id = (method + path).replace(/[^a-z0-9]+/gi, '-');
      nav.push('<li><a href="#' + id + '"><b class="' + method + '">' + method.toUpperCase() + '</b> ' + esc(path) + '</a></li>');
      let h = '<section id="' + id + '"><h2><b class="' + method + '">' + method.toUpperCase() + '</b> <code>' + esc(path) + '</code></h2>';
      h += '<p>' + esc(op.summary) + (op.security ? ' <span class="auth">API key</span>' : '') + '</p>';
      if (op.description) h += '<p>' + esc(op.description) + '</p>';
      if (op.parameters?.length) {
        h += '<h3>Parameters</h3><table><tr><th>name</th><th>in</th><th>required</th><th>schema</th></tr>';
        for (const p of op.parameters) h += '<tr><td><code>' + esc(p.name) + '</code></td><td>' + esc(p.in) + '</td><td>' + (p.required ? 'yes' : 'no') + '</td><td><code>' + esc(JSON.stringify(deref(spec, p.schema))) + '</code></td></tr>';
        h += '</table>';
      }
      const req = op.requestBody?.content?.['application/json'];
      if (req) h += '<h3>Request body</h3><details><summary>schema</summary>' + schemaBlock(spec, req.schema) + '</details>';
      h += '<h3>Responses</h3><ul>';
      for (const [code, r] of Object.entries(op.responses ?? {})) {
        const types = Object.keys(r.content ?? {});
        h += '<li><b>' + esc(code) + '</b> ' + esc(r.description) + (types.length ? ' <small>(' + esc(types.join(', ')) + ')</small>' : '');
        const js = r.content?.['application/json'];
        if (js && code.startsWith('2')) h += '<details><summary>schema</summary>' + schemaBlock(spec, js.schema) + '</details>';
        h += '</li>';
      }
      body.push(h + '</ul></section>');
    }
  }
  document.getElementById('app').innerHTML = out.join('') + '<nav><ul>' + nav.join('') + '</ul></nav>' + body.join('');
}).catch((e) => { document.getElementById('app').textContent = 'Could not load the API description: ' + e; });
`

const STYLE = `body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#222}
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f6f6f6;padding:.75rem;overflow:auto}
section{border-top:1px solid #ddd;margin-top:1.5rem}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
b.get{color:#0a7}b.post{color:#06c}b.delete{color:#c33}.auth{background:#eef;padding:0 .4rem;border-radius:4px;font-size:12px}
nav ul{columns:2;list-style:none;padding:0}a{color:inherit}`

export function docsPage(specUrl: string): string {
  const safe = specUrl.replace(/[^A-Za-z0-9/._-]/g, '')
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>PrometheusGPT API</title><style>${STYLE}</style></head>
<body data-spec="${safe}"><main id="app">Loading the API description…</main><script>${SCRIPT}</script></body></html>`
}
