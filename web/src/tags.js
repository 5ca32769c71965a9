// The attribute controls, honest about the model (the manifest's `training` and `agreement`, written by
// the export stage): a tag no training face had is disabled and says so; each working tag shows how
// well the generator follows it (render's measurement). Each tag is random, on or off; a colour group
// is random or one colour. Random tags are drawn as the training data was (the generator's tag
// frequencies), from the character's seed, so a link reproduces them.
import { mulberry32 } from './noise.js';

export const UNTRAINED = 'this model was trained without this tag';
const TAG_SALT = 0x7f4a7c15;
const STATES = ['random', 'on', 'off'];
const SWATCH = {
  blonde: '#f3d36b', brown: '#8b5a2b', black: '#222', blue: '#3b6fd8', pink: '#f29ac0', purple: '#8e5bd1',
  green: '#3ea34a', red: '#d33', silver: '#c4c6cf', white: '#fff', orange: '#f08a24', aqua: '#40d0d0',
  grey: '#888', yellow: '#e8d23a',
};

function label(tag, group) {
  if (group.name === 'hair_color') return tag.replace(/_hair$/, '');
  if (group.name === 'eye_color') return tag.replace(/_eyes$/, '');
  return tag.replace(/_/g, ' ');
}

const pct = (v) => `${Math.round(v * 100)}%`;
// Below this many samples the tagger could read, the badge shows counts, not a percentage.
const MIN_READ = 10;

// The agreement badge of an attribute (a colour group's or a tag's): render's measurement, or why none.
function badge(row, agreementInfo) {
  const b = document.createElement('small');
  b.className = 'agree';
  if (!agreementInfo) { b.textContent = ''; return b; }
  if (!row || row.agreement === null || row.agreement === undefined) {
    b.textContent = 'n/m';
    b.title = `not measured: ${row && row.reason ? row.reason : agreementInfo.reason || 'render did not score it'}`;
    b.classList.add('none');
    return b;
  }
  const ceiling = row.ceiling !== null ? ` (the same tagger agrees with real faces' labels on ${pct(row.ceiling)})` : '';
  if (row.read < MIN_READ) {  // a share of 2 samples is no measurement: show the counts
    b.textContent = `${Math.round(row.agreement * row.read)}/${row.read}`;
    b.title = `followed on ${b.textContent} generated samples: the ${agreementInfo.tagger} tagger could read only ` +
      `${row.read}, too few for a percentage${ceiling}`;
    return b;
  }
  b.textContent = pct(row.agreement);
  b.title = `followed on ${pct(row.agreement)} of ${row.read} generated samples the ${agreementInfo.tagger} tagger could read` +
    ceiling;
  return b;
}

export class TagControls {
  constructor(form, manifest, onChange) {
    Object.assign(this, { form, manifest, onChange });
    const tr = manifest.training;
    this.trained = manifest.tags.map((_, i) => (tr ? tr.trained[i] : true));
    this.choice = {}; // group name (one-hot) -> -1 (random) | tag index; tag index (independent) -> state
    this.build();
  }

  isTrained(i) { return this.trained[i]; }

  build() {
    const { manifest: m, form } = this;
    form.replaceChildren();
    if (!m.training) {
      const p = document.createElement('p');
      p.className = 'note';
      p.textContent = 'This model\'s manifest does not record which tags it was trained with: every tag is offered.';
      form.append(p);
    }
    for (const g of m.groups) {
      const fs = document.createElement('fieldset');
      fs.dataset.group = g.name;
      const legend = document.createElement('legend');
      legend.textContent = g.label;
      const opts = document.createElement('div');
      opts.className = 'opts';
      fs.append(legend, opts);
      if (g.kind === 'one-hot') {
        legend.append(' ', badge(m.agreement && m.agreement.attributes[g.name], m.agreement));
        this.choice[g.name] = -1;
        opts.append(this.radio(g, -1, 'random'));
        for (let i = g.start; i < g.stop; i++) opts.append(this.radio(g, i, label(m.tags[i], g)));
      } else {
        for (let i = g.start; i < g.stop; i++) opts.append(this.chip(i, label(m.tags[i], g)));
      }
      form.append(fs);
    }
  }

  radio(g, i, name) {
    const opt = document.createElement('label');
    opt.className = 'opt';
    const input = document.createElement('input');
    Object.assign(input, { type: 'radio', name: g.name, id: i < 0 ? `tag-${g.name}-random` : `tag-${this.manifest.tags[i]}` });
    input.dataset.index = i;
    input.checked = i < 0;
    input.addEventListener('change', () => { this.choice[g.name] = i; this.onChange(); });
    opt.append(input);
    if (i >= 0 && SWATCH[name]) {
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = SWATCH[name];
      opt.append(sw);
    }
    opt.append(document.createTextNode(name));
    if (i >= 0 && !this.trained[i]) this.disable(opt, input, i);
    return opt;
  }

  chip(i, name) {
    const b = document.createElement('button');
    Object.assign(b, { type: 'button', id: `tag-${this.manifest.tags[i]}`, className: 'opt tri' });
    b.dataset.index = i;
    b.append(document.createElement('i'), document.createTextNode(name));
    this.choice[i] = 'random';
    if (!this.trained[i]) {
      this.disable(b, b, i);
      this.choice[i] = 'off';
    } else {
      const m = this.manifest;
      if (m.agreement) b.append(badge(m.agreement.attributes[m.tags[i]], m.agreement));
      b.addEventListener('click', () => {
        this.choice[i] = STATES[(STATES.indexOf(this.choice[i]) + 1) % STATES.length];
        this.paint();
        this.onChange();
      });
    }
    b.dataset.state = this.choice[i];
    return b;
  }

  disable(opt, input, i) {
    const tr = this.manifest.training;
    input.disabled = true;
    opt.classList.add('untrained');
    opt.title = `${UNTRAINED} (on for ${tr.positive[i]} of ${tr.faces} training faces; known for ${tr.known[i]})`;
  }

  paint() {
    for (const b of this.form.querySelectorAll('button.tri')) {
      const s = this.choice[+b.dataset.index];
      b.dataset.state = s;
      b.setAttribute('aria-label', `${b.textContent}: ${s}`);
    }
    for (const g of this.manifest.groups.filter((x) => x.kind === 'one-hot')) {
      for (const r of this.form.querySelectorAll(`input[name="${g.name}"]`)) r.checked = +r.dataset.index === this.choice[g.name];
    }
  }

  // The choices as share-link lists: tags on, tags off (the rest random).
  lists() {
    const on = [], off = [], m = this.manifest;
    for (const g of m.groups) {
      if (g.kind === 'one-hot') { if (this.choice[g.name] >= 0) on.push(m.tags[this.choice[g.name]]); continue; }
      for (let i = g.start; i < g.stop; i++) {
        if (!this.trained[i]) continue;
        if (this.choice[i] === 'on') on.push(m.tags[i]);
        if (this.choice[i] === 'off') off.push(m.tags[i]);
      }
    }
    return { on, off };
  }

  // Set every choice from lists (names not in the manifest or untrained are ignored); the rest random.
  setLists(on = [], off = []) {
    const m = this.manifest;
    for (const g of m.groups) {
      if (g.kind === 'one-hot') {
        const pick = on.map((t) => m.tags.indexOf(t)).find((i) => i >= g.start && i < g.stop && this.trained[i]);
        this.choice[g.name] = pick === undefined ? -1 : pick;
      } else {
        for (let i = g.start; i < g.stop; i++) {
          this.choice[i] = !this.trained[i] ? 'off' : on.includes(m.tags[i]) ? 'on' : off.includes(m.tags[i]) ? 'off' : 'random';
        }
      }
    }
    this.paint();
  }

  setAllRandom() { this.setLists([], []); }

  // The conditioning vector for `seed`: chosen tags as chosen, random ones drawn as the training data
  // was (one draw per group and per tag, in the manifest's order, whatever is chosen: the stream is stable).
  resolve(seed) {
    const m = this.manifest, f = m.frequencies, t = new Float32Array(m.n_tags);
    const rand = mulberry32((seed ^ TAG_SALT) >>> 0);
    for (const g of m.groups) {
      if (g.kind === 'one-hot') {
        const fg = f && f.groups.find(([s]) => s === g.start);
        let probs = (fg ? fg[2] : Array(g.stop - g.start).fill(1)).map((p, k) => (this.trained[g.start + k] ? p : 0));
        const sum = probs.reduce((a, b) => a + b, 0);
        probs = sum > 0 ? probs.map((p) => p / sum) : probs.map(() => 1 / probs.length);
        let u = rand(), k = 0;
        while (k < probs.length - 1 && u >= probs[k]) u -= probs[k++];
        t[this.choice[g.name] >= 0 ? this.choice[g.name] : g.start + k] = 1;
      } else {
        for (let i = g.start; i < g.stop; i++) {
          const p = f && f.independent[String(i)] !== undefined ? f.independent[String(i)] : this.share(i);
          const u = rand(), c = this.choice[i];
          t[i] = !this.trained[i] ? 0 : c === 'on' ? 1 : c === 'off' ? 0 : u < p ? 1 : 0;
        }
      }
    }
    return t;
  }

  // A tag's share in the training data when the generator recorded no frequencies (else one half).
  share(i) {
    const tr = this.manifest.training;
    return tr && tr.known[i] > 0 ? tr.positive[i] / tr.known[i] : 0.5;
  }

  // Mark which random tags came out on (the chips show what was drawn).
  showDrawn(t) {
    for (const b of this.form.querySelectorAll('button.tri')) b.classList.toggle('drawn', t[+b.dataset.index] === 1);
    for (const r of this.form.querySelectorAll('input[type=radio]')) {
      r.parentElement.classList.toggle('drawn', +r.dataset.index >= 0 && t[+r.dataset.index] === 1);
    }
  }
}
