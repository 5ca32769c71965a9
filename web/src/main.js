// The page: honest tri-state attribute controls built from the model's manifest (tags.js), a character
// (seed, noise, tags) shareable by URL (character.js), the image, a strip of perturbed variations, noise
// controls, history and favourites (shelf.js), downloads (download.js) and the transition view
// (transition.js). Generation runs here, in the browser (tasks/export/noise.py = noise.js).
import './style.css';
import { Generator, drawImage } from './generator.js';
import { TagControls } from './tags.js';
import { Character, describe, fromQuery, queryString, toQuery } from './character.js';
import { noiseFromJson, noiseToJson, parseSeed, perturb, randomSeed, seedToZ, variationSeeds } from './noise.js';
import { Shelf } from './shelf.js';
import { ENLARGE, canvasToPng, enlarged, fileName, save } from './download.js';
import { MAX_FRAMES, MIN_FRAMES, Transition } from './transition.js';
import { installApi } from './testapi.js';

const N_VARIATIONS = 6;
const $ = (id) => document.getElementById(id);
const api = { timing: { runs: [] }, generation: 0 };
window.moeflow = api;

let gen = null, controls = null, char = null, busy = false, pending = false, hist = null, favourites = null, trans = null;
let current = null; // what the main canvas shows: { z, tags, name, query }

function setState(s) { document.body.dataset.state = s; }
function fmt(ms) { return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`; }
function amount() { return +$('amount').value; }

function shareQuery() { return queryString(toQuery(char, controls, new URLSearchParams(location.search))); }
function updateUrl() { window.history.replaceState(null, '', `${location.pathname}?${shareQuery()}`); }

function showNoise() {
  $('seed').value = String(char.seed);
  const ns = char.noiseSeed();
  $('noise-info').textContent = ns === null ? 'noise: its own values (perturbed, picked or imported)'
    : ns === char.seed ? 'noise: from the seed' : `noise: from seed ${ns}`;
}

function setCharacter(c) { char = c; showNoise(); updateUrl(); return generate(); }

async function generate() {
  if (!gen) return;
  if (busy) { pending = true; return; }
  busy = true;
  setState('busy');
  try {
    const dim = gen.zDim, z = char.z(dim), tags = controls.resolve(char.seed);
    const t0 = performance.now();
    const r = await gen.run(z, tags);
    drawImage($('main'), r.data, 0, r.size);
    const ms = performance.now() - t0;
    api.timing.runs.push(ms);
    if (api.timing.firstImageMs === undefined) api.timing.firstImageMs = performance.now(); // since navigation start
    controls.showDrawn(tags);
    current = { z, tags, name: describe(char, gen.manifest, tags), query: shareQuery() };
    api.generation += 1;
    document.body.dataset.key = `${char.seed}:${gen.manifest.tags.filter((_, i) => tags[i] === 1).join(',')}`;
    document.body.dataset.generation = String(api.generation);
    $('status').textContent = `${fmt(ms)} for this image · first image after ${fmt(api.timing.firstImageMs)}`;
    hist.add({ query: current.query, name: current.name, thumb: $('main').toDataURL('image/png'), time: Date.now() });
    $('favourite').textContent = favourites.has(current.query) ? '♥ Favourite' : '♡ Favourite';
    const seeds = variationSeeds(char.noiseSeed() ?? char.seed, N_VARIATIONS), a = amount();
    const zs = new Float32Array(N_VARIATIONS * dim);
    seeds.forEach((s, k) => zs.set(perturb(z, seedToZ(s, dim), a), k * dim));
    const v = await gen.run(zs, tags);
    const strip = $('variations');
    seeds.forEach((vs, k) => {
      let c = strip.children[k];
      if (!c) {
        c = document.createElement('canvas');
        c.addEventListener('click', () => pickVariation(c));
        strip.append(c);
      }
      c.dataset.seed = String(vs);
      c.dataset.amount = String(a);
      c.title = `noise moved ${Math.round(a * 100)}% towards seed ${vs}'s`;
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

function pickVariation(c) {
  const a = +c.dataset.amount, s = +c.dataset.seed;
  const noise = a === 1 ? { seed: s } : { z: perturb(char.z(gen.zDim), seedToZ(s, gen.zDim), a) };
  setCharacter(new Character(char.seed, noise));
}

function fail(e) {
  console.error(e);
  setState('error');
  $('status').textContent = `Error: ${e.message || e}`;
}

function restore(query) {
  setCharacter(fromQuery(new URLSearchParams(query), controls, gen.zDim, char.seed));
}

async function download(factor) {
  const c = factor > 1 ? enlarged($('main'), factor) : $('main');
  save(await canvasToPng(c), fileName(current.name, factor > 1 ? `-x${factor}` : ''));
}

function wire() {
  const on = (id, f) => $(id).addEventListener('click', () => (async () => f())().catch(fail));
  const fixed = () => $('fixnoise').checked;
  $('seed').addEventListener('change', () => setCharacter(new Character(parseSeed($('seed').value), fixed() ? char.noise : null)));
  on('generate', () => setCharacter(new Character(parseSeed($('seed').value), fixed() ? char.noise : null)));
  on('random', () => setCharacter(new Character(randomSeed(), fixed() ? char.noise : null)));
  on('all-random', () => { controls.setAllRandom(); updateUrl(); return generate(); });
  on('share', async () => {
    const url = new URL(`${location.pathname}?${shareQuery()}`, location.href).href;
    try { await navigator.clipboard.writeText(url); $('status').textContent = 'Link copied.'; } catch (e) { prompt('Link to this character:', url); }
  });
  on('perturb', () => setCharacter(new Character(char.seed, { z: perturb(char.z(gen.zDim), seedToZ(randomSeed(), gen.zDim), amount()) })));
  $('amount').addEventListener('input', () => { $('amount-label').textContent = `${Math.round(amount() * 100)}%`; });
  $('amount').addEventListener('change', () => generate());
  on('noise-export', () => { $('noise-text').value = noiseToJson(char.z(gen.zDim), char.noiseSeed()); });
  on('noise-import', () => setCharacter(new Character(char.seed, { z: noiseFromJson($('noise-text').value, gen.zDim) })));
  on('favourite', () => {
    if (favourites.has(current.query)) favourites.remove(current.query);
    else favourites.add({ ...hist.items[0], time: Date.now() });
    $('favourite').textContent = favourites.has(current.query) ? '♥ Favourite' : '♡ Favourite';
  });
  on('clear-history', () => hist.clear());
  on('clear-favourites', () => favourites.clear());
  on('png', () => download(1));
  on('png-large', () => download(ENLARGE));
  on('set-a', () => trans.setEnd('a', { ...current, canvas: $('main') }));
  on('set-b', () => trans.setEnd('b', { ...current, canvas: $('main') }));
  $('frames').min = String(MIN_FRAMES);
  $('frames').max = String(MAX_FRAMES);
  on('make-transition', () => trans.make(Math.round(+$('frames').value)));
  for (const b of document.querySelectorAll('button[data-ready]')) b.disabled = false;
}

async function main() {
  try {
    const t0 = performance.now(), query = new URLSearchParams(location.search);
    gen = await Generator.load(query.get('model') || 'model/model.json', {
      backend: query.get('ep') || 'auto', threads: +(query.get('threads') || 0),
    });
    const m = gen.manifest;
    Object.assign(api, { manifest: m, backend: gen.backend });
    api.timing.loadMs = performance.now() - t0;
    $('backend').textContent = `${gen.backend === 'webgpu' ? 'WebGPU' : `WASM, ${gen.threads} thread${gen.threads > 1 ? 's' : ''}`}` +
      ` · ${m.image_size}×${m.image_size} · ${(m.bytes / 1e6).toFixed(1)} MB ${m.variant} model` +
      ` · loaded in ${fmt(api.timing.loadMs)}${gen.note ? ` · ${gen.note}` : ''}`;
    controls = new TagControls($('tags'), m, () => { updateUrl(); generate(); });
    hist = new Shelf('history', $('history'), restore);
    favourites = new Shelf('favourites', $('favourites'), restore);
    trans = new Transition(gen);
    char = fromQuery(query, controls, gen.zDim, randomSeed());
    showNoise();
    updateUrl();
    installApi(api, { gen, trans, get current() { return current; }, get char() { return char; } });
    wire();
    setState('ready');
    await generate();
  } catch (e) {
    fail(e);
  }
}

main();
