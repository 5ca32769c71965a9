// History and favourites: characters (their share-link query, a name and a thumbnail) kept in the
// browser's localStorage, so they survive a reload; one click clears a list.
const LIMIT = { history: 40, favourites: 100 };

export class Shelf {
  constructor(kind, list, onPick) {
    Object.assign(this, { kind, list, onPick, key: `moeflow.${kind}` });
    this.items = this.load();
    this.render();
  }

  load() {
    try {
      const v = JSON.parse(localStorage.getItem(this.key) || '[]');
      return Array.isArray(v) ? v.filter((e) => e && typeof e.query === 'string') : [];
    } catch (e) {
      return [];
    }
  }

  save() {
    // Full storage: drop the oldest until it fits (thumbnails are the bulk).
    for (;;) {
      try {
        localStorage.setItem(this.key, JSON.stringify(this.items));
        return;
      } catch (e) {
        if (!this.items.length) throw e;
        this.items.pop();
      }
    }
  }

  // Newest first; a character already there moves to the front.
  add(entry) {
    this.items = [entry, ...this.items.filter((e) => e.query !== entry.query)].slice(0, LIMIT[this.kind]);
    this.save();
    this.render();
  }

  has(query) { return this.items.some((e) => e.query === query); }

  remove(query) {
    this.items = this.items.filter((e) => e.query !== query);
    this.save();
    this.render();
  }

  clear() {
    this.items = [];
    localStorage.removeItem(this.key);
    this.render();
  }

  render() {
    this.list.replaceChildren(...this.items.map((e) => {
      const img = document.createElement('img');
      Object.assign(img, { src: e.thumb, alt: e.name, title: `${e.name}\n${new Date(e.time).toLocaleString()}` });
      img.dataset.query = e.query;
      img.addEventListener('click', () => this.onPick(e.query));
      return img;
    }));
    this.list.dataset.count = String(this.items.length);
  }
}
