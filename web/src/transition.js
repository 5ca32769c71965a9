// The transition view: two characters (A and B: noise and tags), N frames between them (slerp on the
// noise, a straight line on the tags, as render's interpolation sheet), playable, saved as one sheet.
import { toImageData } from './generator.js';
import { slerp } from './noise.js';
import { canvasToPng, fileName, save, sheet } from './download.js';

export const MIN_FRAMES = 3, MAX_FRAMES = 200;
const BATCH = 8, FPS = 12;
const $ = (id) => document.getElementById(id);

export class Transition {
  constructor(gen) {
    this.gen = gen;
    this.ends = { a: null, b: null };
    this.frames = [];
    this.timer = null;
    this.generation = 0;
    $('trans-frame').addEventListener('input', () => { this.pause(); this.show(+$('trans-frame').value); });
    $('play').addEventListener('click', () => (this.timer ? this.pause() : this.play()));
    $('save-sheet').addEventListener('click', () => this.saveSheet());
  }

  // end: { z, tags, name, canvas } (the character now on the main canvas).
  setEnd(which, end) {
    this.ends[which] = { z: Float32Array.from(end.z), tags: Float32Array.from(end.tags), name: end.name };
    const c = $(`trans-${which}`);
    c.width = end.canvas.width;
    c.height = end.canvas.height;
    c.getContext('2d').drawImage(end.canvas, 0, 0);
    c.title = end.name;
    $('make-transition').disabled = !(this.ends.a && this.ends.b);
  }

  async make(n) {
    const { a, b } = this.ends;
    if (!a || !b) throw new Error('choose both characters first (A and B)');
    if (!(Number.isInteger(n) && n >= MIN_FRAMES && n <= MAX_FRAMES)) throw new Error(`frames: ${MIN_FRAMES} to ${MAX_FRAMES}`);
    this.pause();
    const dim = this.gen.zDim, frames = [];
    for (let s = 0; s < n; s += BATCH) {
      const k = Math.min(BATCH, n - s), zs = new Float32Array(k * dim), tags = [];
      for (let j = 0; j < k; j++) {
        const t = (s + j) / (n - 1);
        zs.set(slerp(a.z, b.z, t), j * dim);
        tags.push(a.tags.map((v, i) => (1 - t) * v + t * b.tags[i]));
      }
      const r = await this.gen.run(zs, tags);
      for (let j = 0; j < k; j++) frames.push(toImageData(r.data, j, r.size));
    }
    this.frames = frames;
    this.generation += 1;
    const range = $('trans-frame');
    range.max = String(n - 1);
    range.value = '0';
    this.show(0);
    $('play').disabled = $('save-sheet').disabled = false;
    document.body.dataset.transition = String(this.generation);
  }

  show(i) {
    const f = this.frames[i], c = $('trans-view');
    if (!f) return;
    if (c.width !== f.width) { c.width = f.width; c.height = f.height; }
    c.getContext('2d').putImageData(f, 0, 0);
    $('trans-frame').value = String(i);
    $('trans-label').textContent = `frame ${i + 1} of ${this.frames.length}`;
  }

  play() {
    if (!this.frames.length) return;
    $('play').textContent = 'Pause';
    let i = +$('trans-frame').value, dir = 1;
    this.timer = setInterval(() => {
      if (i + dir < 0 || i + dir >= this.frames.length) dir = -dir; // back and forth
      i += dir;
      this.show(i);
    }, 1000 / FPS);
  }

  pause() {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    $('play').textContent = 'Play';
  }

  async saveSheet() {
    const cols = Math.min(this.frames.length, Math.ceil(Math.sqrt(this.frames.length * 16 / 9)));
    const blob = await canvasToPng(sheet(this.frames, cols));
    save(blob, fileName(`transition-${this.ends.a.name}--${this.ends.b.name}`, `-${this.frames.length}f`));
  }
}
