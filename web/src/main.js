// The page: attribute controls built from the model's manifest (model/model.json, written by
// the export stage from tasks/artifacts/tags.py), a seed shareable by URL, the image on a canvas and
// a strip of variations. Generation runs here, in the browser (tasks/export/noise.py = noise.js).
import './style.css';
import { Generator, drawImage } from './generator.js';
import { mulberry32, parseSeed, randomSeed, variationSeeds } from './noise.js';

const N_VARIATIONS = 6;
const SWATCH = {
  blonde: '#f3d36b', brown: '#8b5a2b', black: '#222', blue: '#3b6fd8', pink: '#f29ac0', purple: '#8e5bd1',
  green: '#3ea34a', red: '#d33', silver: '#c4c6cf', white: '#fff', orange: '#f08a24', aqua: '#40d0d0',
  grey: '#888', yellow: '#e8d23a',
};
const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const api = { timing: { runs: [] }, generation: 0 };
window.moeflow = api;

let gen = null, manifest = null, seed = 0, busy = false, pending = false;

function setState(s) { document.body.dataset.state = s; }

function label(tag, group) {
  if (group.name === 'hair_color') return tag.replace(/_hair$/, '');
  if (group.name === 'eye_color') return tag.replace(/_eyes$/, '');
  return tag.replace(/_/g, ' ');
}

function buildControls() {
  const form = $('tags');
  form.replaceChildren();
  for (const g of manifest.groups) {
    const fs = document.createElement('fieldset');
    fs.innerHTML = `<legend>${g.label}</legend><div class="opts"></div>`;
    for (let i = g.start; i < g.stop; i++) {
      const tag = manifest.tags[i], name = label(tag, g);
      const opt = document.createElement('label');
      opt.className = 'opt';
      const input = document.createElement('input');
      input.type = g.kind === 'one-hot' ? 'radio' : 'checkbox';
      input.name = g.kind === 'one-hot' ? g.name : tag;
      input.id = `tag-${tag}`;
      input.dataset.index = i;
      input.addEventListener('change', () => { updateUrl(); generate(); });
      opt.append(input);
      if (g.kind === 'one-hot' && SWATCH[name]) {
        const sw = document.createElement('span');
        sw.className = 'swatch';
        sw.style.background = SWATCH[name];
        opt.append(sw);
      }
      opt.append(document.createTextNode(name));
      fs.querySelector('.opts').append(opt);
    }
    form.append(fs);
  }
}

function readTags() {
  const t = new Float32Array(manifest.n_tags);
  for (const input of $('tags').querySelectorAll('input')) if (input.checked) t[+input.dataset.index] = 1;
  return t;
}

function writeTags(t) {
  for (const input of $('tags').querySelectorAll('input')) input.checked = t[+input.dataset.index] === 1;
}

function tagNames(t) { return manifest.tags.filter((_, i) => t[i] === 1); }

// Attributes drawn like the training data (the train stage's tag frequencies when the manifest
// has them): one colour per one-hot group, every other tag independently.
function randomTags(rand) {
  const t = new Float32Array(manifest.n_tags), f = manifest.frequencies;
  for (const g of manifest.groups) {
    if (g.kind === 'one-hot') {
      const fg = f && f.groups.find(([s]) => s === g.start);
      const probs = fg ? fg[2] : Array(g.stop - g.start).fill(1 / (g.stop - g.start));
      let u = rand(), k = 0;
      while (k < probs.length - 1 && u >= probs[k]) u -= probs[k++];
      t[g.start + k] = 1;
    } else {
      for (let i = g.start; i < g.stop; i++) {
        const p = f && f.independent[String(i)] !== undefined ? f.independent[String(i)] : 0.2;
        if (rand() < p) t[i] = 1;
      }
    }
  }
  return t;
}

// tags=a,b,c from the URL; a one-hot group left empty gets a colour drawn from the seed.
function tagsFromQuery(text, s) {
  const t = new Float32Array(manifest.n_tags);
  for (const name of text.split(',').map((x) => x.trim()).filter(Boolean)) {
    const i = manifest.tags.indexOf(name);
    if (i >= 0) t[i] = 1;
  }
  const fill = randomTags(mulberry32(s));
  for (const g of manifest.groups.filter((x) => x.kind === 'one-hot')) {
    const on = [];
    for (let i = g.start; i < g.stop; i++) if (t[i] === 1) on.push(i);
    for (const i of on.slice(1)) t[i] = 0; // one colour per group: the first named wins
    if (!on.length) for (let i = g.start; i < g.stop; i++) t[i] = fill[i];
  }
  return t;
}

function shareUrl() {
  const q = new URLSearchParams(location.search);
  q.set('seed', String(seed));
  q.set('tags', tagNames(readTags()).join(','));
  return `${location.pathname}?${q.toString().replace(/%2C/g, ',')}`;
}

function updateUrl() { history.replaceState(null, '', shareUrl()); }

function setSeed(s) { seed = s >>> 0; $('seed').value = String(seed); }

function fmt(ms) { return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`; }

async function generate() {
  if (!gen) return;
  if (busy) { pending = true; return; }
  busy = true;
  setState('busy');
  try {
    const tags = readTags(), s = seed, key = `${s}:${tagNames(tags).join(',')}`;
    const t0 = performance.now();
    const r = await gen.run([s], tags);
    drawImage($('main'), r.data, 0, r.size);
    const ms = performance.now() - t0;
    api.timing.runs.push(ms);
    if (api.timing.firstImageMs === undefined) api.timing.firstImageMs = performance.now(); // since navigation start
    api.generation += 1;
    document.body.dataset.key = key;
    document.body.dataset.generation = String(api.generation);
    $('status').textContent = `${fmt(ms)} for this image · first image after ${fmt(api.timing.firstImageMs)}`;
    const seeds = variationSeeds(s, N_VARIATIONS);
    const v = await gen.run(seeds, tags);
    const strip = $('variations');
    seeds.forEach((vs, k) => {
      let c = strip.children[k];
      if (!c) {
        c = document.createElement('canvas');
        c.addEventListener('click', () => { setSeed(+c.dataset.seed); updateUrl(); generate(); });
        strip.append(c);
      }
      c.dataset.seed = String(vs);
      c.title = `seed ${vs}`;
      drawImage(c, v.data, k, v.size);
    });
    document.body.dataset.variations = String(api.generation);
    setState('ready');
  } catch (e) {
    fail(e);
  } finally {
    busy = false;
  }
  if (pending) { pending = false; generate(); }
}

function fail(e) {
  console.error(e);
  setState('error');
  $('status').textContent = `Error: ${e.message || e}`;
}

// For the tests and the benchmark: RGBA pixels of a canvas (base64), and timed runs after warm-up.
api.pixels = (id = 'main') => {
  const c = $(id), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let bin = '';
  for (let i = 0; i < d.length; i += 0x8000) bin += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
  return { width: c.width, height: c.height, rgba: btoa(bin) };
};
api.benchmark = async ({ runs = 20, warmup = 3, batch = 1 } = {}) => {
  const tags = readTags(), seeds = Array.from({ length: batch }, (_, i) => (seed + i) >>> 0);
  const canvas = document.createElement('canvas');
  for (let i = 0; i < warmup; i++) await gen.run(seeds, tags);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = await gen.run(seeds, tags);
    drawImage(canvas, r.data, 0, r.size);
    times.push(performance.now() - t0);
  }
  return { times, batch, backend: gen.backend, threads: gen.threads, crossOriginIsolated: self.crossOriginIsolated };
};

async function main() {
  try {
    const t0 = performance.now();
    gen = await Generator.load(query.get('model') || 'model/model.json', {
      backend: query.get('ep') || 'auto', threads: +(query.get('threads') || 0),
    });
    manifest = gen.manifest;
    api.manifest = manifest;
    api.backend = gen.backend;
    api.timing.loadMs = performance.now() - t0;
    $('backend').textContent = `${gen.backend === 'webgpu' ? 'WebGPU' : `WASM, ${gen.threads} thread${gen.threads > 1 ? 's' : ''}`}` +
      ` · ${manifest.image_size}×${manifest.image_size} · ${(manifest.bytes / 1e6).toFixed(1)} MB ${manifest.variant} model` +
      ` · loaded in ${fmt(api.timing.loadMs)}`;
    buildControls();
    setSeed(query.has('seed') ? parseSeed(query.get('seed')) : randomSeed());
    writeTags(query.has('tags') ? tagsFromQuery(query.get('tags'), seed) : randomTags(mulberry32(seed)));
    updateUrl();
    $('seed').addEventListener('change', () => { setSeed(parseSeed($('seed').value)); updateUrl(); generate(); });
    $('generate').addEventListener('click', () => { setSeed(parseSeed($('seed').value)); updateUrl(); generate(); });
    $('random').addEventListener('click', () => {
      setSeed(randomSeed());
      writeTags(randomTags(mulberry32(seed)));
      updateUrl();
      generate();
    });
    $('share').addEventListener('click', async () => {
      const url = new URL(shareUrl(), location.href).href;
      try { await navigator.clipboard.writeText(url); $('status').textContent = 'Link copied.'; } catch (e) { prompt('Link to this character:', url); }
    });
    for (const id of ['generate', 'random', 'share']) $(id).disabled = false;
    setState('ready');
    await generate();
  } catch (e) {
    fail(e);
  }
}

main();
